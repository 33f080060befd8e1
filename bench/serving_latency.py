"""Online serving: gRPC and REST latency, throughput with and without batching, hot swap under load.

    python -m bench.serving_latency [--repeats 3] [--seconds 4] [--clients 32] [--client-processes 2]
                                    [--model-base DIR] [--config FILE] [--set KEY=VALUE ...] [--out-dir DIR]
    make bench-serving

Why: before production, people need to know what a request costs over gRPC and
REST, how much server-side batching and the worker processes buy under load, and
that a new version goes live without a failed request.

How: the newest version under the model base path (default what `make run`
pushed) is copied to a temporary serving directory. Two `tfx-edge serving serve`
processes run on it, one with batching off and one with it on (`serving:`
settings otherwise, so `serving.workers` worker processes each). Every request
is ONE real eval example. In each of `--repeats` rounds, all measured in this
run:

- in-process, the baselines: the SavedModel's serving signature called by one
  thread at batch 1 (latency), and at batches of `serving.max_batch_size`
  (examples per second: the in-process limit);
- gRPC, one client: p50/p99 (no batching and batching servers);
- REST, one client (`POST /v1/models/taxi:predict`, one b64 instance), batching server;
- gRPC, `--clients` concurrent clients: QPS, batching off and on. The clients run in
  `--client-processes` processes (one Python process cannot drive many requests
  per second itself), each client with its own connection, so connections spread
  over the server's workers; they send prepared request bytes;
- hot swap: the same load on the batching server while a new version is pushed;
  every failed request is counted, until every worker serves the new version.

Targets (judged on the median over the rounds; min/median/max are printed):
gRPC p50 / in-process p50 <= 1.5 and gRPC p99 <= 5 ms; REST p50 / gRPC p50 <= 2;
QPS batching / no batching >= 3 and >= 50% of the in-process limit; 0 failed
requests during the hot swap. Client, servers and baseline share this machine's
cores, so every figure includes the clients' own cost.
Results also go to `<out-dir>/serving_latency.json`.
"""

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

from bench import results as bench_results
from cli import prologue
from contract.processes import free_port

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT_DIR = os.path.join(REPO_ROOT, "bench", "results")
WARMUP_SECONDS = 0.5
EVAL_EXAMPLES = 256
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
TARGETS = {"grpc_p50_vs_in_process": 1.5, "grpc_p99_ms": 5.0, "rest_p50_vs_grpc": 2.0,
           "batching_qps_vs_unbatched": 3.0, "batching_qps_vs_in_process_limit": 0.5, "hot_swap_failures": 0}


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def drive(call: Callable[[int], None], clients: int, seconds: float, start_at: Optional[float] = None
          ) -> Dict[str, object]:
    """`clients` threads calling back to back; latencies of calls started inside the window only."""
    latencies: List[List[float]] = [[] for _ in range(clients)]
    errors: List[str] = []
    start_at = start_at or time.time() + WARMUP_SECONDS
    stop_at = start_at + seconds

    def client(index: int) -> None:
        number = index
        while True:
            began = time.time()
            if began >= stop_at:
                return
            try:
                call(number)
            except Exception as error:  # noqa: BLE001 - counted and reported, never hidden
                errors.append(str(error)[:200])
                continue
            if began >= start_at:
                latencies[index].append(time.time() - began)
            number += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": [value for per_client in latencies for value in per_client], "errors": errors,
            "seconds": seconds}


def summarize(result: Dict[str, object], examples_per_call: int = 1) -> Dict[str, float]:
    merged = result["latencies"]
    if not merged:
        raise RuntimeError(f"no request completed; errors: {result['errors'][:3]}")
    return {"p50_ms": percentile(merged, 50) * 1e3, "p99_ms": percentile(merged, 99) * 1e3,
            "qps": len(merged) * examples_per_call / result["seconds"], "requests": len(merged),
            "errors": len(result["errors"])}


def _grpc_load(target: str, requests: List[bytes], clients: int, seconds: float, start_at: float):
    """One client process: `clients` threads, each with its own connection, sending prepared Predict bytes."""
    import grpc

    stubs = []
    for _ in range(clients):
        channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        stubs.append(channel.unary_unary(PREDICT_METHOD))
    for stub in stubs:
        stub(requests[0], timeout=30)  # connected before the window opens
    return drive(lambda i: stubs[i % clients](requests[i % len(requests)], timeout=30), clients, seconds, start_at)


def grpc_load(target: str, requests: List[bytes], clients: int, processes: int, seconds: float) -> Dict[str, object]:
    """`clients` concurrent clients spread over `processes` client processes."""
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0 + WARMUP_SECONDS  # spawned processes need a moment to import grpc
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    with context.Pool(processes) as pool:
        parts = pool.starmap(_grpc_load, [(target, requests, share, seconds, start_at) for share in shares if share])
    return {"latencies": [v for part in parts for v in part["latencies"]],
            "errors": [e for part in parts for e in part["errors"]], "seconds": seconds}



class Server:
    """`tfx-edge serving serve` in its own process group, until `stop()`."""

    def __init__(self, work_dir: str, batching: bool, settings: Sequence[str]):
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.log_path = os.path.join(work_dir, f"server-batching-{batching}.log")
        command = [sys.executable, "-m", "cli", "serving", "serve", *settings,
                   "--set", f"output_dir={work_dir}", "--set", f"serving.port={self.grpc_port}",
                   "--set", f"serving.rest_port={self.rest_port}",
                   "--set", f"serving.enable_batching={str(batching).lower()}",
                   "--set", "serving.request_log_sample_rate=0", "--set", "serving.poll_interval_seconds=1"]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        deadline = time.monotonic() + 300
        while "Ctrl-C stops" not in open(self.log_path).read():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start; see {self.log_path}")
            time.sleep(0.5)
        self.banner = next(line for line in open(self.log_path) if "Ctrl-C stops" in line).strip()
        self.workers = int(re.search(r"\((\d+) workers?", self.banner).group(1))

    def versions_loaded(self) -> Dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        connection = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=10)
        connection.request("GET", "/monitoring/prometheus/metrics")
        text = connection.getresponse().read().decode()
        connection.close()
        return {s.labels["version"]: s.value for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == "serving_model_versions_loaded"}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)
        self._log.close()


def rest_call(port: int, body: bytes):
    """One keep-alive connection per client thread; raises on any status but 200."""
    local = threading.local()

    def call(_: int) -> None:
        if getattr(local, "connection", None) is None:
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local.connection.request("POST", "/v1/models/taxi:predict", body, {"Content-Type": "application/json"})
        response = local.connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST {response.status}: {payload[:200]!r}")

    return call


def hot_swap(server: Server, base: str, source: int, target: int, requests: List[bytes], clients: int,
             processes: int) -> Dict[str, object]:
    """Load while `target` (a copy of `source`) is pushed; the window lasts until every worker serves it."""
    result: Dict[str, object] = {}
    window = 30.0

    def load() -> None:
        result.update(grpc_load(f"127.0.0.1:{server.grpc_port}", requests, clients, processes, window))

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(3.0 + WARMUP_SECONDS + 2.0)  # the load is running
    staging = os.path.join(base, f".incoming-{target}")
    shutil.copytree(os.path.join(base, str(source)), staging)
    pushed = time.monotonic()
    os.rename(staging, os.path.join(base, str(target)))
    while time.monotonic() - pushed < window - 6:
        loaded = server.versions_loaded()
        if loaded.get(str(target), 0) >= server.workers and not any(
                v > 0 for k, v in loaded.items() if k != str(target)):
            break
        time.sleep(0.25)
    swap_seconds = time.monotonic() - pushed
    loader.join()
    return {"failed": len(result["errors"]), "requests": len(result["latencies"]), "swap_seconds": swap_seconds,
            "errors": result["errors"][:3]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    prologue.prepare()  # before TensorFlow; the servers it starts are `tfx-edge serving serve`
    parser = argparse.ArgumentParser(prog="python -m bench.serving_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds; figures are min/median/max over them")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per cell")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients of the throughput cells")
    parser.add_argument("--client-processes", type=int, default=2, help="processes the concurrent clients run in")
    parser.add_argument("--model-base", help="model base path (default <serving_dir>/<model_name>)")
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)

    import glob

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from contract.config import load_config
    from contract.versions import list_versions

    config = load_config(args.config, args.set)
    base = args.model_base or config.model_serving_dir
    versions = list_versions(base)
    if not versions:
        print(f"error: no pushed model under {base}; run `make run` first or pass --model-base", file=sys.stderr)
        return 2
    work_dir = tempfile.mkdtemp(prefix="serving_latency-")
    serving_base = os.path.join(work_dir, "serving", config.model_name)
    version = versions[-1]
    shutil.copytree(os.path.join(base, str(version)), os.path.join(serving_base, str(version)))
    files = sorted(glob.glob(os.path.join(config.input_base, config.data.eval_pattern)))
    examples = [tf.train.Example.FromString(record.numpy()) for record in
                tf.data.TFRecordDataset(files, compression_type="GZIP").take(EVAL_EXAMPLES)]
    for example in examples:
        for column in config.features.label_only_columns:
            example.features.feature.pop(column, None)
    serialized = [e.SerializeToString() for e in examples]
    requests = []
    for value in serialized:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = config.model_name
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto([value], dtype=tf.string))
        requests.append(request.SerializeToString())
    rest_body = json.dumps({"instances": [{"b64": base64.b64encode(serialized[0]).decode()}]}).encode()
    batch = config.serving.max_batch_size
    signature = tf.saved_model.load(os.path.join(serving_base, str(version))).signatures["serving_default"]
    batches = [tf.constant((serialized * (batch // len(serialized) + 2))[i:i + batch]) for i in range(0, 4 * batch, batch)]
    setting_args = [item for pair in (("--set", s) for s in args.set) for item in pair]
    if args.config:
        setting_args += ["--config", args.config]

    print(f"model {serving_base}/{version}; {len(serialized)} eval examples, one per request; {args.seconds:g}s "
          f"per cell; {args.repeats} rounds; {args.clients} clients in {args.client_processes} processes",
          flush=True)
    servers: Dict[bool, Server] = {}
    rounds: List[Dict[str, object]] = []
    next_version = version
    try:
        for batching in (False, True):
            servers[batching] = Server(work_dir, batching, setting_args)
        print(f"  {servers[True].banner}", flush=True)
        for number in range(args.repeats):
            cells: Dict[str, Dict[str, float]] = {}
            cells["in-process batch 1"] = summarize(drive(
                lambda i: signature(examples=tf.constant([serialized[i % len(serialized)]])), 1, args.seconds))
            cells[f"in-process batch {batch}"] = summarize(drive(
                lambda i: signature(examples=batches[i % len(batches)]), 1, args.seconds), batch)
            for batching, server in servers.items():
                name = "batching" if batching else "no batching"
                target = f"127.0.0.1:{server.grpc_port}"
                cells[f"gRPC {name}, 1 client"] = summarize(grpc_load(target, requests, 1, 1, args.seconds))
                if batching:
                    cells["REST batching, 1 client"] = summarize(drive(rest_call(server.rest_port, rest_body), 1,
                                                                       args.seconds))
                cells[f"gRPC {name}, {args.clients} clients"] = summarize(
                    grpc_load(target, requests, args.clients, args.client_processes, args.seconds))
            next_version += 1
            swap = hot_swap(servers[True], os.path.join(work_dir, "serving", config.model_name), version,
                            next_version, requests, args.clients, args.client_processes)
            ratios = {
                "grpc_p50_vs_in_process": cells["gRPC batching, 1 client"]["p50_ms"]
                / cells["in-process batch 1"]["p50_ms"],
                "grpc_p99_ms": cells["gRPC batching, 1 client"]["p99_ms"],
                "rest_p50_vs_grpc": cells["REST batching, 1 client"]["p50_ms"] / cells["gRPC batching, 1 client"]["p50_ms"],
                "batching_qps_vs_unbatched": cells[f"gRPC batching, {args.clients} clients"]["qps"]
                / cells[f"gRPC no batching, {args.clients} clients"]["qps"],
                "batching_qps_vs_in_process_limit": cells[f"gRPC batching, {args.clients} clients"]["qps"]
                / cells[f"in-process batch {batch}"]["qps"],
                "hot_swap_failures": swap["failed"],
            }
            rounds.append({"cells": cells, "ratios": ratios, "hot_swap": swap})
            print(f"  round {number + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()), flush=True)
    finally:
        for server in servers.values():
            server.stop()
        if len(rounds) < args.repeats:
            shutil.rmtree(work_dir, ignore_errors=True)

    print(f"\n{'cell':<32}{'p50 ms':>22}{'p99 ms':>22}{'QPS (examples/s)':>24}")
    for cell in rounds[0]["cells"]:
        parts = []
        for key in ("p50_ms", "p99_ms", "qps"):
            s = bench_results.spread([r["cells"][cell][key] for r in rounds])
            parts.append(f"{s['min']:.2f}/{s['median']:.2f}/{s['max']:.2f}" if key != "qps"
                         else f"{s['min']:.0f}/{s['median']:.0f}/{s['max']:.0f}")
        print(f"{cell:<32}{parts[0]:>22}{parts[1]:>22}{parts[2]:>24}")
    print("(min/median/max over the rounds)\n")
    verdicts = {}
    for key, target in TARGETS.items():
        s = bench_results.spread([r["ratios"][key] for r in rounds])
        higher_is_better = key.startswith("batching")
        met = s["median"] >= target if higher_is_better else s["median"] <= target
        verdicts[key] = {**s, "target": target, "met": met}
        sign = ">=" if higher_is_better else "<="
        print(f"{key:<36} {s['min']:.2f}/{s['median']:.2f}/{s['max']:.2f}  (target {sign} {target:g}: "
              f"{'met' if met else 'NOT met'})")
    swaps = [r["hot_swap"] for r in rounds]
    print(f"hot swaps: {sum(s['requests'] for s in swaps)} requests during {len(swaps)} swaps, "
          f"{sum(s['failed'] for s in swaps)} failed; every worker on the new version after "
          f"{', '.join('%.1f' % s['swap_seconds'] for s in swaps)} s")
    bench_results.write(args.out_dir, "serving_latency",
                        {"rounds": rounds, "verdicts": verdicts, "settings": config.to_dict()["serving"],
                         "clients": args.clients, "client_processes": args.client_processes})
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
