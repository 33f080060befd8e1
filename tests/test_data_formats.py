"""The bundled taxi data as a data lake in each format, partitioned by date, set up by `init` and trained on the
window of its three latest partitions: one pipeline run per format (TFRecord, Parquet, CSV).

The lakes (tests/lakes.py) hold the same 600 train / 300 eval rows of the bundled trips in the same order,
cut into four date partitions with a train/ and an eval/ directory each; `init --window 3` writes each
config. What is compared, and why it is meaningful:
- per span and split, the rows each format's ExampleGen wrote are the same rows, value for value (floats to
  the bit; a CSV empty cell and a Parquet null are both "no value"): same row counts, same split, no
  conversion step;
- the window: the first run backfills the two older partitions of the three latest and Transform reads
  exactly their rows and the latest's, never the oldest partition's;
- AUC within 0.003 of the TFRecord run. The splits are equal but ExampleGen writes each split through a
  Beam Reshuffle (tfx WriteSplit), so no two runs, of one format or of two, train in the same order: that
  is the noise the tolerance leaves room for, with `training.seed` fixing everything else.
"""

import contextlib
import io
import os
from collections import Counter

import pytest
import tensorflow as tf

from contract.config import load_config
from formats.spans import span_files
from pipeline.metadata import open_metadata
from reports.summary import read_run
from runners import local
from cli import schema as schema_cli
from tests.lakes import LABEL, lake_files, partition_dates, partition_of, taxi_rows, write_lake
from tests.samples import read_examples

pytestmark = pytest.mark.slow

FORMATS = ("tfrecord", "parquet", "csv")
NODES = {"tfrecord": "ImportExampleGen", "parquet": "ParquetExampleGen", "csv": "CsvExampleGen"}
FAST = ["training.seed=1", "training.train_steps=60", "training.eval_steps=10", "training.batch_size=64",
        "tuner.enabled=false", "edge.enabled=false", "evaluator.min_auc=0.5", "evaluator.min_binary_accuracy=0.5",
        # Fewer analyzers and slices than init wrote: the comparison needs only the same settings in every run.
        "features.numeric_buckets=0", "evaluator.slice_features=[]"]


@pytest.fixture(scope="module")
def lakes(tmp_path_factory, taxi_root):
    root = tmp_path_factory.mktemp("lakes")
    splits = {"train": taxi_rows(read_examples(os.path.join(taxi_root, "Split-train", "*"), 600)),
              "eval": taxi_rows(read_examples(os.path.join(taxi_root, "Split-eval", "*"), 300))}
    dates = partition_dates(splits["train"] + splits["eval"], 4)
    runs = {}
    for data_format in FORMATS:
        lake = write_lake(splits, str(root / f"lake-{data_format}"), data_format, dates)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert schema_cli.main(["init", "--data-root", lake, "--label", LABEL, "--window", "3",
                                    "--out", str(root / f"model-{data_format}")]) == 0
        config = load_config(str(root / f"model-{data_format}" / "config.yaml"), FAST)
        out = io.StringIO()
        assert local.run(config, out=out) == 0, out.getvalue()
        runs[data_format] = {"config": config, "init": printed.getvalue(), "printed": out.getvalue(),
                             "summary": read_run(open_metadata(config.metadata_path), config.pipeline_name)}
    return {"splits": splits, "dates": dates, "runs": runs}


def test_init_sets_each_lake_up_alone_with_its_format_and_date_spans(lakes):
    runs = lakes["runs"]
    for data_format, run in runs.items():
        config, printed = run["config"], run["init"]
        assert config.data.format == data_format and f"format: {data_format} (" in printed
        assert config.data.train_pattern == "date={YYYY}-{MM}-{DD}/train/*"
        assert config.data.eval_pattern == "date={YYYY}-{MM}-{DD}/eval/*" and config.data.span_window == 3
        assert (f"4 date partitions ({lakes['dates'][0]} to {lakes['dates'][-1]}), each date a span, already split "
                "into train/ and eval/") in printed
        assert "window: the latest 3 of 4 date partitions" in printed
    roles = {f: {r: getattr(run["config"].features, r) for r in ("numeric", "categorical", "task", "classes")}
             for f, run in runs.items()}
    assert roles["parquet"] == roles["tfrecord"] == roles["csv"]


def _window(run):
    """The Examples artifacts Transform read: (span, uri) per span of the window."""
    store = open_metadata(run["config"].metadata_path)
    artifacts = store.get_artifacts_by_id(run["summary"].component("Transform").input_ids["examples"])
    return sorted((a.custom_properties["span"].int_value, a.uri) for a in artifacts)


def _rows(pattern):
    """The rows of gzip tf.Example files as comparable tuples: (feature, values) for every feature with values."""
    rows = Counter()
    for example in read_examples(pattern):
        row = []
        for name, feature in sorted(example.features.feature.items()):
            kind = feature.WhichOneof("kind")
            values = tuple(getattr(feature, kind).value) if kind else ()
            if values:
                row.append((name, values))
        rows[tuple(row)] += 1
    return rows


def test_every_format_ingests_the_same_rows_of_each_span_and_split(lakes):
    windows = {f: _window(run) for f, run in lakes["runs"].items()}
    assert [s for s, _ in windows["parquet"]] == [s for s, _ in windows["csv"]] == [s for s, _ in windows["tfrecord"]]
    for (_, tfrecord), (_, parquet), (_, csv) in zip(windows["tfrecord"], windows["parquet"], windows["csv"]):
        for split in ("train", "eval"):
            expected = _rows(os.path.join(tfrecord, f"Split-{split}", "*"))
            assert sum(expected.values()) > 0
            assert _rows(os.path.join(parquet, f"Split-{split}", "*")) == expected, (parquet, split)
            assert _rows(os.path.join(csv, f"Split-{split}", "*")) == expected, (csv, split)


def test_the_window_trains_on_exactly_the_rows_of_the_three_latest_partitions(lakes):
    dates, splits = lakes["dates"], lakes["splits"]
    latest = dates[1:]
    for data_format, run in lakes["runs"].items():
        config = run["config"]
        on_disk = span_files(config.input_base, config.data.train_pattern)
        assert len(on_disk) == 4 and lake_files(config.input_base, "train", dates) == sorted(
            f for files in on_disk.values() for f in files)
        window = _window(run)
        assert [s for s, _ in window] == sorted(on_disk)[1:]  # the three latest dates, not the oldest
        assert f"Window of 3 spans: ingesting {latest[0]}, {latest[1]} first" in run["printed"]
        for split in ("train", "eval"):
            ingested = sum(sum(_rows(os.path.join(uri, f"Split-{split}", "*")).values()) for _, uri in window)
            assert ingested == sum(partition_of(r, dates) in latest for r in splits[split]), (data_format, split)
        transformed = run["summary"].component("Transform").outputs["transformed_examples"]
        assert len(transformed) == 3
        trained = sum(1 for uri in transformed for _ in tf.data.TFRecordDataset(
            tf.io.gfile.glob(os.path.join(uri, "Split-train", "*")), "GZIP"))
        assert trained == sum(partition_of(r, dates) in latest for r in splits["train"])


def test_parquet_and_csv_train_blessed_pushed_models_within_0_003_auc_of_tfrecord(lakes):
    summaries = {f: run["summary"] for f, run in lakes["runs"].items()}
    for data_format, summary in summaries.items():
        assert summary.blessed is True and summary.pushed, lakes["runs"][data_format]["printed"]
        assert summary.component(NODES[data_format]) is not None
    reference = summaries["tfrecord"].candidate_metrics["auc"]
    for data_format in ("parquet", "csv"):
        assert abs(summaries[data_format].candidate_metrics["auc"] - reference) <= 0.003, (
            data_format, summaries[data_format].candidate_metrics["auc"], reference)
    counts = {f: s.candidate_metrics["example_count"] for f, s in summaries.items()}
    assert counts["parquet"] == counts["csv"] == counts["tfrecord"]


@pytest.mark.parametrize("data_format", ["parquet", "csv"])
def test_drift_and_skew_read_the_lake_where_it_lives(lakes, data_format, tmp_path, capsys):
    """`tfx-edge validation drift|skew` on Parquet and CSV partitions, with thresholds a curator set in the schema."""
    import tensorflow_data_validation as tfdv

    from cli import validation as validation_cli

    config = lakes["runs"][data_format]["config"]
    schema = tfdv.load_schema_text(config.schema_file)
    tfdv.get_feature(schema, "payment_type").drift_comparator.infinity_norm.threshold = 0.01
    tfdv.get_feature(schema, "fare").skew_comparator.jensen_shannon_divergence.threshold = 0.99
    schema_file = str(tmp_path / "schema.pbtxt")
    tfdv.write_schema_text(schema, schema_file)
    common = ["--config", os.path.join(os.path.dirname(config.schema_file), "config.yaml"),
              "--set", f"output_dir={tmp_path}", "--set", f"schema_file={schema_file}"]
    older, newer = (os.path.join(config.input_base, f"date={d}", "train") for d in lakes["dates"][-2:])
    assert validation_cli.main(common + ["drift", "--previous", older, "--current", newer]) == 1
    printed = capsys.readouterr().out
    assert f"drift of {newer} vs {older}" in printed and "payment_type             L_INFTY" in printed
    # Skew of the latest span's train split (the default) against another partition's eval rows.
    serving = os.path.join(config.input_base, f"date={lakes['dates'][0]}", "eval")
    assert validation_cli.main(common + ["skew", "--serving", serving]) == 0
    printed = capsys.readouterr().out
    latest = os.path.join(config.input_base, f"date={lakes['dates'][-1]}", "train", "*")
    assert f"skew of {latest} vs {serving}" in printed
    assert "fare                     JENSEN_SHANNON_DIVERGENCE" in printed
