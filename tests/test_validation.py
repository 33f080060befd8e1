"""Data validation on real taxi data: the `validate`/`skew`/`drift` commands, the report, the gate policy.

Each bad input of the issue gets one test through the `validate` command's code path (preflight + TFDV on
the bad data); the pipeline-level consequences (nothing trained or pushed) are in test_validation_pipeline.py.
"""

import gzip
import os

import pytest

from validation import checks
from cli.validation import main
from validation.report import GatePolicy
from tests.samples import read_examples, write_examples


@pytest.fixture(scope="module")
def good_examples(taxi_root):
    return read_examples(os.path.join(taxi_root, "Split-train", "*"), 200)


def _copy(examples):
    return [type(e).FromString(e.SerializeToString()) for e in examples]


def _validate(capsys, data_root, tmp_path, *extra):
    status = main(["validate", "--data-root", str(data_root), "--report-dir", str(tmp_path / "report"), *extra])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# Files that cannot be read at all: the preflight names the file (exit 2).

def test_truncated_gzip_shard_is_named(capsys, tmp_path, good_examples):
    path = write_examples(str(tmp_path / "data" / "part-0.gz"), good_examples)
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[:len(raw) // 2])
    status, _, err = _validate(capsys, tmp_path / "data", tmp_path)
    assert status == 2
    assert "part-0.gz: corrupt or truncated gzip shard" in err and "re-copy this file" in err


def test_file_that_is_not_tfrecord_is_named(capsys, tmp_path, good_examples):
    write_examples(str(tmp_path / "data" / "good.gz"), good_examples)
    with gzip.open(tmp_path / "data" / "trips.csv.gz", "wt") as f:
        f.write("trip_miles,fare,payment_type\n1.2,7.5,Cash\n3.4,12.0,Credit Card\n")
    status, _, err = _validate(capsys, tmp_path / "data", tmp_path)
    assert status == 2
    assert "trips.csv.gz: not a TFRecord file" in err and "Write tf.Example TFRecords" in err


def test_records_that_are_not_tf_examples_are_named(capsys, tmp_path):
    import tensorflow as tf

    os.makedirs(tmp_path / "data")
    with tf.io.TFRecordWriter(str(tmp_path / "data" / "events.tfrecord")) as writer:
        writer.write(b'{"trip_miles": 1.2, "fare": 7.5}')
    status, _, err = _validate(capsys, tmp_path / "data", tmp_path)
    assert status == 2
    assert "events.tfrecord: record 0 is a TFRecord but not a tf.Example" in err


def test_empty_input_directory_is_named(capsys, tmp_path):
    os.makedirs(tmp_path / "data")
    status, _, err = _validate(capsys, tmp_path / "data", tmp_path)
    assert status == 2
    assert f"{tmp_path / 'data'} holds no file" in err and "input directory is empty" in err


# Readable data that breaks the schema: the report names the feature (exit 1).

def _write_variant(tmp_path, examples, change):
    examples = _copy(examples)
    for example in examples:
        change(example.features.feature)
    write_examples(str(tmp_path / "data" / "part-0.gz"), examples)
    return tmp_path / "data"


def test_required_feature_missing(capsys, tmp_path, good_examples):
    data = _write_variant(tmp_path, good_examples, lambda f: f.pop("fare"))
    status, out, _ = _validate(capsys, data, tmp_path)
    assert status == 1
    assert "fare" in out and "SCHEMA_MISSING_COLUMN" in out and "what to do:" in out


def test_float_feature_arriving_as_string(capsys, tmp_path, good_examples):
    def fare_as_text(features):
        value = features["fare"].float_list.value[0]
        features["fare"].Clear()
        features["fare"].bytes_list.value.append(f"${value:.2f}".encode())

    data = _write_variant(tmp_path, good_examples, fare_as_text)
    status, out, _ = _validate(capsys, data, tmp_path)
    assert status == 1
    line = next(line for line in out.splitlines() if " fare " in line)
    assert "FLOAT_TYPE_STRING_NOT_FLOAT" in line or "UNEXPECTED_DATA_TYPE" in line, out
    assert "'$" in out  # a few offending values are shown


def test_out_of_domain_categorical_value(capsys, tmp_path, good_examples):
    def bitcoin(features):
        features["payment_type"].bytes_list.value[:] = [b"Bitcoin"]

    examples = _copy(good_examples)
    for example in examples[:20]:
        bitcoin(example.features.feature)
    write_examples(str(tmp_path / "data" / "part-0.gz"), examples)
    status, out, _ = _validate(capsys, tmp_path / "data", tmp_path)
    assert status == 1
    assert "payment_type" in out and "ENUM_TYPE_UNEXPECTED_STRING_VALUES" in out and "'Bitcoin'" in out
    html = (tmp_path / "report" / "report.html").read_text()
    assert "payment_type" in html and "Bitcoin" in html and "FAILED" in html


def test_label_missing_in_training_data_but_not_needed_at_serving(capsys, tmp_path, good_examples):
    data = _write_variant(tmp_path, good_examples, lambda f: f.pop("tips"))
    status, out, _ = _validate(capsys, data, tmp_path, "--environment", "TRAINING")
    assert status == 1
    assert "tips" in out and "SCHEMA_MISSING_COLUMN" in out
    status, out, _ = _validate(capsys, data, tmp_path, "--environment", "SERVING")
    assert status == 0, out


def test_span_whose_feature_is_entirely_empty(capsys, tmp_path, taxi_root):
    from validation.spans import make_spans, span_dir

    rows = make_spans(taxi_root, str(tmp_path / "spans"), period="year")
    assert [r[1] for r in rows] == ["2013", "2014", "2015", "2016"]
    last = span_dir(str(tmp_path / "spans"), rows[-1][0])
    examples = read_examples(os.path.join(last, "train", "*"))
    for example in examples:
        example.features.feature["trip_miles"].float_list.value[:] = []
    write_examples(os.path.join(last, "train", "data.tfrecord.gz"), examples)
    status, out, _ = _validate(capsys, os.path.join(last, "train"), tmp_path)
    assert status == 1
    assert "trip_miles" in out and "FEATURE_TYPE_LOW_NUMBER_VALUES" in out
    assert f"0 values in {rows[-1][2]} examples" in out


# The policy: severity and allow-list.

def test_bundled_data_passes_with_its_one_outlier_tolerated(capsys, tmp_path, taxi_root):
    status, out, _ = _validate(capsys, os.path.join(taxi_root, "Split-eval"), tmp_path)
    assert status == 0, out
    assert "trip_miles" in out and "FLOAT_TYPE_BIG_FLOAT" in out and "tolerated" in out and "max 1710" in out
    status, out, _ = main(["--set", "validation.allow_anomalies=[]", "validate", "--data-root",
                           os.path.join(taxi_root, "Split-eval"), "--report-dir", str(tmp_path / "r2")]), None, None
    assert status == 1


def test_policy_allow_list_and_severity():
    policy = GatePolicy("ERROR", ("trip_miles:FLOAT_TYPE_BIG_FLOAT", "ENUM_TYPE_UNEXPECTED_STRING_VALUES"))
    assert policy.allows("trip_miles", "FLOAT_TYPE_BIG_FLOAT")
    assert not policy.allows("fare", "FLOAT_TYPE_BIG_FLOAT")
    assert policy.allows("company", "ENUM_TYPE_UNEXPECTED_STRING_VALUES")
    assert policy.severity_fails("ERROR") and not policy.severity_fails("WARNING")
    assert GatePolicy("WARNING").severity_fails("WARNING")
    with pytest.raises(ValueError, match="FLOAT_TOO_BIG.*not a TFDV anomaly type"):
        GatePolicy("ERROR", ("fare:FLOAT_TOO_BIG",))


def test_unknown_anomaly_type_in_config_is_a_config_error():
    from contract.config import load_config
    from contract.errors import ConfigError

    with pytest.raises(ConfigError, match="BAD_TYPE"):
        load_config(None, ["validation.allow_anomalies=[BAD_TYPE]"])


# Skew and drift on the real bundled data, thresholds from the schema.

def test_skew_between_training_data_and_the_unlabelled_split(capsys, tmp_path):
    status = main(["skew", "--report-dir", str(tmp_path / "skew")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "skew (" in out and "unlabelled" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if "JENSEN_SHANNON" in line or "L_INFTY" in line}
    assert set(rows) >= {"fare", "trip_miles", "company", "payment_type"}
    assert "tips" not in rows  # the label is not in serving traffic
    fare = rows["fare"]
    assert float(fare[2]) < float(fare[3]) == 0.5


def test_skew_fails_when_serving_traffic_changes(capsys, tmp_path, taxi_root):
    serving = read_examples(os.path.join(taxi_root, "unlabelled", "*"))
    for example in serving:  # a client that sends fares in cents
        example.features.feature["fare"].float_list.value[0] *= 100
    write_examples(str(tmp_path / "serving" / "requests.gz"), serving)
    status = main(["skew", "--serving", str(tmp_path / "serving"), "--report-dir", str(tmp_path / "skew")])
    out = capsys.readouterr().out
    assert status == 1
    assert "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH" in out and "OVER" in out
    assert next(line for line in out.splitlines() if "OVER" in line).split()[0] == "fare"


def test_drift_between_two_real_spans(capsys, tmp_path, taxi_root):
    from validation.spans import make_spans, span_dir

    root = str(tmp_path / "spans")
    rows = make_spans(taxi_root, root, period="quarter")
    previous, current = span_dir(root, rows[-2][0]), span_dir(root, rows[-1][0])
    status = main(["drift", "--previous", previous, "--current", current, "--report-dir", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "drift (" in out and "tips" in out and "fare" in out

    for split in ("train", "eval"):
        examples = read_examples(os.path.join(current, split, "*"))
        for example in examples:
            example.features.feature["tips"].float_list.value[0] = 0.0  # upstream stopped recording tips
        write_examples(os.path.join(current, split, "data.tfrecord.gz"), examples)
    status = main(["drift", "--previous", previous, "--current", current, "--report-dir", str(tmp_path / "d2")])
    out = capsys.readouterr().out
    assert status == 1, out
    assert any(line.split()[0] == "tips" and "OVER" in line for line in out.splitlines()), out


def test_report_shows_distances_and_thresholds_in_html(tmp_path, taxi_root):
    statistics = checks.statistics_of(sorted(
        os.path.join(taxi_root, "Split-eval", f) for f in os.listdir(os.path.join(taxi_root, "Split-eval"))))
    serving = checks.statistics_of([os.path.join(taxi_root, "unlabelled", f)
                                    for f in sorted(os.listdir(os.path.join(taxi_root, "unlabelled")))])
    schema = checks.load_schema(os.path.join(os.path.dirname(os.path.dirname(__file__)), "schemas", "taxi",
                                             "schema.pbtxt"))
    findings, distances = checks.compare(statistics, serving, schema, "skew", GatePolicy())
    from validation.report import Report

    report = Report("skew", findings, distances, comparisons={"skew": "eval vs unlabelled"})
    html = open(report.write(str(tmp_path))).read()
    assert "<h2>Skew: eval vs unlabelled</h2>" in html
    assert all(f"<td>{d.feature}</td>" in html and f"{d.threshold:.4f}" in html for d in distances)


def test_previous_span_is_found_from_a_span_pattern(tmp_path, taxi_root):
    from components.anomaly_gate import previous_span_files
    from validation.spans import make_spans

    rows = make_spans(taxi_root, str(tmp_path), period="year")
    pattern = str(tmp_path / "span-{SPAN}" / "train" / "*")
    assert previous_span_files(pattern, 4) == (3, [str(tmp_path / "span-3" / "train" / "data.tfrecord.gz")])
    assert previous_span_files(pattern, 1) == (None, [])
    assert (tmp_path / "spans.tsv").read_text().splitlines()[1] == f"1\t2013\t{rows[0][2]}\t{rows[0][3]}"


def test_serving_data_defaults_to_request_logs_then_the_unlabelled_split(tmp_path, taxi_root, good_examples):
    from contract.config import load_config

    config = load_config(None, [f"output_dir={tmp_path}"])
    assert checks.default_serving_data(config) == os.path.join(taxi_root, "unlabelled")
    write_examples(os.path.join(config.model_request_log_dir, "2026-11-23", "requests-0.gz"), good_examples[:5])
    assert checks.default_serving_data(config) == str(tmp_path / "request_logs" / "taxi")
    named = load_config(None, [f"output_dir={tmp_path}", "validation.serving_data=/data/requests/*.gz"])
    assert checks.default_serving_data(named) == "/data/requests/*.gz"
    remote = load_config(None, [f"output_dir={tmp_path / 'other'}", "data.input_base=gs://bucket/taxi"])
    assert checks.default_serving_data(remote) == ""


def test_large_files_are_checked_by_their_head(tmp_path, good_examples):
    from validation import files

    path = write_examples(str(tmp_path / "big.tfrecord"), good_examples, compress=False)
    assert len(files.read_examples(path, head_bytes=2000)) < len(good_examples)
    files.check_files([path], full_check_bytes=100)  # head only: passes
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 10)
    with pytest.raises(files.BadInputError, match="big.tfrecord: not a TFRecord file"):
        files.check_files([path])
    assert files.read_examples(path, head_bytes=2000)  # a cut beyond the head is left to the reader
