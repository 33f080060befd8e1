"""The atomic, monotonic push to a TF Serving model base path."""

import json
import os

import pytest

from components import serving_pusher
from contract import versions
from contract.serving import PUSH_INFO, WARMUP_FILE


def _saved_model(path):
    os.makedirs(os.path.join(path, "variables"))
    open(os.path.join(path, "saved_model.pb"), "wb").write(b"graph")
    open(os.path.join(path, "variables", "variables.index"), "wb").write(b"index")
    return str(path)


def test_versions_are_numeric_directories_only(tmp_path):
    for name in ("3", "12", ".incomplete-13-99", "notes"):
        (tmp_path / name).mkdir()
    assert versions.list_versions(str(tmp_path)) == [3, 12]
    assert versions.list_versions(str(tmp_path / "missing")) == []


def test_next_version_never_goes_backwards():
    assert versions.next_version([], now=1000) == 1000
    assert versions.next_version([5], now=1000) == 1000
    # A clock behind the latest version (skew, or several pushes in one second).
    assert versions.next_version([2000], now=1000) == 2001


def test_push_writes_model_and_push_info(tmp_path):
    model = _saved_model(tmp_path / "model")
    final = serving_pusher.push_atomically(model, str(tmp_path / "serving"), 7, {"source_model": model})
    assert sorted(os.listdir(final)) == ["assets.extra", "saved_model.pb", "variables"]
    assert json.load(open(os.path.join(final, PUSH_INFO)))["source_model"] == model
    assert os.listdir(tmp_path / "serving") == ["7"]


def test_missing_model_is_refused_before_anything_is_written(tmp_path):
    base = tmp_path / "serving"
    _saved_model(base / "1")
    with pytest.raises(ValueError, match="no SavedModel at .*no-such-model"):
        serving_pusher.push_atomically(str(tmp_path / "no-such-model"), str(base), 2, {})
    assert sorted(os.listdir(base)) == ["1"]


def test_failure_mid_push_leaves_no_version_and_no_partial_directory(tmp_path, monkeypatch):
    base = tmp_path / "serving"
    _saved_model(base / "1")
    model = _saved_model(tmp_path / "model")

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(serving_pusher.io_utils, "write_string_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        serving_pusher.push_atomically(model, str(base), 2, {})
    assert sorted(os.listdir(base)) == ["1"]


def test_warmup_requests_are_prediction_logs_of_growing_batches_without_the_label(tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    examples = []
    for fare in range(7):
        example = tf.train.Example()
        example.features.feature["fare"].float_list.value.append(float(fare))
        example.features.feature["tips"].float_list.value.append(1.0)
        examples.append(example)
    records = serving_pusher.warmup_records(examples, "taxi", drop_features=["tips"])
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3 + ["classify_log"]
    classify = logs[-1].classify_log.request
    assert (classify.model_spec.name, classify.model_spec.signature_name) == ("taxi", "classify")
    assert list(classify.input.example_list.examples) == [tf.train.Example.FromString(
        logs[0].predict_log.request.inputs["examples"].string_val[0])]
    regress = prediction_log_pb2.PredictionLog.FromString(
        serving_pusher.warmup_records(examples[:1], "baskets", task="regression")[-1]).regress_log.request
    assert regress.model_spec.signature_name == "regress" and len(regress.input.example_list.examples) == 1
    requests = [log.predict_log.request for log in logs[:-1]]
    assert [len(r.inputs["examples"].string_val) for r in requests] == [1, 2, 4]
    assert {(r.model_spec.name, r.model_spec.signature_name) for r in requests} == {("taxi", "serving_default")}
    sent = [tf.train.Example.FromString(s) for r in requests for s in r.inputs["examples"].string_val]
    assert [e.features.feature["fare"].float_list.value[0] for e in sent] == list(range(7))
    assert not any("tips" in e.features.feature for e in sent)

    model = _saved_model(tmp_path / "model")
    final = serving_pusher.push_atomically(model, str(tmp_path / "serving"), 3, {}, records)
    written = list(tf.data.TFRecordDataset(os.path.join(final, WARMUP_FILE)))
    assert [w.numpy() for w in written] == records
