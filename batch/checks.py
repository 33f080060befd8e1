"""The batch's validation: TFDV statistics of the batch against the schema and the training statistics."""

import os

import apache_beam as beam

from batch.inputs import ExampleBatch
from contract.config import PipelineConfig, is_remote


class _DecodeExamples(beam.DoFn):
    def setup(self):
        from tfx_bsl.coders import example_coder

        self._decoder = example_coder.ExamplesToRecordBatchDecoder()

    def process(self, batch: ExampleBatch):
        yield self._decoder.DecodeBatch(batch.examples)


def add_statistics(examples: beam.PCollection, stats_path: str) -> None:
    """TFDV statistics of the ExampleBatches, on Beam (so on Dataflow too), written to `stats_path`."""
    import tensorflow_data_validation as tfdv

    _ = (examples
         | "Decode" >> beam.ParDo(_DecodeExamples())
         | "Statistics" >> tfdv.GenerateStatistics(tfdv.StatsOptions())
         | "WriteStatistics" >> tfdv.WriteStatisticsToBinaryFile(stats_path))


# TFX's context type of a whole pipeline (its name is the pipeline's name); every artifact of its runs belongs to it.
PIPELINE_CONTEXT = "pipeline"


def training_statistics(config: PipelineConfig, path: str = ""):
    """The training split's statistics: `path` if given, else the newest StatisticsGen output of this pipeline
    (`pipeline_name`) in MLMD: a fleet's tenants share one store, and one tenant's batch must never be judged
    against another's data.

    Returns (statistics or None, where they came from).
    """
    import tensorflow_data_validation as tfdv

    if path:
        return tfdv.load_stats_binary(path), path
    if is_remote(config.metadata_path) or not os.path.exists(config.metadata_path):
        return None, f"no ML Metadata store at {config.metadata_path}"
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.metadata import open_metadata

    store = open_metadata(config.metadata_path)
    context = store.get_context_by_type_and_name(PIPELINE_CONTEXT, config.pipeline_name)
    if context is None:
        return None, f"no run of pipeline {config.pipeline_name!r} in {config.metadata_path}"
    statistics = {t.id for t in store.get_artifact_types() if t.name.endswith("ExampleStatistics")}
    candidates = [a for a in store.get_artifacts_by_context(context.id)
                  if a.type_id in statistics and a.state == metadata_store_pb2.Artifact.LIVE]
    for artifact in sorted(candidates, key=lambda a: a.create_time_since_epoch, reverse=True):
        stats_file = os.path.join(artifact.uri, "Split-train", "FeatureStats.pb")
        if os.path.exists(stats_file):
            return tfdv.load_stats_binary(stats_file), stats_file
    return None, f"no training statistics of pipeline {config.pipeline_name!r} in {config.metadata_path}"


def judge_batch(config: PipelineConfig, batch_stats, training, training_source: str, title: str):
    """The gate's report for a batch: SERVING-environment anomalies, then drift against training data."""
    from validation import checks
    from validation.report import GatePolicy, Report

    policy = GatePolicy.from_config(config.validation)
    schema = checks.load_schema(config.schema_file)
    report = Report(title)
    report.findings = checks.schema_findings(batch_stats, schema, "batch", policy, checks.SERVING)
    report.notes.append(f"{batch_stats.datasets[0].num_examples} examples")
    if training is None:
        report.notes.append(f"drift vs training statistics not checked: {training_source}")
        return report
    # TFDV's training/serving skew comparison: the batch is the serving side.
    findings, distances = checks.compare(training, batch_stats, schema, "skew", policy)
    report.findings += findings
    report.distances = distances
    report.comparisons["skew"] = f"training statistics {training_source} vs this batch"
    return report
