"""The request core: Predict, Classify, Regress, metadata and status, whatever the transport.

Both transports (`grpc_api.py`, `rest.py`) turn their request into a call of
`ServingCore`, so routing (versions, labels, experiments), input checks, batching,
the sampled request log, shadow traffic and the metrics are the same for gRPC and
REST. Each transport only converts its wire format to arrays and back.
"""

import time
from concurrent import futures
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf.message import DecodeError
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2,
                                     get_model_status_pb2, model_pb2)

from contract import request_log
from contract.config import FeaturesConfig
from contract.serving import EXAMPLES_INPUT, SERVING_SIGNATURE
from serving.classify_regress import METHODS, PREDICTION_METHODS
from serving.errors import RequestError
from serving.experiments import ArmRecord, Experiment, ExperimentLog
from serving.manager import LoadedVersion, ModelManager, Route
from serving.request_log import RequestLoggers

GRPC = "GRPC"
REST = "REST"


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


def _lazy_examples(values: np.ndarray):
    """(parsed, examples): `examples()` parses the serialized values once, when first needed (the sticky key
    of an experiment, or the check before the model call), and fills `parsed`."""
    parsed: List[tf.train.Example] = []

    def examples(_: Optional[LoadedVersion] = None) -> List[tf.train.Example]:
        if not parsed:
            parsed.extend(parse_examples(values, "examples"))
        return parsed

    return parsed, examples


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
    """What a Predict/Classify/Regress/MultiInference call produced, for the transport to format."""

    route: Route
    signature: str
    outputs: Dict[str, np.ndarray]
    result: Optional[object] = None  # Classify/Regress: the ClassificationResult or RegressionResult
    # MultiInference: per task, (signature name, ClassificationResult or RegressionResult), in request order.
    results: Optional[List[Tuple[str, object]]] = None
    document: Optional[dict] = None  # the REST answer, once formatted
    examples: Sequence[bytes] = ()  # the request's serialized tf.Examples, for the request log

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

    def __init__(self, manager: ModelManager, loggers: RequestLoggers, experiment_log: ExperimentLog,
                 label_spec: Optional[FeaturesConfig] = None):
        self.manager = manager
        self.metrics = manager.metrics
        self.serving = manager.serving
        self.loggers = loggers
        self.experiment_log = experiment_log
        self._label_spec = label_spec
        self._shadow_pool = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow")

    def observe(self, api: str, entrypoint: str, model_name: str, call: Callable[[], "Answer"],
                request_id: str = ""):
        """Runs `call` and counts it in the metrics by status, with its latency; a prediction call (one with a
        `request_id`) is also offered to the request log, answered or not."""
        arrived, started = time.time(), time.perf_counter()
        try:
            problem = request_log.request_id_problem(request_id) if request_id else ""
            if problem:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, problem)
            answer = call()
        except RequestError as error:
            self._finished(model_name, api, entrypoint, error.code.name, started, arrived, request_id)
            raise
        except Exception:
            self._finished(model_name, api, entrypoint, "INTERNAL", started, arrived, request_id)
            raise
        seconds = self._finished(model_name, api, entrypoint, "OK", started, arrived, request_id, answer)
        route = getattr(answer, "route", None)
        if route is not None and route.experiment is not None:
            self._log_arm(answer, api, seconds)
        return answer

    def _finished(self, model_name: str, api: str, entrypoint: str, status: str, started: float, arrived: float,
                  request_id: str, answer: Optional[Answer] = None) -> float:
        """Counts a finished request in the metrics and the request log; returns its latency."""
        seconds = time.perf_counter() - started
        route = getattr(answer, "route", None)
        version, label = (str(route.loaded.version), route.label) if route else ("", "")
        self.metrics.observe_request(model_name, api, entrypoint, status, seconds, version, label)
        if request_id and not request_log.request_id_problem(request_id):
            if route is not None:
                self.loggers.log(model_name, request_id, arrived, api, entrypoint, status, seconds, lambda: {
                    "version": route.loaded.version, "arm": route.label, "examples": answer.examples,
                    "predictions": request_log.prediction_rows(answer.outputs, len(answer.examples))})
            elif self._serves(model_name):  # a refused request of a model this server has; not of any name
                self.loggers.log(model_name, request_id, arrived, api, entrypoint, status, seconds)
        return seconds

    def _serves(self, model_name: str) -> bool:
        try:
            self.manager.status(model_name)
        except RequestError:
            return False
        return True

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
        """Predict's signature (TF Serving's RunPredict: FAILED_PRECONDITION when missing, and with the
        method-name check, INTERNAL for a method that is none of predict/classify/regress)."""
        key = name or SERVING_SIGNATURE
        if key not in loaded.signature_defs:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{key}" not found. {loaded.name} version {loaded.version} '
                               f"has: {', '.join(sorted(loaded.signature_defs))}")
        signature_def = loaded.signature_defs[key]
        if self.serving.enable_signature_method_name_check and signature_def.method_name not in PREDICTION_METHODS:
            raise RequestError(grpc.StatusCode.INTERNAL,
                               "Expected prediction signature method_name to be one of {"
                               f"{', '.join(PREDICTION_METHODS)}}}. Was: {signature_def.method_name}")
        return key, signature_def

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
        seen = set()
        for alias in output_filter:  # TF Serving's PreProcessPrediction
            if alias not in signature_def.outputs:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                                   f"the set {{{','.join(sorted(signature_def.outputs))}}}.")
            if alias in seen:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        outputs = self._run(route.loaded, name, arrays, size)
        logged: Sequence[bytes] = ()
        if EXAMPLES_INPUT in arrays:
            logged = arrays[EXAMPLES_INPUT].reshape(-1)
            self._after(route, name, arrays, size, outputs, parsed)
        if output_filter:
            outputs = {k: v for k, v in outputs.items() if k in output_filter}
        return Answer(route, name, outputs, examples=logged)

    def examples_call(self, spec: model_pb2.ModelSpec, method_name: str, serialized: List[bytes],
                      key: str = "") -> Answer:
        """Classify/Regress: the `Input` examples into a signature that fits the method (`classify_regress.py`)."""
        method = METHODS[method_name]
        values = np.array(serialized, dtype=object)
        parsed, examples = _lazy_examples(values)

        route = self.manager.route(spec, self._routing_key(key, examples))
        name = spec.signature_name or SERVING_SIGNATURE
        if name not in route.loaded.signature_defs:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"No signature was found with the name: {name} ({route.loaded.name} version "
                               f"{route.loaded.version}). {method.hint(route.loaded, self._check_method)}")
        wanted = method.check(route.loaded, name, self._check_method)
        self._check_examples(values)
        examples()
        outputs = self._run(route.loaded, name, {method.inputs: values}, len(values))
        self._after(route, name, {method.inputs: values}, len(values), outputs, parsed)
        return Answer(route, name, outputs, result=method.result({k: outputs[k] for k in wanted}, len(values)),
                      examples=values)

    def multi_inference(self, tasks: Sequence[Tuple[model_pb2.ModelSpec, str]], serialized: List[bytes],
                        key: str = "") -> Answer:
        """MultiInference: several Classify/Regress tasks of one model on the same examples.

        TF Serving's rules (`multi_inference.cc`): the first task's model spec picks the version; every task
        names the same model, a signature at most once, and the classify or regress method.
        """
        values = np.array(serialized, dtype=object)
        parsed, examples = _lazy_examples(values)

        if not tasks:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "MultiInferenceRequest has no tasks; add one per signature to run (model_spec with "
                               "name and signature_name, method_name tensorflow/serving/classify or "
                               "tensorflow/serving/regress)")
        route = self.manager.route(tasks[0][0], self._routing_key(key, examples))
        loaded = route.loaded
        plan = []
        for spec, method_name in tasks:
            if not spec.name:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Found ModelSpec with an empty model name.")
            if spec.name != tasks[0][0].name:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            name = spec.signature_name or SERVING_SIGNATURE
            if name in (planned[0] for planned in plan):
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Duplicate evaluation of signature: {name}")
            if name not in loaded.signature_defs:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Requested signature not found in model graph: {name} ({loaded.name} version "
                                   f"{loaded.version} has: {', '.join(sorted(loaded.signature_defs))})")
            method = METHODS.get(method_name)
            if method is None:
                raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"Unsupported signature method_name: {method_name} (MultiInference runs "
                                   f"{' and '.join(sorted(METHODS))} tasks)")
            plan.append((name, method, method.check(loaded, name, self._check_method)))
        self._check_examples(values)
        examples()
        # One model call per task (TF Serving runs one Session::Run for all): the same results.
        outputs = [self._run(loaded, name, {method.inputs: values}, len(values)) for name, method, _ in plan]
        results = [(name, method.result({k: out[k] for k in wanted}, len(values)))
                   for (name, method, wanted), out in zip(plan, outputs)]
        name, method, _ = plan[0]
        self._after(route, name, {method.inputs: values}, len(values), outputs[0], parsed)
        return Answer(route, name, outputs[0], results=results, examples=values)

    @property
    def _check_method(self) -> bool:
        return self.serving.enable_signature_method_name_check

    def _check_examples(self, values: np.ndarray) -> None:
        if not len(values):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "Input is empty. Put the tf.Examples in input.example_list (or "
                               "example_list_with_context)")
        self._check_size(len(values))

    def _after(self, route: Route, signature: str, arrays, size: int, outputs, parsed) -> None:
        """Example counts and, for a routed request, the shadow call."""
        self.metrics.observe_examples(route.loaded.name, size)
        if route.experiment is not None:
            route.labels = self._labels(parsed)
        if route.shadow is not None:
            self._shadow_pool.submit(self._shadow, route, signature, arrays, size, outputs)

    def _labels(self, parsed: List[tf.train.Example]) -> Optional[List[int]]:
        """The 0/1 labels of labelled binary traffic (examples that still carry the label columns), else None.

        The experiment report's AUC and accuracy compare binary scores with these; other tasks log scores only.
        """
        spec = self._label_spec
        if spec is None or not spec.task_type.has_positive_class or not parsed:
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
        """Every version of the model, or the one asked for by number; a version label is not read (as TF
        Serving's GetModelStatus: `model_spec.has_version()` only)."""
        statuses = self.manager.status(spec.name)
        if spec.WhichOneof("version_choice") == "version":
            statuses = [s for s in statuses if s[0] == spec.version.value]
            if not statuses:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find version {spec.version.value} of model {spec.name}; versions: "
                                   f"{[version for version, _ in self.manager.status(spec.name)]}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state in statuses:
            item = response.model_version_status.add()
            item.version, item.state = version, state
            item.status.SetInParent()  # error_code OK, as TF Serving reports it
        return response

    def close(self) -> None:
        self._shadow_pool.shutdown(wait=True)
