"""The statistics the served model was trained on: what serving traffic's skew is measured against.

From ML Metadata when the served version's push record leads there: the push names the Model artifact,
its Trainer ran in one pipeline run, and that run's StatisticsGen wrote the train split's statistics
(`Split-train/FeatureStats.pb`). A model that reached the serving directory some other way (copied in,
pushed by another store) is measured against the configured train split, computed by TFDV here.
"""

import os
from typing import Optional, Tuple

from contract import versions
from contract.config import PipelineConfig
from contract.serving import PUSH_INFO

STATISTICS_FILE = os.path.join("Split-train", "FeatureStats.pb")


def _from_metadata(config: PipelineConfig, source_model: str) -> str:
    """The train split's FeatureStats.pb of the run that trained `source_model` ("" when not recorded)."""
    if not source_model or not os.path.exists(config.metadata_path):
        return ""
    from pipeline.metadata import OUTPUT_EVENTS, open_metadata

    store = open_metadata(config.metadata_path)
    uri = os.path.dirname(source_model) if os.path.basename(source_model) == "Format-Serving" else source_model
    models = store.get_artifacts_by_uri(uri)
    producers = {e.execution_id for e in store.get_events_by_artifact_ids([a.id for a in models])
                 if e.type in OUTPUT_EVENTS}
    for execution_id in producers:
        for context in store.get_contexts_by_execution(execution_id):
            if store.get_context_types_by_id([context.type_id])[0].name != "pipeline_run":
                continue
            for artifact in store.get_artifacts_by_context(context.id):
                kind = store.get_artifact_types_by_id([artifact.type_id])[0].name
                path = os.path.join(artifact.uri, STATISTICS_FILE)
                if kind == "ExampleStatistics" and os.path.exists(path):
                    return path
    return ""


def training_statistics(config: PipelineConfig, version: Optional[int] = None) -> Tuple[object, str]:
    """(DatasetFeatureStatisticsList or None, where it came from) for serving `version` (default the newest)."""
    import tensorflow_data_validation as tfdv

    served = versions.list_versions(config.model_serving_dir) if os.path.isdir(config.model_serving_dir) else []
    version = version if version is not None else (served[-1] if served else None)
    record = versions.read_record(os.path.join(config.model_serving_dir, str(version)), PUSH_INFO) \
        if version is not None else None
    path = _from_metadata(config, (record or {}).get("source_model", ""))
    if path:
        return tfdv.load_stats_binary(path), path
    from formats.spans import latest_span_files

    _, files = latest_span_files(config.input_base, config.data.train_pattern or config.data.pattern)
    if not files:
        return None, f"no training statistics: no ML Metadata record of version {version} and no train split files"
    from validation import checks

    return checks.statistics_of(files), f"{len(files)} train split file(s) under {config.input_base}"
