"""Lineage, run listing, the HTML run report (checked in headless Chromium) and the notebooks.

All of them read the shared small pipeline run (`pushed_run`); none changes it.
"""

import contextlib
import io
import json
import os

import pytest

from cli import reports as reports_cli
from reports import html as html_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(f for f in os.listdir(os.path.join(REPO, "notebooks")) if f.endswith(".ipynb"))


def _cli(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = reports_cli.main(list(argv))
    return status, out.getvalue()


def _output_id(summary, component, key):
    return summary.component(component).output_ids[key][0]


# --- lineage ------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_lineage_of_the_pushed_version_names_the_exact_artifacts_that_made_it(pushed_run):
    config, summary = pushed_run
    version = os.path.basename(summary.pushed_path)
    status, printed = _cli("lineage", "--version", version, "--json", "--set", f"output_dir={config.output_dir}")
    assert status == 0, printed
    lineage = json.loads(printed)
    ids = {stage: [a["id"] for a in artifacts] for stage, artifacts in lineage["stages"].items()}
    assert ids["input examples"] == [_output_id(summary, "ImportExampleGen", "examples")]
    assert ids["statistics"] == [_output_id(summary, "StatisticsGen", "statistics")]
    assert ids["schema"] == [_output_id(summary, "ImportSchemaGen", "schema")]
    assert ids["anomalies"] == sorted([_output_id(summary, "ExampleValidator", "anomalies"),
                                       _output_id(summary, "AnomalyGate", "report")])
    assert ids["transform graph"] == [_output_id(summary, "Transform", "transform_graph")]
    assert ids["hyper-parameters"] == [_output_id(summary, "Tuner", "best_hyperparameters")]
    assert ids["trained model"] == [_output_id(summary, "Trainer", "model")]
    assert ids["evaluation"] == [_output_id(summary, "Evaluator", "evaluation")]
    assert ids["blessing"] == [_output_id(summary, "Evaluator", "blessing")]
    # Where the model went: TF Serving, then the edge export of the same model.
    assert ids["push"] == [_output_id(summary, "Pusher", "pushed_model"), _output_id(summary, "EdgeExport", "edge_model")]
    serving, edge = lineage["stages"]["push"]
    assert serving["properties"]["pushed_destination"] == summary.pushed_path
    assert edge["properties"]["pushed_destination"].startswith(config.model_edge_dir)
    assert lineage["stages"]["input examples"][0]["uri"] == summary.component("ImportExampleGen").outputs["examples"][0]
    assert lineage["pipeline_run"] == summary.run_id


@pytest.mark.slow
def test_lineage_text_reads_as_a_chain_with_metrics_and_blessing(pushed_run):
    config, summary = pushed_run
    status, printed = _cli("lineage", "--set", f"output_dir={config.output_dir}")
    assert status == 0, printed
    order = ["input examples", "statistics", "schema", "anomalies", "transform graph", "hyper-parameters",
             "trained model", "evaluation", "blessing", "push"]
    positions = [printed.index(f"  {stage} ") for stage in order]
    assert positions == sorted(positions), printed
    assert f"candidate AUC {summary.candidate_metrics['auc']:.4f}" in printed
    assert "BLESSED" in printed and summary.pushed_path in printed


@pytest.mark.slow
def test_lineage_of_a_run_and_unknown_targets(pushed_run):
    config, summary = pushed_run
    where = ("--set", f"output_dir={config.output_dir}")
    status, printed = _cli("lineage", "--run", summary.run_id, "--json", *where)
    assert status == 0, printed
    pushes = [a["id"] for a in json.loads(printed)["stages"]["push"]]
    assert _output_id(summary, "Pusher", "pushed_model") in pushes
    assert _cli("lineage", "--version", "123", *where)[0] == 1
    assert _cli("lineage", "--run", "no-such-run", *where)[0] == 1


def test_lineage_without_a_store_says_how_to_get_one(tmp_path, capsys):
    assert reports_cli.main(["lineage", "--set", f"output_dir={tmp_path}"]) == 1
    assert "run the pipeline first" in capsys.readouterr().err


@pytest.mark.slow
def test_runs_lists_the_run_with_status_and_metrics(pushed_run):
    config, summary = pushed_run
    status, printed = _cli("runs", "--json", "--set", f"output_dir={config.output_dir}")
    assert status == 0, printed
    rows = {r["run_id"]: r for r in json.loads(printed)}
    row = rows[summary.run_id]
    assert row["status"] == "complete" and row["blessed"] is True
    assert row["auc"] == pytest.approx(summary.candidate_metrics["auc"])
    assert row["pushed"] == os.path.basename(summary.pushed_path)
    assert row["duration_s"] > 0


# --- HTML report --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(pushed_run):
    config, summary = pushed_run
    path = html_lib.report_path(config, summary.run_id)
    assert os.path.exists(path), "the runner writes the report at the end of every run"
    with open(path, encoding="utf-8") as f:
        return path, f.read()


@pytest.mark.slow
def test_report_has_metrics_anomalies_statistics_and_plots(report, pushed_run):
    _, summary = pushed_run
    _, page = report
    for section in ('id="components"', 'id="data"', 'id="anomalies"', 'id="gate"', 'id="evaluation"', 'id="edge"'):
        assert section in page
    assert f"{summary.candidate_metrics['auc']:.4f}" in page
    assert "ROC" in page and "Calibration" in page and page.count("<svg") > 10
    assert "trip_miles" in page and "payment_type" in page
    assert "model_int8.tflite" in page or "int8" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page


@pytest.mark.slow
def test_report_renders_in_headless_chromium_without_console_errors(report):
    from reports.browser import open_in_chromium

    path, _ = report
    result = open_in_chromium(path)
    assert result.console == []
    assert result.dom.count("<section") >= 4 and "Model evaluation" in result.dom


def test_the_browser_check_catches_a_page_error(tmp_path):
    from reports.browser import open_in_chromium

    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    result = open_in_chromium(str(page))
    assert any("undefinedFunction" in message for message in result.console), result.console


# --- notebooks ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_committed_without_outputs(name):
    import nbformat

    notebook = nbformat.read(os.path.join(REPO, "notebooks", name), as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name}: run `make strip-notebooks`"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom_on_a_real_run(name, pushed_run, monkeypatch):
    import nbclient
    import nbformat

    config, _ = pushed_run
    monkeypatch.setenv("PIPELINE_OUTPUT_DIR", config.output_dir)
    monkeypatch.setenv("REPO_ROOT", REPO)
    notebook = nbformat.read(os.path.join(REPO, "notebooks", name), as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


def test_histograms_skip_a_split_without_values():
    svg = html_lib.histogram_svg({"train": [("[0, 1)", 3.0), ("[1, 2)", 1.0)], "eval": []})
    assert svg.count("<rect") == 2
    assert html_lib.histogram_svg({"eval": []}) == ""
