"""A local model server that speaks TF Serving's gRPC API over the pushed SavedModels.

No TF Serving binary or Docker engine is needed in development: this server
implements `tensorflow_serving.apis` PredictionService (Predict, Classify,
Regress, GetModelMetadata) and ModelService (GetModelStatus) over the same
`models.config` and model base paths TF Serving would read, so client code is
the same against either. What it does like TF Serving:

- loads versions per each model's version policy and re-reads models.config and
  the base path every poll interval; a new version is loaded and warmed up
  (assets.extra/tf_serving_warmup_requests) before it takes traffic, and an
  unloaded version finishes the requests it already has;
- resolves version labels (`stable`, `canary`);
- batches concurrent requests into one model call (max batch size, timeout);
- answers bad requests with INVALID_ARGUMENT / NOT_FOUND / RESOURCE_EXHAUSTED and
  a message saying what to send instead.

It also logs a sample of the raw tf.Examples it receives (`request_log.py`) for
the training/serving skew check.
"""

import os
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf.message import DecodeError
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_log_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from contract.config import ServingConfig
from contract.serving import CLASSIFY_METHOD, EXAMPLES_INPUT, REGRESS_METHOD, SERVING_SIGNATURE, WARMUP_FILE
from contract.versions import list_versions
from serving import model_config
from serving.batching import Batcher
from serving.request_log import RequestLogger

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


class RequestError(Exception):
    """A request the server refuses, with the gRPC status it maps to."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _signature_defs(path: str):
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return saved_model.meta_graphs[0].signature_def


class LoadedVersion:
    """One SavedModel version: its signatures, their definitions and (with batching) their batchers."""

    def __init__(self, name: str, version: int, path: str, settings: ServingConfig):
        self.name, self.version, self.path = name, version, path
        started = time.monotonic()
        self.signature_defs = _signature_defs(path)
        self._model = tf.saved_model.load(path)
        self._functions = dict(self._model.signatures)
        self._batchers: Dict[str, Batcher] = {}
        if settings.enable_batching:
            self._batchers = {key: Batcher(self._caller(key), settings.max_batch_size,
                                           settings.batch_timeout_micros, settings.num_batch_threads)
                              for key in self._functions}
        self.warmed_up = self._warm_up()
        self.load_seconds = time.monotonic() - started

    def _caller(self, signature: str):
        function = self._functions[signature]

        def call(inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
            return {k: v.numpy() for k, v in outputs.items()}

        return call

    def _warm_up(self) -> int:
        """Replays the Pusher's warm-up requests, as TF Serving does, before taking traffic."""
        path = os.path.join(self.path, WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            kind = log.WhichOneof("log_type")
            if kind == "predict_log":
                request = log.predict_log.request
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            elif kind in ("classify_log", "regress_log"):
                # Classify/Regress requests carry tf.Examples for the signature's one string input.
                request = getattr(log, kind).request
                (name,) = self.signature_defs[request.model_spec.signature_name or SERVING_SIGNATURE].inputs
                inputs = {name: np.array([e.SerializeToString() for e in request.input.example_list.examples],
                                         dtype=object)}
            else:
                continue
            self._caller(request.model_spec.signature_name or SERVING_SIGNATURE)(inputs)
            count += 1
        return count

    def run(self, signature: str, inputs: Dict[str, np.ndarray], size: int) -> Dict[str, np.ndarray]:
        batcher = self._batchers.get(signature)
        if batcher is not None and size > 0:
            return batcher.submit(inputs, size)
        return self._caller(signature)(inputs)

    def batching_stats(self, signature: str = SERVING_SIGNATURE) -> Tuple[int, int]:
        """(model calls, requests) of one signature's batcher; (0, 0) without batching."""
        batcher = self._batchers.get(signature)
        return (batcher.calls, batcher.requests) if batcher else (0, 0)

    def unload(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()


@dataclass
class _ModelState:
    versions: Dict[int, LoadedVersion]
    labels: Dict[str, int]


class ModelManager:
    """Keeps the loaded versions in line with models.config and the base paths, one poll at a time."""

    def __init__(self, models_config_path: str, settings: ServingConfig):
        self.models_config_path = models_config_path
        self.settings = settings
        self._models: Dict[str, _ModelState] = {}
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self.last_error = ""

    def poll(self) -> None:
        """Loads what the config now asks for, then swaps it in; a broken config keeps the old state."""
        with self._poll_lock:
            try:
                config = model_config.read(self.models_config_path)
            except (OSError, ValueError) as error:
                self.last_error = str(error)
                logging.error("Keeping the loaded models: %s", error)
                return
            current = self._models
            wanted: Dict[str, _ModelState] = {}
            for entry in config.model_config_list.config:
                on_disk = list_versions(entry.base_path)
                loaded = current.get(entry.name, _ModelState({}, {})).versions
                versions = {}
                for version in model_config.versions_to_serve(entry, on_disk):
                    if version in loaded:
                        versions[version] = loaded[version]
                        continue
                    try:
                        versions[version] = LoadedVersion(
                            entry.name, version, os.path.join(entry.base_path, str(version)), self.settings)
                        logging.info("Loaded %s version %d in %.1fs (%d warm-up requests).", entry.name,
                                     version, versions[version].load_seconds, versions[version].warmed_up)
                    except Exception as error:  # noqa: BLE001 - a bad version must not stop the others
                        self.last_error = f"{entry.name} version {version} failed to load: {error}"
                        logging.error(self.last_error)
                wanted[entry.name] = _ModelState(versions, dict(entry.version_labels))
            with self._lock:
                self._models = wanted
            for name, state in current.items():
                for version, loaded in state.versions.items():
                    if wanted.get(name) is None or version not in wanted[name].versions:
                        loaded.unload()
                        logging.info("Unloaded %s version %d.", name, version)

    def resolve(self, spec: model_pb2.ModelSpec) -> LoadedVersion:
        with self._lock:
            models = self._models
        if not spec.name:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"model_spec.name is empty; set it to one of: {', '.join(sorted(models))}")
        state = models.get(spec.name)
        if state is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: model {spec.name!r}; this server serves "
                               f"{', '.join(sorted(models)) or 'no models yet'}")
        served = sorted(state.versions)
        labels = ", ".join(f"{k}={v}" for k, v in sorted(state.labels.items())) or "none"
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            version = spec.version.value
        elif choice == "version_label":
            if spec.version_label not in state.labels:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"unknown version label {spec.version_label!r} for model {spec.name!r}; "
                                   f"labels: {labels}; versions served: {served}")
            version = state.labels[spec.version_label]
        else:
            if not served:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"model {spec.name!r} has no version loaded yet; see GetModelStatus")
            version = served[-1]
        loaded = state.versions.get(version)
        if loaded is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"version {version} of model {spec.name!r} is not being served; "
                               f"versions served: {served}; labels: {labels}")
        return loaded

    def status(self, name: str) -> List[Tuple[int, int]]:
        with self._lock:
            state = self._models.get(name)
        if state is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"model {name!r} is not in {self.models_config_path}; "
                               f"models: {', '.join(sorted(self._models)) or 'none'}")
        return [(version, AVAILABLE) for version in sorted(state.versions)]

    def shutdown(self) -> None:
        with self._lock:
            models, self._models = self._models, {}
        for state in models.values():
            for loaded in state.versions.values():
                loaded.unload()


_EXAMPLES_HINT = (" Each value of 'examples' must be a serialized tf.Example "
                  "(tf.train.Example(...).SerializeToString())")


def _check_examples(serialized: np.ndarray) -> None:
    """Garbage is refused before batching, naming the bad value, instead of failing a merged batch."""
    for index, value in enumerate(serialized.reshape(-1)):
        try:
            tf.train.Example.FromString(value)
        except DecodeError:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"examples[{index}] ({len(value)} bytes) is not a serialized tf.Example."
                               f"{_EXAMPLES_HINT}") from None


def _dtype_name(dtype: int) -> str:
    return types_pb2.DataType.Name(dtype)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager, loggers: "RequestLoggers"):
        self._manager = manager
        self._loggers = loggers

    def _signature(self, loaded: LoadedVersion, name: str):
        key = name or SERVING_SIGNATURE
        if key not in loaded.signature_defs:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Serving signature key {key!r} not found in {loaded.name} version "
                               f"{loaded.version}; signatures: {', '.join(sorted(loaded.signature_defs))}")
        return key, loaded.signature_defs[key]

    def _inputs(self, request, signature_def) -> Tuple[Dict[str, np.ndarray], int]:
        expected = {name: info.dtype for name, info in signature_def.inputs.items()}
        described = ", ".join(f"{n} ({_dtype_name(d)})" for n, d in sorted(expected.items()))
        if not request.inputs:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"the request has no inputs; send {described}"
                               + (" holding serialized tf.Example protos" if EXAMPLES_INPUT in expected else ""))
        if set(request.inputs) != set(expected):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"inputs {sorted(request.inputs)} do not match the signature; send exactly: "
                               f"{described}")
        arrays, sizes = {}, set()
        for name, proto in request.inputs.items():
            if proto.dtype != expected[name]:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {name!r} has dtype {_dtype_name(proto.dtype)}; the signature expects "
                                   f"{_dtype_name(expected[name])}"
                                   + (" (serialized tf.Example protos)" if name == EXAMPLES_INPUT else ""))
            try:
                array = tf.make_ndarray(proto)
            except Exception as error:  # noqa: BLE001 - malformed TensorProto
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {name!r} is not a valid TensorProto: {error}") from None
            arrays[name] = array
            sizes.add(array.shape[0] if array.ndim else -1)
        size = sizes.pop() if len(sizes) == 1 else -1
        if size == 0:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"the request's inputs are empty (batch of 0); send at least one value for "
                               f"{described}")
        if EXAMPLES_INPUT in arrays:
            _check_examples(arrays[EXAMPLES_INPUT])
        limit = self._manager.settings.max_batch_size
        if size > limit:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"batch of {size} is over this server's limit of {limit} "
                               f"(serving.max_batch_size); split it into requests of at most {limit}")
        return arrays, size

    def _run(self, loaded: LoadedVersion, key: str, arrays, size) -> Dict[str, np.ndarray]:
        try:
            return loaded.run(key, arrays, size)
        except (tf.errors.InvalidArgumentError, UnicodeDecodeError) as error:
            # TF raises UnicodeDecodeError when its own message quotes undecodable input bytes.
            detail = error.message.splitlines()[0] if isinstance(error, tf.errors.OpError) else str(error)
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{loaded.name} version {loaded.version} rejected the input: {detail}."
                               f"{_EXAMPLES_HINT if EXAMPLES_INPUT in arrays else ''}") from None

    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        try:
            loaded = self._manager.resolve(request.model_spec)
            key, signature_def = self._signature(loaded, request.model_spec.signature_name)
            arrays, size = self._inputs(request, signature_def)
            unknown = sorted(set(request.output_filter) - set(signature_def.outputs))
            if unknown:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"output_filter {unknown} not in the signature; outputs: "
                                   f"{', '.join(sorted(signature_def.outputs))}")
            outputs = self._run(loaded, key, arrays, size)
        except RequestError as error:
            context.abort(error.code, str(error))
        if EXAMPLES_INPUT in arrays:
            self._loggers.maybe_log(loaded.name, arrays[EXAMPLES_INPUT])
        response = predict_pb2.PredictResponse()
        response.model_spec.name = loaded.name
        response.model_spec.version.value = loaded.version
        response.model_spec.signature_name = key
        for name, value in outputs.items():
            if not request.output_filter or name in request.output_filter:
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def _examples_call(self, request, method: str, context):
        """Classify/Regress: TF Serving's rules, the `Input` examples into a signature of that method."""
        try:
            loaded = self._manager.resolve(request.model_spec)
            key, signature_def = self._signature(loaded, request.model_spec.signature_name)
            if signature_def.method_name != method:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Expected signature {key!r} method_name to be {method}. Was: "
                                   f"{signature_def.method_name}. Use Predict for this signature, or a "
                                   f"signature exported for {method.rsplit('/', 1)[-1]}")
            kind = request.input.WhichOneof("kind")
            if kind != "example_list":
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "input.example_list is empty; put the tf.Examples in input.example_list")
            examples = np.array([e.SerializeToString() for e in request.input.example_list.examples],
                                dtype=object)
            if not len(examples):
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "input.example_list has no examples")
            (input_name,) = signature_def.inputs
            outputs = self._run(loaded, key, {input_name: examples}, len(examples))
        except RequestError as error:
            context.abort(error.code, str(error))
        self._loggers.maybe_log(loaded.name, examples)
        return loaded, key, outputs

    def Classify(self, request: classification_pb2.ClassificationRequest, context):
        loaded, key, outputs = self._examples_call(request, CLASSIFY_METHOD, context)
        response = classification_pb2.ClassificationResponse()
        response.model_spec.name, response.model_spec.signature_name = loaded.name, key
        response.model_spec.version.value = loaded.version
        scores = outputs.get("scores")
        classes = outputs.get("classes")
        rows = len(scores if scores is not None else classes)
        for row in range(rows):
            result = response.result.classifications.add()
            width = len(scores[row]) if scores is not None else len(classes[row])
            for column in range(width):
                item = result.classes.add()
                if classes is not None:
                    item.label = classes[row][column].decode() if isinstance(classes[row][column], bytes) \
                        else str(classes[row][column])
                if scores is not None:
                    item.score = float(scores[row][column])
        return response

    def Regress(self, request: regression_pb2.RegressionRequest, context):
        loaded, key, outputs = self._examples_call(request, REGRESS_METHOD, context)
        response = regression_pb2.RegressionResponse()
        response.model_spec.name, response.model_spec.signature_name = loaded.name, key
        response.model_spec.version.value = loaded.version
        for value in np.asarray(outputs["outputs"]).reshape(-1):
            response.result.regressions.add().value = float(value)
        return response

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context):
        try:
            if list(request.metadata_field) != ["signature_def"]:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"metadata_field {list(request.metadata_field)} is not supported; "
                                   "ask for ['signature_def']")
            loaded = self._manager.resolve(request.model_spec)
        except RequestError as error:
            context.abort(error.code, str(error))
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, definition in loaded.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(definition)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = loaded.name
        response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].Pack(signature_map)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager):
        self._manager = manager

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        try:
            statuses = self._manager.status(request.model_spec.name)
            if request.model_spec.WhichOneof("version_choice"):
                wanted = self._manager.resolve(request.model_spec).version
                statuses = [s for s in statuses if s[0] == wanted]
        except RequestError as error:
            context.abort(error.code, str(error))
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state in statuses:
            item = response.model_version_status.add()
            item.version, item.state = version, state
        return response


class RequestLoggers:
    """One sampled request logger per model, under `<request_log_dir>/<model_name>/`."""

    def __init__(self, settings: ServingConfig):
        self._settings = settings
        self._loggers: Dict[str, RequestLogger] = {}
        self._lock = threading.Lock()

    def maybe_log(self, model_name: str, serialized_examples) -> None:
        if self._settings.request_log_sample_rate <= 0 or not self._settings.request_log_dir:
            return
        with self._lock:
            logger = self._loggers.get(model_name)
            if logger is None:
                logger = self._loggers[model_name] = RequestLogger(
                    os.path.join(self._settings.request_log_dir, model_name),
                    self._settings.request_log_sample_rate)
        logger.maybe_log(serialized_examples)

    def flush(self) -> None:
        with self._lock:
            loggers = list(self._loggers.values())
        for logger in loggers:
            logger.flush()


class ModelServer:
    """The gRPC server, its model manager and its poll thread. `start()` returns the bound port."""

    def __init__(self, models_config_path: str, settings: ServingConfig, max_workers: int = 64):
        self.settings = settings
        self.manager = ModelManager(models_config_path, settings)
        self.loggers = RequestLoggers(settings)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                   options=[("grpc.so_reuseport", 0)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.manager, self.loggers), self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.manager), self._server)
        self._stopping = threading.Event()
        self._poller: Optional[threading.Thread] = None
        self.port = 0

    def start(self) -> int:
        self.manager.poll()  # the first load happens before the port opens: no NOT_FOUND at startup
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if not self.port:
            self.manager.shutdown()
            raise OSError(f"could not bind {address}; is another server using port {self.settings.port}? "
                          "Choose another with --set serving.port=N")
        self._server.start()
        self._poller = threading.Thread(target=self._poll_loop, daemon=True, name="model-poller")
        self._poller.start()
        return self.port

    def _poll_loop(self) -> None:
        while not self._stopping.wait(self.settings.poll_interval_seconds):
            self.manager.poll()
            self.loggers.flush()

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Refuses new calls, lets in-flight ones finish (up to `grace_seconds`), then unloads."""
        self._stopping.set()
        self._server.stop(grace_seconds).wait()
        if self._poller is not None:
            self._poller.join()
        self.manager.shutdown()
        self.loggers.flush()


def serve_forever(server: ModelServer) -> None:
    """Runs until SIGINT/SIGTERM, then stops gracefully."""
    import signal

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    server.stop()

