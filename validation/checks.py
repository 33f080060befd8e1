"""TFDV checks of a batch of data: schema anomalies, training/serving skew, span-to-span drift.

Thresholds are not here: they live in the schema file (`skew_comparator` and
`drift_comparator` of each feature: `infinity_norm` for categorical strings,
`jensen_shannon_divergence` for numbers), so data producers, the pipeline and
this module read one contract.
"""

import copy
import os
from typing import List, Optional, Sequence, Tuple

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tensorflow_data_validation.statistics import stats_impl
from tfx_bsl.coders import example_coder

import formats
from contract import request_log
from contract.config import DEFAULT_SCHEMA, bundled_taxi_root, is_remote
from contract.errors import BadInputError
from formats.tfrecord import read_examples
from validation import text
from validation.report import (Distance, Finding, GatePolicy, Report, distances_from_anomalies,
                               findings_from_anomalies)

TRAINING, SERVING = "TRAINING", "SERVING"
# Reasons that come from comparing two datasets rather than checking one against the schema.
COMPARATOR_TYPES = frozenset(name for name in anomalies_pb2.AnomalyInfo.Type.keys()
                             if name.startswith("COMPARATOR_") or name == "SCHEMA_TRAINING_SERVING_SKEW")


def load_schema(path: str) -> schema_pb2.Schema:
    return tfdv.load_schema_text(path)


def statistics_of(paths: Sequence[str], schema: Optional[schema_pb2.Schema] = None
                  ) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics, computed in memory, of request logs (contract/request_log.py: their logged tf.Examples)
    and of data files (TFRecord, Parquet or CSV, told by content, each checked; the rows as the format's
    ExampleGen makes them, formats/). With a `schema` that has text features, their tokens' statistics too
    (validation/text.py)."""
    logs = [path for path in paths if _is_request_log(path)]
    data = [path for path in paths if path not in logs]
    records: List[bytes] = []
    if logs:
        try:
            records += request_log.examples(logs)
        except request_log.RequestLogError as e:
            raise BadInputError(str(e)) from None
    if data:
        records += formats.read_all(formats.detect(data), data)
    return statistics_of_records(records, f"{len(paths)} file(s) under {_common_dir(paths)}", schema)


def _is_request_log(path: str) -> bool:
    """A Parquet file with the request log's columns (a Parquet file of other columns is data)."""
    if not request_log.is_log_file(path):
        return False
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = set(pq.ParquetFile(path).schema_arrow.names)
    except (pa.ArrowException, OSError):  # unreadable: the data format's check names it
        return False
    return {"request_id", "example"} <= names


def statistics_of_records(records: Sequence[bytes], where: str, schema: Optional[schema_pb2.Schema] = None
                          ) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of serialized tf.Examples (and of the tokens of the schema's text features); `where` names
    them in the error about a bad one."""
    try:
        batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(list(records))
    except Exception as e:  # The decoder names the feature whose type differs between examples.
        raise BadInputError(
            f"the examples in {where} disagree on a feature's type "
            f"({e}). Every example must give a feature the same type; fix the producer") from None
    names = text.text_features(schema)
    if not names:
        return stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions())
    options = tfdv.StatsOptions(schema=text.token_schema(schema), num_rank_histogram_buckets=text.RANKED_TOKENS)
    # generate_statistics_in_memory never calls the generators' setup(), and the natural-language generator
    # learns in setup() which features to compute (tfdv 1.16): without it no token statistics come out.
    generators = stats_impl.get_generators(options, in_memory=True)
    for generator in generators:
        generator.setup()
    partial = stats_impl.generate_partial_statistics_in_memory(text.with_tokens(batch, names), options, generators)
    return stats_impl.extract_statistics_output(partial, generators)


# Rows of the training split whose text columns' tokens the gate compares (StatisticsGen has no token statistics).
TEXT_STATISTICS_ROWS = 100_000


def with_text_statistics(statistics: statistics_pb2.DatasetFeatureStatisticsList, files: Sequence[str],
                         schema: schema_pb2.Schema) -> statistics_pb2.DatasetFeatureStatisticsList:
    """`statistics` (StatisticsGen's, of tf.Example TFRecord files) with the token statistics of the schema's text
    features added, computed from the first TEXT_STATISTICS_ROWS rows of `files`."""
    if not text.text_features(schema):
        return statistics
    records: List[bytes] = []
    for path in files:
        records += read_examples(path)[:TEXT_STATISTICS_ROWS - len(records)]
        if len(records) >= TEXT_STATISTICS_ROWS:
            break
    tokens = statistics_of_records(records, f"{len(files)} file(s) under {_common_dir(files)}", schema)
    merged = copy.deepcopy(statistics)
    merged.datasets[0].features.extend(f for f in tokens.datasets[0].features
                                       if f.path.step and f.path.step[-1].endswith(text.TOKENS_SUFFIX))
    return merged


def _common_dir(paths: Sequence[str]) -> str:
    return os.path.commonpath(paths) if paths else ""


def schema_findings(statistics: statistics_pb2.DatasetFeatureStatisticsList, schema: schema_pb2.Schema,
                    dataset: str, policy: GatePolicy, environment: Optional[str] = None) -> List[Finding]:
    anomalies = tfdv.validate_statistics(statistics, schema, environment=environment)
    return findings_from_anomalies(anomalies, dataset, policy, schema, statistics)


def _schema_for_comparison(schema: schema_pb2.Schema, kind: str) -> schema_pb2.Schema:
    """Skew is only meaningful for features serving receives: the label's comparator is dropped."""
    if kind != "skew":
        return schema
    schema = copy.deepcopy(schema)
    for feature in schema.feature:
        if SERVING in feature.not_in_environment:
            feature.ClearField("skew_comparator")
    return schema


def compare(current: statistics_pb2.DatasetFeatureStatisticsList,
            control: statistics_pb2.DatasetFeatureStatisticsList, schema: schema_pb2.Schema, kind: str,
            policy: GatePolicy) -> Tuple[List[Finding], List[Distance]]:
    """Skew (`control` = serving data) or drift (`control` = previous span) of `current`, per feature."""
    if kind not in ("skew", "drift"):
        raise ValueError(f"kind must be skew or drift, not {kind!r}")
    control_arg = {"serving_statistics" if kind == "skew" else "previous_statistics": control}
    compared = _schema_for_comparison(text.token_schema(schema), kind)
    anomalies = tfdv.validate_statistics(current, compared, **control_arg)
    distances = [d for d in distances_from_anomalies(anomalies) if d.kind == kind]
    findings = [f for f in findings_from_anomalies(anomalies, kind, policy, compared)
                if f.anomaly in COMPARATOR_TYPES]
    coverage_findings, coverage_distances = token_coverage(current, control, schema, kind, policy)
    findings += coverage_findings
    distances += coverage_distances
    by_feature = {d.feature: d for d in distances}
    for finding in findings:
        if finding.feature in by_feature:
            d = by_feature[finding.feature]
            finding.values = [f"{d.measure} {d.value:.4f} > threshold {d.threshold:g}"]
    if not distances:
        findings.append(Finding(kind, "(schema)", "NO_COMPARATOR", "WARNING",
                                f"the schema sets no {kind}_comparator thresholds: nothing was compared",
                                status="below severity"))
    return findings, distances


# A text column's share of current tokens the control data lacks, as a distance: over its threshold when the
# schema's natural-language domain sets `coverage.min_coverage` (threshold 1 - min_coverage).
OOV_TOKENS = "OOV_TOKEN_SHARE"


def token_coverage(current, control, schema: schema_pb2.Schema, kind: str,
                   policy: GatePolicy) -> Tuple[List[Finding], List[Distance]]:
    """Per text feature: the share of the current data's tokens the control data never had, judged against the
    domain's `coverage.min_coverage` (TFDV's FEATURE_COVERAGE_TOO_LOW when below it)."""
    findings, distances = [], []
    for feature in schema.feature:
        if feature.name not in text.text_features(schema):
            continue
        if kind == "skew" and SERVING in feature.not_in_environment:
            continue
        # Skew: how much of what serving sends training saw; drift: how much of the new span the previous one had.
        covered = text.coverage(control, current, feature.name) if kind == "skew" else \
            text.coverage(current, control, feature.name)
        minimum = feature.natural_language_domain.coverage.min_coverage
        if covered is None or not minimum:
            continue
        distance = Distance(kind, text.tokens_name(feature.name), OOV_TOKENS, 1.0 - covered, 1.0 - minimum)
        distances.append(distance)
        if distance.over:
            anomaly = "FEATURE_COVERAGE_TOO_LOW"
            status = "tolerated" if policy.allows(feature.name, anomaly) else (
                "fails" if policy.severity_fails("ERROR") else "below severity")
            newer, known = ("serving data", "training data") if kind == "skew" else ("current span", "previous span")
            findings.append(Finding(kind, feature.name, anomaly, "ERROR",
                                    f"{1 - covered:.1%} of the {newer}'s tokens never occur in the {known} "
                                    f"(coverage {covered:.1%} < min_coverage {minimum:g})", status=status))
    return findings, distances


def validate_batch(paths: Sequence[str], schema: schema_pb2.Schema, environment: str, policy: GatePolicy,
                   title: str) -> Report:
    """The `validate` command: one batch against the schema in one environment (text columns: their tokens too)."""
    statistics = statistics_of(paths, schema)
    report = Report(title)
    report.findings = schema_findings(statistics, text.token_schema(schema), environment.lower(), policy,
                                      environment)
    report.notes.append(f"{statistics.datasets[0].num_examples} examples in {len(paths)} file(s)")
    report.notes += [text.summary(statistics, name) for name in text.text_features(schema)]
    return report


def default_serving_data(config) -> str:
    """`validation.serving_data`, else the request logs (contract/request_log.py) if any, else (taxi data) the
    bundled unlabelled split.

    "" (no skew check) for data of any other schema until it has serving traffic:
    taxi trips are not another dataset's serving data; and for remote data, where
    this machine's copy of the bundled split means nothing to cloud workers.
    """
    if config.validation.serving_data:
        return config.validation.serving_data
    logs = config.model_request_log_dir
    if os.path.isdir(logs) and any(files for _, _, files in os.walk(logs)):
        return logs
    if is_remote(config.input_base) or os.path.abspath(config.schema_file) != DEFAULT_SCHEMA:
        return ""
    return os.path.join(bundled_taxi_root(), "unlabelled")
