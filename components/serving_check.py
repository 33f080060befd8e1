"""ServingCheck: before a push, the candidate is served for real and must answer right and in budget.

TFX's InfraValidator does this job by starting TF Serving's image in a local Docker engine or as a pod of the
Kubeflow cluster the step runs in (`model_server_runners/local_docker_runner.py`, `kubernetes_runner.py`,
which refuses to run outside a KFP pod). Neither exists where this pipeline runs: this machine has no
Docker engine, and a Vertex AI Pipelines step is a Vertex custom job with no Kubernetes API to create a pod
in. So every runner gets this component instead, which runs in the pipeline's own image:

1. the candidate (the Trainer's `Format-Serving` SavedModel) is published, with the warm-up requests the
   Pusher would write (`serving_pusher.warmup_records`), as version 1 of a temporary model base path;
2. `python -m cli serving serve` serves it in a separate process on a free loopback port (the server
   loads and warms the version up before it opens its ports; the process dies with this one);
3. GetModelStatus must say AVAILABLE, else the load error it reports is the reason;
4. the warm-up requests are replayed over gRPC, then `serving_check.requests` real eval examples (label
   columns dropped), one Predict each; every answer must equal the SavedModel's answer in this process;
5. the p99 latency of those requests must be within `serving_check.p99_budget_ms`.

The output is TFX's `InfraBlessing` (custom property `blessed`, the `INFRA_BLESSED`/`INFRA_NOT_BLESSED`
marker file, as InfraValidator writes them) plus `reason` and `serving_check.json`; the stock Pusher check
(`model_utils.is_infra_validated`) and EdgeExport push only a blessed model. A model the Evaluator did not
bless is not checked (nothing would push it).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import grpc
import numpy as np
import tensorflow as tf
import yaml
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_log_pb2, prediction_service_pb2_grpc)
from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils, path_utils

from components.serving_pusher import WARMUP_SPLIT, push_atomically, read_eval_examples, warmup_records
from contract.config import ServingCheckConfig, section_from_dict
from contract.serving import EXAMPLES_INPUT, SERVING_SIGNATURE

REPORT_FILE = "serving_check.json"
SERVER_LOG = "server.log"
BLESSED_FILE, NOT_BLESSED_FILE = "INFRA_BLESSED", "INFRA_NOT_BLESSED"  # InfraValidator's marker files
VERSION = 1
# Float answers may differ by this much: the server merges requests into batches, and TF's kernels can round
# differently by batch size (measured: up to 6e-8 on the taxi model).
ATOL, RTOL = 1e-5, 1e-4
_BANNER = re.compile(r"gRPC [^ ]+:(\d+), REST")


@dataclass
class CheckResult:
    passed: bool
    reason: str
    load_seconds: float = 0.0
    warmup_requests: int = 0
    requests: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    budget_ms: float = 0.0
    max_difference: float = 0.0
    latencies_ms: List[float] = field(default_factory=list)


class _Refused(Exception):
    """The candidate failed the check; the message is the reason."""


class _Server:
    """`python -m cli serving serve` on a temporary serving directory, in its own process (and session)."""

    def __init__(self, root: str, model_name: str, serving: Dict[str, Any], log_path: str):
        settings = {
            "output_dir": root, "model_name": model_name,
            "serving": dict(serving, host="127.0.0.1", port=0, rest_port=0, workers=1, max_load_retries=0,
                            request_log_sample_rate=0.0, poll_interval_seconds=3600.0),
        }
        config_path = os.path.join(root, "serving_check.yaml")
        with open(config_path, "w", encoding="utf-8") as f:
            yaml.safe_dump(settings, f)
        self._log = open(log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "serving", "serve", "--config", config_path,
             "--parent-pid", str(os.getpid())],
            stdout=subprocess.PIPE, stderr=self._log, text=True, start_new_session=True)
        self.port: Optional[int] = None
        self._ready = threading.Event()
        self._lines: List[str] = []
        threading.Thread(target=self._read, daemon=True, name="serving-check-server").start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.append(line.rstrip())
            self._log.write(line)
            self._log.flush()
            match = _BANNER.search(line)
            if match and self.port is None:
                self.port = int(match.group(1))
                self._ready.set()
        self._ready.set()

    def wait_until_serving(self, timeout: float) -> None:
        """Returns once the ports are open (the model is loaded, or its load failed); raises _Refused otherwise."""
        if not self._ready.wait(timeout):
            raise _Refused(f"the server did not open its ports within {timeout:g}s "
                           "(serving_check.load_timeout_seconds)")
        if self.port is None:
            code = self.process.wait()
            last = next((line for line in reversed(self._lines) if line.strip()), "")
            raise _Refused(f"the server exited with status {code} before serving" + (f": {last}" if last else ""))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def _status(channel: grpc.Channel, model_name: str) -> get_model_status_pb2.ModelVersionStatus:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model_name
    try:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
    except grpc.RpcError as error:
        raise _Refused(f"GetModelStatus failed: {error.code().name}: {error.details()}") from None
    return next((s for s in response.model_version_status if s.version == VERSION),
                get_model_status_pb2.ModelVersionStatus())


def _replay_warmup(stub, records: List[bytes]) -> int:
    calls = {"predict_log": stub.Predict, "classify_log": stub.Classify, "regress_log": stub.Regress}
    for index, record in enumerate(records, 1):
        log = prediction_log_pb2.PredictionLog.FromString(record)
        kind = log.WhichOneof("log_type")
        request = getattr(log, kind).request
        try:
            calls[kind](request, timeout=30)
        except grpc.RpcError as error:
            raise _Refused(f"warm-up request {index} ({kind.replace('_log', '').title()}) failed: "
                           f"{error.code().name}: {error.details()}") from None
    return len(records)


def _compare(served: Dict[str, np.ndarray], local: Dict[str, np.ndarray], row: int) -> float:
    """The largest difference of float outputs; other outputs must be equal. Raises _Refused on a mismatch."""
    largest = 0.0
    for name, expected in local.items():
        if name not in served:
            raise _Refused(f"request {row}: the server's answer has no output {name!r}")
        got = served[name].reshape(expected.shape)
        if expected.dtype.kind == "f":
            difference = float(np.max(np.abs(got.astype(np.float64) - expected))) if expected.size else 0.0
            if not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
                raise _Refused(f"request {row}: output {name!r} differs from the SavedModel in process by "
                               f"{difference:.3g} (tolerance {ATOL:g} + {RTOL:g} x value)")
            largest = max(largest, difference)
        elif not np.array_equal(got, expected):
            raise _Refused(f"request {row}: output {name!r} is {got.tolist()!r} from the server, "
                           f"{expected.tolist()!r} in process")
    return largest


def warmup_count(serving: Dict[str, Any]) -> int:
    """Examples the Pusher's warm-up requests hold: batches of 1, 2, 4, ... (`serving.warmup_requests` of them)."""
    return 2 ** int(serving.get("warmup_requests", 0)) - 1


def _answers(model_dir: str, requests: List[tf.train.Example]) -> List[Dict[str, np.ndarray]]:
    """`serving_default`'s answer to each example, one call each, in this process."""
    signature = tf.saved_model.load(model_dir).signatures[SERVING_SIGNATURE]
    return [{k: v.numpy() for k, v in signature(**{EXAMPLES_INPUT: tf.constant([e.SerializeToString()])}).items()}
            for e in requests]


def check(model_dir: str, examples: List[tf.train.Example], model_name: str, task: str,
          settings: ServingCheckConfig, serving: Dict[str, Any], workdir: str,
          log_path: str) -> CheckResult:
    """Serves `model_dir` from a separate process and checks it; the verdict and its figures.

    `examples` (label columns already dropped): the first `warmup_count(serving)` make the warm-up requests,
    as the Pusher makes them; the first `settings.requests` are sent one by one.
    """
    warmup = warmup_records(examples[:max(1, warmup_count(serving))], model_name, task=task)
    base = os.path.join(workdir, "serving", model_name)
    push_atomically(model_dir, base, VERSION, {"source_model": model_dir, "serving_check": True}, warmup)
    requests = [examples[i % len(examples)] for i in range(settings.requests)]
    result = CheckResult(False, "", budget_ms=settings.p99_budget_ms)
    started = time.monotonic()
    server = _Server(workdir, model_name, serving, log_path)
    try:
        # The answers to compare with, computed while the server process starts.
        try:
            expected, local_error = _answers(model_dir, requests), None
        except Exception as error:  # noqa: BLE001 - reported after the server's own verdict on the load
            expected, local_error = [], error
        server.wait_until_serving(settings.load_timeout_seconds)
        result.load_seconds = time.monotonic() - started
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            status = _status(channel, model_name)
            if status.state != get_model_status_pb2.ModelVersionStatus.AVAILABLE:
                state = get_model_status_pb2.ModelVersionStatus.State.Name(status.state)
                raise _Refused(f"the model did not load ({state}): {status.status.error_message or 'no error given'}")
            if local_error is not None:
                detail = (str(local_error).strip().splitlines() or [""])[0]
                raise _Refused(f"the server loaded the model but this process could not call its "
                               f"{SERVING_SIGNATURE}: {type(local_error).__name__}: {detail}")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            result.warmup_requests = _replay_warmup(stub, warmup)
            for row, (example, answer) in enumerate(zip(requests, expected), 1):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = model_name
                request.model_spec.signature_name = SERVING_SIGNATURE
                request.inputs[EXAMPLES_INPUT].CopyFrom(
                    tf.make_tensor_proto([example.SerializeToString()], dtype=tf.string))
                sent = time.perf_counter()
                try:
                    response = stub.Predict(request, timeout=30)
                except grpc.RpcError as error:
                    raise _Refused(f"request {row} failed: {error.code().name}: {error.details()}") from None
                result.latencies_ms.append((time.perf_counter() - sent) * 1e3)
                served = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
                result.max_difference = max(result.max_difference, _compare(served, answer, row))
                result.requests = row
        finally:
            channel.close()
        result.p50_ms, result.p99_ms = (float(np.percentile(result.latencies_ms, q)) for q in (50, 99))
        if result.p99_ms > settings.p99_budget_ms:
            raise _Refused(f"p99 latency {result.p99_ms:.1f} ms over {len(requests)} requests exceeds the budget of "
                           f"{settings.p99_budget_ms:g} ms (serving_check.p99_budget_ms)")
    except _Refused as refused:
        result.reason = str(refused)
        return result
    finally:
        server.stop()
    result.passed = True
    result.reason = (f"loaded in {result.load_seconds:.1f}s; {result.warmup_requests} warm-up and {result.requests} "
                     f"requests answered as the SavedModel does in process (largest difference "
                     f"{result.max_difference:.1g}); p99 {result.p99_ms:.1f} ms within {settings.p99_budget_ms:g} ms")
    return result


class ServingCheckSpec(types.ComponentSpec):
    PARAMETERS = {
        "settings": ExecutionParameter(type=str),  # JSON of the serving_check: section (ServingCheckConfig)
        "serving": ExecutionParameter(type=str),  # JSON of the serving: settings the server runs with (batching)
        "model_name": ExecutionParameter(type=str),
        "task": ExecutionParameter(type=str),
        "label_only_columns": ExecutionParameter(type=str),  # JSON list: dropped from the examples sent
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {"blessing": ChannelParameter(type=standard_artifacts.InfraBlessing)}


class ServingCheckExecutor(base_executor.BaseExecutor):

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        evaluated = input_dict.get("model_blessing")
        if evaluated and not model_utils.is_model_blessed(artifact_utils.get_single_instance(evaluated)):
            self._record(blessing, CheckResult(False, "not checked: the Evaluator did not bless the model"))
            return
        settings = section_from_dict(ServingCheckConfig, json.loads(exec_properties["settings"]))
        serving = json.loads(exec_properties["serving"])
        model = artifact_utils.get_single_instance(input_dict["model"])
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        rows = read_eval_examples(artifact_utils.get_split_uri([examples], WARMUP_SPLIT),
                                  max(settings.requests, warmup_count(serving)))
        for example in rows:
            for name in json.loads(exec_properties["label_only_columns"]):
                example.features.feature.pop(name, None)
        workdir = tempfile.mkdtemp(prefix="serving-check-")
        try:
            result = check(path_utils.serving_model_path(model.uri), rows, exec_properties["model_name"],
                           exec_properties["task"], settings, serving, workdir, os.path.join(blessing.uri, SERVER_LOG))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self._record(blessing, result)

    @staticmethod
    def _record(blessing: types.Artifact, result: CheckResult) -> None:
        io_utils.write_string_file(os.path.join(blessing.uri, REPORT_FILE), json.dumps(asdict(result), indent=2))
        io_utils.write_string_file(os.path.join(blessing.uri, BLESSED_FILE if result.passed else NOT_BLESSED_FILE),
                                   "")
        blessing.set_int_custom_property("blessed", int(result.passed))
        blessing.set_string_custom_property("reason", result.reason)


class ServingCheck(base_component.BaseComponent):
    """The pre-push serving check (see module docstring); outputs an InfraBlessing for the Pusher."""

    SPEC_CLASS = ServingCheckSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ServingCheckExecutor)

    def __init__(self, model, examples, settings: Dict, serving: Dict, model_name: str, task: str,
                 label_only_columns: List[str], model_blessing=None):
        super().__init__(spec=ServingCheckSpec(
            model=model, model_blessing=model_blessing, examples=examples,
            settings=json.dumps(settings, sort_keys=True), serving=json.dumps(serving, sort_keys=True),
            model_name=model_name, task=task, label_only_columns=json.dumps(list(label_only_columns)),
            blessing=types.Channel(type=standard_artifacts.InfraBlessing)))
