"""The fleet file, triggers and controller without pipeline runs (fast); the real runs are in test_fleet_runs.py."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf
import yaml

from contract.errors import ConfigError
from fleet import demo, triggers
from fleet.config import load_fleet
from fleet.controller import Controller
from fleet.state import State


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(text))
    (tmp_path / "data" / "a").mkdir(parents=True, exist_ok=True)
    return str(path)


LAYERED = """
    fleet: {output_dir: out, concurrency: 3}
    defaults:
      data_root: data/a
      schedule: "0 3 * * *"
      settings: {training: {train_steps: 100, eval_steps: 7}, tuner: {enabled: false}}
    tiers:
      gold: {schedule: "0 * * * *", settings: {training: {train_steps: 200}}}
    tenants:
      acme:
        tier: gold
        settings: {training: {batch_size: 32}}
        models:
          search: {triggers: [new_data, schedule]}
          recs: {settings: {training: {train_steps: 300}}, data_root: data/b}
      globex:
        models: {search: {}}
"""


def test_layers_resolve_to_pipeline_configs(tmp_path):
    fleet = load_fleet(_write(tmp_path, LAYERED))
    assert fleet.concurrency == 3
    by_name = {m.name: m for m in fleet.models}
    assert sorted(by_name) == ["acme-recs", "acme-search", "globex-search"]
    search, recs, globex = by_name["acme-search"], by_name["acme-recs"], by_name["globex-search"]
    # defaults -> tier -> tenant -> model, key by key
    assert (search.config.training.train_steps, search.config.training.eval_steps,
            search.config.training.batch_size) == (200, 7, 32)
    assert recs.config.training.train_steps == 300 and recs.config.training.batch_size == 32
    assert globex.config.training.train_steps == 100 and globex.config.training.batch_size == 128
    assert search.schedule == "0 * * * *" and globex.schedule == "0 3 * * *"
    assert search.triggers == ["new_data", "schedule"] and globex.triggers == ["new_data"]
    assert recs.config.input_base == str(tmp_path / "data" / "b")
    # own pipeline context and serving name; one shared MLMD and serving directory
    assert (search.config.pipeline_name, search.config.model_name) == ("acme-search", "acme-search")
    assert len({m.config.metadata_path for m in fleet.models}) == 1
    assert len({m.config.models_config_path for m in fleet.models}) == 1
    assert len({m.config.pipeline_root for m in fleet.models}) == 3


@pytest.mark.parametrize("text, message", [
    ("tenants: {acme: {models: {m: {data_root: d, setings: {}}}}}",
     "tenants.acme.models.m: unknown key 'setings'"),
    ("tenants: {acme: {tier: gold, models: {m: {data_root: d}}}}",
     "tenants.acme.tier: no tier 'gold'"),
    ("tenants: {acme: {models: {m: {data_root: d, settings: {training: {train_step: 1}}}}}}",
     "tenants.acme.models.m.settings: unknown setting 'training.train_step'"),
    ("tenants: {acme: {models: {m: {data_root: d, settings: {pipeline_name: x}}}}}",
     "tenants.acme.models.m.settings.pipeline_name: set by the fleet"),
    ("tenants: {acme: {models: {m: {data_root: d, schedule: 'every day'}}}}",
     "tenants.acme.models.m.schedule: 'every day' is not a cron expression"),
    ("tenants: {acme: {models: {m: {}}}}", "tenants.acme.models.m.data_root is not set"),
    ("tenants: {acme: {models: {m: {data_root: d, triggers: [new_span]}}}}",
     "tenants.acme.models.m.triggers: ['new_span']"),
    ("tenants: {a_b: {models: {c: {data_root: d}}}, a: {models: {b-c: {data_root: d}}}}",
     "tenants.a.models.b-c: model names are lower-case"),
    ("tenants: {acme: {models: {}}}", "tenants.acme.models: a tenant needs at least one model"),
    ("tenants: {acme: {models: {m: {data_root: d, triggers: [metric]}}}}",
     "tenants.acme.models.m.metric.bound: the 'metric' trigger needs a number"),
    ("tenants: {acme: {models: {m: {data_root: d, triggers: [metric], metric: {bound: 0.7, min: 1}}}}}",
     "tenants.acme.models.m.metric: unknown key 'min'"),
    ("tenant: {}", "unknown key 'tenant'"),
])
def test_bad_fleet_files_name_the_entry_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_fleet(_write(tmp_path, text))
    assert message in str(error.value)


def test_duplicate_model_names_are_rejected(tmp_path):
    text = """
        tenants:
          acme:
            models:
              search: {data_root: d}
              search: {data_root: e}
    """
    with pytest.raises(ConfigError, match=r"duplicate name 'search' at line 6 \(first at line 5\)"):
        load_fleet(_write(tmp_path, text))
    # `-` joins tenant and model and is allowed in neither, so distinct entries never share a pipeline name.
    fleet = load_fleet(_write(tmp_path, "tenants: {acme: {models: {x_y: {data_root: d}}}, "
                                        "acme_x: {models: {y: {data_root: d}}}}"))
    assert [m.name for m in fleet.models] == ["acme-x_y", "acme_x-y"]


def _span_fleet(tmp_path, triggers_="[new_data]", schedule="") -> str:
    root = tmp_path / "data" / "acme"
    demo.write_span(str(root), 1, demo.tenant_span("acme", 1, 60, 30))
    text = f"""
        fleet: {{output_dir: out}}
        defaults:
          triggers: {triggers_}
          schedule: "{schedule}"
          settings: {{data: {{train_pattern: "span-{{SPAN}}/train/*", eval_pattern: "span-{{SPAN}}/eval/*"}}}}
        tenants:
          acme: {{models: {{tips: {{data_root: data/acme}}}}}}
    """
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_new_span_triggers_and_an_unchanged_root_does_not(tmp_path):
    fleet = load_fleet(_span_fleet(tmp_path))
    model, state = fleet.models[0], State(fleet.state_path)
    first = triggers.evaluate(model, state)
    assert first.reasons == ["first run"] and first.data.span == 1
    state.start_run(model.name, "first run", triggers.facts_dict(first.data), "log")
    assert triggers.evaluate(model, state).reasons == []
    demo.write_span(str(tmp_path / "data" / "acme"), 2, demo.tenant_span("acme", 2, 60, 30))
    second = triggers.evaluate(model, state)
    assert second.reasons == ["new data (span 2)"] and second.data.span == 2


def test_cron_schedule_is_due_after_its_next_time(tmp_path):
    fleet = load_fleet(_span_fleet(tmp_path, "[schedule]", "0 3 * * *"))
    model, state = fleet.models[0], State(fleet.state_path)
    assert triggers.evaluate(model, state).reasons == ["schedule '0 3 * * *' due"]  # never ran
    state.start_run(model.name, "x", {}, "log")
    started = state.last_run(model.name)["started"]
    due = triggers.next_due(model, started, started)
    assert time.gmtime(due).tm_hour == 3 and 0 < due - started <= 24 * 3600
    assert triggers.evaluate(model, state, now=due - 1).reasons == []
    assert triggers.evaluate(model, state, now=due + 1).reasons == ["schedule '0 3 * * *' due"]


def _log_requests(directory: str, records, payment_type=None) -> None:
    """The request log the server writes (serving/request_log.py), one request per example."""
    from serving.request_log import RequestLogger

    logger = RequestLogger(directory, 1.0)
    for number, record in enumerate(records):
        example = tf.train.Example.FromString(record)
        del example.features.feature["tips"]  # serving requests carry no label
        if payment_type:
            example.features.feature["payment_type"].bytes_list.value[:] = [payment_type]
        logger.add(f"{'drifted' if payment_type else 'same'}-{number}", time.time(), "acme-tips", "Predict", "GRPC",
                   "OK", 0.001, version=1, examples=[example.SerializeToString()], predictions=[[0.5]])
    logger.flush()


def test_skew_in_request_logs_triggers_a_run(tmp_path):
    fleet = load_fleet(_span_fleet(tmp_path, "[drift]"))
    model, state = fleet.models[0], State(fleet.state_path)
    assert triggers.evaluate(model, state).reasons == []  # no request logs yet
    same = demo.tenant_span("acme", 1, 60, 30)["train"]
    _log_requests(model.config.model_request_log_dir, same)
    decision = triggers.evaluate(model, state)
    assert decision.reasons == []
    state.record_check(model.name, "skipped", decision.logs)
    _log_requests(model.config.model_request_log_dir, same, payment_type=b"Mobile")
    drifted = triggers.evaluate(model, state)
    assert len(drifted.reasons) == 1, drifted.reasons
    assert drifted.reasons[0].startswith("request log over threshold: payment_type skew"), drifted.reasons


def test_a_cycle_with_no_new_data_skips_without_running(tmp_path):
    fleet = load_fleet(_span_fleet(tmp_path))
    model, state = fleet.models[0], State(fleet.state_path)
    state.start_run(model.name, "first run", triggers.facts_dict(triggers.data_facts(model)), "log")
    started = time.perf_counter()
    outcomes = Controller(fleet, out=open(os.devnull, "w")).cycle()
    assert [(o.status, o.reason) for o in outcomes] == [("skipped", "no new data, schedule not due")]
    assert time.perf_counter() - started < 2.0
    assert state.last_check(model.name)["decision"] == "skipped: no new data, schedule not due"
    assert len(state.runs(model.name)) == 1


@pytest.mark.slow  # two real pipeline processes, up to ImportExampleGen
def test_crashing_and_bad_tenants_fail_alone_with_bounded_concurrency(tmp_path):
    """Three tenants at concurrency 2: an unreadable gzip shard and a file of zero bytes that is no TFRecord
    (both named by the runner's preflight before any component: exit 2, "bad input"), and one with no data;
    each fails or skips alone and the cycle's exit status counts the failures."""
    text = """
        fleet: {output_dir: out, concurrency: 2}
        tenants:
          broken: {models: {m: {data_root: data/broken}}}
          garbage: {models: {m: {data_root: data/garbage}}}
          idle: {models: {m: {data_root: data/idle}}}
    """
    for name in ("broken", "garbage", "idle"):
        for split in ("Split-train", "Split-eval"):
            os.makedirs(tmp_path / "data" / name / split)
    (tmp_path / "data" / "broken" / "Split-train" / "x.gz").write_bytes(b"not a tfrecord")
    (tmp_path / "data" / "broken" / "Split-eval" / "x.gz").write_bytes(b"not a tfrecord")
    (tmp_path / "data" / "garbage" / "Split-train" / "x").write_bytes(b"\x00" * 64)
    (tmp_path / "data" / "garbage" / "Split-eval" / "x").write_bytes(b"\x00" * 64)
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(text))
    env = dict(os.environ)
    result = subprocess.run([sys.executable, "-m", "cli", "fleet", "run", "--fleet", str(path)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "idle-m                       skipped  (no data files)" in result.stdout
    assert "fleet run: 2 run(s), 1 skipped, 2 failed" in result.stdout
    fleet = load_fleet(str(path))
    state = State(fleet.state_path)
    assert state.last_run("broken-m")["status"] == "bad input" and state.last_run("broken-m")["exit_code"] == 2
    assert (state.last_run("garbage-m")["status"], state.last_run("garbage-m")["exit_code"]) == ("bad input", 2)
    assert state.last_run("idle-m") is None


def test_watch_stops_cleanly_on_sigterm(tmp_path):
    path = _span_fleet(tmp_path, "[schedule]", "0 3 1 1 *")
    fleet = load_fleet(path)
    State(fleet.state_path).start_run(fleet.models[0].name, "x", {}, "log")  # ran: schedule not due for a year
    child = subprocess.Popen([sys.executable, "-m", "cli", "fleet", "watch", "--fleet", path,
                              "--interval", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(4)
    assert child.poll() is None
    child.terminate()
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0, out
    assert "fleet watch: signal 15, finishing the current runs" in out
    assert "fleet watch: stopped after" in out and "0 failed run(s)" in out
    assert out.count("acme-tips") >= 2  # it cycled more than once before the signal


def test_status_lists_every_model_as_json(tmp_path):
    fleet = load_fleet(_write(tmp_path, LAYERED))
    result = subprocess.run([sys.executable, "-m", "cli", "fleet", "status", "--fleet",
                             str(tmp_path / "fleet.yaml"), "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)  # stdout is the JSON alone
    assert [r["name"] for r in rows] == [m.name for m in fleet.models]
    assert all(r["status"] == "never run" and r["serving_version"] is None for r in rows)
    assert all(r["metric"] == "AUC" and r["metric_value"] is None for r in rows)


def test_watch_abandons_the_running_pipeline_on_sigterm_when_asked(tmp_path):
    path = _span_fleet(tmp_path)  # never ran: due at once
    child = subprocess.Popen([sys.executable, "-m", "cli", "fleet", "watch", "--fleet", path,
                              "--interval", "60", "--on-stop", "abandon"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in child.stdout:
        lines.append(line)
        if "started  (first run)" in line:
            break
    child.terminate()
    rest, _ = child.communicate(timeout=60)
    out = "".join(lines) + rest
    assert child.returncode == 1, out  # one run did not complete
    assert "abandoning the current runs" in out and "acme-tips                    abandoned exit -15" in out
    run = State(load_fleet(path).state_path).last_run("acme-tips")
    assert (run["status"], run["exit_code"]) == ("abandoned", -15)


def test_k8s_files_serve_every_served_tenant_model_from_one_deployment(tmp_path, capsys):
    """Offline: the manifests parse, the ConfigMap's models.config is a ModelServerConfig with every served
    model's name and base path (a rollout's pin kept, an unregistered one following latest, one never pushed
    left out), and the Deployment reads it from the ConfigMap and polls it."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from cli.fleet import main
    from deploy import kubernetes as deploy
    from serving import model_config

    path = _write(tmp_path, LAYERED)
    fleet = load_fleet(path)
    shared = fleet.models[0].config.models_config_path
    out = str(tmp_path / "k8s")
    assert main(["k8s", "--fleet", path, "--out", out]) == 2
    assert "no model of" in capsys.readouterr().err  # nothing served yet: nothing written
    assert not os.path.exists(out)
    by_name = {m.name: m for m in fleet.models}
    served = [by_name["acme-search"], by_name["acme-recs"]]  # globex-search has no version: left out
    os.makedirs(os.path.join(by_name["acme-search"].config.model_serving_dir, "1"))  # pushed, not registered
    os.makedirs(os.path.join(by_name["acme-recs"].config.model_serving_dir, "7"))
    model_config.ensure(shared, "acme-recs", by_name["acme-recs"].config.model_serving_dir)  # as the controller
    pinned = model_config.read(shared)
    model_config.model_entry(pinned, "acme-recs").version_labels["stable"] = 7  # as a rollout
    model_config.write(shared, pinned)
    assert main(["k8s", "--fleet", path, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "one TF Serving Deployment serves 2 model(s): acme-search, acme-recs" in printed
    assert "note: globex-search has no served version yet" in printed

    docs = list(yaml.safe_load_all(open(os.path.join(out, "kubernetes.yaml"), encoding="utf-8")))
    by_kind = {d["kind"]: d for d in docs}
    assert sorted(by_kind) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Service"]
    text = by_kind["ConfigMap"]["data"]["models.config"]
    assert text == open(os.path.join(out, "models.config"), encoding="utf-8").read()
    models = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    entries = {m.name: m for m in models.model_config_list.config}
    assert {n: m.base_path for n, m in entries.items()} == {m.name: m.config.model_serving_dir for m in served}
    assert dict(entries["acme-recs"].version_labels) == {"stable": 7}
    assert entries["acme-search"].model_version_policy.latest.num_versions == 1
    assert by_kind["ConfigMap"]["data"]["monitoring.config"] == deploy.monitoring_config()

    pod = by_kind["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["image"].startswith("tensorflow/serving:")
    poll = max(1, round(fleet.models[0].config.serving.poll_interval_seconds))
    for flag in (f"--model_config_file={deploy.FLEET_CONFIG_DIR}/models.config",
                 f"--model_config_file_poll_wait_seconds={poll}", "--port=8500", "--rest_api_port=8501"):
        assert flag in container["args"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == deploy.FLEET_CONFIG_DIR)
    assert "subPath" not in mount  # a subPath mount never sees the ConfigMap's updates
    assert volumes[mount["name"]]["configMap"]["name"] == by_kind["ConfigMap"]["metadata"]["name"]
    assert volumes["serving"]["hostPath"]["path"] == fleet.models[0].config.serving_dir
    service = by_kind["Service"]["spec"]
    assert service["selector"] == pod["metadata"]["labels"]
    assert {p["name"]: p["port"] for p in service["ports"]} == {"grpc": 8500, "http": 8501}
    assert container["readinessProbe"]["httpGet"]["path"] in {f"/v1/models/{m.name}" for m in served}


def test_a_fleet_state_from_before_the_metric_trigger_gains_its_column(tmp_path):
    import sqlite3

    path = str(tmp_path / "fleet.sqlite")
    with sqlite3.connect(path) as db:  # the checks table as the first release wrote it
        db.execute("CREATE TABLE checks (name TEXT PRIMARY KEY, checked REAL NOT NULL, decision TEXT NOT NULL, "
                   "logs TEXT NOT NULL DEFAULT '')")
        db.execute("INSERT INTO checks VALUES ('acme-tips', 1.0, 'skipped', 'abc')")
    state = State(path)
    assert state.last_check("acme-tips")["labelled"] == ""
    state.record_check("acme-tips", "run: x", labelled="f@1")
    assert (state.last_check("acme-tips")["logs"], state.last_check("acme-tips")["labelled"]) == ("abc", "f@1")
