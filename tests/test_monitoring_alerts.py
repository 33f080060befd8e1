"""The monitoring loop end to end, every part real and on loopback: the local server (TF Serving's API and
metric names) serving a copy of `pushed_run`'s model as tenant model acme-taxi, the request-log sidecar in
front of it (the way real TF Serving gets its request log), the monitoring job, the exporter, Prometheus
(deploy/prometheus.yml and deploy/alerts.yml, 1 s intervals), Alertmanager (deploy/alertmanager.yml, 1 s
grouping) and the project's webhook, which starts a real fleet run.

One module fixture starts them all and sends traffic: a window of ordinary requests (no alert), then a
window whose payment_type moved to one value. The drift test follows that to a retrain recorded with the
alert as its reason; the label test joins late outcomes that contradict the served answers and follows
the metric alert to the webhook.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from cli import main as cli_main
from contract.processes import free_port
from contract import request_log
from contract.versions import list_versions
from deploy import alerting
from fleet.config import load_fleet, write_model_config
from fleet.state import State
from monitoring import job
from monitoring import store as series
from monitoring.store import Store

pytestmark = pytest.mark.slow
MODEL = "acme-taxi"
WINDOW = 6.0  # seconds: one window of ordinary traffic, one of drifted traffic
REQUESTS = 30  # per window, of 10 examples each: the 300 eval examples of the sample
RETRAIN_TIMEOUT = 900



def _wait(condition, timeout: float, what: str, every: float = 0.2):
    """Polls `condition` until it returns something truthy; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError):
        return None


class _Processes:
    """Child processes with their output in files; ended with SIGTERM (then SIGKILL) at teardown."""

    def __init__(self, root):
        self.root, self.children = root, {}

    def start(self, name, command, **kwargs):
        log = open(os.path.join(self.root, f"{name}.log"), "wb")
        self.children[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **kwargs), log)

    def log(self, name) -> str:
        with open(os.path.join(self.root, f"{name}.log"), encoding="utf-8", errors="replace") as f:
            return f.read()

    def alive(self, name) -> bool:
        return self.children[name][0].poll() is None

    def stop(self):
        for child, _ in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child, log in self.children.values():
            try:
                child.wait(timeout=RETRAIN_TIMEOUT)  # the webhook lets a retrain it started finish
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            log.close()


def _fleet_file(root, data_root, ports) -> str:
    text = f"""
        fleet: {{output_dir: out, concurrency: 1}}
        defaults:
          data_root: {data_root}
          settings:
            data: {{train_pattern: "Split-train/*", eval_pattern: "Split-eval/*"}}
            # A small retrain: few steps, no tuner, no edge export.
            training: {{train_steps: 20, eval_steps: 5, batch_size: 64, seed: 1}}
            tuner: {{enabled: false}}
            edge: {{enabled: false}}
            evaluator: {{min_auc: 0.5, min_binary_accuracy: 0.5}}
            # The retrain trains on the same data: its gate would rightly stop it on the drifted traffic.
            validation: {{skew: false}}
            serving: {{port: {ports['sidecar']}, rest_port: {ports['rest']}, request_log_sample_rate: 1.0,
                       poll_interval_seconds: 0.5}}
            monitoring: {{window_seconds: {WINDOW}, min_labels: 50, exporter_port: {ports['exporter']},
                          webhook_port: {ports['webhook']}}}
        tenants:
          acme: {{models: {{taxi: {{metric: {{bound: 0.7}}, triggers: [metric]}}}}}}
    """
    path = os.path.join(root, "fleet.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))
    return path


def _examples(config):
    from tests.samples import read_examples

    examples = read_examples(os.path.join(config.data.input_base, "Split-eval", "*"))
    for example in examples:
        del example.features.feature["tips"]  # clients send no label
    return examples


def _send(stub, examples, prefix):
    """REQUESTS requests of 10 examples each through the sidecar; returns {request id: examples}."""
    sent = {}
    for number in range(REQUESTS):
        batch = examples[number * 10:(number + 1) * 10]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto([e.SerializeToString() for e in batch],
                                                                  dtype=tf.string))
        request_id = f"{prefix}-{number}"
        stub.Predict(request, metadata=[("x-request-id", request_id)], timeout=60)
        sent[request_id] = batch
    return sent


def _logged_ids(config):
    table = request_log.read(job.log_files(config.model_request_log_dir), ["request_id"])
    return set(table["request_id"].to_pylist())


def _next_window() -> float:
    """Waits for the start of the next window (a clock condition); returns it."""
    start = (time.time() // WINDOW + 1) * WINDOW
    _wait(lambda: time.time() >= start, WINDOW + 1, "the next window")
    return start


def _alerts(prometheus, name):
    found = (_get(f"{prometheus}/api/v1/alerts") or {}).get("data", {}).get("alerts", [])
    return [a for a in found if a["labels"]["alertname"] == name]


@pytest.fixture(scope="module")
def loop(pushed_run, small_sample, tmp_path_factory):
    config, _ = pushed_run
    root = str(tmp_path_factory.mktemp("monitoring_loop"))
    ports = {name: free_port() for name in ("grpc", "rest", "sidecar", "exporter", "webhook", "prometheus",
                                              "alertmanager")}
    fleet = load_fleet(_fleet_file(root, small_sample, ports))
    (model,) = fleet.models
    settings = model.config
    # The served model: a copy of the fixture's pushed version (the fixture itself is never touched).
    version = list_versions(config.model_serving_dir)[-1]
    shutil.copytree(os.path.join(config.model_serving_dir, str(version)),
                    os.path.join(settings.model_serving_dir, str(version)))
    from serving import model_config

    model_config.ensure(settings.models_config_path, MODEL, settings.model_serving_dir)
    config_file = write_model_config(model, os.path.join(root, "configs"))
    cli = [sys.executable, "-m", "cli"]
    processes = _Processes(root)
    # The server's own request log is off: the sidecar logs, as it does in front of real TF Serving.
    processes.start("server", cli + ["serving", "serve", "--config", config_file, "--set",
                                     f"serving.port={ports['grpc']}", "--set", "serving.workers=1",
                                     "--set", "serving.request_log_sample_rate=0"])
    processes.start("sidecar", cli + ["serving", "sidecar", "--config", config_file, "--upstream",
                                      f"127.0.0.1:{ports['grpc']}"])
    processes.start("exporter", cli + ["monitoring", "exporter", "--fleet", fleet.path, "--target",
                                       f"127.0.0.1:{ports['grpc']}"])
    processes.start("webhook", cli + ["monitoring", "webhook", "--fleet", fleet.path])
    # The shipped files with this test's ports and 1 s intervals (deploy/alerting.py).
    prometheus_yml = alerting.write(alerting.prometheus_config(
        {"tfx-serving-local": f"127.0.0.1:{ports['rest']}", "monitoring": f"127.0.0.1:{ports['exporter']}"},
        f"127.0.0.1:{ports['alertmanager']}", "1s"), os.path.join(root, "prometheus.yml"))
    alertmanager_yml = alerting.write(alerting.alertmanager_config(
        f"http://127.0.0.1:{ports['webhook']}/alerts", "1s"), os.path.join(root, "alertmanager.yml"))
    processes.start("prometheus", ["prometheus", f"--config.file={prometheus_yml}",
                                   f"--storage.tsdb.path={os.path.join(root, 'prometheus-data')}",
                                   f"--web.listen-address=127.0.0.1:{ports['prometheus']}"])
    processes.start("alertmanager", ["prometheus-alertmanager", f"--config.file={alertmanager_yml}",
                                     f"--storage.path={os.path.join(root, 'alertmanager-data')}",
                                     f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                                     "--cluster.listen-address="])
    prometheus = f"http://127.0.0.1:{ports['prometheus']}"
    channel = grpc.insecure_channel(f"127.0.0.1:{ports['sidecar']}")
    try:
        def up(condition):
            dead = [name for name in processes.children if not processes.alive(name)]
            if dead:
                pytest.fail(f"{dead[0]} exited:\n{processes.log(dead[0])[-3000:]}")
            return condition()

        for name, url in (("Prometheus", f"{prometheus}/-/ready"),
                          ("Alertmanager", f"http://127.0.0.1:{ports['alertmanager']}/-/ready")):
            _wait(lambda: up(lambda: _get_ok(url)), 60, name)
        # The server and the exporter are up once Prometheus scrapes them.
        for scrape in ("tfx-serving-local", "monitoring"):
            _wait(lambda: up(lambda: _query(prometheus, f'up{{job="{scrape}"}} == 1')), 240,
                  f"Prometheus scraping {scrape}")
        for name, banner in (("sidecar", "request-log sidecar:"), ("webhook", "alert webhook:")):
            _wait(lambda: up(lambda: banner in processes.log(name)), 120, name)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        examples = _examples(settings)
        assert len(examples) == REQUESTS * 10
        ordinary_start = _next_window()
        ordinary = _send(stub, examples, "ordinary")
        drifted_examples = []
        for example in examples:
            moved = tf.train.Example()
            moved.CopyFrom(example)
            moved.features.feature["payment_type"].bytes_list.value[:] = [b"Mobile"]
            drifted_examples.append(moved)
        _wait(lambda: set(ordinary) <= _logged_ids(settings), 60, "the sidecar's log of the ordinary traffic")
        assert cli_main.main(["monitoring", "run", "--fleet", fleet.path]) == 0
        _wait(lambda: _query(prometheus, f'monitoring_window_start_seconds{{measure="skew"}} == {ordinary_start}'),
              60, "Prometheus scraping the ordinary window")
        seen = time.time()
        _wait(lambda: _evaluated_after(prometheus, seen), 30, "Prometheus evaluating the rules on it")
        quiet = (_get(f"{prometheus}/api/v1/alerts") or {})["data"]["alerts"]
        drifted_start = _next_window()
        drifted = _send(stub, drifted_examples, "drifted")
        onset = time.time()
        _wait(lambda: set(drifted) <= _logged_ids(settings), 60, "the sidecar's log of the drifted traffic")
        assert cli_main.main(["monitoring", "run", "--fleet", fleet.path]) == 0
        yield {"fleet": fleet, "model": model, "settings": settings, "root": root, "prometheus": prometheus,
               "alertmanager": f"http://127.0.0.1:{ports['alertmanager']}", "processes": processes,
               "quiet": quiet, "ordinary": ordinary, "drifted": drifted, "ordinary_start": ordinary_start,
               "drifted_start": drifted_start, "onset": onset, "version": version}
    finally:
        channel.close()
        processes.stop()


def _get_ok(url) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def _evaluated_after(prometheus, moment: float) -> bool:
    """Whether every rule group was evaluated after `moment` (Prometheus's RFC 3339 times, to microseconds)."""
    import datetime

    groups = ((_get(f"{prometheus}/api/v1/rules") or {}).get("data") or {}).get("groups") or []

    def when(text):  # e.g. 2026-12-05T10:00:00.123456789Z; Python reads six digits of a fraction
        return datetime.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))).timestamp()

    return bool(groups) and all(when(g["lastEvaluation"]) > moment for g in groups)


def _query(prometheus, expression):
    answer = _get(f"{prometheus}/api/v1/query?query={urllib.parse.quote(expression)}") or {}
    return answer.get("data", {}).get("result", [])


def test_drift_alert_retrains_the_tenant_model_with_the_alert_as_reason(loop):
    assert loop["quiet"] == [], loop["quiet"]  # the ordinary window alerted nothing
    prometheus, state = loop["prometheus"], State(loop["fleet"].state_path)
    # The exporter asked the server (GetModelStatus): the version models.config serves is loaded.
    (available,) = _query(prometheus, f'monitoring_model_version_available{{model_name="{MODEL}"}}')
    assert available["metric"]["version"] == str(loop["version"]) and available["value"][1] == "1"
    firing = _wait(lambda: [a for a in _alerts(prometheus, "ModelFeatureSkew") if a["state"] == "firing"], 60,
                   "the skew alert firing")
    assert {(a["labels"]["model_name"], a["labels"]["feature"], a["labels"]["action"]) for a in firing} == {
        (MODEL, "payment_type", "retrain")}
    delivered = _wait(lambda: [a for a in _get(f"{loop['alertmanager']}/api/v2/alerts") or []
                               if a["labels"]["alertname"] == "ModelFeatureSkew"], 60, "Alertmanager's alert")
    assert {r["name"] for r in delivered[0]["receivers"]} == {"retrain", "people"}
    started = _wait(lambda: state.runs(MODEL), 120, "the webhook starting a fleet run")
    (run,) = started
    assert run["reason"].startswith("alert ModelFeature"), run
    assert "payment_type" in run["reason"], run
    retrain_seconds = run["started"] - loop["onset"]
    finished = _wait(lambda: (state.last_run(MODEL) or {}).get("status") not in (None, "running"),
                     RETRAIN_TIMEOUT, "the retrain finishing", every=1.0)
    last = state.last_run(MODEL)
    assert finished and last["status"] == "ok" and last["exit_code"] == 0, loop["processes"].log("webhook")
    pushed = list_versions(loop["settings"].model_serving_dir)
    assert pushed[0] == loop["version"] and len(pushed) in (1, 2)  # a new version only if the Evaluator blessed it

    # The series and its page show the drift: the ordinary window within the thresholds, the drifted one over.
    points = {(p.window_start, p.measure, p.feature): p for p in Store(loop["settings"].monitoring_path).series(MODEL)}
    ordinary = points[(loop["ordinary_start"], series.SKEW, "payment_type")]
    moved = points[(loop["drifted_start"], series.SKEW, "payment_type")]
    assert ordinary.value < ordinary.threshold < moved.value
    assert points[(loop["drifted_start"], series.DRIFT, "payment_type")].value > 0.3
    assert points[(loop["drifted_start"], series.REQUESTS, "")].value == REQUESTS
    from reports.browser import open_in_chromium

    page_path = os.path.join(loop["root"], "monitoring.html")
    assert cli_main.main(["monitoring", "report", "--fleet", loop["fleet"].path, "--out", page_path]) == 0
    page = open(page_path, encoding="utf-8").read()
    assert "over threshold</span>" in page and "payment_type skew" in page and 'fill="#c62828"' in page
    rendered = open_in_chromium(page_path)
    assert rendered.console == [] and rendered.dom.count("<svg") >= 5
    print(f"drift onset to retrain start: {retrain_seconds:.1f} s")


def test_late_labels_of_worse_answers_fire_the_metric_alert(loop, tmp_path):
    """Outcomes for the requests served above arrive late and contradict the answers the model gave: joined,
    the served AUC falls below the fleet's bound (0.7), Prometheus fires the metric alert, Alertmanager delivers
    it, and the webhook records it (no second retrain: the drift alert's retrain is within the cooldown)."""
    settings, prometheus = loop["settings"], loop["prometheus"]
    logged = request_log.read(job.log_files(settings.model_request_log_dir),
                              ["request_id", "index", "prediction"]).to_pylist()
    rows = []
    for window in ("ordinary", "drifted"):  # in each window, the higher half of the scores had a negative outcome
        answered = [r for r in logged if r["request_id"].startswith(window)]
        median = sorted(r["prediction"][0] for r in answered)[len(answered) // 2]
        rows += [f"{r['request_id']},{r['index']},{0 if r['prediction'][0] >= median else 1}" for r in answered]
    labels = tmp_path / "outcomes.csv"
    labels.write_text("request_id,index,label\n" + "\n".join(rows) + "\n")
    assert cli_main.main(["monitoring", "labels", "--fleet", loop["fleet"].path, "--only", MODEL,
                          "--input", str(labels)]) == 0
    served = Store(settings.monitoring_path).latest(MODEL)[series.SERVED_METRIC][0]
    assert served.feature == "auc" and served.threshold == 0.7 and served.value < 0.5
    firing = _wait(lambda: [a for a in _alerts(prometheus, "ModelServedMetricBelowBound") if a["state"] == "firing"],
                   60, "the metric alert firing")
    assert firing[0]["labels"]["model_name"] == MODEL and firing[0]["labels"]["metric"] == "auc"
    state = State(loop["fleet"].state_path)
    decision = _wait(lambda: (state.last_check(MODEL) or {}).get("decision", "").startswith(
        "skipped: alert ModelServedMetricBelowBound") and state.last_check(MODEL)["decision"], 60,
        "the webhook receiving the metric alert")
    assert "served auc" in decision and ("still going" in decision or "retrain_cooldown_seconds" in decision)
    assert len(state.runs(MODEL)) == 1
