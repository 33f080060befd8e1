"""Version management: which SavedModel versions are loaded, under which labels, and which one answers a request.

`ModelManager.poll()` re-reads `models.config` and each model's base path (as TF
Serving does every `--file_system_poll_wait_seconds`), loads and warms up what the
version policy now asks for (`assets.extra/tf_serving_warmup_requests`) before it
takes traffic, then swaps the new state in; an unloaded version finishes the
requests it already has. `route()` resolves a request's version, version label or
experiment arm (`experiments.py`) to one `LoadedVersion`.

Availability first, as TF Serving's `AvailabilityPreservingPolicy`
(`core/availability_preserving_policy.cc`): a version the policy no longer asks
for is unloaded only once a version it asks for serves; while none does (the new
version failed to load), the newest one still serving stays. Beyond TF Serving,
a follow-latest model with nothing serving yet (a start, a restarted worker)
whose newest version fails serves the newest older version that loads. A version that fails
to load is reported by `GetModelStatus` as `END` with its error code and message
(TF Serving's `ServableStateMonitor`), counted in
`:tensorflow:cc:saved_model:load_attempt_count{status="fail"}`, and tried again
after `serving.load_retry_interval_seconds`, doubling, at most
`serving.max_load_retries` times (TF Serving retries at a fixed interval inside the
load; here the poll goes on meanwhile). A `models.config` edit that cannot be
applied (a missing base path, a label naming a version that is not on disk) is
refused as a whole, as TF Serving's config reload is: the model keeps what it
serves, and the problem is logged and counted (`serving_model_events{event=
"config_error"}`).
"""

import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (get_model_status_pb2, model_pb2,
                                     prediction_log_pb2)

from contract.config import ServingConfig
from contract.serving import SERVING_SIGNATURE, WARMUP_FILE
from contract.versions import list_versions, version_path
from models.trainer import custom_ops
from serving import experiments, model_config
from serving.batching import Batcher
from serving.errors import RequestError
from serving.experiments import Experiment
from serving.metrics import ServingMetrics

VersionStatus = get_model_status_pb2.ModelVersionStatus
# Longest wait between two load attempts of a failed version, however many attempts came before.
MAX_RETRY_INTERVAL_SECONDS = 600.0


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
        self._model = custom_ops.load(path)
        self._functions = dict(self._model.signatures)
        self._batchers: Dict[str, Batcher] = {}
        if serving.enable_batching:
            self._batchers = {key: Batcher(self._caller(key), serving.max_batch_size, serving.batch_timeout_micros,
                                           serving.num_batch_threads, _QueueObserver(metrics, name, version, key))
                              for key in self._functions}
        warm_started = time.monotonic()
        try:
            self.warmed_up = self._warm_up()
        except BaseException:
            self.unload()  # a version whose warm-up fails never serves; its batcher threads end here
            raise
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
class LoadFailure:
    """A version that failed to load: its error as TF Serving reports it, and when it is tried again."""

    code: grpc.StatusCode
    message: str
    attempts: int
    retry_at: Optional[float]  # time.monotonic() of the next attempt; None once serving.max_load_retries are spent
    identity: Tuple[int, int]  # (inode, mtime) of the version directory: a directory put in its place is new

    def describe(self) -> str:
        if self.retry_at is None:
            return f"{self.message} (gave up after {self.attempts} attempts)"
        wait = max(0.0, self.retry_at - time.monotonic())
        return f"{self.message} (attempt {self.attempts}; next in {wait:.0f}s)"


def load_error(error: BaseException, path: str) -> Tuple[grpc.StatusCode, str]:
    """The status TF Serving would report for a failed load: its code and one line naming the version.

    TF's SavedModel reader says DATA_LOSS "Can't parse <file> as binary proto" for a corrupt
    saved_model.pb and NOT_FOUND for a missing one; other TensorFlow errors keep their own code.
    """
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, (DecodeError, IndexError)):
        return grpc.StatusCode.DATA_LOSS, f"Can't parse {os.path.join(path, 'saved_model.pb')} as binary proto"
    if isinstance(error, (FileNotFoundError, tf.errors.NotFoundError)):
        return grpc.StatusCode.NOT_FOUND, f"SavedModel not found in export directory {path}: {detail}"
    if isinstance(error, tf.errors.OpError):
        return _grpc_code(error.error_code), f"{path}: {detail}"
    return grpc.StatusCode.UNKNOWN, f"{path}: {type(error).__name__}: {detail}"


def _grpc_code(tf_code: int) -> grpc.StatusCode:
    """TensorFlow's error codes are gRPC's (tensorflow/core/protobuf/error_codes.proto)."""
    return next((code for code in grpc.StatusCode if code.value[0] == tf_code), grpc.StatusCode.UNKNOWN)


def _identity(path: str) -> Tuple[int, int]:
    try:
        stat = os.stat(path)
        return stat.st_ino, stat.st_mtime_ns
    except OSError:
        return 0, 0


@dataclass
class _ModelState:
    versions: Dict[int, LoadedVersion]
    labels: Dict[str, int]
    experiment: Optional[Experiment] = None
    failures: Dict[int, LoadFailure] = field(default_factory=dict)


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
        self._loading: Dict[str, int] = {}  # model -> the version being loaded now (LOADING in GetModelStatus)
        self._problems: Dict[str, str] = {}  # model ("" for the whole file) -> why its config entry is not applied
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._random = random.Random()

    def poll(self) -> None:
        """Loads what the config now asks for, then swaps it in; what cannot be applied keeps the old state."""
        with self._poll_lock:
            try:
                config = model_config.read(self.models_config_path)
            except (OSError, ValueError) as error:
                self._problem("", f"Keeping the loaded models: {error}")
                return
            self._problem("", "")
            split = self._read_experiments()
            current = self._models
            wanted: Dict[str, _ModelState] = {}
            for entry in config.model_config_list.config:
                previous = current.get(entry.name)
                problems = model_config.entry_problems(entry)
                self._problem(entry.name, "; ".join(problems) + (
                    f"; keeping versions {sorted(previous.versions)}" if problems and previous else ""))
                if problems:
                    if previous is not None:
                        wanted[entry.name] = previous
                    continue
                wanted[entry.name] = self._next_state(entry, previous or _ModelState({}, {}), split)
            with self._lock:
                self._models = wanted
            for name, state in current.items():
                for version, loaded in state.versions.items():
                    if wanted.get(name) is None or version not in wanted[name].versions:
                        loaded.unload()
                        self.metrics.versions_loaded.labels(name, str(version)).dec()
                        self.metrics.model_events.labels(name, str(version), "unload").inc()
                        logging.info("Unloaded %s version %d.", name, version)

    def _next_state(self, entry, previous: _ModelState, split: Dict[str, Experiment]) -> _ModelState:
        """The versions and labels of one model after this poll (TF Serving's AvailabilityPreservingPolicy)."""
        on_disk = list_versions(entry.base_path)
        aspired = model_config.versions_to_serve(entry, on_disk)
        versions: Dict[int, LoadedVersion] = {}
        failures = dict(previous.failures)
        tried = set(aspired)
        for version in aspired:
            if version in previous.versions:
                versions[version] = previous.versions[version]
                continue
            loaded = self._load(entry.name, version, version_path(entry.base_path, version), failures)
            if loaded is not None:
                versions[version] = loaded
        still = sorted(set(previous.versions) - set(aspired))
        if aspired and not versions and still:
            # No version the policy asks for serves: the newest one serving now goes on until one does.
            versions[still[-1]] = previous.versions[still[-1]]
            if any(failures.get(v) is not previous.failures.get(v) for v in aspired):  # once per failed attempt
                logging.warning("Keeping %s version %d serving: version(s) %s did not load.",
                                entry.name, still[-1], ", ".join(map(str, sorted(v for v in failures if v in tried))))
        elif aspired and not versions and not entry.model_version_policy.HasField("specific"):
            # Nothing serves yet (a start, a restarted worker): the newest older version that loads serves, as it
            # would still be serving had this server been up when the newest version landed.
            for older in sorted((v for v in on_disk if v < min(aspired)), reverse=True):
                tried.add(older)
                loaded = self._load(entry.name, older, version_path(entry.base_path, older), failures)
                if loaded is not None:
                    versions[older] = loaded
                    logging.warning("Serving %s version %d: the newer version(s) %s did not load.", entry.name,
                                    older, ", ".join(map(str, sorted(aspired))))
                    break
        failures = {v: f for v, f in failures.items() if v in tried}
        labels = {}
        for label, version in entry.version_labels.items():
            kept = previous.labels.get(label)
            if version not in versions and kept in versions:
                logging.warning("Keeping %s label %s on version %d: version %d is not loaded.",
                                entry.name, label, kept, version)
                version = kept
            labels[label] = version
        return _ModelState(versions, labels, self._experiment(entry.name, split, labels), failures)

    def _load(self, name: str, version: int, path: str, failures: Dict[int, LoadFailure]) -> Optional[LoadedVersion]:
        """A loaded, warmed-up version, or None (its failure recorded in `failures`, or its retry not due)."""
        failure = failures.get(version)
        identity = _identity(path)
        if failure is not None and failure.identity == identity and (
                failure.retry_at is None or time.monotonic() < failure.retry_at):
            return None
        attempts = failure.attempts if failure is not None and failure.identity == identity else 0
        started = time.monotonic()
        with self._lock:
            self._loading[name] = version
        try:
            loaded = LoadedVersion(name, version, path, self.serving, self.metrics)
        except Exception as error:  # noqa: BLE001 - a bad version must not stop the others
            code, message = load_error(error, path)
            attempts += 1
            retry_at = None
            if attempts <= self.serving.max_load_retries:
                retry_at = time.monotonic() + min(MAX_RETRY_INTERVAL_SECONDS,
                                                  self.serving.load_retry_interval_seconds * 2 ** (attempts - 1))
            failures[version] = LoadFailure(code, message, attempts, retry_at, identity)
            logging.error("%s version %d failed to load: %s", name, version, failures[version].describe())
            self.metrics.load_attempt_count.labels(path, "fail").inc()
            self.metrics.model_events.labels(name, str(version), "load_failed").inc()
            return None
        finally:
            with self._lock:
                self._loading.pop(name, None)
        failures.pop(version, None)
        self.metrics.load_attempt_count.labels(path, "success").inc()
        self.metrics.load_latency.labels(path).inc((time.monotonic() - started) * 1e6)
        self.metrics.versions_loaded.labels(name, str(version)).inc()
        self.metrics.model_events.labels(name, str(version), "load").inc()
        logging.info("Loaded %s version %d in %.1fs (%d warm-up requests).", name, version, loaded.load_seconds,
                     loaded.warmed_up)
        return loaded

    def _problem(self, name: str, message: str) -> None:
        """Records (or clears, with "") why a model's config entry is not applied; logged and counted once."""
        if self._problems.get(name, "") == message:
            return
        if message:
            self._problems[name] = message
            logging.error("models.config %s: %s", self.models_config_path, message)
            self.metrics.model_events.labels(name, "", "config_error").inc()
        else:
            self._problems.pop(name, None)

    def problems(self) -> Dict[str, str]:
        """Model ("" for the whole file) -> why its models.config entry is not applied now."""
        return dict(self._problems)

    def _read_experiments(self) -> Dict[str, Experiment]:
        try:
            return experiments.read(self.experiments_path)
        except (OSError, ValueError) as error:
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

    def status(self, name: str) -> List[VersionStatus]:
        """Each version's state as TF Serving's GetModelStatus reports it: AVAILABLE, LOADING, or END with the
        error of a failed load."""
        with self._lock:
            state = self._models.get(name)
            loading = self._loading.get(name)
        if state is None and loading is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"model {name!r} is not in {self.models_config_path}; "
                               f"models: {', '.join(sorted(self._models)) or 'none'}")
        state = state or _ModelState({}, {})
        statuses = []
        for version in sorted(set(state.versions) | set(state.failures) | ({loading} - {None})):
            item = VersionStatus(version=version)
            if version in state.versions:
                item.state = VersionStatus.AVAILABLE
            elif version == loading:
                item.state = VersionStatus.LOADING
            else:
                failure = state.failures[version]
                item.state = VersionStatus.END
                item.status.error_code = failure.code.value[0]
                item.status.error_message = failure.describe()
            item.status.SetInParent()  # error_code OK unless set, as TF Serving reports it
            statuses.append(item)
        return statuses

    def shutdown(self) -> None:
        with self._lock:
            models, self._models = self._models, {}
        for name, state in models.items():
            for version, loaded in state.versions.items():
                loaded.unload()
                self.metrics.versions_loaded.labels(name, str(version)).dec()
