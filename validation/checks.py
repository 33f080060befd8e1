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

from contract.config import DEFAULT_SCHEMA, bundled_taxi_root, is_remote
import formats
from contract.errors import BadInputError
from validation.report import (Distance, Finding, GatePolicy, Report, distances_from_anomalies,
                               findings_from_anomalies)

TRAINING, SERVING = "TRAINING", "SERVING"
# Reasons that come from comparing two datasets rather than checking one against the schema.
COMPARATOR_TYPES = frozenset(name for name in anomalies_pb2.AnomalyInfo.Type.keys()
                             if name.startswith("COMPARATOR_") or name == "SCHEMA_TRAINING_SERVING_SKEW")


def load_schema(path: str) -> schema_pb2.Schema:
    return tfdv.load_schema_text(path)


def statistics_of(paths: Sequence[str]) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of data files (TFRecord, Parquet or CSV, told by content), computed in memory after the
    check of every file; the rows are what the format's ExampleGen makes of them (formats/)."""
    records = formats.read_all(formats.detect(paths), paths)
    try:
        batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(records)
    except Exception as e:  # The decoder names the feature whose type differs between examples.
        raise BadInputError(
            f"the examples in {len(paths)} file(s) under {_common_dir(paths)} disagree on a feature's type "
            f"({e}). Every example must give a feature the same type; fix the producer") from None
    return stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions())


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
    anomalies = tfdv.validate_statistics(current, _schema_for_comparison(schema, kind), **control_arg)
    distances = [d for d in distances_from_anomalies(anomalies) if d.kind == kind]
    findings = [f for f in findings_from_anomalies(anomalies, kind, policy, schema)
                if f.anomaly in COMPARATOR_TYPES]
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


def validate_batch(paths: Sequence[str], schema: schema_pb2.Schema, environment: str, policy: GatePolicy,
                   title: str) -> Report:
    """The `validate` command: one batch against the schema in one environment."""
    statistics = statistics_of(paths)
    report = Report(title)
    report.findings = schema_findings(statistics, schema, environment.lower(), policy, environment)
    report.notes.append(f"{statistics.datasets[0].num_examples} examples in {len(paths)} file(s)")
    return report


def default_serving_data(config) -> str:
    """`validation.serving_data`, else the request logs if any, else (taxi data) the bundled unlabelled split.

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
