"""The rolling window of spans that Transform, Tuner and Trainer learn from.

ImportExampleGen ingests one span per run (the latest matching `{SPAN}`). A
model that should learn from the last N spans (weeks, months) needs the
Examples of earlier runs too: this resolver strategy picks them from ML
Metadata, one artifact per span (the newest, if a span was re-ingested), for
the N most recent spans.
"""

from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver

SPAN_PROPERTY = "span"  # what ExampleGen records on every Examples artifact


def span_of(artifact: types.Artifact) -> int:
    """The span of an Examples artifact: ImportExampleGen records it as a custom property (0 without spans)."""
    if artifact.has_custom_property(SPAN_PROPERTY):
        value = artifact.get_custom_property(SPAN_PROPERTY)
        return int(value)
    return int(artifact.span) if artifact.has_property(SPAN_PROPERTY) else 0


def latest_spans(artifacts: List[types.Artifact], num_spans: int) -> List[types.Artifact]:
    """The newest artifact of each of the `num_spans` most recent spans, latest span first."""
    newest: Dict[int, types.Artifact] = {}
    for artifact in artifacts:
        span = span_of(artifact)
        if span not in newest or artifact.id > newest[span].id:
            newest[span] = artifact
    return [newest[span] for span in sorted(newest, reverse=True)[:num_spans]]


class LatestSpansStrategy(resolver.ResolverStrategy):
    """Resolves every input channel to its artifacts of the `num_spans` latest spans."""

    def __init__(self, num_spans: int):
        if num_spans < 1:
            raise ValueError(f"num_spans must be at least 1, got {num_spans}")
        self._num_spans = num_spans

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        resolved = {key: latest_spans(artifacts, self._num_spans) for key, artifacts in input_dict.items()}
        return resolved if all(resolved.values()) else None
