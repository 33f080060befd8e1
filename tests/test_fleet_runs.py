"""Two demo tenants on ONE MLMD store and ONE serving directory, through real `fleet run` cycles and Airflow.

One module fixture runs everything (CI budget): `fleet run --only acme-tips` trains acme; then Apache Airflow
(its own venv, `.venv-airflow`) loads the generated DAGs in a DagBag and `airflow dags test` runs globex's DAG,
whose task trains globex (with its edge export on) after acme has a blessed model in the same store; then a
bad span lands in acme's data root and a `fleet run` cycle retrains exactly acme, which the gate stops; one
`fleet status --json --html` reads the result. The tests only read what those runs left (`fleet k8s`, the
metric trigger's scoring of globex's served model: no pipeline run).
"""

import hashlib
import json
import os
import subprocess
import sys
import urllib.request

import pytest
import tensorflow as tf
import yaml

from contract.versions import list_versions
from fleet import demo
from fleet.config import load_fleet
from fleet.state import State

pytestmark = pytest.mark.slow


def _fleet_cli(*args):
    result = subprocess.run([sys.executable, "-m", "cli", "fleet", *args], capture_output=True, text=True,
                            timeout=1800)
    return result.returncode, result.stdout + result.stderr


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AIRFLOW = os.path.join(REPO, ".venv-airflow", "bin")
_DAGBAG = """
import json, sys
from airflow.models import DagBag
bag = DagBag(sys.argv[1], include_examples=False)
print(json.dumps({"errors": bag.import_errors,
                  "dags": {i: {"schedule": d.schedule_interval, "tasks": d.task_ids} for i, d in bag.dags.items()}}))
"""


def _airflow(root, *args):
    """Airflow's CLI (or its python) in its own venv, with an AIRFLOW_HOME and SQLite DB under `root`."""
    env = dict(os.environ, AIRFLOW_HOME=os.path.join(root, "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=os.path.join(root, "dags"))
    result = subprocess.run([os.path.join(AIRFLOW, args[0]), *args[1:]], capture_output=True, text=True,
                            env=env, timeout=1800)
    return result.returncode, result.stdout + result.stderr


def _bad_span(records):
    """A payment type the schema does not know: readable, labelled data that only the anomaly gate stops
    (a span without its label column would be named by the runner's preflight instead, exit 2)."""
    out = []
    for record in records:
        example = tf.train.Example.FromString(record)
        example.features.feature["payment_type"].bytes_list.value[:] = [b"Bitcoin"]
        out.append(example.SerializeToString())
    return out


def _versions(fleet):
    return {m.name: list_versions(m.config.model_serving_dir) for m in fleet.models}


def _tree(directory):
    """Every file under `directory` (relative path -> SHA-256): a version directory's whole content."""
    out = {}
    for dirpath, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _pushed(fleet, but):
    """The serving and edge version directories of every tenant model except `but`, file by file."""
    return {(m.name, kind): _tree(directory) for m in fleet.models if m.name != but
            for kind, directory in (("serving", m.config.model_serving_dir), ("edge", m.config.model_edge_dir))}


def _edge_for(path, model):
    """Turns the edge export on for one model of the demo fleet file (the small tier has it off); its gate's
    limit is wide because these tests are about isolation, not about a 60-step model's int8 accuracy."""
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    tenant, name = model.split("-")
    raw["tenants"][tenant]["models"][name]["settings"] = {"edge": {"enabled": True, "max_auc_drop": 1.0}}
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(raw, f, sort_keys=False)


@pytest.fixture(scope="module")
def cycles(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fleet"))
    path = demo.lay_out(root, ["acme", "globex"], spans=1, train=500, evaluation=200)
    _edge_for(path, "globex-tips")
    fleet = load_fleet(path)
    first = _fleet_cli("run", "--fleet", path, "--only", "acme-tips")
    dags = _fleet_cli("airflow", "--fleet", path, "--out", os.path.join(root, "dags"))
    assert dags[0] == 0, dags[1]
    bag = _airflow(root, "python", "-c", _DAGBAG, os.path.join(root, "dags"))
    assert bag[0] == 0, bag[1]
    migrate = _airflow(root, "airflow", "db", "migrate")
    assert migrate[0] == 0, migrate[1]
    airflow_run = _airflow(root, "airflow", "dags", "test", "fleet_globex-tips", "2026-12-01")
    after_first = _versions(fleet)
    others_before = _pushed(fleet, but="acme-tips")
    span = demo.tenant_span("acme", 2, 500, 200)
    demo.write_span(os.path.join(root, "data", "acme"), 2, {k: _bad_span(v) for k, v in span.items()})
    second = _fleet_cli("run", "--fleet", path)
    # One `fleet status` for the status tests: the JSON on stdout, the HTML page beside it.
    status = subprocess.run([sys.executable, "-m", "cli", "fleet", "status", "--fleet", path, "--json",
                             "--html", os.path.join(root, "fleet.html")], capture_output=True, text=True, timeout=600)
    return {"path": path, "fleet": fleet, "first": first, "second": second, "after_first": after_first,
            "dagbag": json.loads(bag[1].strip().splitlines()[-1]), "airflow_run": airflow_run,
            "after_second": _versions(fleet), "others_before": others_before,
            "others_after": _pushed(fleet, but="acme-tips"), "status": status,
            "html": os.path.join(root, "fleet.html")}


def test_airflow_loads_every_generated_dag_with_its_schedule(cycles):
    bag = cycles["dagbag"]
    assert bag["errors"] == {}
    assert sorted(bag["dags"]) == ["fleet_acme-tips", "fleet_globex-tips"]
    for model in cycles["fleet"].models:
        dag = bag["dags"][f"fleet_{model.name}"]
        assert dag["tasks"] == ["monitor", "train_if_due"] and dag["schedule"] == (model.schedule or "@hourly")


def test_first_cycle_and_airflow_train_and_serve_every_tenant(cycles):
    status, out = cycles["first"]
    assert status == 0, out
    assert "fleet run: 1 run(s), 0 skipped, 0 failed" in out
    # `airflow dags test` ran globex's DAG: its one task ran the fleet's run of globex, which succeeded.
    status, out = cycles["airflow_run"]
    assert status == 0 and "Marking task as SUCCESS. dag_id=fleet_globex-tips, task_id=train_if_due" in out, out[-3000:]
    assert "DagRun Finished: dag_id=fleet_globex-tips" in out and "state=success" in out, out[-3000:]
    state = State(cycles["fleet"].state_path)
    assert state.last_run("globex-tips")["status"] == "ok"
    assert all(len(v) == 1 for v in cycles["after_first"].values()), cycles["after_first"]


def _pushing_run_auc(fleet, name):
    """The candidate AUC of the one run of `name` that pushed a serving version, from MLMD."""
    from pipeline.metadata import open_metadata
    from reports.lineage import list_runs

    store = open_metadata(fleet.models[0].config.metadata_path)
    pushed = [r for r in list_runs(store, name) if r.pushed and not r.pushed.startswith("(")]
    assert len(pushed) == 1, pushed
    return pushed[0].auc


def test_status_shows_the_metric_of_the_served_version_not_of_the_latest_run(cycles):
    """acme's latest run stopped at the gate (no Evaluator ran): its row still shows the AUC of the version
    it serves, which is the Evaluator's figure for the model that version was pushed from."""
    fleet = cycles["fleet"]
    status = cycles["status"]
    assert status.returncode == 0, status.stderr
    rows = {r["name"]: r for r in json.loads(status.stdout)}  # stdout is the JSON alone: logs go elsewhere
    assert {n: r["status"] for n, r in rows.items()} == {"acme-tips": "stopped at gate", "globex-tips": "ok"}
    for name, row in rows.items():
        assert row["serving_version"] == cycles["after_first"][name][0]
        assert row["metric"] == "AUC"
        assert row["metric_value"] == pytest.approx(_pushing_run_auc(fleet, name))
        assert row["pushed_from"].endswith("/Format-Serving")


def test_status_html_is_the_fleet_table_of_the_report(cycles):
    from reports.browser import open_in_chromium

    out = cycles["html"]
    assert f"fleet report: {out}" in cycles["status"].stderr
    page = open(out, encoding="utf-8").read()
    rows = json.loads(cycles["status"].stdout)
    for row in rows:
        cells = page.split(f"<td>{row['name']}</td>", 1)[1].split("</tr>", 1)[0]
        assert f'{row["status"]}</span>' in cells and f'>{row["serving_version"]}</td>' in cells
        assert f"AUC {row['metric_value']:.3f}" in cells
        link = cells.split('<a href="', 1)[1].split('"', 1)[0]
        assert os.path.exists(os.path.join(os.path.dirname(out), link)), link  # the model's latest run report
    assert "http://" not in page and "https://" not in page
    result = open_in_chromium(out)
    assert result.console == [] and result.dom.count("<tr>") == 1 + len(rows)


def test_tenant_b_has_no_baseline_although_tenant_a_has_a_blessed_model(cycles):
    """The known shared-MLMD failure: the latest-blessed-model resolver must be scoped to the pipeline."""
    from pipeline.metadata import open_metadata
    from reports.summary import read_run

    fleet = cycles["fleet"]
    store = open_metadata(fleet.models[0].config.metadata_path)
    assert len({m.config.metadata_path for m in fleet.models}) == 1
    globex = read_run(store, "globex-tips")
    assert globex.blessed and globex.pushed
    assert globex.baseline_model == "" and globex.baseline_metrics == {}
    # acme's blessed model existed in this store before globex's Evaluator ran.
    blessings = [a for a in store.get_artifacts_by_type("ModelBlessing")
                 if a.custom_properties["blessed"].int_value == 1]
    acme_model = {a.id for a in store.get_artifacts_by_context(
        store.get_context_by_type_and_name("pipeline", "acme-tips").id)}
    first_blessing = min(blessings, key=lambda a: a.create_time_since_epoch)
    assert first_blessing.id in acme_model
    assert globex.candidate_model not in {"", None}


def test_a_bad_span_retrains_exactly_that_tenant_and_is_stopped_without_touching_others(cycles):
    status, out = cycles["second"]
    assert status == 1, out
    assert "globex-tips                  skipped  (no new data, schedule not due)" in out
    assert "acme-tips                    started  (new data (span 2))" in out
    assert "fleet run: 1 run(s), 1 skipped, 1 failed (acme-tips: stopped at gate)" in out
    assert cycles["after_second"] == cycles["after_first"]  # no tenant's serving versions changed
    # Every other tenant's serving AND edge versions, file by file, exactly as before acme's bad run.
    before = cycles["others_before"]
    assert before[("globex-tips", "serving")] and before[("globex-tips", "edge")], sorted(before)
    assert any(p.endswith("model_int8.tflite") for p in before[("globex-tips", "edge")])
    assert cycles["others_after"] == before
    state = State(cycles["fleet"].state_path)
    assert state.last_run("acme-tips")["exit_code"] == 3
    assert [r["status"] for r in state.runs("globex-tips")] == ["ok"]


def test_one_server_serves_every_tenant_model_from_the_shared_models_config(cycles):
    from contract.config import ServingConfig
    from serving import model_config
    from serving.process import ModelServer

    fleet = cycles["fleet"]
    models_config = fleet.models[0].config.models_config_path
    names = sorted(m.name for m in model_config.read(models_config).model_config_list.config)
    assert names == ["acme-tips", "globex-tips"]
    server = ModelServer(models_config, ServingConfig(port=0, rest_port=0, poll_interval_seconds=0.5))
    server.start()
    try:
        eval_files = os.path.join(fleet.models[0].config.input_base, "span-1", "eval", "*")
        example = tf.train.Example.FromString(next(iter(
            tf.data.TFRecordDataset(tf.io.gfile.glob(eval_files), compression_type="GZIP"))).numpy())
        del example.features.feature["tips"]
        import base64

        body = json.dumps({"instances": [{"examples": {"b64": base64.b64encode(
            example.SerializeToString()).decode()}}]}).encode()
        for name in names:
            request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}/v1/models/{name}:predict",
                                             data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                predictions = json.loads(response.read())["predictions"]
            assert len(predictions) == 1
    finally:
        server.stop()


def test_k8s_configmap_serves_every_tenant_model_the_fleet_pushed(cycles, tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    status, out = _fleet_cli("k8s", "--fleet", cycles["path"], "--out", str(tmp_path))
    assert status == 0 and "serves 2 model(s): acme-tips, globex-tips" in out and "note:" not in out, out
    config_map = next(d for d in yaml.safe_load_all(open(tmp_path / "kubernetes.yaml")) if d["kind"] == "ConfigMap")
    models = text_format.Parse(config_map["data"]["models.config"], model_server_config_pb2.ModelServerConfig())
    assert {m.name: m.base_path for m in models.model_config_list.config} == {
        m.name: m.config.model_serving_dir for m in cycles["fleet"].models}


def test_metric_trigger_scores_the_served_model_on_newly_labelled_data(cycles, tmp_path):
    """No pipeline run: globex's served version scored on its eval examples as they are (AUC above the bound:
    not due), then on the same examples with every label flipped (AUC = 1 - that: due, with the reason);
    once checked, the same files and version are not scored again."""
    import dataclasses

    from edge.export import labels_of
    from fleet import triggers
    from validation import files as input_files

    globex = next(m for m in cycles["fleet"].models if m.name == "globex-tips")
    spec = globex.config.features
    records = [r for p in input_files.list_files(os.path.join(globex.config.input_base, "span-1", "eval"), "*")
               for r in input_files.read_examples(p)]
    flipped = []
    for record, label in zip(records, labels_of(records, spec)):
        example = tf.train.Example.FromString(record)
        fare = example.features.feature[spec.label_relative_to].float_list.value[0]
        example.features.feature[spec.label_column].float_list.value[:] = [0.0 if label else fare + 1.0]
        flipped.append(example.SerializeToString())
    assert (labels_of(flipped, spec) == 1 - labels_of(records, spec)).all()
    demo.write_span(str(tmp_path / "good"), 1, {"eval": records})
    demo.write_span(str(tmp_path / "flipped"), 1, {"eval": flipped})
    version = cycles["after_first"]["globex-tips"][0]
    state = State(str(tmp_path / "fleet.sqlite"))

    def checked(where, bound=0.7):
        labelled = str(tmp_path / where / "span-1" / "eval" / "*")
        model = dataclasses.replace(globex, triggers=["metric"], metric={"bound": bound, "labelled": labelled})
        return model, triggers.evaluate(model, state)

    good_model, good = checked("good")
    assert good.reasons == [] and good.labelled.endswith(f"@{version}")
    auc = triggers.served_metric(good_model, triggers.labelled_files(good_model, good.data), version)
    assert auc > 0.7
    assert auc == pytest.approx(_pushing_run_auc(cycles["fleet"], "globex-tips"), abs=0.01)  # TFMA's, same data
    _, bad = checked("flipped")
    assert bad.reasons == [f"served AUC {1 - auc:.3f} < 0.7 on newly labelled data (1 file(s), version {version})"]
    state.record_check("globex-tips", "run: " + bad.reasons[0], labelled=bad.labelled)
    assert checked("flipped")[1].reasons == []  # unchanged files, same served version: not scored again
    # A bound tightened in the fleet file is a new question about the same files and version: scored again.
    state.record_check("globex-tips", "skipped", labelled=good.labelled)
    assert checked("good")[1].reasons == []
    bound = round(auc + 0.01, 3)
    assert checked("good", bound)[1].reasons == [
        f"served AUC {auc:.3f} < {bound:g} on newly labelled data (1 file(s), version {version})"]
