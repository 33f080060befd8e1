"""The rolling window of spans: which spans it holds, which of them earlier runs ingested, and which to ingest first.

Each run's ExampleGen ingests the latest span; the window's resolver
(`resolvers.LatestSpansStrategy`) then gives Transform, Tuner and Trainer the
Examples of the `data.span_window` latest spans found in ML Metadata. A data lake
that already holds many partitions when the pipeline first points at it (or a
window made wider) has spans no run ingested: the runner ingests each of them
first with the same ExampleGen node, restricted to that span by TFX's static
RangeConfig (the backfill TFX's range config exists for), so that the first run
already trains on the last N partitions. Spans are numbered as ExampleGen numbers
them (`formats.spans`): `{SPAN}`, or a date's day number.
"""

from __future__ import annotations

import os
from typing import List, Set, Tuple

from contract.config import PipelineConfig, is_remote
from formats.spans import span_files
from pipeline.metadata import OUTPUT_EVENTS, open_metadata
from validation.spans import SPAN_PROPERTY


def spans_on_disk(config: PipelineConfig) -> List[int]:
    """The spans every split pattern has files for, oldest first ([] without span patterns or for remote data)."""
    if is_remote(config.input_base) or not config.data.spanned_pattern:
        return []
    found = [set(span_files(config.input_base, pattern)) for pattern in config.split_patterns.values()]
    return sorted(set.intersection(*found)) if found else []


def window_spans(config: PipelineConfig) -> List[int]:
    """The `data.span_window` latest spans on disk, oldest first."""
    return spans_on_disk(config)[-config.data.span_window:]


def ingested_spans(config: PipelineConfig, node_id: str) -> Set[int]:
    """Spans the ExampleGen node `node_id` of this pipeline wrote Examples of in a completed run."""
    if not os.path.exists(config.metadata_path):
        return set()
    store = open_metadata(config.metadata_path)
    context = store.get_context_by_type_and_name("node", f"{config.pipeline_name}.{node_id}")
    if context is None:
        return set()
    done = [e.id for e in store.get_executions_by_context(context.id)
            if e.last_known_state in (e.COMPLETE, e.CACHED)]
    ids = [event.artifact_id for event in store.get_events_by_execution_ids(done) if event.type in OUTPUT_EVENTS]
    return {artifact.custom_properties[SPAN_PROPERTY].int_value for artifact in store.get_artifacts_by_id(ids)
            if SPAN_PROPERTY in artifact.custom_properties}


def spans_to_backfill(config: PipelineConfig, node_id: str) -> Tuple[int, ...]:
    """Spans of the window, but the latest (the run's own ExampleGen ingests it), that no run ingested yet."""
    if config.data.span_window < 2:
        return ()
    window = window_spans(config)
    ingested = ingested_spans(config, node_id)
    return tuple(span for span in window[:-1] if span not in ingested)
