"""The edge export of a real pipeline run (`pushed_run`): files, gate, runtime agreement, no TensorFlow."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from edge import export, metadata
from edge.runtime import EdgeModel
from contract.config import EdgeConfig, FeaturesConfig
from models import features
from tests.samples import read_examples

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def edge_run(pushed_run):
    config, summary = pushed_run
    assert summary.edge.get("pushed"), summary.edge
    return config, summary, summary.edge["version_dir"]


def _component_inputs(summary):
    """Artifact URIs the EdgeExport component consumed in the pushed run."""
    uri = {c.name: c.outputs for c in summary.components}
    return {
        "saved_model_dir": os.path.join(uri["Trainer"]["model"][0], "Format-Serving"),
        "transform_graph_dir": uri["Transform"]["transform_graph"][0],
        "transformed_train_pattern": os.path.join(uri["Transform"]["transformed_examples"][0], "Split-train", "*"),
        "raw_eval_pattern": os.path.join(uri["ImportExampleGen"]["examples"][0], "Split-eval", "*"),
    }


def test_run_pushes_int8_tflite_with_manifest_and_metadata(edge_run):
    config, summary, version_dir = edge_run
    assert os.path.dirname(version_dir) == config.model_edge_dir
    manifest = json.load(open(os.path.join(version_dir, "manifest.json")))
    assert manifest["source_model"] == summary.candidate_model + "/Format-Serving"
    assert manifest["serving_version"] == os.path.basename(summary.pushed_path)
    sizes = manifest["sizes"]  # the metadata (vocabularies, mapping) weighs the same in both files
    assert sizes["int8_without_metadata"] <= 0.3 * sizes["float_without_metadata"]
    assert sizes["int8"] == manifest["files"]["int8"]["bytes"] == os.path.getsize(
        os.path.join(version_dir, "model_int8.tflite"))
    assert manifest["gate"][0]["measure"] == "AUC drop beyond the 8-bit output's resolution"
    assert manifest["gate"][0]["value"] <= config.edge.max_auc_drop
    saved = manifest["metrics"]["saved_model"]
    assert manifest["auc_drop"] == pytest.approx(saved["auc"] - manifest["metrics"]["int8"]["auc"])
    # The gate measures the int8 model against the SavedModel's own scores rounded to the int8 output's
    # 256 levels. Rounding ties close scores (a tie counts half), so that AUC may differ from the float one;
    # how much depends on how bunched this small test model's scores are, so only its range is checked.
    int8_auc = manifest["metrics"]["int8"]["auc"]
    assert manifest["gate"][0]["value"] == pytest.approx(saved["auc_at_int8_resolution"] - int8_auc)
    assert 0.5 <= saved["auc_at_int8_resolution"] <= 1.0
    assert manifest["edgetpu"]["ready"], manifest["edgetpu"]
    model = open(os.path.join(version_dir, "model_int8.tflite"), "rb").read()
    described = metadata.read(model)
    assert described["metadata"]["name"] == config.model_name
    assert "vocabulary_company.txt" in described["associated_files"]
    numeric = next(t for t in described["metadata"]["subgraph_metadata"][0]["input_tensor_metadata"]
                   if t["name"] == "numeric")
    assert numeric["stats"]["min"] == pytest.approx([manifest["clip"][f"{k}_xf"][0] for k in config.features.numeric],
                                                    rel=1e-5)
    assert manifest["task"] == "binary" and manifest["classes"] == ["0", "1"]


def test_int8_model_is_integer_only_in_the_real_interpreter(edge_run):
    _, _, version_dir = edge_run
    interpreter = tf.lite.Interpreter(
        model_path=os.path.join(version_dir, "model_int8.tflite"),
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details() + interpreter.get_output_details():
        assert detail["dtype"] == np.int8 and list(detail["shape_signature"])[0] == 1
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops <= {"MINIMUM", "MAXIMUM", "CONCATENATION", "FULLY_CONNECTED", "ADD", "LOGISTIC", "RELU"}


def test_summary_prints_float_vs_int8(edge_run):
    from reports.summary import format_summary

    config, summary, version_dir = edge_run
    printed = format_summary(summary, config, {})
    assert "edge model           float TFLite   int8 TFLite   SavedModel" in printed
    assert f"edge model pushed to: {version_dir}" in printed
    # The path that made it: post-training quantization passed its gate, so no quantization-aware training.
    assert "  int8 by: post-training int8\n" in printed


def test_edge_runtime_agrees_with_serving_default_on_raw_examples(edge_run, small_sample):
    """Raw tf.Example features -> edge runtime (TF-free preprocessing + int8) vs the SavedModel."""
    _, summary, version_dir = edge_run
    serialized = [e.SerializeToString() for e in read_examples(os.path.join(small_sample, "Split-eval", "*"))]
    loaded = tf.saved_model.load(summary.candidate_model + "/Format-Serving")
    reference = export.serving_predictions(loaded, serialized, FeaturesConfig()) > 0.5
    records = export.raw_records(serialized, FeaturesConfig())
    edge = EdgeModel(version_dir).predict(records) > 0.5
    assert np.mean(edge == reference) >= 0.99
    # The mapping reproduces Transform itself: same ids, same z-scores (before clipping), packed in one input.
    assert EdgeModel(version_dir).encoder.input_names == ("numeric", "one_hot")
    entries = _assert_encoder_matches_transform(loaded, version_dir, serialized, records)
    assert any(entry["input"] == features.bucket_name("trip_seconds") for entry in entries)


def _assert_encoder_matches_transform(loaded, version_dir, serialized, records):
    """The TF-free encoder (unclipped) gives every z-score and one-hot id Transform gives; returns the entries."""
    transformed = loaded.signatures["transform_features"](examples=tf.constant(serialized))
    encoder = EdgeModel(version_dir, variant="float").encoder
    encoder.numeric = [(f, i, s, o, -np.inf, np.inf) for f, i, s, o, _, _ in encoder.numeric]
    encoded = [encoder.encode(r) for r in records]
    for column, (_, name, *_) in enumerate(encoder.numeric):
        np.testing.assert_allclose([n[column] for n, _ in encoded], transformed[name].numpy(), atol=1e-4)
    entries = encoder.mapping["one_hot"]["features"]
    for entry in entries:
        low, high = entry["offset"], entry["offset"] + entry["size"]
        ids = [[p - low for p in hot if low <= p < high] for _, hot in encoded]
        assert ids == [[i] for i in transformed[entry["input"]].numpy().reshape(-1).tolist()], entry["input"]
    return entries


def test_edge_encoder_fills_missing_values_as_transform_does(edge_run, small_sample):
    """An absent int column (trip_seconds: -1), float column and categorical id encode as Transform encodes them."""
    _, summary, version_dir = edge_run
    dropped = ("trip_seconds", "pickup_latitude", "trip_miles", "company")
    examples = read_examples(os.path.join(small_sample, "Split-eval", "*"), 8)
    for example in examples:
        for key in dropped:
            del example.features.feature[key]
    serialized = [e.SerializeToString() for e in examples]
    loaded = tf.saved_model.load(summary.candidate_model + "/Format-Serving")
    records = export.raw_records(serialized, FeaturesConfig())
    assert all(key not in r for r in records for key in dropped)
    _assert_encoder_matches_transform(loaded, version_dir, serialized, records)


def test_edge_cli_runs_without_tensorflow(edge_run, tmp_path, small_sample):
    """As on a device: only edge/ and contract/ copied, the project not installed, TensorFlow unimportable."""
    import sysconfig

    from contract.config import REPO_ROOT

    _, _, version_dir = edge_run
    device = tmp_path / "device"
    for package in ("edge", "contract"):
        shutil.copytree(os.path.join(REPO_ROOT, package), device / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    records = export.raw_records(
        [e.SerializeToString() for e in read_examples(os.path.join(small_sample, "Split-eval", "*"), 20)],
        FeaturesConfig())
    lines = tmp_path / "raw.jsonl"
    lines.write_text("".join(json.dumps({k: [v.decode() if isinstance(v, bytes) else v for v in values]
                                         for k, values in r.items()}) + "\n" for r in records))
    # Any attempt to import tensorflow (directly or through a dependency) fails the run.
    program = (
        "import sys, runpy\n"
        "class NoTensorFlow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'tf_keras', 'tensorflow_transform'):\n"
        "            raise ImportError('tensorflow is blocked in this test: ' + name)\n"
        "sys.meta_path.insert(0, NoTensorFlow())\n"
        f"sys.argv = ['edge', 'predict', {version_dir!r}, {str(lines)!r}]\n"
        "try:\n"
        "    runpy.run_module('edge', run_name='__main__')\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'yaml', 'models', 'tfx')]\n"
        "print('NO_TENSORFLOW_OK')\n")
    # -S: no site initialisation, so no editable install of the project; numpy and LiteRT from site-packages.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(device), sysconfig.get_paths()["purelib"]]))
    result = subprocess.run([sys.executable, "-S", "-c", program], capture_output=True, text=True, timeout=120,
                            cwd=str(device), env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[-1] == "NO_TENSORFLOW_OK"
    predictions = [json.loads(line) for line in out[:-1]]
    assert len(predictions) == 20 and all(0.0 <= p["probability"] <= 1.0 for p in predictions)
    expected = EdgeModel(version_dir).predict(records)
    np.testing.assert_allclose([p["probability"] for p in predictions], expected, atol=1e-6)


def test_gate_keeps_the_previous_edge_version(edge_run, tmp_path):
    """A real export whose int8 AUC drop exceeds the bound is not pushed; a failed one changes nothing."""
    config, summary, version_dir = edge_run
    base = str(tmp_path / "edge" / config.model_name)
    shutil.copytree(version_dir, os.path.join(base, "1"))
    # Version 1 stands for an earlier model's export (the same model would not be exported twice).
    manifest_path = os.path.join(base, "1", "manifest.json")
    manifest = json.load(open(manifest_path))
    with open(manifest_path, "w") as f:
        json.dump(dict(manifest, source_model="/models/previous"), f)
    before = sorted(os.listdir(os.path.join(base, "1")))
    inputs = _component_inputs(summary)
    settings = EdgeConfig(max_auc_drop=-1.0, representative_examples=100)
    result = export.export(**inputs, spec=FeaturesConfig(), settings=settings, model_base_dir=base,
                           model_name=config.model_name)
    assert not result.pushed
    assert "edge.max_auc_drop -1.0" in result.reason and f"{base} keeps version 1" in result.reason
    assert [(c["measure"], c["limit"]) for c in result.gate] == [
        ("AUC drop beyond the 8-bit output's resolution", -1.0)]
    assert result.metrics["int8"]["auc"] > 0.5
    with pytest.raises(FileNotFoundError, match="no TFRecord files match"):
        export.export(**dict(inputs, raw_eval_pattern=str(tmp_path / "nothing" / "*")), spec=FeaturesConfig(),
                      settings=EdgeConfig(), model_base_dir=base, model_name=config.model_name)
    assert os.listdir(base) == ["1"] and sorted(os.listdir(os.path.join(base, "1"))) == before


def test_gate_sample_is_read_round_robin_from_every_eval_file(tmp_path):
    """`edge.gate_examples` caps the gate's eval sample; the cap must not keep only the first shards."""
    for shard in range(3):
        with tf.io.TFRecordWriter(str(tmp_path / f"eval-{shard}.gz"), options="GZIP") as writer:
            for i in range(10):
                writer.write(f"{shard}-{i}".encode())
    pattern = str(tmp_path / "*.gz")

    sample = export._records(pattern, limit=6, spread=True)
    assert sorted(sample) == sorted(f"{s}-{i}".encode() for s in range(3) for i in range(2))
    assert export._records(pattern, limit=6) == [f"0-{i}".encode() for i in range(6)]  # calibration: file order
    assert len(export._records(pattern, spread=True)) == 30  # 0 = every record
