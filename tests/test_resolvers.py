"""The baseline resolver's choice: the latest blessed model that is not the candidate.

Whole runs are in tests/test_pipeline_e2e.py (an unchanged re-run all cached, a worse
candidate compared with the first model) and tests/test_fleet_runs.py (tenants).
"""

import pytest
from tfx.types import standard_artifacts

from pipeline.resolvers import (BLESSING_KEY, CANDIDATE_KEY, MODEL_KEY, LatestBlessedOtherModelStrategy,
                                latest_blessed_other_than)


def _model(artifact_id):
    model = standard_artifacts.Model()
    model.id = artifact_id
    return model


def _blessing(artifact_id, model_id, blessed=True):
    blessing = standard_artifacts.ModelBlessing()
    blessing.id = artifact_id
    blessing.set_int_custom_property("current_model_id", model_id)
    blessing.set_int_custom_property("blessed", int(blessed))
    return blessing


MODELS = [_model(1), _model(2), _model(3)]
BLESSINGS = [_blessing(10, 1), _blessing(11, 2), _blessing(12, 3, blessed=False)]


def _ids(found):
    return {key: [a.id for a in found[key]] for key in found}


def test_the_candidate_blessed_by_an_earlier_run_is_not_its_own_baseline():
    assert _ids(latest_blessed_other_than(MODELS, BLESSINGS, [MODELS[1]])) == {MODEL_KEY: [1], BLESSING_KEY: [10]}


def test_a_new_candidate_gets_the_latest_blessed_model():
    new = _model(4)
    assert _ids(latest_blessed_other_than(MODELS + [new], BLESSINGS, [new])) == {MODEL_KEY: [2], BLESSING_KEY: [11]}


def test_the_only_blessed_model_as_candidate_has_no_baseline():
    assert _ids(latest_blessed_other_than(MODELS[:1], BLESSINGS[:1], [MODELS[0]])) == {MODEL_KEY: [],
                                                                                     BLESSING_KEY: []}


def test_the_strategy_passes_the_candidate_through_and_names_a_missing_channel():
    strategy = LatestBlessedOtherModelStrategy()
    found = strategy.resolve_artifacts(None, {MODEL_KEY: MODELS, BLESSING_KEY: BLESSINGS, CANDIDATE_KEY: [MODELS[0]]})
    assert _ids(found) == {MODEL_KEY: [2], BLESSING_KEY: [11], CANDIDATE_KEY: [1]}
    with pytest.raises(ValueError, match="candidate"):
        strategy.resolve_artifacts(None, {MODEL_KEY: MODELS, BLESSING_KEY: BLESSINGS})
