"""Configuration: defaults, YAML, command-line overrides, and the errors people see."""

import os

import pytest
import yaml

from contract.config import PipelineConfig, load_config
from contract.errors import ConfigError


def test_defaults_need_no_file():
    config = load_config()
    assert config.data.input_base == ""
    assert config.training.train_steps > 0
    assert config.model_serving_dir == os.path.join(config.serving_dir, "taxi")
    assert config.features.label_column == "tips"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: %s\ntraining:\n  train_steps: 500\ntuner:\n  enabled: false\n" % tmp_path)
    config = load_config(str(path), ["training.train_steps=700", "evaluator.slice_features=company,payment_type"])
    assert config.training.train_steps == 700
    assert config.tuner.enabled is False
    assert config.evaluator.slice_features == ["company", "payment_type"]
    assert config.metadata_path == str(tmp_path / "metadata.sqlite")
    assert config.serving_dir == str(tmp_path / "serving")


def test_explicit_path_survives_output_dir_change(tmp_path):
    config = load_config(None, [f"output_dir={tmp_path}", "serving_dir=/srv/models"])
    assert config.serving_dir == "/srv/models"
    assert config.pipeline_root == str(tmp_path / "pipeline_root")


@pytest.mark.parametrize("override, message", [
    ("training.steps=5", "unknown setting 'training.steps'"),
    ("training.train_steps=many", "training.train_steps: expected a int"),
    ("tuner.enabled=perhaps", "tuner.enabled: expected true/false"),
    ("tuner.algorithm=grid", "tuner.algorithm: 'grid' is not one of"),
    ("training.batch_size=0", "training.batch_size must be positive"),
    ("schema_file=/nope/schema.pbtxt", "schema_file /nope/schema.pbtxt does not exist"),
    ("data.hash_buckets=[4]", "hash_buckets needs two positive numbers"),
    ("features.numeric=[tips]", "label column 'tips' is also an input"),
    ("nonsense", "must look like section.key=value"),
    ("edge.gate_examples=-5", "edge.gate_examples must be 0 .all eval examples. or positive, got -5"),
])
def test_bad_settings_name_the_setting(override, message):
    extra = ["data.pattern=*"] if "hash_buckets" in override else []
    with pytest.raises((ConfigError, ValueError), match=message):
        load_config(None, [override] + extra)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does-not-exist.yaml does not exist"):
        load_config(str(tmp_path / "does-not-exist.yaml"))


def test_checked_in_example_config_loads():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(here, "pipeline", "configs", "default.yaml")
    config = load_config(path)
    assert config.to_dict() == PipelineConfig().to_dict()
    # Every section and every setting in it is written out, not only those whose default matches.
    with open(path, encoding="utf-8") as f:
        listed = yaml.safe_load(f)
    for section, values in PipelineConfig().to_dict().items():
        if isinstance(values, dict):
            assert sorted(listed.get(section) or {}) == sorted(values), section


def test_remote_paths_are_kept_as_they_are():
    from pipeline import inputs

    config = load_config(None, ["data.input_base=gs://bucket/taxi", "output_dir=gs://bucket/out"])
    assert config.input_base == "gs://bucket/taxi"
    assert config.pipeline_root == "gs://bucket/out/pipeline_root"
    assert inputs.check_inputs(config) == {"train": -1, "eval": -1}
