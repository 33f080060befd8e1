"""AnomalyGate: the step after ExampleValidator that stops a run on bad data.

ExampleValidator only records anomalies. This component reads them, adds
training/serving skew (the train split vs serving traffic) and drift (the
current span vs the previous one) measured by TFDV with the thresholds in the
schema, judges everything by the `validation:` config (severity, tolerated
anomaly types), and writes the report (text, JSON, HTML) as its output
artifact and under `report_dir` (TFX deletes a failed execution's outputs, and
a rejected run's report is the one people need). When anything fails it raises `DataValidationFailed`: the run stops
there, so Transform, Tuner, Trainer, Evaluator and Pusher never execute and
the model being served stays as it was.
"""

import glob
import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import io_utils

from formats.spans import span_files
from validation.spans import span_of
from contract.errors import DataValidationFailed
from validation import checks
from validation.report import GatePolicy, Report, findings_from_anomalies

SCHEMA_DIFF_FILE = "SchemaDiff.pb"  # what ExampleValidator writes per split


class DataValidationReport(types.Artifact):
    """report.txt, report.json and report.html of one gate execution."""

    # namespace.Name: the form Kubeflow V2 requires of custom artifact types.
    TYPE_NAME = "validation.DataValidationReport"


def validation_failure(report: Report, report_path: str) -> DataValidationFailed:
    """The error that stops the run, naming the first failures."""
    failures = "; ".join(f"{f.dataset} {f.feature} {f.anomaly}" for f in report.failures[:5])
    more = f" (+{len(report.failures) - 5} more)" if len(report.failures) > 5 else ""
    return DataValidationFailed(failures + more, report.to_text(), report_path)


def previous_span_files(span_pattern: str, current_span: int) -> Tuple[Optional[int], List[str]]:
    """Files of the latest span before `current_span` matching a `{SPAN}` or date pattern (none: (None, []))."""
    earlier = {span: files for span, files in span_files("", span_pattern).items() if span < current_span}
    if not earlier:
        return None, []
    previous = max(earlier)
    return previous, earlier[previous]


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        statistics = artifact_utils.get_single_instance(input_dict["statistics"])
        anomalies_artifact = artifact_utils.get_single_instance(input_dict["anomalies"])
        schema = io_utils.SchemaReader().read(
            io_utils.get_only_uri_in_dir(artifact_utils.get_single_uri(input_dict["schema"])))
        policy = GatePolicy(exec_properties["fail_severity"], tuple(json.loads(exec_properties["allow_anomalies"])))
        span = span_of(artifact_utils.get_single_instance(input_dict["examples"]))
        report = Report(f"Anomaly gate (data span {span})")

        splits = artifact_utils.decode_split_names(anomalies_artifact.split_names)
        split_stats = {split: stats_artifact_utils.load_statistics(statistics, split).proto() for split in splits}
        for split in splits:
            anomalies = anomalies_pb2.Anomalies()
            anomalies.ParseFromString(io_utils.read_bytes_file(os.path.join(
                artifact_utils.get_split_uri([anomalies_artifact], split), SCHEMA_DIFF_FILE)))
            report.findings += findings_from_anomalies(anomalies, split, policy, schema, split_stats[split])

        train_split = "train" if "train" in split_stats else next(iter(split_stats))
        training = split_stats[train_split]
        if exec_properties.get("serving_data") or exec_properties.get("span_pattern"):
            # Text columns are compared by their tokens, which StatisticsGen does not count (validation/text.py).
            training = checks.with_text_statistics(training, sorted(glob.glob(os.path.join(
                artifact_utils.get_split_uri(input_dict["examples"], train_split), "*"))), schema)
        serving_data = exec_properties.get("serving_data") or ""
        if serving_data:
            serving_files = sorted(f for f in glob.glob(os.path.join(serving_data, "**", "*")
                                                        if os.path.isdir(serving_data) else serving_data,
                                                        recursive=True) if os.path.isfile(f))
            if serving_files:
                self._compare(report, "skew", training, serving_files, schema, policy,
                              f"train split vs serving data {serving_data}")
            else:
                report.notes.append(f"skew not measured: no serving data at {serving_data}")
        span_pattern = exec_properties.get("span_pattern") or ""
        if span_pattern:
            previous, previous_files = previous_span_files(span_pattern, span)
            if previous_files:
                self._compare(report, "drift", training, previous_files, schema, policy,
                              f"span {span} vs previous span {previous}")
            else:
                report.notes.append(f"drift not measured: no span before span {span}")

        output = artifact_utils.get_single_instance(output_dict["report"])
        path = report.write(output.uri)
        if exec_properties.get("report_dir"):
            run_dir = f"gate-{time.strftime('%Y%m%d-%H%M%S')}-span{span}-{'passed' if report.passed else 'failed'}"
            path = report.write(os.path.join(exec_properties["report_dir"], run_dir))
        output.set_int_custom_property("passed", int(report.passed))
        output.set_string_custom_property("report", path)
        logging.info("Anomaly gate report (%s):\n%s", path, report.to_text())
        if not report.passed:
            raise validation_failure(report, path)

    @staticmethod
    def _compare(report: Report, kind: str, current, control_files: List[str], schema, policy: GatePolicy,
                 description: str) -> None:
        findings, distances = checks.compare(current, checks.statistics_of(control_files, schema), schema, kind,
                                             policy)
        report.findings += findings
        report.distances += distances
        report.comparisons[kind] = description


class AnomalyGateSpec(ComponentSpec):
    PARAMETERS = {
        "fail_severity": ExecutionParameter(type=str),
        "allow_anomalies": ExecutionParameter(type=str),  # JSON list
        "serving_data": ExecutionParameter(type=str, optional=True),  # dir or glob; "" = no skew check
        "span_pattern": ExecutionParameter(type=str, optional=True),  # train files with {SPAN} or a date; "": no drift
        "report_dir": ExecutionParameter(type=str, optional=True),  # also kept here, outside the artifact
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),  # for its span
        "statistics": ChannelParameter(type=standard_artifacts.ExampleStatistics),
        "schema": ChannelParameter(type=standard_artifacts.Schema),
        "anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }
    OUTPUTS = {"report": ChannelParameter(type=DataValidationReport)}


class AnomalyGate(base_component.BaseComponent):
    """Fails the run when ExampleValidator's anomalies, skew or drift fail the configured policy."""

    SPEC_CLASS = AnomalyGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, examples: types.BaseChannel, statistics: types.BaseChannel, schema: types.BaseChannel,
                 anomalies: types.BaseChannel,
                 fail_severity: str, allow_anomalies: List[str], serving_data: str = "", span_pattern: str = "",
                 report_dir: str = ""):
        super().__init__(spec=AnomalyGateSpec(
            examples=examples, statistics=statistics, schema=schema, anomalies=anomalies, fail_severity=fail_severity,
            allow_anomalies=json.dumps(list(allow_anomalies)), serving_data=serving_data,
            span_pattern=span_pattern, report_dir=report_dir, report=types.Channel(type=DataValidationReport)))
