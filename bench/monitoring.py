"""Monitoring: the job's cost per million logged requests, drift onset to retrain start, request logging's cost.

    python -m bench.monitoring [--requests 200000] [--repeats 3] [--model-base DIR] [--latency-requests 400]
                               [--out-dir DIR]
    make bench-monitoring

Why: the monitoring job runs for every model every window, the alert path decides how soon a drifted
model retrains, and the request log sits on every request's path: each needs a figure.

How, all measured in this run, each `--repeats` times (min/median/max printed):

- job: `--requests` logged requests of one real eval example each (the bundled taxi split, recycled),
  spread over 24 hourly windows and written as the server writes them, measured by the monitoring job
  (a fresh store each repeat, holding only the served version's training statistics, as after its first
  run) and, as the baseline, by what the skew check cost before on the same
  examples: TFDV statistics of them as gzip tf.Example TFRecords (`validation.checks.statistics_of`).
  Seconds per million requests are the measured seconds scaled by 1e6 / requests.
- drift onset to retrain start: the shipped prometheus.yml, alerts.yml and alertmanager.yml run in the real
  Prometheus and Alertmanager at a 1 s scrape and evaluation interval (group_wait 1 s), with the exporter and
  the webhook on loopback. Each repeat, a tenant model's request log gets a drifted window (the onset), the
  monitoring job runs at once, and the clock stops when the webhook records the fleet run it started (the
  run itself is then ended: its length is the pipeline's, measured by bench-fleet). Printed in seconds and
  in scrape/evaluation intervals after the job.
- logging on vs off: two local servers on the newest pushed version under `--model-base` (default what
  `make run` pushed), request log sample rate 1.0 and 0, answer `--latency-requests` gRPC Predict requests
  of one example each from one client, alternating servers each round.

Results also go to `<out-dir>/monitoring.json`.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from bench import results as bench_results
from cli import prologue
from contract.processes import free_port

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT_DIR = os.path.join(REPO_ROOT, "bench", "results")
WINDOWS = 24
HOUR = 3600.0
INTERVAL = 1.0  # Prometheus scrape and evaluation interval, Alertmanager group_wait, for the alert path



def _wait(condition, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _eval_examples(limit: int = 0):
    import tensorflow as tf

    from contract.config import bundled_taxi_root
    from validation import files as input_files

    out = []
    for path in input_files.list_files(os.path.join(bundled_taxi_root(), "Split-eval"), "*"):
        for record in input_files.read_examples(path):
            example = tf.train.Example.FromString(record)
            del example.features.feature["tips"]
            out.append(example.SerializeToString())
            if limit and len(out) >= limit:
                return out
    return out


def _write_log(directory: str, records: List[bytes], count: int, start: float, width: float, model: str,
               prefix: str = "r", per_file: int = 20000) -> None:
    from serving.request_log import RequestLogger

    logger = RequestLogger(directory, 1.0)
    for number in range(count):
        logger.add(f"{prefix}{number}", start + width * number / count, model, "Predict", "GRPC", "OK", 0.002,
                   version=1, examples=[records[number % len(records)]], predictions=[[0.5]])
        if (number + 1) % per_file == 0:
            logger.flush()
    logger.flush()


def bench_job(work: str, requests: int, repeats: int) -> Dict[str, object]:
    """The monitoring job on `requests` logged requests vs TFDV statistics of the same examples (TFRecords)."""
    import tensorflow as tf

    from contract.config import load_config
    from monitoring import job
    from monitoring.store import Store
    from validation import checks

    records = _eval_examples()
    config = load_config(None, [f"output_dir={os.path.join(work, 'job')}", f"monitoring.window_seconds={HOUR}"])
    start = (time.time() // HOUR - WINDOWS) * HOUR
    began = time.perf_counter()
    _write_log(config.model_request_log_dir, records, requests, start, WINDOWS * HOUR, config.model_name)
    write_seconds = time.perf_counter() - began
    tfrecords = os.path.join(work, "job", "examples.tfrecord.gz")
    with tf.io.TFRecordWriter(tfrecords, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for number in range(requests):
            writer.write(records[number % len(records)])
    job.run(config)  # once before timing: TFDV's imports, and the served version's training statistics, which
    primed = Store(config.monitoring_path).baseline(config.model_name, 1)  # the store keeps from then on
    job_seconds, baseline_seconds = [], []
    for _ in range(repeats):
        os.unlink(config.monitoring_path)
        Store(config.monitoring_path).put_baseline(config.model_name, 1, *primed)
        began = time.perf_counter()
        result = job.run(config)
        job_seconds.append(time.perf_counter() - began)
        assert len(result.windows) == WINDOWS and result.rows == requests, result.describe()
        began = time.perf_counter()
        checks.statistics_of([tfrecords])
        baseline_seconds.append(time.perf_counter() - began)
    per_million = 1e6 / requests
    return {"requests": requests, "windows": WINDOWS, "log_bytes": sum(
        os.path.getsize(p) for p in job.log_files(config.model_request_log_dir)),
        "write_seconds": write_seconds,
        "job_seconds": bench_results.spread(job_seconds),
        "job_seconds_per_million": bench_results.spread([s * per_million for s in job_seconds]),
        "baseline_statistics_seconds": bench_results.spread(baseline_seconds),
        "job_vs_baseline": bench_results.spread([j / b for j, b in zip(job_seconds, baseline_seconds)])}


class _Children:
    def __init__(self, work: str):
        self.work, self.children = work, []

    def start(self, name: str, command: Sequence[str]) -> subprocess.Popen:
        log = open(os.path.join(self.work, f"{name}.log"), "wb")
        child = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT)
        self.children.append((child, log))
        return child

    def stop(self) -> None:
        for child, _ in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child, log in self.children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
            log.close()


def _ready(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def bench_alert_path(work: str, repeats: int) -> Dict[str, object]:
    """Drift onset -> job -> exporter -> Prometheus -> Alertmanager -> webhook -> fleet run started."""
    import textwrap

    from contract.config import bundled_taxi_root
    from deploy import alerting
    from fleet import alerts
    from fleet.config import load_fleet
    from monitoring import exporter, job

    ordinary = _eval_examples(300)
    import tensorflow as tf

    drifted = []
    for record in ordinary:
        example = tf.train.Example.FromString(record)
        example.features.feature["payment_type"].bytes_list.value[:] = [b"Mobile"]
        drifted.append(example.SerializeToString())
    tenants = "\n".join(f"  t{n}: {{models: {{taxi: {{}}}}}}" for n in range(repeats))
    fleet_path = os.path.join(work, "fleet.yaml")
    with open(fleet_path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(f"""\
            fleet: {{output_dir: out}}
            defaults:
              data_root: {bundled_taxi_root()}
              settings: {{monitoring: {{window_seconds: 60}}}}
            tenants:
            """) + tenants + "\n")
    fleet = load_fleet(fleet_path)
    store_path = fleet.models[0].config.monitoring_path
    ports = {name: free_port() for name in ("prometheus", "alertmanager")}
    exporter_server, exporter_port = exporter.serve(store_path, "127.0.0.1", 0)
    out = open(os.path.join(work, "webhook.log"), "w")
    webhook = alerts.serve(fleet, "127.0.0.1", 0, out)
    webhook_port = webhook.server_address[1]
    interval = f"{INTERVAL:g}s"
    prometheus_yml = alerting.write(alerting.prometheus_config(
        {"monitoring": f"127.0.0.1:{exporter_port}"}, f"127.0.0.1:{ports['alertmanager']}", interval),
        os.path.join(work, "prometheus.yml"))
    alertmanager_yml = alerting.write(alerting.alertmanager_config(
        f"http://127.0.0.1:{webhook_port}/alerts", interval), os.path.join(work, "alertmanager.yml"))
    children = _Children(work)
    children.start("prometheus", ["prometheus", f"--config.file={prometheus_yml}",
                                  f"--storage.tsdb.path={os.path.join(work, 'prometheus-data')}",
                                  f"--web.listen-address=127.0.0.1:{ports['prometheus']}"])
    children.start("alertmanager", ["prometheus-alertmanager", f"--config.file={alertmanager_yml}",
                                    f"--storage.path={os.path.join(work, 'alertmanager-data')}",
                                    f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                                    "--cluster.listen-address="])
    totals, jobs, after_job = [], [], []
    try:
        _wait(lambda: _ready(f"http://127.0.0.1:{ports['prometheus']}/-/ready"), 60, "Prometheus")
        _wait(lambda: _ready(f"http://127.0.0.1:{ports['alertmanager']}/-/ready"), 60, "Alertmanager")
        for model in fleet.models:
            config = model.config
            width = config.monitoring.window_seconds
            start = (time.time() // width - 2) * width
            _write_log(config.model_request_log_dir, ordinary, len(ordinary), start, width / 2, model.name, "o")
            job.run(config)  # the ordinary window: within the thresholds
            onset = time.time()
            _write_log(config.model_request_log_dir, drifted, len(drifted), start + width, width / 2, model.name, "d")
            job.run(config)
            job_done = time.time()
            state = webhook.receiver.controller.state
            _wait(lambda: state.runs(model.name), 120, f"the retrain of {model.name}", every=0.01)
            started = state.runs(model.name)[0]["started"]
            webhook.receiver.controller.abandon()  # the run's own length is bench-fleet's figure
            webhook.receiver.wait()
            webhook.receiver.controller.abandoning.clear()
            webhook.receiver.controller.stopping.clear()
            totals.append(started - onset)
            jobs.append(job_done - onset)
            after_job.append((started - job_done) / INTERVAL)
    finally:
        children.stop()
        webhook.shutdown()
        exporter_server.shutdown()
        out.close()
    return {"interval_seconds": INTERVAL, "onset_to_run_seconds": bench_results.spread(totals),
            "job_seconds": bench_results.spread(jobs), "job_to_run_intervals": bench_results.spread(after_job)}


def bench_logging(work: str, model_base: str, requests: int, repeats: int) -> Dict[str, object]:
    """gRPC Predict latency of one example, request log on (rate 1.0) vs off, alternating each round."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from contract.config import ServingConfig
    from contract.versions import list_versions
    from serving import model_config
    from serving.process import ModelServer

    versions = list_versions(model_base) if os.path.isdir(model_base) else []
    if not versions:
        raise SystemExit(f"error: no pushed version under {model_base}; run `make run` first or pass --model-base")
    name = os.path.basename(model_base.rstrip("/"))
    base = os.path.join(work, "serving", name)
    shutil.copytree(os.path.join(model_base, str(versions[-1])), os.path.join(base, str(versions[-1])))
    path = os.path.join(work, "serving", "models.config")
    model_config.ensure(path, name, base)
    examples = _eval_examples(requests)
    servers = {}
    for label, rate in (("on", 1.0), ("off", 0.0)):
        server = ModelServer(path, ServingConfig(port=0, rest_port=0, poll_interval_seconds=1.0,
                                                 request_log_sample_rate=rate,
                                                 request_log_dir=os.path.join(work, f"logs-{label}")))
        server.start()
        servers[label] = server
    rounds: Dict[str, List[Dict[str, float]]] = {"on": [], "off": []}
    try:
        stubs = {label: prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{server.port}")) for label, server in servers.items()}
        prepared = []
        for record in examples:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.inputs["examples"].CopyFrom(tf.make_tensor_proto([record], dtype=tf.string))
            prepared.append(request)
        for stub in stubs.values():  # warm both up
            for request in prepared[:20]:
                stub.Predict(request, timeout=30)
        for _ in range(repeats):
            for label, stub in stubs.items():
                seconds = []
                for request in prepared:
                    began = time.perf_counter()
                    stub.Predict(request, timeout=30)
                    seconds.append(time.perf_counter() - began)
                seconds.sort()
                rounds[label].append({"p50_ms": 1e3 * seconds[len(seconds) // 2],
                                      "p99_ms": 1e3 * seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))]})
    finally:
        for server in servers.values():
            server.stop()
    out = {"requests_per_round": len(prepared)}
    for key in ("p50_ms", "p99_ms"):
        for label in rounds:
            out[f"{key}_logging_{label}"] = bench_results.spread([r[key] for r in rounds[label]])
        out[f"{key}_on_vs_off"] = bench_results.spread([on[key] / off[key] for on, off in
                                                        zip(rounds["on"], rounds["off"])])
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    prologue.prepare()
    parser = argparse.ArgumentParser(prog="python -m bench.monitoring", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200000, help="logged requests the job measures")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=400, help="requests per round and server")
    parser.add_argument("--model-base", default=os.path.join(REPO_ROOT, "outputs", "serving", "taxi"))
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-monitoring-")
    try:
        report = {"machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
                  "job": bench_job(os.path.join(work, "job"), args.requests, args.repeats)}
        os.makedirs(os.path.join(work, "alerts"))
        report["alert_path"] = bench_alert_path(os.path.join(work, "alerts"), args.repeats)
        report["logging"] = bench_logging(os.path.join(work, "latency"), args.model_base, args.latency_requests,
                                          args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fmt = bench_results.format_spread
    job, path, logging_ = report["job"], report["alert_path"], report["logging"]
    print(f"monitoring job, {job['requests']:,} logged requests in {job['windows']} windows "
          f"({job['log_bytes'] / 1e6:.1f} MB of Parquet):")
    print(f"  job seconds                  {fmt(job['job_seconds'], '.2f')}")
    print(f"  per million requests, s      {fmt(job['job_seconds_per_million'], '.1f')}")
    print(f"  baseline: TFDV statistics of the same examples (TFRecords), s  "
          f"{fmt(job['baseline_statistics_seconds'], '.2f')}")
    print(f"  job / baseline               {fmt(job['job_vs_baseline'], '.2f')}x")
    print(f"drift onset -> retrain start (scrape = evaluation = group_wait = {path['interval_seconds']:g} s):")
    print(f"  onset -> run started, s      {fmt(path['onset_to_run_seconds'], '.2f')}")
    print(f"  of which the job, s          {fmt(path['job_seconds'], '.2f')}")
    print(f"  job end -> run started, intervals  {fmt(path['job_to_run_intervals'], '.1f')}")
    print(f"request logging on (rate 1.0) vs off, gRPC Predict of one example, {logging_['requests_per_round']} "
          "requests a round:")
    for key in ("p50_ms", "p99_ms"):
        print(f"  {key[:3]} on {fmt(logging_[key + '_logging_on'], '.3f')} ms, off "
              f"{fmt(logging_[key + '_logging_off'], '.3f')} ms, on/off {fmt(logging_[key + '_on_vs_off'], '.2f')}x")
    print(f"results: {bench_results.write(args.out_dir, 'monitoring', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
