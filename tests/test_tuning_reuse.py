"""`tuner.retune: on_change`: what the tuning key covers, and when no earlier search is looked for.

The reuse itself (a real Tuner run, then a run on new data that imports its result) is in
tests/test_pipeline_e2e.py::test_worse_candidate_is_not_blessed_and_serving_is_unchanged.
"""

import json
import shutil

import pytest

from contract.config import ConfigError, load_config
from pipeline import tuning_reuse
from pipeline.pipeline import create_components, create_pipeline, read_prior_runs, tuner_custom_config


def _key(*overrides):
    return tuner_custom_config(load_config(None, list(overrides)))[tuning_reuse.KEY_PROPERTY]


def test_key_changes_with_what_a_search_depends_on():
    base = _key()
    for change in ("tuner.max_trials=7", "tuner.algorithm=bayesian", "tuner.train_steps=300",
                   "training.batch_size=64", "training.seed=5", "features.vocab_top_k=50",
                   "features.numeric=[trip_miles, fare]"):
        assert _key(change) != base, change


def test_key_ignores_what_a_search_does_not_depend_on():
    base = _key()
    for change in ("tuner.retune=on_change", "training.strategy=mirrored", "training.train_steps=5000",
                   "evaluator.min_auc=0.9", "edge.enabled=false", "data.input_base=/elsewhere"):
        assert _key(change) == base, change


def test_key_changes_with_the_schema_file(tmp_path):
    config = load_config(None)
    copy = tmp_path / "schema.pbtxt"
    shutil.copy(config.schema_file, copy)
    same = _key(f"schema_file={copy}")
    with open(copy, "a", encoding="utf-8") as f:
        f.write("\n# an edited schema\n")
    assert same == _key() and _key(f"schema_file={copy}") != same


def test_no_store_yet_means_the_tuner_runs(tmp_path):
    config = load_config(None, [f"output_dir={tmp_path}", "tuner.retune=on_change"])
    ids = {c.id for c in create_components(config)}
    assert "Tuner" in ids and tuning_reuse.IMPORTER_ID not in ids
    assert tuning_reuse.last_tuned(config, "0" * 64) is None


def test_a_store_elsewhere_is_never_read_for_reuse(tmp_path, monkeypatch):
    """Vertex AI compiles with its own MLMD connection: this machine's store must not be consulted, and building
    the DAG reads no store at all (the runner settles what it needs first)."""
    from ml_metadata.proto import metadata_store_pb2

    config = load_config(None, [f"output_dir={tmp_path}", "tuner.retune=on_change"])
    monkeypatch.setattr(tuning_reuse, "last_tuned", lambda *a: pytest.fail("looked for a local search"))
    prior = read_prior_runs(config, local_store=False)
    assert prior.hyperparameters == ""
    dag = create_pipeline(config, prior, metadata_connection_config=metadata_store_pb2.ConnectionConfig())
    assert {c.id for c in create_pipeline(config).components} == {c.id for c in dag.components}
    assert "Tuner" in {c.id for c in dag.components}
    custom = json.loads({c.id: c for c in dag.components}["Tuner"].exec_properties["custom_config"])
    assert "retune" not in custom["tuner"] and custom[tuning_reuse.KEY_PROPERTY]


def test_bad_retune_value_is_named():
    with pytest.raises(ConfigError, match="tuner.retune: 'sometimes'"):
        load_config(None, ["tuner.retune=sometimes"])
