"""Caching that matches intent: Transform's module directory holds only what Transform needs.

TFX fingerprints every .py file in a module file's directory. models/ is
Transform's: features.py and preprocessing.py. The Keras model and Tuner
(models/trainer/) and the training infrastructure (training/) live elsewhere, so
editing them re-runs the Trainer at most, never Transform.
"""

import os
import shutil

import pytest

from contract.config import REPO_ROOT
from pipeline.pipeline import TRAINER_MODULE, TRANSFORM_MODULE, TUNER_MODULE, transform_custom_config
from tests.samples import small_config


def _fingerprint(module_file: str) -> str:
    """The hash TFX puts in the module wheel's version, hence in the component's cache key."""
    from tfx.components.util import udf_utils

    directory = os.path.dirname(module_file)
    return udf_utils._get_version_hash(directory, [f for f in os.listdir(directory) if f.endswith(".py")])


def _copy_of_the_code(root) -> str:
    for package in ("models", "training"):
        shutil.copytree(os.path.join(REPO_ROOT, package), os.path.join(root, package),
                        ignore=shutil.ignore_patterns("__pycache__"))
    return str(root)


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def test_transform_module_directory_holds_only_the_feature_code():
    directory = os.path.dirname(TRANSFORM_MODULE)
    assert sorted(f for f in os.listdir(directory) if f.endswith(".py")) == [
        "__init__.py", "features.py", "preprocessing.py"]
    assert os.path.dirname(TRAINER_MODULE) == os.path.dirname(TUNER_MODULE) != directory


@pytest.mark.slow
def test_editing_training_code_keeps_transform_cached(tmp_path, small_sample, monkeypatch):
    """A real Transform run on a copy of the code; the strategies and the Keras model change; Transform is cached."""
    from ml_metadata.proto import metadata_store_pb2
    from tfx import v1 as tfx

    from pipeline.pipeline import example_gen_configs
    from pipeline.metadata import node_name, open_metadata

    code = _copy_of_the_code(tmp_path / "code")
    config = small_config(str(tmp_path / "out"), small_sample)
    module_file = os.path.join(code, "models", "preprocessing.py")

    def run_transform() -> int:
        input_config, output_config = example_gen_configs(config)
        example_gen = tfx.components.ImportExampleGen(
            input_base=config.input_base, input_config=input_config, output_config=output_config)
        schema = tfx.components.ImportSchemaGen(schema_file=config.schema_file)
        transform = tfx.components.Transform(
            examples=example_gen.outputs["examples"], schema=schema.outputs["schema"], module_file=module_file,
            custom_config=transform_custom_config(config))
        monkeypatch.setattr("sys.argv", ["transform"])  # Beam parses sys.argv; pytest's flags are not Beam's
        tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
            pipeline_name="caching", pipeline_root=config.pipeline_root, enable_cache=True,
            components=[example_gen, schema, transform],
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                config.metadata_path)))
        store = open_metadata(config.metadata_path)
        runs = [e for e in store.get_executions() if node_name(store, e.id) == "Transform"]
        return max(runs, key=lambda e: e.id).last_known_state

    assert run_transform() == metadata_store_pb2.Execution.COMPLETE
    _append(os.path.join(code, "training", "strategies.py"), "\n# a change to the parameter-server code\n")
    _append(os.path.join(code, "models", "trainer", "model.py"), "\n# a change to the Keras model\n")
    assert run_transform() == metadata_store_pb2.Execution.CACHED

    before = _fingerprint(module_file)
    _append(os.path.join(code, "models", "features.py"), "\n# a change to the feature code\n")
    assert _fingerprint(module_file) != before  # ... which would re-run Transform
