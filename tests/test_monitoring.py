"""The monitoring parts on real request logs of real taxi examples, without a served model: the request-log
format, the job's windows, the late-label join, the exporter's page, the alert rules (promtool, amtool) and
the alert webhook. The whole loop, with a served model, Prometheus and Alertmanager, is in
test_monitoring_alerts.py."""

import json
import math
import os
import subprocess
import textwrap
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families

from cli import main as cli_main
from contract import request_log
from contract.config import load_config
from monitoring import exporter, job, labels
from monitoring import store as series
from monitoring.store import Point, Store
from serving.request_log import RequestLogger
from tests.samples import fake_serving_dir

WINDOW = 60.0
DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy")


@pytest.fixture(scope="module")
def requests(eval_examples):
    """Serving requests of the real eval split: the label column removed, as clients send them."""
    out = []
    for example in eval_examples[:240]:
        copy = tf.train.Example()
        copy.CopyFrom(example)
        del copy.features.feature["tips"]
        out.append(copy)
    return out


def _config(root, *extra):
    return load_config(None, [f"output_dir={root}", f"monitoring.window_seconds={WINDOW}",
                              "monitoring.min_labels=50", *extra])


def _log(config, examples, start, prefix, sample_rate=1.0, payment_type=None, failed_every=0, score=0.5):
    """Requests of one example each, 0.1 s apart from `start`, as the server logs them; returns their ids."""
    logger = RequestLogger(config.model_request_log_dir, sample_rate)
    ids = []
    for number, example in enumerate(examples):
        if payment_type:
            example = tf.train.Example.FromString(example.SerializeToString())
            example.features.feature["payment_type"].bytes_list.value[:] = [payment_type]
        request_id = f"{prefix}-{number}"
        arrived = start + 0.1 * number
        if failed_every and number % failed_every == 0:
            logger.add(request_id, arrived, config.model_name, "Predict", "GRPC", "INVALID_ARGUMENT", 0.004)
        else:
            score_of = score(number) if callable(score) else score
            logger.add(request_id, arrived, config.model_name, "Predict", "GRPC", "OK", 0.002 + 0.001 * (number % 3),
                       version=1, arm="stable", examples=[example.SerializeToString()], predictions=[[score_of]])
        ids.append(request_id)
    logger.flush()
    return ids


def _window_start(offset_windows: int) -> float:
    return (math.floor(time.time() / WINDOW) + offset_windows) * WINDOW


def test_request_log_files_appear_whole_and_the_skew_check_reads_them(tmp_path, requests):
    from validation import checks
    from validation.files import BadInputError

    config = _config(tmp_path)
    _log(config, requests[:20], time.time(), "r", failed_every=10)
    directory = config.model_request_log_dir
    files = os.listdir(directory)
    assert len(files) == 1 and files[0].startswith("requests-") and files[0].endswith(".parquet"), files
    table = request_log.read([os.path.join(directory, files[0])])
    assert table.column_names == list(request_log.COLUMNS)
    rows = table.to_pylist()
    failed = [r for r in rows if r["status"] != "OK"]
    assert len(rows) == 20 and len(failed) == 2
    assert all(r["example"] is None and r["prediction"] == [] and r["version"] == 0 for r in failed)
    answered = [r for r in rows if r["status"] == "OK"]
    assert {r["request_id"] for r in answered} == {f"r-{n}" for n in range(20) if n % 10}
    assert all(r["model"] == "taxi" and r["arm"] == "stable" and r["prediction"] == [0.5] for r in answered)
    # The skew check (the gate's and `validation skew`'s) reads the same files: 18 logged examples.
    assert checks.statistics_of([os.path.join(directory, files[0])]).datasets[0].num_examples == 18
    stray = tmp_path / "not-a-log.parquet"
    stray.write_bytes(b"PAR1 no parquet")
    with pytest.raises(BadInputError, match="not-a-log.parquet: not a readable Parquet file"):
        checks.statistics_of([str(stray)])


def test_job_measures_each_window_and_only_new_rows(tmp_path, requests):
    """Window A: 100 requests logged at a 0.5 sample rate; window B: 60 requests whose payment type moved
    to one value, one in ten refused. A's traffic is scaled back from the sample, B's skew (against the
    training statistics) and drift (against A) of payment_type are over the schema's thresholds."""
    config = _config(tmp_path)
    a, b = _window_start(-2), _window_start(-1)
    _log(config, requests[:100], a, "a", sample_rate=0.5)
    _log(config, requests[100:160], b, "b", payment_type=b"Mobile", failed_every=10)
    result = job.run(config)
    assert result.windows == [a, b] and result.rows == 160
    assert "train split file(s)" in result.baseline  # no push record here: the configured train split
    points = {(p.window_start, p.measure, p.feature): p for p in Store(config.monitoring_path).series("taxi")}

    def value(start, measure, feature=""):
        return points[(start, measure, feature)].value

    assert value(a, series.REQUESTS) == 200 and value(a, series.REQUESTS_PER_SECOND) == pytest.approx(200 / WINDOW)
    assert value(a, series.ERROR_RATIO) == 0 and value(b, series.ERROR_RATIO) == pytest.approx(0.1)
    assert value(a, series.LATENCY_P50) == pytest.approx(3.0) and value(b, series.EXAMPLES) == 54
    skew_a, skew_b = points[(a, series.SKEW, "payment_type")], points[(b, series.SKEW, "payment_type")]
    assert skew_a.value < skew_a.threshold == 0.15 < skew_b.value
    drift = points[(b, series.DRIFT, "payment_type")]
    assert drift.value > drift.threshold == 0.3 and (a, series.DRIFT, "payment_type") not in points
    # (54 examples are few: other features may cross a threshold by chance; payment_type is certain to.)
    assert {("drift", "payment_type"), ("skew", "payment_type")} <= {(p.measure, p.feature) for p in result.over}
    # Nothing new: nothing measured again. New rows in B: B alone is measured again, with them.
    assert job.run(config).windows == []
    _log(config, requests[160:180], b + 30, "late")
    again = job.run(config)
    assert again.windows == [b] and again.rows == 80
    assert Store(config.monitoring_path).latest("taxi")[series.REQUESTS][0].value == 80


def test_labels_join_every_row_or_count_why_not(tmp_path, requests, capsys):
    """Late labels in CSV, JSON lines and Parquet: each row is joined to its logged prediction or counted
    under one reason, and the joined ones give the window's served AUC against monitoring.metric_bound."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    config = _config(tmp_path, "monitoring.metric_bound=0.7")
    start = _window_start(-1)
    ids = _log(config, requests[:70], start, "q", failed_every=35, score=lambda n: (n % 10) / 10)
    two = RequestLogger(config.model_request_log_dir, 1.0)
    two.add("pair", start + 1, "taxi", "Classify", "REST", "OK", 0.003, version=1,
            examples=[e.SerializeToString() for e in requests[70:72]], predictions=[[0.1, 0.9], [0.8, 0.2]])
    two.flush()
    # The served model ranks exactly backwards: a high score for a negative outcome. ids[68] and ids[69] wait
    # for the second file.
    rows = [f"{rid},{1 if (n % 10) < 5 else 0},," for n, rid in enumerate(ids[:68])]
    rows += ["pair,0,,1", "nobody,1,,", f"{ids[1]},0,,", f"{ids[68]},maybe,,"]
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("request_id,label,time,index\n" + "\n".join(rows) + "\n")
    imported = labels.join(config, str(csv_path))
    # Of 68 logged requests 2 were refused (ids[0], ids[35]: no prediction to judge); `pair` index 1 joins.
    assert imported.counts() == {"rows": 72, "joined": 67, "unknown": 1, "duplicate": 1, "too_late": 0,
                                 "before_prediction": 0, "bad_label": 1, "failed_request": 2}, imported.counts()
    assert (imported.skipped["duplicate"], imported.skipped["unknown"], imported.skipped["bad_label"]) == (
        [ids[1]], ["nobody"], [ids[68]])
    store = Store(config.monitoring_path)
    joined = {(j.request_id, j.index): j for j in store.labels("taxi")}
    assert joined[("pair", 1)].prediction == [0.8, 0.2] and joined[("pair", 1)].label == 0
    assert joined[(ids[3], 0)].prediction == [0.3] and joined[(ids[3], 0)].label == 1
    assert job.served_metric(config, store) == [start]
    served = store.latest("taxi")[series.SERVED_METRIC][0]
    assert served.feature == "auc" and served.threshold == 0.7 and served.value < 0.1
    assert store.latest("taxi")[series.LABELS][0].value == 67

    # JSON lines: an outcome joined before, one 31 days after its prediction, one before it.
    predicted = {(r["request_id"], r["index"]): r["time"]
                 for r in request_log.read(job.log_files(config.model_request_log_dir)).to_pylist()}
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [
        {"request_id": ids[3], "label": 1},
        {"request_id": "pair", "label": 1, "index": 0, "time": predicted[("pair", 0)] + 31 * 86400},
        {"request_id": ids[69], "label": 1, "time": predicted[(ids[69], 0)] - 60},
    ]) + "\n")
    assert labels.join(config, str(jsonl)).counts() == {
        "rows": 3, "joined": 0, "unknown": 0, "duplicate": 1, "too_late": 1, "before_prediction": 1,
        "bad_label": 0, "failed_request": 0}
    # Parquet, with an ISO time: the outcome that came too late above, now within the window.
    parquet = tmp_path / "labels.parquet"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(predicted[("pair", 0)] + 3600))
    pq.write_table(pa.table({"request_id": ["pair"], "label": [1], "index": [0], "time": [when]}), parquet)
    assert labels.join(config, str(parquet)).counts()["joined"] == 1
    assert [i["counts"]["rows"] for i in store.label_imports("taxi")] == [72, 3, 1]  # every import, counted

    bad = tmp_path / "outcomes.csv"
    bad.write_text("id,outcome\nq-1,1\n")
    status = cli_main.main(["monitoring", "labels", "--input", str(bad), "--set", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert status == 2 and f"error: labels file {bad} has no column request_id, label" in err, err


def test_labels_command_says_what_it_joined_and_fails_when_nothing_joins(tmp_path, requests, capsys):
    config = _config(tmp_path)
    ids = _log(config, requests[:3], time.time() - 5, "c")
    good, none = tmp_path / "good.csv", tmp_path / "none.csv"
    good.write_text("request_id,label\n" + "".join(f"{i},1\n" for i in ids))
    none.write_text("request_id,label\nstranger,1\n")
    settings = ["--set", f"output_dir={tmp_path}", "--set", f"monitoring.window_seconds={WINDOW}"]
    assert cli_main.main(["monitoring", "labels", "--input", str(good), *settings]) == 0
    assert f"labels {good} for taxi: 3 row(s), 3 joined" in capsys.readouterr().out
    assert cli_main.main(["monitoring", "labels", "--input", str(none), *settings]) == 1
    out = capsys.readouterr().out
    assert "1 row(s), 0 joined" in out and "1 unknown: no logged prediction has this request id" in out


def test_a_window_whose_outcomes_are_all_one_class_has_no_auc(tmp_path, requests):
    config = _config(tmp_path)
    ids = _log(config, requests[:60], _window_start(-1), "one")
    outcomes = tmp_path / "outcomes.csv"
    outcomes.write_text("request_id,label\n" + "".join(f"{i},1\n" for i in ids))
    assert labels.join(config, str(outcomes)).counts()["joined"] == 60
    store = Store(config.monitoring_path)
    assert job.served_metric(config, store) == []
    latest = store.latest("taxi")
    assert latest[series.LABELS][0].value == 60 and series.SERVED_METRIC not in latest


def _scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_exporter_serves_the_newest_window_and_which_versions_are_not_loaded(tmp_path):
    config = _config(tmp_path)
    store = Store(config.monitoring_path)
    old, new = _window_start(-2), _window_start(-1)
    store.put([Point("acme", old, old + WINDOW, series.SKEW, "payment_type", 0.9, 0.15),
               Point("acme", new, new + WINDOW, series.SKEW, "payment_type", 0.05, 0.15),
               Point("acme", new, new + WINDOW, series.REQUESTS_PER_SECOND, "", 12.5, None),
               Point("acme", old, old + WINDOW, series.SERVED_METRIC, "auc", 0.61, 0.7),
               Point("fares", new, new + WINDOW, series.SERVED_METRIC, "rmse", 3.1, None)])
    models_config, _ = fake_serving_dir(tmp_path, 1, 2, model_name="acme")
    # Nothing listens on this port: the probe finds the server down, so no version is available.
    closed = exporter.StatusProbe(models_config, "127.0.0.1:1")
    server, port = exporter.serve(config.monitoring_path, "127.0.0.1", 0, closed)
    try:
        page = _scrape(port)
    finally:
        server.shutdown()
        closed.close()
    assert page[("monitoring_feature_distance", (("feature", "payment_type"), ("kind", "skew"),
                                                 ("model_name", "acme")))] == 0.05
    assert page[("monitoring_feature_threshold", (("feature", "payment_type"), ("kind", "skew"),
                                                  ("model_name", "acme")))] == 0.15
    assert page[("monitoring_requests_per_second", (("model_name", "acme"),))] == 12.5
    auc = (("direction", "higher_is_better"), ("metric", "auc"), ("model_name", "acme"))
    assert page[("monitoring_served_metric", auc)] == 0.61 and page[("monitoring_served_metric_bound", auc)] == 0.7
    rmse = (("direction", "lower_is_better"), ("metric", "rmse"), ("model_name", "fares"))
    assert page[("monitoring_served_metric", rmse)] == 3.1 and ("monitoring_served_metric_bound", rmse) not in page
    assert page[("monitoring_status_probe_up", (("target", "127.0.0.1:1"),))] == 0
    # Follow-latest asks for the newest version on disk only.
    available = {k[1]: v for k, v in page.items() if k[0] == "monitoring_model_version_available"}
    assert available == {(("model_name", "acme"), ("version", "2")): 0.0}


def test_alert_rules_pass_promtool_and_the_alertmanager_config_amtool():
    for command in (["promtool", "check", "rules", "alerts.yml"], ["promtool", "test", "rules", "alerts_test.yml"],
                    ["amtool", "check-config", "alertmanager.yml"]):
        done = subprocess.run(command, cwd=DEPLOY, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "SUCCESS" in done.stdout + done.stderr, done.stdout + done.stderr


def _post(port, document):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/alerts", json.dumps(document).encode(),
                                     {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def _alert(name, model, status="firing", action="retrain"):
    return {"status": status, "labels": {"alertname": name, "model_name": model, "action": action},
            "annotations": {"summary": f"{model}: payment_type skew 0.980"}, "startsAt": "2026-12-05T10:00:00Z"}


@pytest.mark.slow  # one real pipeline process, stopped by its preflight
def test_webhook_retrains_the_alerted_model_once_with_the_alert_as_reason(tmp_path):
    """A notification with a firing retrain alert, a resolved one, a paging alert and a model of no tenant
    starts exactly one fleet run (here stopped by the runner's preflight: a zero-byte data file, exit 2),
    recorded with the alert as its reason; the same alert again within the cooldown starts none."""
    from fleet import alerts
    from fleet.config import load_fleet
    from fleet.state import State

    (tmp_path / "data" / "Split-train").mkdir(parents=True)
    (tmp_path / "data" / "Split-train" / "empty.gz").write_bytes(b"")
    (tmp_path / "fleet.yaml").write_text(textwrap.dedent("""
        fleet: {output_dir: out}
        defaults: {data_root: data, settings: {data: {train_pattern: "Split-train/*", eval_pattern: "Split-train/*"}}}
        tenants: {acme: {models: {tips: {}}}}
    """))
    fleet = load_fleet(str(tmp_path / "fleet.yaml"))
    with open(os.devnull, "w") as quiet:
        server = alerts.serve(fleet, "127.0.0.1", 0, quiet)
        port = server.server_address[1]
        try:
            # Alertmanager sends each alert group in its own notification, so skew and drift of one model
            # arrive at once: six handled together start one run between them (over HTTP the requests'
            # own jitter would mostly hide a race).
            burst = [{"version": "4", "status": "firing", "alerts": [
                _alert(name, "acme-tips"), _alert("ModelFeatureDrift", "acme-tips", "resolved"),
                _alert("ModelErrorRatioHigh", "acme-tips", action="page"), _alert("ModelFeatureSkew", "initech-x")]}
                for name in ["ModelFeatureSkew", "ModelFeatureDrift"] * 3]
            barrier = threading.Barrier(len(burst))
            with ThreadPoolExecutor(len(burst)) as pool:
                answers = list(pool.map(lambda document: (barrier.wait(), server.receiver.handle(document))[1],
                                        burst))
            started = [a for answer in answers for a in answer["started"]]
            assert [a.split(":")[0] for a in started] == ["acme-tips"], answers
            answer = next(answer for answer in answers if answer["started"])
            assert len(answer["skipped"]) == 3 and "'initech-x' is not in" in answer["skipped"][2], answer
            server.receiver.wait()
            again = _post(port, {"alerts": [_alert("ModelServedMetricBelowBound", "acme-tips")]})
        finally:
            server.shutdown()
    state = State(fleet.state_path)
    (run,) = state.runs("acme-tips")
    assert run["status"] == "bad input" and run["exit_code"] == 2
    assert run["reason"] in {f"alert {name}: acme-tips: payment_type skew 0.980 (firing since 2026-12-05T10:00:00Z)"
                             for name in ("ModelFeatureSkew", "ModelFeatureDrift")}
    assert again["started"] == [] and "within monitoring.retrain_cooldown_seconds (3600)" in again["skipped"][0]
    assert state.last_check("acme-tips")["decision"].startswith("skipped: alert ModelServedMetricBelowBound")
