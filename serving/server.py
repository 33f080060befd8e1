"""A local model server that speaks TF Serving's gRPC and REST APIs over the pushed SavedModels.

No TF Serving binary or Docker engine is needed in development: this server
implements `tensorflow_serving.apis` PredictionService (Predict, Classify,
Regress, GetModelMetadata) and ModelService (GetModelStatus) on the gRPC port,
and TF Serving's REST API (`rest.py`) plus its Prometheus page (`metrics.py`) on
the REST port, over the same `models.config` and model base paths TF Serving
would read, so client code is the same against either. What it does like TF Serving:

- loads versions per each model's version policy and re-reads models.config and
  the base path every poll interval; a new version is loaded and warmed up
  (assets.extra/tf_serving_warmup_requests) before it takes traffic, and an
  unloaded version finishes the requests it already has;
- resolves version labels (`stable`, `canary`);
- batches concurrent requests into one model call (max batch size, timeout);
- answers bad requests with INVALID_ARGUMENT / NOT_FOUND / RESOURCE_EXHAUSTED and
  a message saying what to send instead.

On top: a weighted split between labels with shadow traffic (`experiments.py`),
a sampled log of the raw tf.Examples it receives for the training/serving skew
check (`request_log.py`), and several worker processes on the same ports
(`workers.py`). Both transports go through one `ServingCore`, so loading,
labels, batching, logs and metrics are the same for gRPC and REST.
"""

import os
import random
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf.message import DecodeError
from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_log_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from contract.config import FeaturesConfig, ServingConfig
from contract.serving import CLASSIFY_METHOD, EXAMPLES_INPUT, REGRESS_METHOD, SERVING_SIGNATURE, WARMUP_FILE
from contract.versions import list_versions
from serving import experiments, model_config
from serving.batching import Batcher
from serving.experiments import ArmRecord, Experiment, ExperimentLog
from serving.metrics import ServingMetrics
from serving.request_log import RequestLogger

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
GRPC = "GRPC"
REST = "REST"


class RequestError(Exception):
    """A request the server refuses, with the gRPC status it maps to (REST maps that to HTTP as TF Serving does)."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: Optional[int] = None):
        super().__init__(message)
        self.code = code
        self.http_status = http_status


def _signature_defs(path: str):
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return saved_model.meta_graphs[0].signature_def


class _QueueObserver:
    """Feeds one batcher's queue depth and merged calls into the metrics."""

    def __init__(self, metrics: ServingMetrics, name: str, version: int, signature: str):
        self._depth = metrics.queue_depth.labels(name, str(version), signature)
        self._metrics = metrics
        self._pool = f"{name}/{version}/{signature}"

    def queued(self, delta: int) -> None:
        self._depth.inc(delta)

    def batch(self, request_sizes: List[int], queued_seconds: List[float]) -> None:
        self._metrics.observe_batch(self._pool, request_sizes, queued_seconds)


class LoadedVersion:
    """One SavedModel version: its signatures, their definitions and (with batching) their batchers."""

    def __init__(self, name: str, version: int, path: str, serving: ServingConfig, metrics: ServingMetrics):
        self.name, self.version, self.path = name, version, path
        started = time.monotonic()
        self.signature_defs = _signature_defs(path)
        self._model = tf.saved_model.load(path)
        self._functions = dict(self._model.signatures)
        self._batchers: Dict[str, Batcher] = {}
        if serving.enable_batching:
            self._batchers = {key: Batcher(self._caller(key), serving.max_batch_size, serving.batch_timeout_micros,
                                           serving.num_batch_threads, _QueueObserver(metrics, name, version, key))
                              for key in self._functions}
        warm_started = time.monotonic()
        self.warmed_up = self._warm_up()
        metrics.warmup_latency.labels(path, "OK").observe((time.monotonic() - warm_started) * 1e6)
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
    experiment: Optional[Experiment] = None


@dataclass
class Route:
    """Which loaded version answers a request, under which label, and whether an experiment chose it."""

    loaded: LoadedVersion
    label: str
    experiment: Optional[Experiment] = None
    shadow: Optional[LoadedVersion] = None
    shadow_label: str = ""
    labels: Optional[List[int]] = None  # of labelled traffic, for the experiment log


class ModelManager:
    """Keeps the loaded versions in line with models.config and the base paths, one poll at a time."""

    def __init__(self, models_config_path: str, serving: ServingConfig, metrics: Optional[ServingMetrics] = None):
        self.models_config_path = models_config_path
        self.experiments_path = experiments.experiments_path(models_config_path)
        self.serving = serving
        self.metrics = metrics or ServingMetrics()
        self._models: Dict[str, _ModelState] = {}
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._random = random.Random()
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
            split = self._read_experiments()
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
                    loaded_version = self._load(entry.name, version, os.path.join(entry.base_path, str(version)))
                    if loaded_version is not None:
                        versions[version] = loaded_version
                labels = dict(entry.version_labels)
                wanted[entry.name] = _ModelState(versions, labels, self._experiment(entry.name, split, labels))
            with self._lock:
                self._models = wanted
            for name, state in current.items():
                for version, loaded in state.versions.items():
                    if wanted.get(name) is None or version not in wanted[name].versions:
                        loaded.unload()
                        self.metrics.versions_loaded.labels(name, str(version)).dec()
                        self.metrics.model_events.labels(name, str(version), "unload").inc()
                        logging.info("Unloaded %s version %d.", name, version)

    def _load(self, name: str, version: int, path: str) -> Optional[LoadedVersion]:
        started = time.monotonic()
        try:
            loaded = LoadedVersion(name, version, path, self.serving, self.metrics)
        except Exception as error:  # noqa: BLE001 - a bad version must not stop the others
            self.last_error = f"{name} version {version} failed to load: {error}"
            logging.error(self.last_error)
            self.metrics.load_attempt_count.labels(path, "fail").inc()
            self.metrics.model_events.labels(name, str(version), "load_failed").inc()
            return None
        self.metrics.load_attempt_count.labels(path, "success").inc()
        self.metrics.load_latency.labels(path).inc((time.monotonic() - started) * 1e6)
        self.metrics.versions_loaded.labels(name, str(version)).inc()
        self.metrics.model_events.labels(name, str(version), "load").inc()
        logging.info("Loaded %s version %d in %.1fs (%d warm-up requests).", name, version, loaded.load_seconds,
                     loaded.warmed_up)
        return loaded

    def _read_experiments(self) -> Dict[str, Experiment]:
        try:
            return experiments.read(self.experiments_path)
        except (OSError, ValueError) as error:
            self.last_error = str(error)
            logging.error("Ignoring the experiments: %s", error)
            return {}

    def _experiment(self, name: str, split: Dict[str, Experiment], labels: Dict[str, int]) -> Optional[Experiment]:
        """The model's experiment if its labels still exist (a rollback may have removed one), else none."""
        experiment = split.get(name)
        if experiment is None:
            return None
        try:
            experiment.check(name, labels, self.experiments_path)
        except experiments.ExperimentError as error:
            self.last_error = str(error)
            logging.error("Not splitting traffic: %s", error)
            return None
        return experiment

    def _state(self, spec: model_pb2.ModelSpec) -> _ModelState:
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
        return state

    @staticmethod
    def _version(spec: model_pb2.ModelSpec, state: _ModelState, version: int) -> LoadedVersion:
        loaded = state.versions.get(version)
        if loaded is None:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(state.labels.items())) or "none"
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"version {version} of model {spec.name!r} is not being served; "
                               f"versions served: {sorted(state.versions)}; labels: {labels}")
        return loaded

    def route(self, spec: model_pb2.ModelSpec,
              routing_key: Callable[[Experiment, LoadedVersion], str] = lambda *_: "") -> Route:
        """The version for a request. Without a version or label, an experiment's split picks the label.

        `routing_key(experiment, candidate)` gives the request's sticky key; `candidate` is a version of the
        model whose signature can read the request (the arms of an experiment share their signatures).
        """
        state = self._state(spec)
        served = sorted(state.versions)
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            version = spec.version.value
            label = next((k for k, v in sorted(state.labels.items()) if v == version), "")
            return Route(self._version(spec, state, version), label)
        if choice == "version_label":
            if spec.version_label not in state.labels:
                labels = ", ".join(f"{k}={v}" for k, v in sorted(state.labels.items())) or "none"
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"unknown version label {spec.version_label!r} for model {spec.name!r}; "
                                   f"labels: {labels}; versions served: {served}")
            return Route(self._version(spec, state, state.labels[spec.version_label]), spec.version_label)
        experiment = state.experiment
        if experiment is not None and served:
            arm = experiment.arm(routing_key(experiment, state.versions[served[-1]]), self._random)
            route = Route(self._version(spec, state, state.labels[arm]), arm, experiment)
            shadow = experiment.shadow_for(arm, self._random)
            if shadow and state.labels[shadow] in state.versions:
                route.shadow, route.shadow_label = state.versions[state.labels[shadow]], shadow
            return route
        if not served:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"model {spec.name!r} has no version loaded yet; see GetModelStatus")
        label = next((k for k, v in sorted(state.labels.items()) if v == served[-1]), "")
        return Route(state.versions[served[-1]], label)

    def resolve(self, spec: model_pb2.ModelSpec) -> LoadedVersion:
        return self.route(spec).loaded

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
        for name, state in models.items():
            for version, loaded in state.versions.items():
                loaded.unload()
                self.metrics.versions_loaded.labels(name, str(version)).dec()


_EXAMPLES_HINT = (" Each value of 'examples' must be a serialized tf.Example "
                  "(tf.train.Example(...).SerializeToString())")


def parse_examples(serialized: np.ndarray, name: str = EXAMPLES_INPUT) -> List[tf.train.Example]:
    """Garbage is refused before batching, naming the bad value, instead of failing a merged batch."""
    parsed = []
    for index, value in enumerate(serialized.reshape(-1)):
        try:
            parsed.append(tf.train.Example.FromString(value))
        except DecodeError:
            hint = _EXAMPLES_HINT if name == EXAMPLES_INPUT else f" Each value of {name!r} must be a serialized tf.Example"
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{name}[{index}] ({len(value)} bytes) is not a serialized tf.Example.{hint}") from None
    return parsed


def _op_error_detail(message: str) -> str:
    """The line of a TF error that names the problem, without "Graph execution error", node and op noise."""
    noise = ("Graph execution error", "Detected at node", "<stack traces unavailable>")
    lines = [line.strip() for line in message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(noise) and not line.startswith("[[")]
    return (useful or lines or [""])[0].rstrip(".")


def dtype_name(dtype: int) -> str:
    return types_pb2.DataType.Name(dtype)


@dataclass
class Answer:
    """What a Predict/Classify/Regress call produced, for the transport to format."""

    route: Route
    signature: str
    outputs: Dict[str, np.ndarray]
    document: Optional[dict] = None  # the REST answer, once formatted

    @property
    def loaded(self) -> LoadedVersion:
        return self.route.loaded


def _scores(outputs: Dict[str, np.ndarray]) -> List[float]:
    """One score per example for the experiment log: of `scores`, the positive class's (two classes) or
    the top class's (more); else the signature's only output (a regression value)."""
    if "scores" in outputs:
        scores = np.asarray(outputs["scores"])
        return [float(v) for v in (scores[:, -1] if scores.shape[-1] == 2 else scores.max(axis=-1))]
    if len(outputs) == 1:
        (value,) = outputs.values()
        return [float(v) for v in np.asarray(value).reshape(len(value), -1)[:, 0]]
    return []


class ServingCore:
    """Predict, Classify, Regress, metadata and status, whatever the transport; every request is counted."""

    def __init__(self, manager: ModelManager, loggers: "RequestLoggers", experiment_log: ExperimentLog,
                 label_spec: Optional[FeaturesConfig] = None):
        self.manager = manager
        self.metrics = manager.metrics
        self.serving = manager.serving
        self.loggers = loggers
        self.experiment_log = experiment_log
        self._label_spec = label_spec
        self._shadow_pool = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow")

    def observe(self, api: str, entrypoint: str, model_name: str, call: Callable[[], "Answer"]):
        """Runs `call` and counts it in the metrics by status, with its latency."""
        started = time.perf_counter()
        try:
            answer = call()
        except RequestError as error:
            self.metrics.observe_request(model_name, api, entrypoint, error.code.name, time.perf_counter() - started)
            raise
        except Exception:
            self.metrics.observe_request(model_name, api, entrypoint, "INTERNAL", time.perf_counter() - started)
            raise
        seconds = time.perf_counter() - started
        route = getattr(answer, "route", None)
        version, label = (str(route.loaded.version), route.label) if route else ("", "")
        self.metrics.observe_request(model_name, api, entrypoint, "OK", seconds, version, label)
        if route is not None and route.experiment is not None:
            self._log_arm(answer, api, seconds)
        return answer

    @staticmethod
    def _routing_key(key: str, examples: Callable[[LoadedVersion], List[tf.train.Example]]):
        """The sticky key: the header's value, else the value of the sticky feature in the first example."""
        def of(experiment: Experiment, candidate: LoadedVersion) -> str:
            if key or not experiment.sticky_feature:
                return key
            try:
                parsed = examples(candidate)
            except RequestError:
                return ""  # garbage is refused, with its message, once the inputs are checked
            feature = parsed[0].features.feature.get(experiment.sticky_feature) if parsed else None
            kind = feature.WhichOneof("kind") if feature is not None else None
            values = list(getattr(feature, kind).value) if kind else []
            return str(values[0]) if values else ""
        return of

    def _signature(self, loaded: LoadedVersion, name: str):
        key = name or SERVING_SIGNATURE
        if key not in loaded.signature_defs:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Serving signature key {key!r} not found in {loaded.name} version "
                               f"{loaded.version}; signatures: {', '.join(sorted(loaded.signature_defs))}")
        return key, loaded.signature_defs[key]

    def _check_inputs(self, arrays: Dict[str, np.ndarray], signature_def) -> int:
        """The batch size of valid inputs; refuses wrong names, empty or oversized batches."""
        expected = {name: info.dtype for name, info in signature_def.inputs.items()}
        described = ", ".join(f"{n} ({dtype_name(d)})" for n, d in sorted(expected.items()))
        if not arrays:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"the request has no inputs; send {described}"
                               + (" holding serialized tf.Example protos" if EXAMPLES_INPUT in expected else ""))
        if set(arrays) != set(expected):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"inputs {sorted(arrays)} do not match the signature; send exactly: {described}")
        sizes = {array.shape[0] if array.ndim else -1 for array in arrays.values()}
        size = sizes.pop() if len(sizes) == 1 else -1
        if size == 0:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"the request's inputs are empty (batch of 0); send at least one value for {described}")
        self._check_size(size)
        return size

    def _check_size(self, size: int) -> None:
        limit = self.serving.max_batch_size
        if size > limit:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"batch of {size} is over this server's limit of {limit} "
                               f"(serving.max_batch_size); split it into requests of at most {limit}")

    def _run(self, loaded: LoadedVersion, key: str, arrays, size) -> Dict[str, np.ndarray]:
        try:
            return loaded.run(key, arrays, size)
        except (tf.errors.InvalidArgumentError, UnicodeDecodeError) as error:
            # TF raises UnicodeDecodeError when its own message quotes undecodable input bytes.
            detail = _op_error_detail(error.message) if isinstance(error, tf.errors.OpError) else str(error)
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{loaded.name} version {loaded.version} rejected the input: {detail}."
                               f"{_EXAMPLES_HINT if EXAMPLES_INPUT in arrays else ''}") from None

    def predict(self, spec: model_pb2.ModelSpec, convert: Callable[[object], Dict[str, np.ndarray]],
                output_filter: Sequence[str] = (), key: str = "") -> Answer:
        """`convert` turns the transport's request into arrays, given the SignatureDef of the version it reaches."""
        parsed: List[tf.train.Example] = []
        arrays: Dict[str, np.ndarray] = {}

        def examples(version: LoadedVersion) -> List[tf.train.Example]:
            if not arrays:
                arrays.update(convert(self._signature(version, spec.signature_name)[1]))
            if not parsed and EXAMPLES_INPUT in arrays:
                parsed.extend(parse_examples(arrays[EXAMPLES_INPUT]))
            return parsed

        route = self.manager.route(spec, self._routing_key(key, examples))
        name, signature_def = self._signature(route.loaded, spec.signature_name)
        if not arrays:
            arrays.update(convert(signature_def))
        size = self._check_inputs(arrays, signature_def)
        examples(route.loaded)
        unknown = sorted(set(output_filter) - set(signature_def.outputs))
        if unknown:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output_filter {unknown} not in the signature; outputs: "
                               f"{', '.join(sorted(signature_def.outputs))}")
        outputs = self._run(route.loaded, name, arrays, size)
        if EXAMPLES_INPUT in arrays:
            self._after(route, name, arrays, size, arrays[EXAMPLES_INPUT], outputs, parsed)
        if output_filter:
            outputs = {k: v for k, v in outputs.items() if k in output_filter}
        return Answer(route, name, outputs)

    def examples_call(self, spec: model_pb2.ModelSpec, method: str, serialized: List[bytes], key: str = "") -> Answer:
        """Classify/Regress: TF Serving's rules, the `Input` examples into a signature of that method."""
        parsed: List[tf.train.Example] = []
        values = np.array(serialized, dtype=object)

        def examples(_: Optional[LoadedVersion] = None) -> List[tf.train.Example]:
            if not parsed:
                parsed.extend(parse_examples(values, "examples"))
            return parsed

        route = self.manager.route(spec, self._routing_key(key, examples))
        name, signature_def = self._signature(route.loaded, spec.signature_name)
        if signature_def.method_name != method:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Expected signature {name!r} method_name to be {method}. Was: "
                               f"{signature_def.method_name}. Use Predict for this signature, or a "
                               f"signature exported for {method.rsplit('/', 1)[-1]} (the taxi model's is "
                               "'classify')")
        if not len(values):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "the request has no examples; put the tf.Examples in input.example_list")
        self._check_size(len(values))
        examples()
        (input_name,) = signature_def.inputs
        arrays = {input_name: values}
        outputs = self._run(route.loaded, name, arrays, len(values))
        self._after(route, name, arrays, len(values), values, outputs, parsed)
        return Answer(route, name, outputs)

    def _after(self, route: Route, signature: str, arrays, size: int, serialized, outputs, parsed) -> None:
        """Request log, example counts and, for a routed request, the shadow call."""
        self.metrics.observe_examples(route.loaded.name, size)
        self.loggers.maybe_log(route.loaded.name, serialized)
        if route.experiment is not None:
            route.labels = self._labels(parsed)
        if route.shadow is not None:
            self._shadow_pool.submit(self._shadow, route, signature, arrays, size, outputs)

    def _labels(self, parsed: List[tf.train.Example]) -> Optional[List[int]]:
        """The 0/1 labels of labelled binary traffic (examples that still carry the label columns), else None.

        The experiment report's AUC and accuracy compare binary scores with these; other tasks log scores only.
        """
        spec = self._label_spec
        if spec is None or spec.task != "binary" or not parsed:
            return None
        values = {column: [] for column in spec.label_columns}
        for example in parsed:
            for column in values:
                feature = example.features.feature.get(column)
                kind = feature.WhichOneof("kind") if feature is not None else None
                if not kind or not getattr(feature, kind).value:
                    return None
                values[column].append(getattr(feature, kind).value[0])
        relative = values[spec.label_relative_to] if spec.label_relative_to in values else None
        labels = [int(v) for v in spec.label(values[spec.label_column], relative)]
        return None if min(labels) < 0 else labels

    def _log_arm(self, answer: Answer, api: str, seconds: float) -> None:
        route = answer.route
        self.experiment_log.add(ArmRecord(route.loaded.name, route.label, route.loaded.version, api,
                                          round(seconds * 1e3, 3), _scores(answer.outputs),
                                          route.labels))

    def _shadow(self, route: Route, signature: str, arrays, size: int, live_outputs) -> None:
        shadow = route.shadow
        started = time.perf_counter()
        try:
            outputs = shadow.run(signature, arrays, size) if signature in shadow.signature_defs else {}
            status = "OK" if outputs else "INVALID_ARGUMENT"
        except Exception as error:  # noqa: BLE001 - a failing shadow never touches the live answer
            logging.warning("Shadow call to %s version %d failed: %s", shadow.name, shadow.version, error)
            outputs, status = {}, "INTERNAL"
        self.metrics.shadow_requests.labels(shadow.name, route.shadow_label, status).inc()
        if status == "OK":
            self.experiment_log.add(ArmRecord(
                shadow.name, route.shadow_label, shadow.version, signature,
                round((time.perf_counter() - started) * 1e3, 3), _scores(outputs), route.labels,
                shadow=True, live_arm=route.label, live_scores=_scores(live_outputs)))

    def metadata(self, spec: model_pb2.ModelSpec) -> get_model_metadata_pb2.GetModelMetadataResponse:
        loaded = self.manager.resolve(spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, definition in loaded.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(definition)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = loaded.name
        response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def status(self, spec: model_pb2.ModelSpec) -> get_model_status_pb2.GetModelStatusResponse:
        statuses = self.manager.status(spec.name)
        if spec.WhichOneof("version_choice"):
            wanted = self.manager.resolve(spec).version
            statuses = [s for s in statuses if s[0] == wanted]
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state in statuses:
            item = response.model_version_status.add()
            item.version, item.state = version, state
            item.status.SetInParent()  # error_code OK, as TF Serving reports it
        return response

    def close(self) -> None:
        self._shadow_pool.shutdown(wait=True)


def examples_of(request_input) -> List[bytes]:
    """The serialized examples of a Classify/Regress `Input`; with a context, each is context + example bytes,
    which proto parsing merges exactly as TF Serving does (the example's own features win)."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in request_input.example_list.examples]
    if kind == "example_list_with_context":
        context = request_input.example_list_with_context.context.SerializeToString()
        return [context + e.SerializeToString() for e in request_input.example_list_with_context.examples]
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       "input is empty; put the tf.Examples in input.example_list (or example_list_with_context)")


def classification_result(outputs: Dict[str, np.ndarray], result) -> None:
    """Fills a ClassificationResult from the `classes`/`scores` outputs."""
    scores = outputs.get("scores")
    classes = outputs.get("classes")
    rows = len(scores if scores is not None else classes)
    for row in range(rows):
        classification = result.classifications.add()
        width = len(scores[row]) if scores is not None else len(classes[row])
        for column in range(width):
            item = classification.classes.add()
            if classes is not None:
                value = classes[row][column]
                item.label = value.decode() if isinstance(value, bytes) else str(value)
            if scores is not None:
                item.score = float(scores[row][column])


def _fill_tensor(proto, array: np.ndarray) -> None:
    """Numeric outputs as raw `tensor_content`, as TF Serving writes them; tf.make_tensor_proto's generic path
    costs about 0.1 ms a call, a tenth of a batch-1 request."""
    if array.dtype == object or array.dtype.kind in "SU":
        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    proto.dtype = tf.as_dtype(array.dtype).as_datatype_enum
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape)
    proto.tensor_content = np.ascontiguousarray(array).tobytes()


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    def _key(self, context) -> str:
        header = self._core.serving.experiment_key_header.lower()
        return next((value for name, value in context.invocation_metadata() if name == header), "")

    @staticmethod
    def _arrays(request, signature_def) -> Dict[str, np.ndarray]:
        arrays = {}
        expected = {name: info.dtype for name, info in signature_def.inputs.items()}
        for name, proto in request.inputs.items():
            if name in expected and proto.dtype != expected[name]:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {name!r} has dtype {dtype_name(proto.dtype)}; the signature expects "
                                   f"{dtype_name(expected[name])}"
                                   + (" (serialized tf.Example protos)" if name == EXAMPLES_INPUT else ""))
            try:
                arrays[name] = tf.make_ndarray(proto)
            except Exception as error:  # noqa: BLE001 - malformed TensorProto
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {name!r} is not a valid TensorProto: {error}") from None
        return arrays

    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        def call():
            return self._core.predict(request.model_spec, lambda signature_def: self._arrays(request, signature_def),
                                      list(request.output_filter), self._key(context))

        try:
            answer = self._core.observe("Predict", GRPC, request.model_spec.name, call)
        except RequestError as error:
            context.abort(error.code, str(error))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = answer.loaded.name
        response.model_spec.version.value = answer.loaded.version
        response.model_spec.signature_name = answer.signature
        for name, value in answer.outputs.items():
            _fill_tensor(response.outputs[name], np.asarray(value))
        return response

    def _examples(self, request, method: str, api: str, context) -> Answer:
        def call():
            return self._core.examples_call(request.model_spec, method, examples_of(request.input),
                                            self._key(context))

        try:
            return self._core.observe(api, GRPC, request.model_spec.name, call)
        except RequestError as error:
            context.abort(error.code, str(error))

    def Classify(self, request: classification_pb2.ClassificationRequest, context):
        answer = self._examples(request, CLASSIFY_METHOD, "Classify", context)
        response = classification_pb2.ClassificationResponse()
        response.model_spec.name, response.model_spec.signature_name = answer.loaded.name, answer.signature
        response.model_spec.version.value = answer.loaded.version
        classification_result(answer.outputs, response.result)
        return response

    def Regress(self, request: regression_pb2.RegressionRequest, context):
        answer = self._examples(request, REGRESS_METHOD, "Regress", context)
        response = regression_pb2.RegressionResponse()
        response.model_spec.name, response.model_spec.signature_name = answer.loaded.name, answer.signature
        response.model_spec.version.value = answer.loaded.version
        for value in np.asarray(answer.outputs["outputs"]).reshape(-1):
            response.result.regressions.add().value = float(value)
        return response

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context):
        try:
            if list(request.metadata_field) != ["signature_def"]:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"metadata_field {list(request.metadata_field)} is not supported; "
                                   "ask for ['signature_def']")
            return self._core.metadata(request.model_spec)
        except RequestError as error:
            context.abort(error.code, str(error))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        try:
            return self._core.status(request.model_spec)
        except RequestError as error:
            context.abort(error.code, str(error))


class RequestLoggers:
    """One sampled request logger per model, under `<request_log_dir>/<model_name>/`."""

    def __init__(self, serving: ServingConfig, metrics: ServingMetrics):
        self._serving = serving
        self._metrics = metrics
        self._loggers: Dict[str, RequestLogger] = {}
        self._lock = threading.Lock()

    def maybe_log(self, model_name: str, serialized_examples) -> None:
        if self._serving.request_log_sample_rate <= 0 or not self._serving.request_log_dir:
            return
        with self._lock:
            logger = self._loggers.get(model_name)
            if logger is None:
                logger = self._loggers[model_name] = RequestLogger(
                    os.path.join(self._serving.request_log_dir, model_name),
                    self._serving.request_log_sample_rate)
        if logger.maybe_log(serialized_examples):
            self._metrics.request_log_count.labels(model_name, "OK").inc()
            self._metrics.request_log_examples.labels(model_name).inc(len(serialized_examples))

    def flush(self) -> None:
        with self._lock:
            loggers = list(self._loggers.values())
        for logger in loggers:
            logger.flush()


class ModelServer:
    """The gRPC and REST servers, their model manager and the poll thread. `start()` returns the gRPC port.

    `reuse_port` lets several worker processes listen on the same ports (`workers.py`).
    """

    def __init__(self, models_config_path: str, serving: ServingConfig, label_spec: Optional[FeaturesConfig] = None,
                 max_workers: int = 64, reuse_port: bool = False):
        self.serving = serving
        self.metrics = ServingMetrics()
        self.manager = ModelManager(models_config_path, serving, self.metrics)
        self.loggers = RequestLoggers(serving, self.metrics)
        self.experiment_log = ExperimentLog(serving.experiment_log_dir)
        self.core = ServingCore(self.manager, self.loggers, self.experiment_log, label_spec)
        self._reuse_port = reuse_port
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                   options=[("grpc.so_reuseport", int(reuse_port))])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.core), self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.core), self._server)
        self._rest = None
        self._stopping = threading.Event()
        self._poller: Optional[threading.Thread] = None
        self.port = 0
        self.rest_port = 0

    def start(self) -> int:
        from serving.rest import RestServer

        self.manager.poll()  # the first load happens before the ports open: no NOT_FOUND at startup
        address = f"{self.serving.host}:{self.serving.port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if not self.port:
            self.manager.shutdown()
            raise OSError(f"could not bind {address}; is another server using port {self.serving.port}? "
                          "Choose another with --set serving.port=N")
        self._rest = RestServer(self.core, self.serving, reuse_port=self._reuse_port)
        try:
            self.rest_port = self._rest.start()
        except OSError:
            self._server.stop(None)
            self.manager.shutdown()
            raise
        self._server.start()
        self._poller = threading.Thread(target=self._poll_loop, daemon=True, name="model-poller")
        self._poller.start()
        return self.port

    def _poll_loop(self) -> None:
        while not self._stopping.wait(self.serving.poll_interval_seconds):
            self.manager.poll()
            self.loggers.flush()
            self.experiment_log.flush()

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Refuses new calls, lets in-flight ones finish (up to `grace_seconds`), then unloads."""
        self._stopping.set()
        if self._rest is not None:
            self._rest.stop()
        self._server.stop(grace_seconds).wait()
        if self._poller is not None:
            self._poller.join()
        self.core.close()
        self.manager.shutdown()
        self.loggers.flush()
        self.experiment_log.flush()


def serve_forever(server: ModelServer) -> None:
    """Runs until SIGINT/SIGTERM, then stops gracefully."""
    import signal

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    server.stop()
