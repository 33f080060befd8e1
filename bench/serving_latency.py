"""Online serving latency and throughput: the local gRPC server vs the SavedModel called in-process.

    python -m bench.serving_latency [--concurrency 1,8,32] [--seconds 4] [--model-base DIR]
                                    [--config FILE] [--set KEY=VALUE ...] [--out-dir bench/results]

Why: before production, people need to know what a request costs over gRPC and
how much server-side batching buys under concurrent load.

How: the newest version under the model base path (default `<serving_dir>/<model_name>`,
i.e. what `make run` pushed) is copied to a temporary serving directory. For each
mode, `python -m serving serve` runs in its own process (batching off, then on, with
the `serving:` settings), and this process drives it with C client threads over
real `tensorflow_serving.apis` stubs, each sending Predict requests of ONE real eval
example back to back for `--seconds` after a short warm-up. The floor is the same
signature called in this process by C threads, no gRPC. Clients and server share
this machine's cores, so the figures include the client's cost too.

Reading the output: p50/p95/p99 are per-request latencies in milliseconds, QPS is
requests completed per second over the window. Two ratios are checked:
p50 over gRPC without batching at 1 client vs the in-process p50 (target <= 2), and
QPS with batching vs without at the highest concurrency (target >= 3).
Results also go to `<out-dir>/serving_latency.json`.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

from contract import cli


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT_DIR = os.path.join(REPO_ROOT, "bench", "results")
WARMUP_SECONDS = 0.5
EVAL_EXAMPLES = 256
P50_TARGET = 2.0
BATCHING_QPS_TARGET = 3.0


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def drive(call: Callable[[int], None], clients: int, seconds: float) -> Dict[str, float]:
    """`clients` threads calling back to back; latencies of calls started inside the window only."""
    latencies: List[List[float]] = [[] for _ in range(clients)]
    errors: List[str] = []
    start_at = time.perf_counter() + WARMUP_SECONDS
    stop_at = start_at + seconds

    def client(index: int) -> None:
        request_number = index
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                return
            try:
                call(request_number)
            except Exception as error:  # noqa: BLE001 - counted and reported, never hidden
                errors.append(str(error))
                continue
            if began >= start_at:
                latencies[index].append(time.perf_counter() - began)
            request_number += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = [value for per_client in latencies for value in per_client]
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return {"p50_ms": percentile(merged, 50) * 1e3, "p95_ms": percentile(merged, 95) * 1e3,
            "p99_ms": percentile(merged, 99) * 1e3, "qps": len(merged) / seconds, "requests": len(merged)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(work_dir: str, batching: bool, extra_settings: Sequence[str], log_path: str):
    """`python -m serving serve` in its own process; returns (process, port) once the model answers."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    port = _free_port()
    command = [sys.executable, "-m", "serving", "serve", *extra_settings,
               "--set", f"output_dir={work_dir}", "--set", f"serving.port={port}",
               "--set", f"serving.enable_batching={str(batching).lower()}",
               "--set", "serving.request_log_sample_rate=0"]
    log = open(log_path, "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "taxi"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {log_path}")
        try:
            model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=2)
            channel.close()
            return process, port
        except grpc.RpcError:
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"the server did not answer within 180s; see {log_path}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    cli.prepare(tensorflow_log_level="3")
    parser = argparse.ArgumentParser(prog="python -m bench.serving_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,8,32", help="client threads, comma-separated")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per cell")
    parser.add_argument("--model-base", help="model base path (default <serving_dir>/<model_name>)")
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",")]

    import glob

    import tensorflow as tf

    from contract.versions import list_versions
    from contract.config import load_config
    from serving.client import ServingClient

    config = load_config(args.config, args.set)
    base = args.model_base or config.model_serving_dir
    versions = list_versions(base)
    if not versions:
        print(f"error: no pushed model under {base}; run `make run` first or pass --model-base", file=sys.stderr)
        return 2
    work_dir = tempfile.mkdtemp(prefix="serving_latency-")
    model_dir = os.path.join(work_dir, "serving", config.model_name, str(versions[-1]))
    shutil.copytree(os.path.join(base, str(versions[-1])), model_dir)
    files = sorted(glob.glob(os.path.join(config.input_base, config.data.eval_pattern)))
    examples = [tf.train.Example.FromString(record.numpy()) for record in
                tf.data.TFRecordDataset(files, compression_type="GZIP").take(EVAL_EXAMPLES)]
    for example in examples:
        for column in config.features.label_only_columns:
            example.features.feature.pop(column, None)
    serialized = [e.SerializeToString() for e in examples]
    print(f"model {model_dir}; {len(serialized)} eval examples, one per request; "
          f"{args.seconds:g}s per cell; clients {concurrency}", flush=True)

    results: Dict[str, Dict[int, Dict[str, float]]] = {"in-process": {}}
    signature = tf.saved_model.load(model_dir).signatures["serving_default"]

    def in_process(i: int) -> None:
        signature(examples=tf.constant([serialized[i % len(serialized)]]))

    for clients in concurrency:
        results["in-process"][clients] = drive(in_process, clients, args.seconds)
        print(f"  in-process, {clients} clients: done", flush=True)

    setting_args = [item for pair in (("--set", s) for s in args.set) for item in pair]
    if args.config:
        setting_args += ["--config", args.config]
    for batching in (False, True):
        mode = "gRPC batching" if batching else "gRPC no batching"
        process, port = start_server(work_dir, batching, setting_args,
                                     os.path.join(work_dir, f"server-batching-{batching}.log"))
        try:
            client = ServingClient(f"127.0.0.1:{port}", config.model_name, retries=0, timeout_seconds=30)
            requests = [client.predict_request([s]) for s in serialized]
            results[mode] = {}
            for clients in concurrency:
                results[mode][clients] = drive(lambda i: client.send(requests[i % len(requests)]),
                                               clients, args.seconds)
                print(f"  {mode}, {clients} clients: done", flush=True)
            client.close()
        finally:
            process.terminate()
            process.wait(timeout=60)

    print(f"\n{'mode':<18}{'clients':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'QPS':>9}")
    for mode, by_clients in results.items():
        for clients, row in by_clients.items():
            print(f"{mode:<18}{clients:>8}{row['p50_ms']:>9.2f}{row['p95_ms']:>9.2f}{row['p99_ms']:>9.2f}"
                  f"{row['qps']:>9.0f}")
    low, high = min(concurrency), max(concurrency)
    p50_ratio = results["gRPC no batching"][low]["p50_ms"] / results["in-process"][low]["p50_ms"]
    qps_ratio = results["gRPC batching"][high]["qps"] / results["gRPC no batching"][high]["qps"]
    print(f"\np50 gRPC (no batching, {low} client) / in-process: {p50_ratio:.2f}x "
          f"(target <= {P50_TARGET:g}x: {'met' if p50_ratio <= P50_TARGET else 'NOT met'})")
    print(f"QPS with batching / without, {high} clients: {qps_ratio:.2f}x "
          f"(target >= {BATCHING_QPS_TARGET:g}x: {'met' if qps_ratio >= BATCHING_QPS_TARGET else 'NOT met'})")
    for clients in concurrency:
        print(f"  at {clients} clients: gRPC no batching {results['gRPC no batching'][clients]['qps']:.0f} QPS, "
              f"batching {results['gRPC batching'][clients]['qps']:.0f} QPS, "
              f"in-process {results['in-process'][clients]['qps']:.0f} QPS")
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "serving_latency.json"), "w") as f:
        json.dump({"results": results, "p50_ratio": p50_ratio, "batching_qps_ratio": qps_ratio,
                   "settings": config.to_dict()["serving"]}, f, indent=2)
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
