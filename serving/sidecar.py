"""The request-log sidecar for real TF Serving: a gRPC proxy that gives every request an id and logs it.

TF Serving's own request logging needs a LogCollector, and its open-source build registers none, so it
writes no request log. The sidecar stands in front of it (same pod, loopback): clients call the sidecar's
port with the same `tensorflow_serving.apis` stubs, the sidecar forwards every call unchanged (the bytes,
the metadata, the deadline) and answers with TF Serving's own response or status, adding only the
`x-request-id` initial metadata. Predict, Classify and Regress calls are sampled into the request log
(`contract/request_log.py`) exactly as the local server logs them: id, time, model, version (from TF
Serving's response), arm (the version label asked for), status, latency, the tf.Examples and the answers.

    tfx-edge serving sidecar --upstream TF_SERVING_HOST:8500 [--set serving.port=8510 ...]

Only unary calls exist in TF Serving's PredictionService and ModelService; the proxy forwards any of them,
so GetModelStatus and GetModelMetadata pass through too. Predict requests are logged when they carry
serialized tf.Examples (`inputs["examples"]`, this project's serving signature).
"""

import threading
import time
from concurrent import futures
from typing import Optional

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, regression_pb2

from contract import request_log
from contract.serving import EXAMPLES_INPUT, REGRESS_OUTPUTS, SCORES
from serving.core import GRPC
from serving.grpc_api import examples_of
from serving.request_log import RequestLoggers

_SERVICE = "/tensorflow.serving.PredictionService/"
# Metadata gRPC sets itself on the forwarded call.
_OWN_METADATA = ("user-agent", "grpc-", ":")


# Each reader: (request bytes, response bytes) of an answered call -> (serialized examples, outputs, version).
def _predict(request: bytes, response: bytes):
    parsed = predict_pb2.PredictRequest.FromString(request)
    examples = []
    if EXAMPLES_INPUT in parsed.inputs and parsed.inputs[EXAMPLES_INPUT].dtype == types_pb2.DT_STRING:
        examples = list(tf.make_ndarray(parsed.inputs[EXAMPLES_INPUT]).reshape(-1))
    answer = predict_pb2.PredictResponse.FromString(response)
    outputs = {name: tf.make_ndarray(tensor) for name, tensor in answer.outputs.items()}
    return examples, outputs, answer.model_spec.version.value


def _classify(request: bytes, response: bytes):
    parsed = classification_pb2.ClassificationRequest.FromString(request)
    answer = classification_pb2.ClassificationResponse.FromString(response)
    scores = np.array([[c.score for c in row.classes] for row in answer.result.classifications], dtype=np.float64)
    return examples_of(parsed.input), {SCORES: scores}, answer.model_spec.version.value


def _regress(request: bytes, response: bytes):
    parsed = regression_pb2.RegressionRequest.FromString(request)
    answer = regression_pb2.RegressionResponse.FromString(response)
    values = np.array([r.value for r in answer.result.regressions], dtype=np.float64)
    return examples_of(parsed.input), {REGRESS_OUTPUTS: values}, answer.model_spec.version.value


# API name (as TF Serving's metrics name it) -> its request message, and how to read request and response.
_LOGGED = {"Predict": (predict_pb2.PredictRequest, _predict),
           "Classify": (classification_pb2.ClassificationRequest, _classify),
           "Regress": (regression_pb2.RegressionRequest, _regress)}


class _Proxy(grpc.GenericRpcHandler):
    def __init__(self, upstream: grpc.Channel, loggers: RequestLoggers):
        self._upstream = upstream
        self._loggers = loggers

    def service(self, details):
        method = details.method
        call = self._upstream.unary_unary(method)  # bytes in, bytes out: nothing is re-encoded
        api = method[len(_SERVICE):] if method.startswith(_SERVICE) else ""

        def forward(request: bytes, context):
            return self._forward(call, api, request, context)

        return grpc.unary_unary_rpc_method_handler(forward)

    def _forward(self, call, api: str, request: bytes, context) -> bytes:
        metadata = [(k, v) for k, v in context.invocation_metadata() if not k.startswith(_OWN_METADATA)]
        request_id = dict(metadata).get(request_log.REQUEST_ID_HEADER) or request_log.new_request_id()
        problem = request_log.request_id_problem(request_id)
        if problem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        context.send_initial_metadata(((request_log.REQUEST_ID_HEADER, request_id),))
        if not any(k == request_log.REQUEST_ID_HEADER for k, _ in metadata):
            metadata.append((request_log.REQUEST_ID_HEADER, request_id))
        arrived, started = time.time(), time.perf_counter()
        remaining = context.time_remaining()
        try:
            response, _ = call.with_call(request, metadata=metadata,
                                         timeout=remaining if remaining is not None and remaining < 1e6 else None)
        except grpc.RpcError as error:
            self._log(api, request, None, request_id, arrived, started, error.code().name)
            context.abort(error.code(), error.details() or "")
        self._log(api, request, response, request_id, arrived, started, "OK")
        return response

    def _log(self, api: str, request: bytes, response: Optional[bytes], request_id: str, arrived: float,
             started: float, status: str) -> None:
        if api not in _LOGGED or status == "NOT_FOUND":  # no such model or version on TF Serving: nothing to log
            return
        seconds = time.perf_counter() - started
        message, read = _LOGGED[api]
        try:
            spec = message.FromString(request).model_spec
        except Exception:  # noqa: BLE001 - a request TF Serving answered is never failed by its logging
            return

        def answer() -> dict:
            if status != "OK":
                return {}
            examples, outputs, version = read(request, response)
            return {"version": version, "arm": spec.version_label, "examples": [bytes(e) for e in examples],
                    "predictions": request_log.prediction_rows(outputs, len(examples))}

        self._loggers.log(spec.name, request_id, arrived, api, GRPC, status, seconds, answer)


class Sidecar:
    """The proxy's gRPC server on `host:port`, forwarding to `upstream`; `flush()` writes the log out."""

    def __init__(self, upstream: str, host: str, port: int, log_dir: str, sample_rate: float,
                 flush_seconds: float = 2.0, max_workers: int = 32):
        self.upstream = upstream
        self.loggers = RequestLoggers(log_dir, sample_rate)
        self._channel = grpc.insecure_channel(upstream)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                   handlers=[_Proxy(self._channel, self.loggers)])
        self.address = f"{host}:{port}"
        self.port = 0
        self._flush_seconds = flush_seconds
        self._stopping = threading.Event()

    def start(self) -> int:
        self.port = self._server.add_insecure_port(self.address)
        if not self.port:
            raise OSError(f"could not bind {self.address} for the sidecar; choose another --port")
        self._server.start()
        threading.Thread(target=self._flush_loop, daemon=True, name="sidecar-log").start()
        return self.port

    def _flush_loop(self) -> None:
        while not self._stopping.wait(self._flush_seconds):
            self.loggers.flush()

    def stop(self, grace_seconds: float = 5.0) -> None:
        self._server.stop(grace_seconds).wait()
        self._stopping.set()
        self.loggers.flush()
        self._channel.close()
