"""TF Serving's REST API on the REST port (8501), over the same `ServingCore` as gRPC.

Paths, JSON formats, status codes and the `{"error": ...}` body follow TF
Serving's own handler (`model_servers/http_rest_api_handler.cc`,
`http_rest_api_util.cc`, `util/json_tensor.cc`):

    GET  /v1/models/{m}[/versions/{v}|/labels/{l}]            status
    GET  /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata   signatures
    POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict    {"instances": [...]} or {"inputs": ...}
    POST ...:classify | ...:regress                            {"examples": [{feature: value}], "context": {...}}
    GET  /monitoring/prometheus/metrics                        the Prometheus page (metrics.py)

JSON values become tensors of the signature's dtypes, `{"b64": "..."}` is
bytes; in Classify/Regress examples a JSON number with a decimal point is a
float feature, an integer an int64 feature, a string a bytes feature (TF
Serving's rule). Answers: `{"predictions"}` (rows) or `{"outputs"}` (columns)
for Predict, `{"results"}` for Classify and Regress, `{"error"}` for a refusal.
gRPC status codes map to HTTP as TF Serving maps them (INVALID_ARGUMENT 400,
NOT_FOUND 404, RESOURCE_EXHAUSTED 429, ...). The body is read whatever its
Content-Type says (TF Serving reads no Content-Type), and a body sent with
`Content-Encoding: gzip` is uncompressed first, as TF Serving's HTTP server does.

Beyond TF Serving, and each answered with `{"error": ...}`: a body over
`serving.rest_max_body_bytes` (after uncompressing) gets 413, where TF Serving
reads any size; a path outside /v1/ and the metrics page gets 404 with a line
naming the paths that exist. Every :predict, :classify and :regress answer carries an
`X-Request-Id` header: the caller's own, else a new one; the request log records the request under it.

Tornado (maintained, asyncio-based) parses HTTP on one thread; model calls run
on a thread pool, so a slow model call never blocks other connections.
"""

import asyncio
import base64
import binascii
import json
import logging as logging_module
import re
import socket
import threading
from concurrent import futures
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote

import grpc
import numpy as np
import tensorflow as tf
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web
from absl import logging
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, model_pb2

from contract import request_log
from contract.config import ServingConfig
from contract.serving import CLASSIFY_METHOD, REGRESS_METHOD
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.metrics import METRICS_PATH
from serving.core import REST, ServingCore
from serving.errors import RequestError

PREDICTION_PATH = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
                             re.IGNORECASE)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
                         re.IGNORECASE)
# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409, grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_TYPE_HINT = (" In JSON examples, a number with a decimal point is a float feature, an integer an int64 feature "
              "and a string a bytes feature (TF Serving's rule): write float features as 12.0, not 12.")
_NUMPY = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_INT32: np.int32,
          types_pb2.DT_INT16: np.int16, types_pb2.DT_INT8: np.int8, types_pb2.DT_UINT8: np.uint8,
          types_pb2.DT_INT64: np.int64, types_pb2.DT_BOOL: np.bool_, types_pb2.DT_UINT32: np.uint32,
          types_pb2.DT_UINT64: np.uint64, types_pb2.DT_STRING: object}


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _debug(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))[:200]


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return "Number"
    return {str: "String", list: "Array", dict: "Object"}[type(value)]


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _b64decode(value: Dict[str, str]) -> bytes:
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"Unable to base64 decode {_debug(value)}: 'b64' must hold standard base64 "
                       "(e.g. base64.b64encode(example.SerializeToString()).decode())") from None


def parse_json(body: bytes) -> Dict[str, Any]:
    """The request document: a JSON object (TF Serving's ParseJson)."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        position = getattr(error, "pos", getattr(error, "start", 0))
        reason = getattr(error, "msg", "invalid UTF-8")
        raise _invalid(f"JSON Parse error: {reason} at offset: {position}") from None
    if not isinstance(document, dict):
        raise _invalid(f"JSON Value: {_debug(document)} Is not object")
    signature = document.get("signature_name", "")
    if not isinstance(signature, str):
        raise _invalid(f"JSON Value: {_debug(document)} not formatted correctly. 'signature_name' key must be a "
                       "string value.")
    return document


def _scalar(value: Any, dtype: int) -> Any:
    """One JSON leaf as a value of `dtype` (TF Serving's AddValueToTensor)."""
    if isinstance(value, dict):
        if dtype == types_pb2.DT_STRING:
            if not _is_b64(value):
                raise _invalid(f"JSON Value: {_debug(value)} not formatted correctly for base64 data")
            return _b64decode(value)
    elif dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif dtype == types_pb2.DT_STRING:
        if isinstance(value, str):
            return value.encode("utf-8")
    elif dtype == types_pb2.DT_BOOL:
        if isinstance(value, bool):
            return value
    elif dtype in _NUMPY:
        if isinstance(value, int) and not isinstance(value, bool):
            info = np.iinfo(_NUMPY[dtype])
            if info.min <= value <= info.max:
                return value
    else:
        raise RequestError(grpc.StatusCode.UNIMPLEMENTED, f"Conversion of JSON Value: {_debug(value)} to type: "
                                                          f"{types_pb2.DataType.Name(dtype)}")
    raise _invalid(f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected type: "
                   f"{types_pb2.DataType.Name(dtype).replace('DT_', '').lower()}")


def _tensor(value: Any, dtype: int) -> np.ndarray:
    """A dense tensor from a JSON value or (nested) list; ragged lists are refused (TF Serving's FillTensorProto)."""
    shape: List[int] = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat: List[Any] = []

    def fill(item: Any, level: int) -> None:
        if not isinstance(item, list):
            if level != len(shape):
                raise _invalid(f"JSON Value: {_debug(item)} found at incorrect level: {level + 1} in the JSON DOM. "
                               f"Expected at level: {len(shape)}")
            flat.append(_scalar(item, dtype))
            return
        if level >= len(shape):
            raise _invalid(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
        if len(item) != shape[level]:
            raise _invalid(f"Encountered list at unexpected size: {len(item)} at level: {level} expected size: "
                           f"{shape[level]}")
        for element in item:
            fill(element, level + 1)

    fill(value, 0)
    array = np.empty(len(flat), dtype=object) if dtype == types_pb2.DT_STRING else None
    if array is not None:
        array[:] = flat
    else:
        array = np.array(flat, dtype=_NUMPY[dtype])
    return array.reshape(shape)


def predict_arrays(document: Dict[str, Any], signature_def) -> Tuple[Dict[str, np.ndarray], str]:
    """The input tensors of a Predict request and its format, "row" (instances) or "columnar" (inputs)."""
    dtypes = {name: info.dtype for name, info in signature_def.inputs.items()}
    if not dtypes:
        raise _invalid("Failed to get input map for signature: " + (document.get("signature_name") or "DEFAULT"))
    if "instances" in document and "inputs" in document:
        raise _invalid("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist; "
                       "send rows as 'instances' or columns as 'inputs', not both")
    if "instances" in document:
        return _rows(document["instances"], dtypes), "row"
    if "inputs" in document:
        return _columns(document["inputs"], dtypes), "columnar"
    raise _invalid("Missing 'inputs' or 'instances' key")


def _rows(instances: Any, dtypes: Dict[str, int]) -> Dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise _invalid("Expecting 'instances' to be an list/array")
    if not instances:
        raise _invalid("No values in 'instances' array")
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not named and len(dtypes) > 1:
        raise _invalid("instances is a plain list, but expecting list of objects as multiple input tensors "
                       f"required as per tensorinfo_map ({', '.join(sorted(dtypes))})")
    columns: Dict[str, List[np.ndarray]] = {name: [] for name in dtypes}
    for index, instance in enumerate(instances):
        is_object = isinstance(instance, dict) and not _is_b64(instance)
        if named != is_object:
            raise _invalid(f"Expecting {'object but got list' if named else 'value/list but got object'} at item "
                           f"{index} of input list")
        items = instance if named else {next(iter(dtypes)): instance}
        if named and set(items) != set(dtypes):
            raise _invalid(f"Failed to process element: {index} of 'instances' list. JSON object: "
                           f"{_debug(instance)} keys must be equal to: {','.join(sorted(dtypes))}")
        for name, value in items.items():
            try:
                tensor = _tensor(value, dtypes[name])
            except RequestError as error:
                raise _invalid(f"Failed to process element: {index} of 'instances' list. Error: {error}") from None
            if columns[name] and columns[name][0].shape != tensor.shape:
                raise _invalid(f"Failed to process element: {index} of 'instances' list. Error: Expecting shape "
                               f"{list(columns[name][0].shape)} but got: {list(tensor.shape)}")
            columns[name].append(tensor)
    return {name: np.stack(values) if dtypes[name] != types_pb2.DT_STRING else _stack_objects(values)
            for name, values in columns.items()}


def _stack_objects(values: List[np.ndarray]) -> np.ndarray:
    stacked = np.empty((len(values),) + values[0].shape, dtype=object)
    for index, value in enumerate(values):
        stacked[index, ...] = value
    return stacked


def _columns(inputs: Any, dtypes: Dict[str, int]) -> Dict[str, np.ndarray]:
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(dtypes) > 1:
            raise _invalid("inputs is a plain value/list, but expecting an object as multiple input tensors "
                           f"required as per tensorinfo_map ({', '.join(sorted(dtypes))})")
        (name,) = dtypes
        return {name: _tensor(inputs, dtypes[name])}
    arrays = {}
    for name, dtype in dtypes.items():
        if name not in inputs:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = _tensor(inputs[name], dtype)
    return arrays


def _feature(name: str, content: Any, feature: tf.train.Feature) -> None:
    """Adds JSON values to a Feature: TF Serving's AddValueToFeature (int64, float, bytes by JSON type)."""
    for value in content if isinstance(content, list) else [content]:
        if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_b64(value)):
            raise _invalid(f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")
        if isinstance(value, int):  # booleans too: TF Serving writes them as int64 1 and 0
            kind, item = "int64_list", int(value)
            if not -2 ** 63 <= item < 2 ** 63:
                raise _invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        elif isinstance(value, float):
            kind, item = "float_list", value
        elif isinstance(value, str):
            kind, item = "bytes_list", value.encode("utf-8")
        else:
            kind, item = "bytes_list", _b64decode(value)
        current = feature.WhichOneof("kind")
        if current not in (None, kind):
            raise _invalid(f"Unexpected element type in feature: {name} expecting type: "
                           f"{current.replace('_list', '')} (every value of a feature has one type)")
        getattr(feature, kind).value.append(item)


def example_from_json(value: Any) -> tf.train.Example:
    if not isinstance(value, dict):
        raise _invalid(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = tf.train.Example()
    for name, content in value.items():
        _feature(name, content, example.features.feature[name])
    return example


def examples_from_json(document: Dict[str, Any], method: str) -> List[bytes]:
    """Serialized tf.Examples of a Classify/Regress request; with a `context`, context + example bytes, as TF
    Serving merges them (the example's own features win)."""
    context = example_from_json(document["context"]).SerializeToString() if "context" in document else b""
    if "examples" not in document:
        raise _invalid(f"When method is {method}, key 'examples' is expected and was not found")
    examples = document["examples"]
    if not isinstance(examples, list):
        raise _invalid("Expecting 'examples' value to be an list/array")
    if not examples:
        raise _invalid("'examples' value is an empty array")
    return [context + example_from_json(e).SerializeToString() for e in examples]


def _json_values(array: np.ndarray, as_bytes: bool) -> Any:
    """Nested lists of JSON values; float32 written with its shortest decimal form (0.93, not 0.9300000071)."""
    if array.dtype == np.float32:
        return np.array([float(str(v)) for v in array.reshape(-1)], dtype=object).reshape(array.shape).tolist()
    if array.dtype == object:
        def text(value: bytes) -> Any:
            return {"b64": base64.b64encode(value).decode()} if as_bytes else value.decode("utf-8", "replace")
        return np.array([text(v) for v in array.reshape(-1)] + [None], dtype=object)[:-1].reshape(
            array.shape).tolist()
    return array.tolist()


def predict_json(outputs: Dict[str, np.ndarray], form: str) -> Dict[str, Any]:
    """TF Serving's MakeJsonFromTensors: {"predictions": rows} or {"outputs": columns}."""
    values = {name: _json_values(np.asarray(value), name.endswith("_bytes")) for name, value in outputs.items()}
    if form == "columnar":
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    size, columnar = -1, "; ask for the columnar format ('inputs' instead of 'instances')"
    for name, value in outputs.items():  # TF Serving's MakeRowFormatJsonFromTensors
        if not np.ndim(value):
            raise _invalid(f"Tensor name: {name} has no shape information{columnar}")
        if size >= 0 and np.shape(value)[0] != size:
            raise _invalid(f"Tensor name: {name} has inconsistent batch size: {np.shape(value)[0]} expecting: "
                           f"{size}{columnar}")
        size = np.shape(value)[0]
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{name: value[row] for name, value in values.items()} for row in range(size)]}


def _float32(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (TF Serving's WriteDecimal): 0.93, not
    0.9300000071525574."""
    return float(str(np.float32(value)))


def classify_json(result: classification_pb2.ClassificationResult) -> Dict[str, Any]:
    """TF Serving's MakeJsonFromClassificationResult: per example, [label, score] per class."""
    return {"results": [[[c.label, _float32(c.score)] for c in row.classes] for row in result.classifications]}


def regress_json(result) -> Dict[str, Any]:
    """TF Serving's MakeJsonFromRegressionResult: one value per example."""
    return {"results": [_float32(r.value) for r in result.regressions]}


def _model_spec(name: str, version: Optional[str], label: Optional[str], signature: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=unquote(name), signature_name=signature)
    if version:
        spec.version.value = int(version)
    elif label:
        spec.version_label = unquote(label)
    return spec


@tornado.web.stream_request_body
class _Handler(tornado.web.RequestHandler):
    """Every path: TF Serving dispatches on its own regexes, so this does too."""

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")

    def initialize(self, server: "RestServer"):
        self._server = server
        self._chunks: List[bytes] = []
        self._size = 0

    def prepare(self):
        self.request.connection.set_max_body_size(self._server.hard_body_limit)

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self._server.serving.rest_max_body_bytes:
            self._chunks.append(chunk)

    async def _dispatch(self) -> None:
        path = self.request.path
        if path == METRICS_PATH and self.request.method == "GET":
            page = await self._server.run(self._server.core.metrics.exposition)
            self.set_header("Content-Type", METRICS_CONTENT_TYPE)
            self.finish(page)
            return
        request_id = ""
        if self.request.method == "POST" and PREDICTION_PATH.fullmatch(path):
            # The caller's X-Request-Id, else a new one; answered in the same header, success or error.
            request_id = self.request.headers.get(request_log.REQUEST_ID_HEADER) or request_log.new_request_id()
            if not request_log.request_id_problem(request_id):
                self.set_header(request_log.REQUEST_ID_HEADER, request_id)
        status, body = await self._server.run(self._answer, self.request.method, path, self._body_or_error(),
                                              request_id)
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    def _body_or_error(self):
        if self._size > self._server.serving.rest_max_body_bytes:
            return RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"request body of {self._size} bytes is over this server's limit of "
                                f"{self._server.serving.rest_max_body_bytes} (serving.rest_max_body_bytes); send "
                                "fewer instances per request", http_status=413)
        return b"".join(self._chunks)

    def _answer(self, method: str, path: str, body, request_id: str) -> Tuple[int, bytes]:
        """(HTTP status, JSON body) for one request; runs on the thread pool."""
        core = self._server.core
        prediction = PREDICTION_PATH.fullmatch(path) if method == "POST" else None
        status_match = STATUS_PATH.fullmatch(path) if method == "GET" else None
        model_name = unquote((prediction or status_match).group(1) or "") if (prediction or status_match) else ""
        api = prediction.group(4).lower() if prediction else ""

        def call():
            if isinstance(body, RequestError):
                raise body
            if prediction:
                return self._predict(prediction, api, body)
            if status_match:
                return self._status(status_match)
            if path.lower().startswith("/v1/"):
                raise _invalid(f"Malformed request: {method} {path}")
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"unknown path {path}; this server answers GET/POST /v1/models/<model>[/versions/<v>|"
                               f"/labels/<l>][:predict|:classify|:regress|/metadata] and GET {METRICS_PATH}",
                               http_status=404)

        try:
            answer = core.observe(api, REST, model_name, call, request_id)
        except RequestError as error:
            message = str(error)
            if error.code == grpc.StatusCode.INVALID_ARGUMENT and "Data types don't match" in message and api in (
                    "classify", "regress"):
                message += _TYPE_HINT
            return error.http_status or HTTP_STATUS.get(error.code, 500), json.dumps({"error": message}).encode()
        except Exception as error:  # noqa: BLE001 - a bug answers 500 and the server keeps serving
            logging.exception("REST %s %s failed", method, path)
            return 500, json.dumps({"error": f"internal error: {error}"}).encode()
        return 200, json.dumps(answer.document, allow_nan=True).encode()

    def _predict(self, match, api: str, body: bytes):
        document = parse_json(body)
        spec = _model_spec(match.group(1), match.group(2), match.group(3), document.get("signature_name", ""))
        key = self.request.headers.get(self._server.serving.experiment_key_header, "")
        core = self._server.core
        if api == "predict":
            form: List[str] = []

            def convert(signature_def):
                arrays, kind = predict_arrays(document, signature_def)
                form.append(kind)
                return arrays

            answer = core.predict(spec, convert, key=key)
            answer.document = predict_json(answer.outputs, form[0])
            return answer
        method = CLASSIFY_METHOD if api == "classify" else REGRESS_METHOD
        answer = core.examples_call(spec, method, examples_from_json(document, api), key)
        answer.document = classify_json(answer.result) if api == "classify" else regress_json(answer.result)
        return answer

    def _status(self, match):
        if not match.group(1):
            raise _invalid("Missing model name in request.")
        spec = _model_spec(match.group(1), match.group(2), match.group(3))
        core = self._server.core
        if match.group(4):
            response = core.metadata(spec)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            document = {
                "model_spec": json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True,
                                                        including_default_value_fields=True),
                "metadata": {"signature_def": json_format.MessageToDict(
                    signature_map, preserving_proto_field_name=True, including_default_value_fields=True)}}
        else:
            document = json_format.MessageToDict(core.status(spec), including_default_value_fields=True)
        return _Document(document)

    get = post = put = delete = patch = head = options = _dispatch


class _Document:
    """A metadata/status answer: JSON only, no version served."""

    route = None

    def __init__(self, document):
        self.document = document


class RestServer:
    """Tornado's HTTP server on its own thread and event loop; model work on a thread pool."""

    def __init__(self, core: ServingCore, serving: ServingConfig, reuse_port: bool = False, threads: int = 64):
        self.core = core
        self.serving = serving
        # Bodies up to 4x the limit are read and answered 413; beyond that the connection is dropped.
        self.hard_body_limit = 4 * serving.rest_max_body_bytes
        self._reuse_port = reuse_port
        self._pool = futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rest")
        self._loop: Optional[tornado.ioloop.IOLoop] = None
        self._http: Optional[tornado.httpserver.HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        # Tornado logs every 4xx as a warning; the metrics count them, and `{"error"}` tells the client.
        logging_module.getLogger("tornado.access").setLevel(logging_module.ERROR)

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def start(self) -> int:
        address = f"{self.serving.host}:{self.serving.rest_port}"
        try:
            sockets = tornado.netutil.bind_sockets(self.serving.rest_port, self.serving.host,
                                                   family=socket.AF_UNSPEC, reuse_port=self._reuse_port)
        except OSError as error:
            raise OSError(f"could not bind {address} for REST ({error.strerror}); is another server using port "
                          f"{self.serving.rest_port}? Choose another with --set serving.rest_port=N") from None
        port = sockets[0].getsockname()[1]
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            self._loop = tornado.ioloop.IOLoop.current()
            application = tornado.web.Application([(r".*", _Handler, {"server": self})])
            self._http = tornado.httpserver.HTTPServer(application, max_body_size=self.hard_body_limit,
                                                       decompress_request=True)
            self._http.add_sockets(sockets)
            started.set()
            self._loop.start()
            self._loop.close(all_fds=True)

        self._thread = threading.Thread(target=serve, daemon=True, name="rest")
        self._thread.start()
        started.wait()
        return port

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            self._http.stop()
            await self._http.close_all_connections()
            self._loop.stop()

        self._loop.add_callback(shutdown)
        self._thread.join()
        self._pool.shutdown(wait=True)
