"""TF Serving's REST API and Prometheus page on the local server, with plain `requests` calls written from
TF Serving's REST documentation, over a copy of `pushed_run`'s serving directory on ephemeral loopback ports."""

import base64
import json

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from contract.versions import list_versions
from tests.test_serving import MAX_BATCH, MODEL, _copy_serving, _in_process, _start

pytestmark = pytest.mark.slow
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def rest(pushed_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("rest")
    path, base = _copy_serving(pushed_run, root)
    server = _start(path, root, rest_max_body_bytes=BODY_LIMIT, request_log_sample_rate=1.0)
    yield server, f"http://127.0.0.1:{server.rest_port}", base
    server.stop()


@pytest.fixture(scope="module")
def rows(pushed_run):
    from tests.samples import read_examples

    config, _ = pushed_run
    examples = read_examples(f"{config.data.input_base}/Split-eval/*", 20)
    for example in examples:
        del example.features.feature["tips"]
    return examples


def _b64(examples):
    return [{"b64": base64.b64encode(e.SerializeToString()).decode()} for e in examples]


def _features(example):
    """An example as TF Serving's JSON feature dict: float values keep their decimal point."""
    row = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        row[name] = [v.decode() if isinstance(v, bytes) else float(v) if kind == "float_list" else v for v in values]
    return row


def _metric(base, name, **labels):
    text = requests.get(f"{base}/monitoring/prometheus/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_status_and_metadata_as_tf_serving_writes_them(rest):
    _, url, base = rest
    version = list_versions(base)[-1]
    status = requests.get(f"{url}/v1/models/{MODEL}", timeout=10)
    assert status.status_code == 200 and status.headers["Content-Type"] == "application/json"
    assert status.json() == {"model_version_status": [
        {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert requests.get(f"{url}/v1/models/{MODEL}/versions/{version}", timeout=10).json() == status.json()

    metadata = requests.get(f"{url}/v1/models/{MODEL}/versions/{version}/metadata", timeout=10).json()
    assert metadata["model_spec"] == {"name": MODEL, "version": str(version), "signature_name": ""}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert signatures["serving_default"]["inputs"]["examples"]["dtype"] == "DT_STRING"
    assert signatures["classify"]["method_name"] == "tensorflow/serving/classify"
    assert set(signatures["classify"]["outputs"]) == {"classes", "scores"}


def test_rest_predict_and_classify_equal_grpc_and_the_saved_model_in_process(rest, rows):
    server, url, base = rest
    version = list_versions(base)[-1]
    expected = _in_process(base, version, rows[:MAX_BATCH])

    by_rows = requests.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": _b64(rows[:MAX_BATCH])},
                            timeout=30)
    assert by_rows.status_code == 200, by_rows.text
    # Several outputs: TF Serving's row format answers one object per instance, keyed by output name.
    predictions = by_rows.json()["predictions"]
    assert set(predictions[0]) == {"probabilities", "scores", "classes", "predicted_class"}
    assert all(p["classes"] == ["0", "1"] and p["predicted_class"] == ("1" if p["probabilities"][0] > 0.5 else "0")
               for p in predictions)
    probabilities = [p["probabilities"] for p in predictions]
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-7)
    by_columns = requests.post(f"{url}/v1/models/{MODEL}/versions/{version}:predict",
                               json={"inputs": {"examples": _b64(rows[:MAX_BATCH])}}, timeout=30)
    np.testing.assert_allclose(by_columns.json()["outputs"]["probabilities"], expected, rtol=1e-6, atol=1e-7)

    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["examples"].CopyFrom(
        tf.make_tensor_proto([e.SerializeToString() for e in rows[:MAX_BATCH]], dtype=tf.string))
    over_grpc = tf.make_ndarray(prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        request, timeout=30).outputs["probabilities"])
    channel.close()
    np.testing.assert_allclose(probabilities, over_grpc, rtol=1e-6, atol=1e-7)

    classified = requests.post(f"{url}/v1/models/{MODEL}:classify", json={
        "signature_name": "classify", "examples": [_features(e) for e in rows[:MAX_BATCH]]}, timeout=30)
    assert classified.status_code == 200, classified.text
    result = classified.json()["results"]
    assert [[label for label, _ in row] for row in result] == [["0", "1"]] * MAX_BATCH
    np.testing.assert_allclose([row[1][1] for row in result], expected.reshape(-1), rtol=1e-6, atol=1e-7)

    # `context` holds features shared by every example; an example's own value wins.
    shared = _features(rows[0])["payment_type"]
    with_context = requests.post(f"{url}/v1/models/{MODEL}:classify", json={
        "signature_name": "classify", "context": {"payment_type": shared},
        "examples": [_features(e) for e in rows[:4]]}, timeout=30)
    np.testing.assert_allclose([row[1][1] for row in with_context.json()["results"]], expected.reshape(-1)[:4],
                               rtol=1e-6, atol=1e-7)


def test_metrics_page_counts_requests_under_tf_servings_names(rest, rows):
    _, url, base = rest
    version = str(list_versions(base)[-1])
    before = _metric(url, ":tensorflow:serving:request_count_total", model_name=MODEL, status="OK")
    latency_before = _metric(url, ":tensorflow:serving:request_latency_count", model_name=MODEL, API="predict",
                             entrypoint="REST")
    for _ in range(3):
        requests.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": _b64(rows[:2])}, timeout=30)
    assert _metric(url, ":tensorflow:serving:request_count_total", model_name=MODEL, status="OK") == before + 3
    assert _metric(url, ":tensorflow:serving:request_latency_count", model_name=MODEL, API="predict",
                   entrypoint="REST") == latency_before + 3
    assert _metric(url, "serving_requests_total", model_name=MODEL, version=version, api="predict",
                   entrypoint="REST", status="OK") >= 3
    assert _metric(url, ":tensorflow:serving:batching_session:processed_batch_size_count") > 0
    assert _metric(url, "serving_model_versions_loaded", model_name=MODEL, version=version) == 1
    assert _metric(url, "serving_model_events_total", model_name=MODEL, version=version, event="load") == 1
    assert _metric(url, ":tensorflow:serving:request_log_count_total", model_name=MODEL) > 0
    page = requests.get(f"{url}/monitoring/prometheus/metrics", timeout=10)
    assert page.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE :tensorflow:serving:request_latency histogram" in page.text


def test_rest_answers_carry_the_request_id_and_the_log_records_it(rest, rows):
    from tests.test_serving import _logged

    server, url, _ = rest
    predict = f"{url}/v1/models/{MODEL}:predict"
    given = requests.post(predict, json={"instances": _b64(rows[:2])}, headers={"X-Request-Id": "rest-1"}, timeout=30)
    assert given.status_code == 200 and given.headers["X-Request-Id"] == "rest-1"
    generated = requests.post(predict, json={"instances": _b64(rows[:1])}, timeout=30).headers["X-Request-Id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    bad = requests.post(predict, json={"instances": _b64(rows[:1])}, headers={"X-Request-Id": "a b"}, timeout=30)
    assert bad.status_code == 400 and "x-request-id 'a b' is not a request id" in bad.json()["error"]
    assert "X-Request-Id" not in bad.headers
    refused = requests.post(predict, json={"rows": []}, headers={"X-Request-Id": "rest-2"}, timeout=30)
    assert refused.status_code == 400 and refused.headers["X-Request-Id"] == "rest-2"
    assert "X-Request-Id" not in requests.get(f"{url}/v1/models/{MODEL}", timeout=30).headers  # not a prediction
    server.loggers.flush()
    logged = {}
    for row in _logged(f"{server.serving.request_log_dir}/{MODEL}"):
        logged.setdefault(row["request_id"], []).append(row)
    assert [(r["api"], r["entrypoint"], r["status"]) for r in logged["rest-1"]] == [("predict", "REST", "OK")] * 2
    assert [r["prediction"] for r in logged["rest-1"]] == [
        [pytest.approx(row["probabilities"][0])] for row in given.json()["predictions"]]
    assert generated in logged and [r["status"] for r in logged["rest-2"]] == ["INVALID_ARGUMENT"]


def _bad_feature_type(rows):
    example = _features(rows[0])
    example["trip_miles"] = ["far"]
    return {"signature_name": "classify", "examples": [example]}


def _mixed_columns(rows):
    b64 = _b64(rows[:3])
    return {"inputs": {"examples": [b64[:2], b64[2:]]}}


# (path, body as bytes or JSON object, headers) -> HTTP status and a part of the error
BAD_REQUESTS = {
    "malformed JSON": (":predict", lambda rows: b'{"instances": [', {}, 400, "JSON Parse error"),
    # TF Serving reads the body whatever the Content-Type says: CSV is refused as JSON that does not parse.
    "CSV body": (":predict", lambda rows: b"fare,tips\n1.0,2.0\n", {"Content-Type": "text/csv"}, 400,
                 "JSON Parse error"),
    "unknown path": ("/explain", lambda rows: b"{}", {}, 400, "Malformed request: POST /v1/models/taxi/explain"),
    "body over the size limit": (":predict", lambda rows: {"instances": [{"b64": "A" * BODY_LIMIT}]}, {}, 413,
                                 f"over this server's limit of {BODY_LIMIT} (serving.rest_max_body_bytes)"),
    "instances and inputs both": (":predict", lambda rows: {"instances": _b64(rows[:1]), "inputs": _b64(rows[:1])},
                                  {}, 400, "expecting only one of 'inputs' or 'instances'"),
    "mixed-length columnar inputs": (":predict", _mixed_columns, {}, 400, "Encountered list at unexpected size: 1"),
    "non-base64 b64": (":predict", lambda rows: {"instances": [{"b64": "not base64!"}]}, {}, 400,
                       "Unable to base64 decode"),
    "feature of the wrong type": (":classify", _bad_feature_type, {}, 400,
                                  "Key: trip_miles, Index: 0.  Data types don't match"),
    "unknown label": ("/labels/gold:predict", lambda rows: {"instances": _b64(rows[:1])}, {}, 400,
                      "Unrecognized servable version label: gold"),
    "batch over the limit": (":predict", lambda rows: {"instances": _b64(rows[:1]) * (MAX_BATCH + 1)}, {}, 429,
                             f"batch of {MAX_BATCH + 1} is over this server's limit"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_rest_request_gets_its_status_is_counted_and_the_server_keeps_serving(rest, rows, name):
    _, url, _ = rest
    suffix, body, headers, status, message = BAD_REQUESTS[name]
    payload = body(rows)
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    code = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED"}[status]
    before = _metric(url, "serving_requests_total", entrypoint="REST", status=code)
    response = requests.post(f"{url}/v1/models/{MODEL}{suffix}", data=data, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert message in response.json()["error"]
    assert _metric(url, "serving_requests_total", entrypoint="REST", status=code) == before + 1
    ok = requests.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": _b64(rows[:2])}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2


def test_integer_json_for_a_float_feature_is_explained(rest, rows):
    """TF Serving turns 12 into an int64 feature; the error says to write 12.0."""
    _, url, _ = rest
    example = _features(rows[0])
    example["fare"] = [12]
    response = requests.post(f"{url}/v1/models/{MODEL}:classify",
                             json={"signature_name": "classify", "examples": [example]}, timeout=30)
    assert response.status_code == 400
    assert "write float features as 12.0, not 12" in response.json()["error"]


def test_paths_outside_the_api_get_404_and_curl_style_bodies_are_accepted(rest, rows):
    _, url, _ = rest
    missing = requests.get(f"{url}/healthz", timeout=10)
    assert missing.status_code == 404 and "unknown path /healthz" in missing.json()["error"]
    # `curl -d` sends application/x-www-form-urlencoded, as TF Serving's own examples do.
    curl_like = requests.post(f"{url}/v1/models/{MODEL}:predict", data=json.dumps({"instances": _b64(rows[:1])}),
                              headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert curl_like.status_code == 200
