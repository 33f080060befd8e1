"""`tfx-edge serving serve` with two worker processes on the same ports: both load the model, a scrape of
either sums both, and a hot swap under load drops nothing. A real server process, real clients, loopback."""

import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
import requests
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.workers import reserve_port
from contract.processes import free_port
from tests.test_serving import _copy_serving, _copy_version_atomically

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _loaded(url):
    text = requests.get(f"{url}/monitoring/prometheus/metrics", timeout=10).text
    return {sample.labels["version"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "serving_model_versions_loaded"}


def test_reserved_ports_are_refused_to_others_and_shared_by_workers():
    held = reserve_port("127.0.0.1", 0, "serving.port")
    port = held.getsockname()[1]
    with pytest.raises(OSError, match=rf"could not bind 127.0.0.1:{port}.*--set serving.port=N"):
        reserve_port("127.0.0.1", port, "serving.port")
    held.close()


def test_two_workers_share_the_ports_sum_their_metrics_and_hot_swap_drops_nothing(pushed_run, tmp_path, eval_examples):
    path, base = _copy_serving(pushed_run, tmp_path)
    old = max(int(v) for v in os.listdir(base) if v.isdigit())
    grpc_port, rest_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serving", "serve", "--set", f"output_dir={tmp_path}",
         "--set", "serving.workers=2", "--set", f"serving.port={grpc_port}", "--set", f"serving.rest_port={rest_port}",
         "--set", "serving.poll_interval_seconds=0.5", "--set", "serving.request_log_sample_rate=0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    reader = threading.Thread(target=lambda: output.extend(server.stdout), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{rest_port}"
    examples = [e.SerializeToString() for e in eval_examples[:8]]
    failures, versions, stop = [], [], threading.Event()
    try:
        deadline = time.monotonic() + 240
        while not any(line.startswith("serving ") for line in output):
            assert server.poll() is None and time.monotonic() < deadline, "".join(output)
            time.sleep(0.5)
        assert "2 workers" in next(line for line in output if line.startswith("serving "))
        # Library warnings (google.api_core's FutureWarnings at import) go to the log, not the terminal.
        assert not [line for line in output if "Warning" in line], "".join(output)
        assert _loaded(url) == {str(old): 2.0}

        def grpc_client(index):
            # Own subchannel pool: each channel is its own connection, which the kernel gives to either worker.
            channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)])
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "taxi"
            request.inputs["examples"].CopyFrom(tf.make_tensor_proto([examples[index]], dtype=tf.string))
            while not stop.is_set():
                try:
                    started = time.monotonic()
                    versions.append((started, stub.Predict(request, timeout=30).model_spec.version.value))
                except grpc.RpcError as error:
                    failures.append(f"gRPC {error.code()}: {error.details()}")
            channel.close()

        def rest_client():
            while not stop.is_set():
                response = requests.get(f"{url}/v1/models/taxi", timeout=30)
                if response.status_code != 200:
                    failures.append(f"REST {response.status_code}: {response.text}")

        clients = [threading.Thread(target=grpc_client, args=(i,)) for i in range(6)]
        clients.append(threading.Thread(target=rest_client))
        for client in clients:
            client.start()
        time.sleep(1.0)
        _copy_version_atomically(base, old, old + 1)
        deadline = time.monotonic() + 120
        # Both workers swapped once both have unloaded the old version (a worker loads, swaps, then unloads).
        while _loaded(url) != {str(old): 0.0, str(old + 1): 2.0} and time.monotonic() < deadline:
            time.sleep(0.2)
        swapped = time.monotonic()
        time.sleep(1.0)
        stop.set()
        for client in clients:
            client.join()
        assert not failures, failures[:3]
        assert _loaded(url) == {str(old): 0.0, str(old + 1): 2.0}
        # Requests already routed to the old version finish there; every request sent after the swap gets the new one.
        assert min(versions)[1] == old
        assert {version for started, version in versions if started > swapped} == {old + 1}
    finally:
        stop.set()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        reader.join(timeout=10)
    assert server.returncode == 0 and output[-1].strip() == "stopped", "".join(output[-20:])
