"""The local server over real pushed models, through the real `tensorflow_serving.apis` stubs.

Every server binds an ephemeral loopback port and serves a copy of `pushed_run`'s
serving directory, so nothing here changes the shared run.
"""

import glob
import json
import os
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, predict_pb2,
                                     prediction_log_pb2, prediction_service_pb2_grpc, model_service_pb2_grpc,
                                     regression_pb2)
from tensorflow_serving.config import model_server_config_pb2

from contract.processes import free_port
from contract.serving import WARMUP_FILE
from contract.versions import list_versions
from cli import serving as serving_cli
from serving import model_config
from serving.client import ServingClient, read_examples
from contract.config import ServingConfig
from serving.process import ModelServer
from tests.samples import read_examples as read_tfrecords

pytestmark = pytest.mark.slow
MODEL = "taxi"
MAX_BATCH = 16
POLL = 0.5


def _copy_serving(pushed_run, root):
    config, _ = pushed_run
    serving_dir = os.path.join(str(root), "serving")
    shutil.copytree(config.serving_dir, serving_dir)
    base = os.path.join(serving_dir, MODEL)
    path = os.path.join(serving_dir, "models.config")
    model_config.ensure(path, MODEL, base)
    return path, base


def _start(path, root, label_spec=None, **overrides):
    settings = ServingConfig(port=0, rest_port=0, poll_interval_seconds=POLL, max_batch_size=MAX_BATCH,
                             request_log_dir=os.path.join(str(root), "request_logs"), **overrides)
    server = ModelServer(path, settings, label_spec)
    server.start()
    return server


@pytest.fixture(scope="module")
def served(pushed_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    path, base = _copy_serving(pushed_run, root)
    server = _start(path, root, request_log_sample_rate=1.0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield server, prediction_service_pb2_grpc.PredictionServiceStub(channel), base
    channel.close()
    server.stop()


@pytest.fixture(scope="module")
def eval_rows(pushed_run):
    config, _ = pushed_run
    examples = read_tfrecords(os.path.join(config.data.input_base, "Split-eval", "*"), 40)
    for example in examples:
        del example.features.feature["tips"]
    return examples


def _request(examples, **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", MODEL)
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["examples"].CopyFrom(
        tf.make_tensor_proto([e.SerializeToString() for e in examples], dtype=tf.string))
    return request


def _in_process(base, version, examples):
    signature = tf.saved_model.load(os.path.join(base, str(version))).signatures["serving_default"]
    return signature(examples=tf.constant([e.SerializeToString() for e in examples]))["probabilities"].numpy()


def test_push_wrote_warmup_requests_from_the_eval_split(pushed_run, eval_rows):
    config, _ = pushed_run
    version = list_versions(config.model_serving_dir)[-1]
    records = list(tf.data.TFRecordDataset(os.path.join(config.model_serving_dir, str(version), WARMUP_FILE)))
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in records]
    assert logs[-1].classify_log.request.model_spec.signature_name == "classify"
    requests = [log.predict_log.request for log in logs[:-1]]
    assert len(requests) == config.serving.warmup_requests
    assert [len(r.inputs["examples"].string_val) for r in requests] == [2 ** i for i in range(len(requests))]
    first = tf.train.Example.FromString(requests[0].inputs["examples"].string_val[0])
    assert first == eval_rows[0]  # the first eval example, label removed
    assert {r.model_spec.name for r in requests} == {config.model_name}


def test_grpc_predictions_equal_the_saved_model_in_process(served, eval_rows):
    server, stub, base = served
    version = list_versions(base)[-1]
    rows = eval_rows[:MAX_BATCH]
    response = stub.Predict(_request(rows), timeout=30)
    assert response.model_spec.version.value == version
    over_grpc = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(over_grpc, _in_process(base, version, rows), rtol=1e-6, atol=1e-7)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(served, eval_rows):
    server, stub, base = served
    version = list_versions(base)[-1]
    expected = _in_process(base, version, eval_rows)
    loaded = server.manager.resolve(_request([], version=version).model_spec)
    calls_before, requests_before = loaded.batching_stats()
    answers = {}

    def send(i):
        answers[i] = tf.make_ndarray(stub.Predict(_request([eval_rows[i]]), timeout=30).outputs["probabilities"])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(eval_rows))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(len(eval_rows)):
        np.testing.assert_allclose(answers[i][0], expected[i], rtol=1e-6, atol=1e-7)
    calls, requests = loaded.batching_stats()
    assert requests - requests_before == len(eval_rows)
    assert calls - calls_before < len(eval_rows), "no two concurrent requests were merged"


def test_metadata_and_status_over_the_real_stubs(served):
    server, stub, base = served
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    response = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    serving_default = signatures.signature_def["serving_default"]
    assert serving_default.inputs["examples"].dtype == tf.string.as_datatype_enum
    assert "probabilities" in serving_default.outputs

    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = MODEL
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=30)
    channel.close()
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (list_versions(base)[-1], get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def _garbage(examples):
    request = _request(examples[:3])
    request.inputs["examples"].string_val[1] = b"\xff\x00 this is not a tf.Example \x13"
    return request


def _wrong_dtype(examples):
    request = _request([])
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32))
    return request


def _wrong_input_name(examples):
    request = _request([])
    request.inputs["fare"].CopyFrom(request.inputs.pop("examples"))
    return request


BAD_REQUESTS = {
    "unknown model": (lambda ex: _request(ex[:1], name="no_such_model"), grpc.StatusCode.NOT_FOUND,
                      "this server serves taxi"),
    "unknown version": (lambda ex: _request(ex[:1], version=7), grpc.StatusCode.NOT_FOUND,
                        "version 7 of model 'taxi' is not being served; versions served: ["),
    "unknown label": (lambda ex: _request(ex[:1], version_label="gold"), grpc.StatusCode.INVALID_ARGUMENT,
                      "Unrecognized servable version label: gold"),
    "wrong input name": (_wrong_input_name, grpc.StatusCode.INVALID_ARGUMENT,
                         "send exactly: examples (DT_STRING)"),
    "wrong dtype": (_wrong_dtype, grpc.StatusCode.INVALID_ARGUMENT,
                    "'examples' has dtype DT_FLOAT; the signature expects DT_STRING (serialized tf.Example"),
    "garbage examples": (_garbage, grpc.StatusCode.INVALID_ARGUMENT,
                         "Each value of 'examples' must be a serialized tf.Example"),
    "batch over the limit": (lambda ex: _request(ex[:MAX_BATCH + 1]), grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"batch of {MAX_BATCH + 1} is over this server's limit of {MAX_BATCH}"),
    "empty request": (lambda ex: predict_pb2.PredictRequest(model_spec={"name": MODEL}),
                      grpc.StatusCode.INVALID_ARGUMENT, "the request has no inputs; send examples (DT_STRING)"),
    "empty batch": (lambda ex: _request([]), grpc.StatusCode.INVALID_ARGUMENT, "batch of 0"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_gets_its_status_and_the_server_keeps_serving(served, eval_rows, name):
    _, stub, _ = served
    build, code, message = BAD_REQUESTS[name]
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(build(eval_rows), timeout=30)
    assert raised.value.code() == code
    assert message in raised.value.details()
    assert stub.Predict(_request(eval_rows[:2]), timeout=30).outputs["probabilities"].tensor_shape.dim[0].size == 2


def test_garbage_in_one_request_does_not_fail_its_batch_neighbours(served, eval_rows):
    _, stub, _ = served
    outcomes = []

    def send(request):
        try:
            stub.Predict(request, timeout=30)
            outcomes.append("ok")
        except grpc.RpcError as error:
            outcomes.append(error.code())

    requests = [_garbage(eval_rows)] + [_request(eval_rows[i:i + 1]) for i in range(7)]
    threads = [threading.Thread(target=send, args=(r,)) for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(str, outcomes)) == sorted(["ok"] * 7 + [str(grpc.StatusCode.INVALID_ARGUMENT)])


def test_classify_on_the_pushed_model_equals_the_saved_model_in_process(served, eval_rows):
    """The Trainer's `classify` signature answers TF Serving's Classify; signatures that do not fit it refuse it."""
    _, stub, base = served
    version = list_versions(base)[-1]
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = MODEL
    classify.model_spec.signature_name = "classify"
    classify.input.example_list.examples.extend(eval_rows[:MAX_BATCH])
    response = stub.Classify(classify, timeout=30)
    assert response.model_spec.version.value == version and response.model_spec.signature_name == "classify"
    expected = _in_process(base, version, eval_rows[:MAX_BATCH]).reshape(-1)
    rows = response.result.classifications
    assert [[c.label for c in row.classes] for row in rows] == [["0", "1"]] * MAX_BATCH
    np.testing.assert_allclose([row.classes[1].score for row in rows], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([row.classes[0].score for row in rows], 1 - expected, rtol=1e-6, atol=1e-6)

    # Context features are merged into every example, the example's own features winning (TF Serving's rule).
    context = tf.train.Example()
    context.features.feature["payment_type"].CopyFrom(eval_rows[0].features.feature["payment_type"])
    with_context = classification_pb2.ClassificationRequest(model_spec=classify.model_spec)
    with_context.input.example_list_with_context.context.CopyFrom(context)
    with_context.input.example_list_with_context.examples.extend(eval_rows[:4])
    scores = [row.classes[1].score for row in stub.Classify(with_context, timeout=30).result.classifications]
    np.testing.assert_allclose(scores, expected[:4], rtol=1e-6, atol=1e-7)

    classify.model_spec.signature_name = ""
    with pytest.raises(grpc.RpcError) as raised:
        stub.Classify(classify, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("Expected one or two output Tensors, found 4")  # TF Serving's text
    assert "Signatures that fit Classify: 'classify'" in raised.value.details()
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = MODEL
    regress.input.example_list.examples.extend(eval_rows[:2])
    with pytest.raises(grpc.RpcError, match="Expected one output Tensor.*No signature of taxi version .* fits "
                                            "Regress; use Predict"):
        stub.Regress(regress, timeout=30)


def _logged(directory):
    from contract import request_log

    return request_log.read(sorted(glob.glob(os.path.join(directory, "*.parquet")))).to_pylist()


def test_every_answer_carries_a_request_id_and_the_log_records_it(served, eval_rows):
    """The caller's x-request-id comes back (success or failure), a new one when none was sent, a malformed one
    is refused; the request log holds each request under its id with its version, examples and answers."""
    server, stub, _ = served
    before = time.time()
    response, call = stub.Predict.with_call(_request(eval_rows[:5]), metadata=[("x-request-id", "order-17")],
                                            timeout=30)
    assert dict(call.initial_metadata())["x-request-id"] == "order-17"
    _, call = stub.Predict.with_call(_request(eval_rows[:1]), timeout=30)
    generated = dict(call.initial_metadata())["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = MODEL, "classify"
    classify.input.example_list.examples.extend(eval_rows[:2])
    stub.Classify(classify, metadata=[("x-request-id", "order-18")], timeout=30)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Predict(_request(eval_rows[:1]), metadata=[("x-request-id", "no spaces")], timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-request-id 'no spaces' is not a request id" in refused.value.details()
    with pytest.raises(grpc.RpcError) as wrong:
        stub.Predict(_request(eval_rows[:1], version_label="nope"), metadata=[("x-request-id", "order-19")],
                     timeout=30)
    assert dict(wrong.value.initial_metadata())["x-request-id"] == "order-19"
    server.loggers.flush()
    rows = _logged(os.path.join(server.serving.request_log_dir, MODEL))
    by_id = {}
    for row in rows:
        by_id.setdefault(row["request_id"], []).append(row)
    order = by_id["order-17"]
    assert [r["index"] for r in order] == [0, 1, 2, 3, 4]
    assert [r["example"] for r in order] == [e.SerializeToString() for e in eval_rows[:5]]
    probabilities = tf.make_ndarray(response.outputs["probabilities"]).reshape(-1)
    assert [r["prediction"] for r in order] == [[pytest.approx(float(p))] for p in probabilities]
    assert {(r["model"], r["version"], r["arm"], r["api"], r["entrypoint"], r["status"]) for r in order} == {
        (MODEL, response.model_spec.version.value, "", "Predict", "GRPC", "OK")}
    assert all(before <= r["time"] <= time.time() and r["latency_ms"] > 0 and r["sample_rate"] == 1.0
               for r in order)
    assert generated in by_id and [len(r["prediction"]) for r in by_id["order-18"]] == [2, 2]  # Classify's scores
    (failed,) = by_id["order-19"]
    assert (failed["status"], failed["example"], failed["prediction"]) == (wrong.value.code().name, None, [])
    assert "no spaces" not in by_id


def test_the_sidecar_logs_what_tf_serving_answers_and_passes_everything_through(served, eval_rows, tmp_path):
    """The request-log sidecar for real TF Serving, in front of the local server (same API): answers and errors
    pass through unchanged, each call gets its id, and the sidecar's own log has the same rows the server's has."""
    from serving.sidecar import Sidecar

    server, direct, _ = served
    sidecar = Sidecar(f"127.0.0.1:{server.port}", "127.0.0.1", 0, str(tmp_path / "logs"), 1.0)
    port = sidecar.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        proxied = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response, call = proxied.Predict.with_call(_request(eval_rows[:3]), metadata=[("x-request-id", "via-1")],
                                                   timeout=30)
        assert response == direct.Predict(_request(eval_rows[:3]), timeout=30)
        assert dict(call.initial_metadata())["x-request-id"] == "via-1"
        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name = MODEL
        regress.input.example_list.examples.extend(eval_rows[:1])
        with pytest.raises(grpc.RpcError) as passed:
            proxied.Regress(regress, metadata=[("x-request-id", "via-2")], timeout=30)
        with pytest.raises(grpc.RpcError) as same:
            direct.Regress(regress, timeout=30)
        assert (passed.value.code(), passed.value.details()) == (same.value.code(), same.value.details())
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": MODEL}), timeout=30)
        assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    finally:
        channel.close()
        sidecar.stop()
    rows = {(r["request_id"], r["index"]): r for r in _logged(str(tmp_path / "logs" / MODEL))}
    assert sorted(rows) == [("via-1", 0), ("via-1", 1), ("via-1", 2), ("via-2", 0)]
    probabilities = tf.make_ndarray(response.outputs["probabilities"]).reshape(-1)
    assert [rows[("via-1", i)]["prediction"] for i in range(3)] == [[pytest.approx(float(p))] for p in probabilities]
    assert rows[("via-1", 0)]["version"] == response.model_spec.version.value
    assert rows[("via-1", 2)]["example"] == eval_rows[2].SerializeToString()
    assert (rows[("via-2", 0)]["status"], rows[("via-2", 0)]["api"]) == (same.value.code().name, "Regress")


def test_client_reads_jsonl_csv_and_tfrecords_alike(served, eval_rows, pushed_run, tmp_path, capsys):
    config, _ = pushed_run
    server, _, base = served
    rows = eval_rows[:6]
    json_rows = []
    for example in rows:
        row = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value) if kind else []
            row[name] = (values[0].decode() if isinstance(values[0], bytes) else values[0]) if values else None
        json_rows.append(row)
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in json_rows) + "\n")
    names = sorted({k for r in json_rows for k in r})
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text(",".join(names) + "\n" + "\n".join(
        ",".join("" if r.get(n) is None else str(r[n]) for n in names) for r in json_rows) + "\n")
    tfrecords = tmp_path / "rows.tfrecord.gz"
    from tests.samples import write_examples
    write_examples(str(tfrecords), rows)

    expected = _in_process(base, list_versions(base)[-1], rows).reshape(-1)
    with ServingClient(f"127.0.0.1:{server.port}", MODEL, batch_size=4) as client:
        for path in (jsonl, csv_path, tfrecords):
            scores = client.predict(read_examples(str(path), config.schema_file))
            np.testing.assert_allclose(scores, expected, rtol=1e-5, err_msg=str(path))
        assert list(client.classify(read_examples(str(jsonl), config.schema_file))) == list(
            (expected > 0.5).astype(int))

    assert serving_cli.main(["predict", "--input", str(csv_path), "--target", f"127.0.0.1:{server.port}"]) == 0
    printed = [json.loads(line)["probability"] for line in capsys.readouterr().out.splitlines()]
    np.testing.assert_allclose(printed, expected, atol=1e-6)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"fare": "twelve"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl line 1: feature 'fare' must be FLOAT, got 'twelve'"):
        list(read_examples(str(bad), config.schema_file))



def test_client_retries_unavailable_until_the_server_is_up_and_honours_deadlines(pushed_run, eval_rows, tmp_path):
    path, _ = _copy_serving(pushed_run, tmp_path)
    port = free_port()
    with ServingClient(f"127.0.0.1:{port}", MODEL, retries=0, timeout_seconds=2) as client:
        with pytest.raises(grpc.RpcError) as raised:
            client.predict(eval_rows[:1])
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE

    servers = []
    starter = threading.Timer(0.3, lambda: servers.append(_start_on(path, port)))
    starter.start()
    try:
        with ServingClient(f"127.0.0.1:{port}", MODEL, retries=10, timeout_seconds=5) as client:
            assert client.predict(eval_rows[:3]).shape == (3,)
        with ServingClient(f"127.0.0.1:{port}", MODEL, retries=3, timeout_seconds=1e-4) as client:
            with pytest.raises(grpc.RpcError) as raised:
                client.predict(eval_rows[:1])
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        starter.join()
        for server in servers:
            server.stop()


def _start_on(path, port):
    settings = ServingConfig(port=port, rest_port=0, poll_interval_seconds=POLL, max_batch_size=MAX_BATCH)
    server = ModelServer(path, settings)
    server.start()
    return server


def _copy_version_atomically(base, source, target):
    staging = os.path.join(base, f".incoming-{target}")
    shutil.copytree(os.path.join(base, str(source)), staging)
    os.rename(staging, os.path.join(base, str(target)))


def test_hot_swap_under_load_then_rollout_and_rollback_without_restart(pushed_run, eval_rows, tmp_path):
    path, base = _copy_serving(pushed_run, tmp_path)
    old = list_versions(base)[-1]
    new = old + 1
    server = _start(path, tmp_path)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    failures, served_versions, stop = [], [], threading.Event()
    first_new = []

    def hammer(i):
        while not stop.is_set():
            try:
                started = time.monotonic()
                version = stub.Predict(_request(eval_rows[i:i + 2]), timeout=30).model_spec.version.value
                served_versions.append((started, version))
                if version == new and not first_new:
                    first_new.append(time.monotonic())
            except grpc.RpcError as error:
                failures.append(f"{error.code()}: {error.details()}")

    clients = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    try:
        for client in clients:
            client.start()
        time.sleep(1.0)
        _copy_version_atomically(base, old, new)
        pushed_at = time.monotonic()
        deadline = pushed_at + 60
        while not first_new and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert not failures, failures[:3]
    assert first_new, "the new version never served"
    load_seconds = server.manager.resolve(_request([], version=new).model_spec).load_seconds
    # TF Serving's contract: found by the next poll, then serving as soon as it is loaded and warmed up.
    assert first_new[0] - pushed_at <= POLL + load_seconds + 0.5
    # Requests already routed to the old version finish there; every request sent after the swap gets the new one.
    assert min(served_versions)[1] == old
    assert {version for started, version in served_versions if started > first_new[0]} == {new}

    def version_for(**spec):
        return stub.Predict(_request(eval_rows[:1], **spec), timeout=30).model_spec.version.value

    def after_poll(check):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if check():
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        return False

    try:
        # Canary: the new version beside a pinned stable; both answer by label.
        assert serving_cli.main(["rollout", "--label", "canary", "--version", str(new),
                         "--set", f"output_dir={tmp_path}"]) == 0
        entry = text_format.Parse(open(path).read(), model_server_config_pb2.ModelServerConfig())
        assert dict(entry.model_config_list.config[0].version_labels) == {"stable": old, "canary": new}
        assert after_poll(lambda: version_for(version_label="stable") == old)
        assert version_for(version_label="canary") == new

        # Rollback with retire: one command, stable back on the old version, the bad one gone for good.
        assert serving_cli.main(["rollout", "--version", str(new), "--set", f"output_dir={tmp_path}"]) == 0
        assert after_poll(lambda: version_for(version_label="stable") == new)
        assert serving_cli.main(["rollback", "--retire", "--set", f"output_dir={tmp_path}"]) == 0
        assert after_poll(lambda: version_for(version_label="stable") == old)
        assert after_poll(lambda: version_for() == old)
        with pytest.raises(grpc.RpcError) as raised:
            version_for(version=new)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert list_versions(base) == [old]
    finally:
        channel.close()
        server.stop()


def _classification_model(path):
    """A TF1-style SavedModel with classify and regress signatures (what tf.estimator exported)."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        fare = tf.io.parse_example(serialized, {"fare": tf.io.FixedLenFeature([1], tf.float32, [0.0])})["fare"]
        probability = tf.sigmoid(fare - 10.0)
        scores = tf.concat([1.0 - probability, probability], axis=1)
        classes = tf.tile(tf.constant([["small_tip", "big_tip"]]), [tf.shape(fare)[0], 1])
        builder = tf.compat.v1.saved_model.Builder(path)
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
            "serving_default": tf.compat.v1.saved_model.classification_signature_def(serialized, classes, scores),
            "regress": tf.compat.v1.saved_model.regression_signature_def(serialized, probability)})
        builder.save()


def test_classify_and_regress_on_signatures_exported_for_them(tmp_path):
    base = str(tmp_path / "serving" / "tipper")
    _classification_model(os.path.join(base, "1"))
    path = str(tmp_path / "serving" / "models.config")
    model_config.ensure(path, "tipper", base)
    server = _start(path, tmp_path)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    fares = [tf.train.Example(features=tf.train.Features(feature={
        "fare": tf.train.Feature(float_list=tf.train.FloatList(value=[value]))})) for value in (5.0, 10.0, 20.0)]
    expected = 1 / (1 + np.exp(-(np.array([5.0, 10.0, 20.0]) - 10.0)))
    try:
        classify = classification_pb2.ClassificationRequest()
        classify.model_spec.name = "tipper"
        classify.input.example_list.examples.extend(fares)
        result = stub.Classify(classify, timeout=30).result.classifications
        assert [[c.label for c in row.classes] for row in result] == [["small_tip", "big_tip"]] * 3
        np.testing.assert_allclose([row.classes[1].score for row in result], expected, rtol=1e-5)

        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name = "tipper"
        regress.model_spec.signature_name = "regress"
        regress.input.example_list.examples.extend(fares)
        values = [r.value for r in stub.Regress(regress, timeout=30).result.regressions]
        np.testing.assert_allclose(values, expected, rtol=1e-5)
    finally:
        channel.close()
        server.stop()
