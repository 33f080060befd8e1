"""The anomaly gate inside real pipeline runs: clean data passes, bad data stops the run and loses nothing.

The "previous version" is a copy of `pushed_run`'s output directory (serving dir, MLMD, pipeline root), so every
test here starts from a pipeline that already serves a model, without training one of its own.
"""

import gzip
import io
import json
import os
import shutil

import pytest
import tensorflow as tf

from contract.versions import list_versions
from runners import local
from pipeline.metadata import open_metadata
from reports.summary import read_run
from tests.samples import read_examples, small_config, write_examples

pytestmark = pytest.mark.slow


@pytest.fixture
def served(pushed_run, tmp_path):
    """A writable copy of a pipeline that serves one model; returns its output dir and serving versions."""
    config, _ = pushed_run
    out = tmp_path / "out"
    shutil.copytree(config.output_dir, out)
    return str(out), list_versions(os.path.join(out, "serving", config.model_name))


def _bad_copy(small_sample, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_sample, data)
    return data


def _run(output_dir, data):
    config = small_config(output_dir, str(data))
    out = io.StringIO()
    return config, local.run(config, out=out), out.getvalue()


def _assert_still_serving(config, versions):
    assert list_versions(config.model_serving_dir) == versions
    assert not [n for n in os.listdir(config.model_serving_dir) if n.startswith(".incomplete")]


def test_clean_run_passed_the_gate_with_skew_measured(pushed_run):
    from reports.summary import format_summary

    config, summary = pushed_run
    gate = summary.component("AnomalyGate")
    assert gate is not None and gate.state == "complete"
    with open(os.path.join(gate.outputs["report"][0], "report.json")) as f:
        report = json.load(f)
    skew = {d["feature"]: d for d in report["distances"] if d["kind"] == "skew"}
    assert {"fare", "trip_miles", "company", "payment_type"} <= set(skew)
    assert all(d["value"] <= d["threshold"] for d in skew.values())
    assert "unlabelled" in report["comparisons"]["skew"]
    report_html = os.path.join(gate.outputs["report"][0], "report.html")
    assert f"data validation passed: {report_html}" in format_summary(summary, config, {})


def _truncate_gzip(data):
    path = data / "Split-train" / "data.tfrecord.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 3])
    return path


def _add_csv(data):
    path = data / "Split-eval" / "export.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("trip_miles,fare\n1.0,5.0\n")
    return path


def _add_json_records(data):
    path = data / "Split-eval" / "events.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(b'{"trip_miles": 1.0}')
    return path


@pytest.mark.parametrize("corrupt, message", [
    (_truncate_gzip, "corrupt or truncated gzip shard"),
    (_add_csv, "not a TFRecord file"),
    (_add_json_records, "record 0 is a TFRecord but not a tf.Example"),
])
def test_unreadable_file_is_named_before_any_component_runs(served, small_sample, tmp_path, corrupt, message):
    output_dir, versions = served
    data = _bad_copy(small_sample, tmp_path)
    bad_file = corrupt(data)
    config, status, printed = _run(output_dir, data)
    assert status == 2, printed
    assert f"{bad_file}: {message}" in printed
    _assert_still_serving(config, versions)


def test_empty_input_directory_is_named(served, tmp_path):
    output_dir, versions = served
    for split in ("Split-train", "Split-eval"):
        os.makedirs(tmp_path / "data" / split)
    config, status, printed = _run(output_dir, tmp_path / "data")
    assert status == 2 and "no file matches 'Split-train/*'" in printed
    _assert_still_serving(config, versions)


def test_corrupted_span_stops_at_the_gate_and_the_served_model_stays(served, small_sample, tmp_path):
    """Span-partitioned input: ImportExampleGen takes the latest span; it has a new category and its tips drifted."""
    from validation.spans import make_spans, span_dir

    output_dir, versions = served
    spans = str(tmp_path / "spans")
    latest = make_spans(small_sample, spans, period="year")[-1][0]
    for split, corrupt in (("eval", "payment_type"), ("train", "tips")):
        examples = read_examples(os.path.join(span_dir(spans, latest), split, "*"))
        for example in examples:
            if corrupt == "payment_type":  # a new category upstream
                example.features.feature["payment_type"].bytes_list.value[:] = [b"Bitcoin"]
            else:  # tips recorded in another unit upstream: the label distribution drifts (zeroing them
                # instead leaves too few tipped rows to train on, which the preflight refuses first)
                tips = example.features.feature["tips"].float_list.value
                tips[:] = [value * 3.0 for value in tips]
        write_examples(os.path.join(span_dir(spans, latest), split, "data.tfrecord.gz"), examples)

    config = small_config(output_dir, spans, "data.train_pattern=span-{SPAN}/train/*",
                          "data.eval_pattern=span-{SPAN}/eval/*")
    out = io.StringIO()
    status = local.run(config, out=out)
    printed = out.getvalue()
    assert status == 3, printed
    assert "STOPPED by AnomalyGate" in printed and "nothing was trained or pushed" in printed
    assert f"Anomaly gate (data span {latest})" in printed
    assert "payment_type" in printed and "ENUM_TYPE_UNEXPECTED_STRING_VALUES" in printed and "'Bitcoin'" in printed
    tips = next(line for line in printed.splitlines() if line.split()[:1] == ["tips"] and "JENSEN" in line)
    assert "OVER" in tips and f"span {latest} vs previous span {latest - 1}" in printed
    report_path = printed.split("Report: ")[-1].split()[0]
    assert report_path.startswith(os.path.join(config.pipeline_root, "validation_reports"))
    assert "Bitcoin" in open(report_path).read()

    run = read_run(open_metadata(config.metadata_path), config.pipeline_name)
    ran = {c.name: c.state for c in run.components}
    assert ran.get("AnomalyGate") == "failed"
    assert not {"Transform", "Tuner", "Trainer", "Evaluator", "Pusher"} & set(ran), ran
    _assert_still_serving(config, versions)
    loaded = tf.saved_model.load(os.path.join(config.model_serving_dir, str(versions[-1])))
    assert "serving_default" in loaded.signatures
