"""Version management: which SavedModel versions are loaded, under which labels, and which one answers a request.

`ModelManager.poll()` re-reads `models.config` and each model's base path (as TF
Serving does every `--file_system_poll_wait_seconds`), loads and warms up what the
version policy now asks for (`assets.extra/tf_serving_warmup_requests`) before it
takes traffic, then swaps the new state in; an unloaded version finishes the
requests it already has. `route()` resolves a request's version, version label or
experiment arm (`experiments.py`) to one `LoadedVersion`.
"""

import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (get_model_status_pb2, model_pb2,
                                     prediction_log_pb2)

from contract.config import ServingConfig
from contract.serving import SERVING_SIGNATURE, WARMUP_FILE
from contract.versions import list_versions, version_path
from serving import experiments, model_config
from serving.batching import Batcher
from serving.errors import RequestError
from serving.experiments import Experiment
from serving.metrics import ServingMetrics

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


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


def _request_text(spec: model_pb2.ModelSpec) -> str:
    """TF Serving's ServableRequest::DebugString: Latest(name) or Specific(name, version)."""
    if spec.WhichOneof("version_choice") == "version":
        return f"Specific({spec.name}, {spec.version.value})"
    return f"Latest({spec.name})"


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
                    loaded_version = self._load(entry.name, version, version_path(entry.base_path, version))
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
                               f"Servable not found for request: {_request_text(spec)}: model {spec.name!r}; this "
                               f"server serves {', '.join(sorted(models)) or 'no models yet'}")
        return state

    @staticmethod
    def _version(spec: model_pb2.ModelSpec, state: _ModelState, version: int) -> LoadedVersion:
        loaded = state.versions.get(version)
        if loaded is None:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(state.labels.items())) or "none"
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Specific({spec.name}, {version}): version "
                               f"{version} of model {spec.name!r} is not being served; "
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
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Unrecognized servable version label: {spec.version_label} (model "
                                   f"{spec.name!r}; labels: {labels}; versions served: {served})")
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
                               f"Servable not found for request: Latest({spec.name}): model {spec.name!r} has no "
                               "version loaded yet; see GetModelStatus")
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
