"""TF Serving's own model-server test, replayed against the local server.

Each test below is a case of TF Serving's
`tensorflow_serving/model_servers/tensorflow_model_server_test.py` (named after it)
that applies to a server of this kind, sending the same requests and asserting the
same responses, on TF Serving's half_plus_two models rebuilt in
`tests/tf_serving_models.py` (a TF1 SavedModel and its TF2 twin) and served as
model `default` version 123. Where TF Serving runs a case on the TF1 model only,
it runs here on the TF2 model too. The cases after those come from TF Serving's
C++ tests of the same behaviour (`server_core_test.cc` for version labels,
`classifier.cc`/`regressor.cc` for the error texts) and from its HTTP server
(any Content-Type, gzip bodies). docs/tf-serving-parity.md lists what is left out
and why.

`_verify_predict`, `_call_rest` and `_sorted_object` are TF Serving's
`VerifyPredictRequest`, `CallREST` and `SortedObject`; like its `RunServer`,
`servers.run` starts one server per set of arguments and reuses it.
"""

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, inference_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from cli import serving as serving_cli
from contract.config import ServingConfig
from serving.process import ModelServer
from tests import tf_serving_models

RPC_TIMEOUT = 20.0
VERSION = tf_serving_models.VERSION
MODELS = ("tf1", "tf2")  # saved_model_half_plus_two_cpu and saved_model_half_plus_two_tf2_cpu
CONFIG = """model_config_list: {{
  config: {{
    name: "{name}",
    base_path: "{model_path}",
    model_platform: "tensorflow"
  }}
}}
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Every test model, built once; the MirroredStrategy one in its own process, meanwhile."""
    root = tmp_path_factory.mktemp("tf_serving_models")
    paths = {name: str(root / name) for name in ("tf1", "tf2", "half_plus_three", "saved_model_save",
                                                 "multiple_signatures", "keras", "distrat")}
    distrat = subprocess.Popen([sys.executable, "-m", "tests.tf_serving_models", "distrat", paths["distrat"]],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tf_serving_models.half_plus_tf1(paths["tf1"])
    tf_serving_models.half_plus_two_tf2(paths["tf2"])
    tf_serving_models.half_plus_tf1(paths["half_plus_three"], b=3.0)
    tf_serving_models.tf_saved_model_save(paths["saved_model_save"])
    tf_serving_models.tf_saved_model_save_multiple_signatures(paths["multiple_signatures"])
    tf_serving_models.keras_sequential(paths["keras"])
    output, _ = distrat.communicate(timeout=300)
    assert distrat.returncode == 0, output.decode(errors="replace")
    return paths


class Servers:
    """TF Serving's RunServer: one server per set of arguments, reused; all stopped at the end."""

    def __init__(self, root):
        self._root = root
        self._servers = {}

    def run(self, model_name=None, model_path=None, config_file=None, **settings):
        key = (model_name, model_path, config_file, tuple(sorted(settings.items())))
        if key not in self._servers:
            if config_file is None:
                config_file = os.path.join(str(self._root), f"models-{len(self._servers)}.config")
                with open(config_file, "w") as f:
                    f.write(CONFIG.format(name=model_name, model_path=model_path))
            server = ModelServer(config_file, ServingConfig(port=0, rest_port=0, poll_interval_seconds=0.2,
                                                            request_log_sample_rate=0.0, **settings))
            server.start()
            self._servers[key] = (server, f"127.0.0.1:{server.port}", f"127.0.0.1:{server.rest_port}")
        return self._servers[key]

    def stop(self):
        for server, _, _ in self._servers.values():
            server.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    running = Servers(tmp_path_factory.mktemp("tf_serving_configs"))
    yield running
    running.stop()


def _stub(address):
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))


def _verify_model_spec(spec, name, signature_name, version):
    assert spec.name == name
    assert spec.signature_name == signature_name
    assert spec.version.value == version


def _verify_predict(address, expected_output, expected_version, model_name="default", specify_output=True,
                    batch_input=False, signature_name="serving_default"):
    """TF Serving's VerifyPredictRequest: x = [2.0] in, the typed `float_val` of `y` read back."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    result = _stub(address).Predict(request, RPC_TIMEOUT)
    assert "y" in result.outputs
    assert types_pb2.DT_FLOAT == result.outputs["y"].dtype
    assert 1 == len(result.outputs["y"].float_val)
    assert expected_output == result.outputs["y"].float_val[0]
    _verify_model_spec(result.model_spec, model_name, signature_name, expected_version)


def _call_rest(url, request=None, data=None, headers=None):
    """TF Serving's CallREST (urllib: a POST when there is a body); the body of a 200 answer."""
    if request is not None:
        data = json.dumps(request).encode("utf-8")
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=30) as answer:
        return answer.read()


def _rest_error(url, request):
    with pytest.raises(urllib.error.HTTPError) as raised:
        _call_rest(url, request)
    return raised.value.code, json.loads(raised.value.read())["error"]


def _sorted_object(value):
    """TF Serving's SortedObject: JSON compared without the order of lists and keys."""
    if isinstance(value, dict):
        return sorted((k, _sorted_object(v)) for k, v in value.items())
    if isinstance(value, list):
        return sorted(_sorted_object(x) for x in value)
    return value


def _examples_input(request):
    request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])


def test_get_model_status(models, servers):
    _, address, _ = servers.run("default", models["tf1"])
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    result = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(address)).GetModelStatus(
        request, RPC_TIMEOUT)
    assert 1 == len(result.model_version_status)
    assert 123 == result.model_version_status[0].version
    assert 0 == result.model_version_status[0].status.error_code


def test_get_model_metadata(models, servers):
    _, address, _ = servers.run("default", models["tf1"])
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = _stub(address).GetModelMetadata(request, RPC_TIMEOUT)
    assert "default" == result.model_spec.name
    assert VERSION == result.model_spec.version.value
    assert 1 == len(result.metadata)
    assert "signature_def" in result.metadata
    request.metadata_field[0] = "graph_def"  # only signature_def is offered, by TF Serving too
    with pytest.raises(grpc.RpcError) as raised:
        _stub(address).GetModelMetadata(request, RPC_TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("Metadata field graph_def is not supported")


@pytest.mark.parametrize("model", MODELS)
def test_classify(models, servers, model):
    """testClassify and testClassifyTf2: the TF2 model's classify_x_to_y has method name predict."""
    _, address, _ = servers.run("default", models[model])
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    _examples_input(request)
    result = _stub(address).Classify(request, RPC_TIMEOUT)
    assert 1 == len(result.result.classifications)
    assert 1 == len(result.result.classifications[0].classes)
    assert 3.0 == result.result.classifications[0].classes[0].score
    _verify_model_spec(result.model_spec, "default", "classify_x_to_y", VERSION)


@pytest.mark.parametrize("model", MODELS)
def test_regress(models, servers, model):
    _, address, _ = servers.run("default", models[model])
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    _examples_input(request)
    result = _stub(address).Regress(request, RPC_TIMEOUT)
    assert 1 == len(result.result.regressions)
    assert 3.0 == result.result.regressions[0].value
    _verify_model_spec(result.model_spec, "default", "regress_x_to_y", VERSION)


@pytest.mark.parametrize("model", MODELS)
def test_multi_inference(models, servers, model):
    _, address, _ = servers.run("default", models[model])
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add().model_spec.name = "default"
    request.tasks[0].model_spec.signature_name = "regress_x_to_y"
    request.tasks[0].method_name = "tensorflow/serving/regress"
    request.tasks.add().model_spec.name = "default"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    request.tasks[1].method_name = "tensorflow/serving/classify"
    _examples_input(request)
    result = _stub(address).MultiInference(request, RPC_TIMEOUT)
    assert 2 == len(result.results)
    assert 3.0 == result.results[0].regression_result.regressions[0].value
    assert 3.0 == result.results[1].classification_result.classifications[0].classes[0].score
    for i in range(2):
        _verify_model_spec(result.results[i].model_spec, request.tasks[i].model_spec.name,
                           request.tasks[i].model_spec.signature_name, VERSION)


@pytest.mark.parametrize("model", MODELS)
def test_predict_saved_model(models, servers, model):
    """testPredictSavedModel (TF Serving's _TestPredict), with and without the output filter."""
    _, address, _ = servers.run("default", models[model])
    _verify_predict(address, expected_output=3.0, expected_version=VERSION)
    _verify_predict(address, expected_output=3.0, specify_output=False, expected_version=VERSION)


def test_good_model_config(models, servers, tmp_path):
    path = tmp_path / "good_model_config.conf"
    path.write_text(f"""model_config_list: {{
  config: {{ name: "half_plus_two", base_path: "{models['tf1']}", model_platform: "tensorflow" }},
  config: {{ name: "half_plus_three", base_path: "{models['half_plus_three']}", model_platform: "tensorflow" }}
}}
""")
    _, address, _ = servers.run(config_file=str(path))
    _verify_predict(address, model_name="half_plus_two", expected_output=3.0, expected_version=VERSION)
    _verify_predict(address, model_name="half_plus_two", expected_output=3.0, specify_output=False,
                    expected_version=VERSION)
    _verify_predict(address, model_name="half_plus_three", expected_output=4.0, expected_version=VERSION)
    _verify_predict(address, model_name="half_plus_three", expected_output=4.0, specify_output=False,
                    expected_version=VERSION)


def test_bad_model_config(tmp_path, capsys):
    """The server does not start: `serving serve` exits 2 with TF Serving's parse error on stderr."""
    serving_dir = tmp_path / "serving"
    serving_dir.mkdir()
    (serving_dir / "models.config").write_text("improperly formatted file")
    ports = []
    for _ in range(2):
        with socket.socket() as probe:  # free ports, though the config is read before any port opens
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    status = serving_cli.main(["serve", "--set", f"output_dir={tmp_path}", "--set", f"serving.port={ports[0]}",
                               "--set", f"serving.rest_port={ports[1]}"])
    assert status == 2
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in capsys.readouterr().err


def _eventually(check, timeout=30.0):
    """True once `check()` is; the server re-reads its config every poll, so this waits on that, not a sleep."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return True
        except (AssertionError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_model_config_reload(models, tmp_path):
    """The config file rewritten to serve half_plus_three: the server follows it within a poll, no restart."""
    path = tmp_path / "model_config.txt"
    path.write_text(CONFIG.format(name="half_plus_two", model_path=models["tf1"]))
    server = ModelServer(str(path), ServingConfig(port=0, rest_port=0, poll_interval_seconds=0.2))
    server.start()
    address = f"127.0.0.1:{server.port}"
    try:
        _verify_predict(address, model_name="half_plus_two", expected_output=3.0, specify_output=False,
                        expected_version=VERSION)
        path.write_text(CONFIG.format(name="half_plus_three", model_path=models["half_plus_three"]))
        assert _eventually(lambda: _verify_predict(address, model_name="half_plus_three", expected_output=4.0,
                                                   specify_output=False, expected_version=VERSION))
        with pytest.raises(grpc.RpcError) as raised:
            _verify_predict(address, model_name="half_plus_two", expected_output=3.0, expected_version=VERSION)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()


@pytest.mark.parametrize("model", MODELS)
def test_classify_rest(models, servers, model):
    _, _, rest = servers.run("default", models[model])
    response = _call_rest(f"http://{rest}/v1/models/default:classify",
                          {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert json.loads(response.decode()) == {"results": [[["", 3.0]]]}


@pytest.mark.parametrize("model", MODELS)
def test_regress_rest(models, servers, model):
    _, _, rest = servers.run("default", models[model])
    response = _call_rest(f"http://{rest}/v1/models/default:regress",
                          {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert json.loads(response.decode()) == {"results": [3.0]}


def test_predict_rest(models, servers):
    _, _, rest = servers.run("default", models["tf1"])
    response = _call_rest(f"http://{rest}/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
    assert json.loads(response.decode()) == {"predictions": [3.0, 3.5, 4.0]}


def test_predict_columnar_rest(models, servers):
    _, _, rest = servers.run("default", models["tf1"])
    response = _call_rest(f"http://{rest}/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]})
    assert json.loads(response.decode()) == {"outputs": [3.0, 3.5, 4.0]}


def test_get_status_rest(models, servers):
    _, _, rest = servers.run("default", models["tf1"])
    response = _call_rest(f"http://{rest}/v1/models/default")
    assert json.loads(response.decode()) == {
        "model_version_status": [{"version": "123", "state": "AVAILABLE",
                                  "status": {"error_code": "OK", "error_message": ""}}]}


def _signature(inputs, outputs, method):
    """One SignatureDef as TF Serving's REST metadata writes it (every field, int64 as strings)."""
    def tensors(infos):
        return {key: {"dtype": dtype, "name": name,
                      "tensor_shape": {"dim": [], "unknown_rank": True} if dtype == "DT_STRING" else
                      {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}}
                for key, (dtype, name) in infos.items()}

    return {"inputs": tensors(inputs), "outputs": tensors(outputs), "method_name": f"tensorflow/serving/{method}",
            "defaults": {}}


def test_get_model_metadata_rest(models, servers):
    """The document of TF Serving's half_plus_two_model_metadata.json, for the same model."""
    _, _, rest = servers.run("default", models["tf1"])
    response = _call_rest(f"http://{rest}/v1/models/default/metadata")
    example = ("DT_STRING", "tf_example:0")
    expected = {"model_spec": {"name": "default", "signature_name": "", "version": "123"},
                "metadata": {"signature_def": {"signature_def": {
                    "regress_x2_to_y3": _signature({"inputs": ("DT_FLOAT", "x2:0")},
                                                   {"outputs": ("DT_FLOAT", "y3:0")}, "regress"),
                    "serving_default": _signature({"x": ("DT_FLOAT", "x:0")}, {"y": ("DT_FLOAT", "y:0")}, "predict"),
                    "classify_x_to_y": _signature({"inputs": example}, {"scores": ("DT_FLOAT", "y:0")}, "classify"),
                    "regress_x_to_y2": _signature({"inputs": example}, {"outputs": ("DT_FLOAT", "y2:0")}, "regress"),
                    "regress_x_to_y": _signature({"inputs": example}, {"outputs": ("DT_FLOAT", "y:0")}, "regress"),
                }}}}
    assert _sorted_object(json.loads(response.decode())) == _sorted_object(expected)


def test_prometheus_endpoint(models, servers):
    _, _, rest = servers.run("default", models["tf1"])
    response = _call_rest(f"http://{rest}/monitoring/prometheus/metrics")
    assert "# TYPE" in response.decode("utf-8")


def test_tf_saved_model_save(models, servers):
    _, address, _ = servers.run("default", models["saved_model_save"])
    _verify_predict(address, expected_output=12.0, specify_output=False, expected_version=VERSION)


def test_tf_saved_model_save_multiple_signatures(models, servers):
    _, address, _ = servers.run("default", models["multiple_signatures"])
    _verify_predict(address, expected_output=2.0, expected_version=VERSION, signature_name="custom_signature_key")
    _verify_predict(address, expected_output=1.0, expected_version=VERSION)


@pytest.mark.parametrize("model", ["keras", "distrat"])
def test_sequential_keras_saved_model_save(models, servers, model):
    """test_sequential_keras_saved_model_save and test_distrat_sequential_keras_saved_model_save."""
    _, address, _ = servers.run("default", models[model])
    _verify_predict(address, batch_input=True, specify_output=False, expected_output=2.0, expected_version=VERSION)


# Beyond tensorflow_model_server_test.py: the same behaviour as TF Serving's C++ code and tests.

def _labelled_model(models, root):
    """TF Serving's saved_model_half_plus_two_2_versions: versions 123 and 124 (here half_plus_three)."""
    base = root / "two_versions"
    shutil.copytree(os.path.join(models["tf1"], tf_serving_models.VERSION_DIR), base / "00000123")
    shutil.copytree(os.path.join(models["half_plus_three"], tf_serving_models.VERSION_DIR), base / "00000124")
    path = root / "labels.config"
    path.write_text(f"""model_config_list: {{
  config: {{
    name: "default", base_path: "{base}", model_platform: "tensorflow",
    model_version_policy: {{ specific: {{ versions: 123 versions: 124 }} }},
    version_labels: {{ key: "A" value: 123 }}, version_labels: {{ key: "B" value: 124 }}
  }}
}}
""")
    return str(path)


def test_version_labels_pick_their_version_and_an_unknown_label_is_refused(models, servers, tmp_path):
    """server_core_test.cc ModelSpecMultipleVersionsAvailable, over gRPC and REST."""
    _, address, rest = servers.run(config_file=_labelled_model(models, tmp_path))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
    stub = _stub(address)
    assert stub.Predict(request, RPC_TIMEOUT).model_spec.version.value == 124  # the latest
    for label, version, value in (("A", 123, 3.0), ("B", 124, 4.0)):
        request.model_spec.version_label = label
        response = stub.Predict(request, RPC_TIMEOUT)
        assert (response.model_spec.version.value, response.outputs["y"].float_val[0]) == (version, value)
        answer = json.loads(_call_rest(f"http://{rest}/v1/models/default/labels/{label}:predict",
                                       {"instances": [[2.0]]}))
        assert answer == {"predictions": [[value]]}
        metadata = json.loads(_call_rest(f"http://{rest}/v1/models/default/labels/{label}/metadata"))
        assert metadata["model_spec"]["version"] == str(version)
    request.model_spec.version_label = "nonexistent label"
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, RPC_TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unrecognized servable version label: nonexistent label" in raised.value.details()
    status, error = _rest_error(f"http://{rest}/v1/models/default/labels/nonexistent%20label:predict",
                                {"instances": [[2.0]]})
    assert status == 400 and "Unrecognized servable version label: nonexistent label" in error
    # GetModelStatus reads a version, not a label (get_model_status_impl.cc): a label asks for every version.
    versions = json.loads(_call_rest(f"http://{rest}/v1/models/default/labels/A"))["model_version_status"]
    assert [v["version"] for v in versions] == ["123", "124"]
    assert [v["version"] for v in json.loads(_call_rest(
        f"http://{rest}/v1/models/default/versions/123"))["model_version_status"]] == ["123"]


def test_method_name_check_refuses_predict_signatures_only_when_asked(models, servers):
    """--enable_signature_method_name_check: the TF2 model's classify_x_to_y (method predict) is refused with
    TF Serving's text; the TF1 model's, named classify, still serves."""
    for model, method in (("tf2", "tensorflow/serving/predict"), ("tf1", None)):
        _, address, rest = servers.run("default", models[model], enable_signature_method_name_check=True)
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "default"
        request.model_spec.signature_name = "classify_x_to_y"
        _examples_input(request)
        if method is None:
            assert _stub(address).Classify(request, RPC_TIMEOUT).result.classifications[0].classes[0].score == 3.0
            continue
        with pytest.raises(grpc.RpcError) as raised:
            _stub(address).Classify(request, RPC_TIMEOUT)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details().startswith(
            f"Expected classification signature method_name to be tensorflow/serving/classify. Was: {method}")
        status, error = _rest_error(f"http://{rest}/v1/models/default:regress",
                                    {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
        assert status == 400 and error.startswith(
            f"Expected regression signature method_name to be tensorflow/serving/regress. Was: {method}")


@pytest.mark.parametrize("model", MODELS)
def test_signatures_that_do_not_fit_get_tf_servings_error_texts(models, servers, model):
    _, address, _ = servers.run("default", models[model])
    stub = _stub(address)
    cases = [  # (API, signature, status, the start of TF Serving's message)
        ("Classify", "serving_default", grpc.StatusCode.INVALID_ARGUMENT, "No classification inputs found in "
                                                                          "SignatureDef: inputs {"),
        ("Regress", "classify_x_to_y", grpc.StatusCode.INVALID_ARGUMENT, "No regression outputs found in "
                                                                         "SignatureDef: inputs {"),
        ("Classify", "no_such_signature", grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the "
                                                                            "name: no_such_signature"),
        ("Regress", "regress_x2_to_y3", grpc.StatusCode.INVALID_ARGUMENT, "Signature 'regress_x2_to_y3' of "
                                                                          "default version 123 takes DT_FLOAT"),
    ]
    for api, signature, code, message in cases:
        request = (classification_pb2.ClassificationRequest() if api == "Classify"
                   else regression_pb2.RegressionRequest())
        request.model_spec.name, request.model_spec.signature_name = "default", signature
        _examples_input(request)
        with pytest.raises(grpc.RpcError) as raised:
            getattr(stub, api)(request, RPC_TIMEOUT)
        assert (raised.value.code(), raised.value.details()[:len(message)]) == (code, message)
        assert "Signatures that fit" in raised.value.details()
    empty = regression_pb2.RegressionRequest(model_spec={"name": "default", "signature_name": "regress_x_to_y"})
    with pytest.raises(grpc.RpcError, match="Input is empty"):
        stub.Regress(empty, RPC_TIMEOUT)
    multi = inference_pb2.MultiInferenceRequest()
    for method in ("tensorflow/serving/regress", "tensorflow/serving/classify"):
        task = multi.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = "default", "regress_x_to_y"
    _examples_input(multi)
    with pytest.raises(grpc.RpcError, match="Duplicate evaluation of signature: regress_x_to_y"):
        stub.MultiInference(multi, RPC_TIMEOUT)
    multi.tasks[1].model_spec.signature_name, multi.tasks[1].method_name = "serving_default", "predict"
    with pytest.raises(grpc.RpcError) as raised:
        stub.MultiInference(multi, RPC_TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert raised.value.details().startswith("Unsupported signature method_name: predict")
    with pytest.raises(grpc.RpcError) as raised:
        _verify_predict(address, expected_output=3.0, expected_version=VERSION, signature_name="no_such_signature")
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details().startswith('Serving signature key "no_such_signature" not found.')


def test_rest_reads_any_content_type_and_gzip_bodies(models, servers):
    """TF Serving's HTTP server reads no Content-Type and uncompresses `Content-Encoding: gzip` bodies."""
    _, _, rest = servers.run("default", models["tf1"])
    url = f"http://{rest}/v1/models/default:predict"
    body = json.dumps({"instances": [2.0, 3.0]}).encode()
    for headers, data in (({"Content-Type": "text/plain"}, body),
                          ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, gzip.compress(body))):
        assert json.loads(_call_rest(url, data=data, headers=headers)) == {"predictions": [3.0, 3.5]}
