"""The pipeline's two Resolver nodes: the Evaluator's baseline model and the rolling window of spans.

Resolvers are not components: they run no executor, they pick artifacts from ML
Metadata for the components after them.

The baseline (`BaselineResolver`) is the latest blessed model of this pipeline that is
not the candidate. TFX's LatestBlessedModelStrategy resolves the latest blessed model, whatever the
candidate is. On a second run with nothing changed the Trainer is cached and its
model is the one the first run blessed, so the baseline became the candidate
itself: the Evaluator's inputs changed (no baseline -> baseline), it re-ran to
compare the model with itself, and the Pusher and the edge export re-ran behind
it. Leaving the candidate out keeps an unchanged re-run's inputs equal to the
first run's, so all of it is cached; a new candidate is still compared with the
last blessed (served) model.

Channels without a producer are scoped to the pipeline's context, so a tenant's
baseline comes from its own pipeline only. On Vertex AI the same rule is a
query filter: TFX's Vertex compiler knows only its own two strategies, so the
node compiles as LatestBlessedModelStrategy (`as_tfx_strategy`) and
`runners/kubeflow_v2.py` adds the candidate to the blessing query
(`exclude_candidate_filter`).

The rolling window of spans (`LatestSpansStrategy`) is what Transform, Tuner and Trainer
learn from. ImportExampleGen ingests one span per run (the latest matching `{SPAN}`). A
model that should learn from the last N spans (weeks, months) needs the
Examples of earlier runs too: this resolver strategy picks them from ML
Metadata, one artifact per span (the newest, if a span was re-ingested), for
the N most recent spans.
"""

from typing import Any, Dict, List, Optional

from tfx import types
from tfx.components.evaluator import constants
from tfx.dsl.components.common import resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.types import standard_artifacts

from validation.spans import span_of

MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"
CANDIDATE_KEY = "candidate"


def latest_blessed_other_than(models: List[types.Artifact], blessings: List[types.Artifact],
                              candidates: List[types.Artifact]) -> Dict[str, List[types.Artifact]]:
    """The newest model with a positive blessing, skipping the candidates, and that blessing ([] if none).

    TFX's own LatestBlessedModelStrategy picks, from the models that are not candidates.
    """
    excluded = {c.id for c in candidates}
    others = [m for m in models if m.id not in excluded]
    return LatestBlessedModelStrategy().resolve_artifacts(None, {MODEL_KEY: others, BLESSING_KEY: blessings})


class LatestBlessedOtherModelStrategy(resolver.ResolverStrategy):
    """Resolves `model`/`model_blessing` to the latest blessed model that is not in `candidate`."""

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        missing = {MODEL_KEY, BLESSING_KEY, CANDIDATE_KEY} - set(input_dict)
        if missing:
            raise ValueError(f"LatestBlessedOtherModelStrategy needs the input channels {sorted(missing)}")
        found = latest_blessed_other_than(input_dict[MODEL_KEY], input_dict[BLESSING_KEY],
                                          input_dict[CANDIDATE_KEY])
        return dict(found, **{CANDIDATE_KEY: input_dict[CANDIDATE_KEY]})


class BaselineResolver(resolver.Resolver):
    """The Resolver node of the baseline, with `candidate` (the Trainer's model) as its third input.

    `as_tfx_strategy = True` shows it as TFX's LatestBlessedModelStrategy over `model`
    and `model_blessing` alone: the one form TFX's Vertex AI compiler accepts.
    """

    def __init__(self, candidate: types.BaseChannel):
        super().__init__(strategy_class=LatestBlessedOtherModelStrategy,
                         model=types.Channel(type=standard_artifacts.Model),
                         model_blessing=types.Channel(type=standard_artifacts.ModelBlessing),
                         **{CANDIDATE_KEY: candidate})
        self.as_tfx_strategy = False

    @classmethod
    def get_class_type(cls) -> str:
        """TFX's Resolver type: the orchestrators run a node of that type as a system node (no executor)."""
        return resolver.Resolver.get_class_type()

    @property
    def inputs(self) -> Dict[str, types.BaseChannel]:
        found = super().inputs
        return {k: v for k, v in found.items() if k != CANDIDATE_KEY} if self.as_tfx_strategy else found

    @property
    def exec_properties(self) -> Dict[str, Any]:
        found = super().exec_properties
        if self.as_tfx_strategy:
            found = dict(found, **{resolver.RESOLVER_STRATEGY_CLASS: LatestBlessedModelStrategy})
        return found


def exclude_candidate_filter(query: str, candidate_input: str) -> str:
    """A Vertex AI ModelBlessing query that also leaves out the blessings of the candidate (by its URI)."""
    return (f"{query} AND metadata.{constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY}.string_value!="
            f"\"{{{{$.inputs.artifacts['{candidate_input}'].uri}}}}\"")


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
