"""Batch scoring (`tfx-edge serving score`): real Beam jobs on `pushed_run`'s model, real gRPC server.

Jobs run on the DirectRunner in_memory; every input is the bundled taxi data or a
small real sample of it, and bad inputs are real broken files.
"""

import csv
import glob
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions, WorkerOptions

from contract.config import ServingConfig, load_config
from contract.versions import list_versions
from cli import serving as serving_cli
from batch import inputs as batch_inputs
from batch import job as batch
from batch import models as batch_models
from batch import outputs as batch_outputs
from serving import model_config
from serving.client import ServingClient
from serving.process import ModelServer
from tests.samples import read_examples, write_examples

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def unlabelled(taxi_root):
    return os.path.join(taxi_root, "unlabelled")


def _args(config, *extra):
    return [f"--set=output_dir={config.output_dir}", f"--set=serving_dir={config.serving_dir}",
            f"--set=metadata_path={config.metadata_path}", *extra]


def _score(config, *args):
    return serving_cli.main(["score", *_args(config), *args])


def _no_staging_left(out):
    parent = os.path.dirname(out)
    return not [n for n in os.listdir(parent) if n.startswith(f".{os.path.basename(out)}.incomplete")]


def test_score_unlabelled_matches_the_server(pushed_run, unlabelled, tmp_path, capsys):
    """Done-when: Parquet that pandas reads, one row per input, positions kept, the server's answers."""
    config, _ = pushed_run
    out = str(tmp_path / "scored")
    assert _score(config, "--input", unlabelled, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "PASSED" in printed and "wrote 2,459 rows" in printed
    table = pd.read_parquet(out)
    files = sorted(glob.glob(os.path.join(unlabelled, "*")))
    examples = {(f, i): e for f in files for i, e in enumerate(read_examples(f))}
    assert len(table) == len(examples) == 2459
    assert set(zip(table["source"], table["record"])) == set(examples)
    assert list(table.columns) == ["source", "record", "probability", "class"]
    result = json.loads(open(os.path.join(out, batch.RESULT_FILE)).read())
    assert result["models"][0]["version"] == list_versions(config.model_serving_dir)[-1]
    assert not result["flagged"] and os.path.exists(result["report"])
    assert _no_staging_left(out)

    serving_dir = str(tmp_path / "serving")
    shutil.copytree(config.serving_dir, serving_dir)
    models_config = os.path.join(serving_dir, "models.config")
    model_config.ensure(models_config, config.model_name, os.path.join(serving_dir, config.model_name))
    server = ModelServer(models_config, ServingConfig(port=0, rest_port=0, poll_interval_seconds=60))
    port = server.start()
    try:
        keys = list(examples)
        with ServingClient(f"127.0.0.1:{port}", config.model_name, batch_size=64) as client:
            served = client.predict(examples[k] for k in keys)
    finally:
        server.stop()
    by_key = table.set_index(["source", "record"])
    scored = by_key.loc[keys, "probability"].to_numpy()
    np.testing.assert_allclose(scored, served, atol=1e-5)
    assert (by_key.loc[keys, "class"].to_numpy() == (served > 0.5)).all()

    # The same directory again: refused without --overwrite, replaced with it.
    assert _score(config, "--input", unlabelled, "--out", out) == 2
    assert "already holds results" in capsys.readouterr().err
    assert len(pd.read_parquet(out)) == 2459


def test_csv_ids_and_formats(pushed_run, unlabelled, tmp_path):
    """CSV in with an id column the schema does not know; CSV and TFRecord out, sharded; ids pass through."""
    config, _ = pushed_run
    examples = read_examples(os.path.join(unlabelled, "*"), 40)
    names = sorted(config.features.raw_input_features)
    path = tmp_path / "batch.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trip_id"] + names)
        for number, example in enumerate(examples):
            row = []
            for name in names:
                feature = example.features.feature[name]
                kind = feature.WhichOneof("kind")
                values = list(getattr(feature, kind).value) if kind else []
                row.append("" if not values else values[0].decode() if kind == "bytes_list" else values[0])
            writer.writerow([f"trip-{number:03d}"] + row)
    out = str(tmp_path / "csv_out")
    assert _score(config, "--input", str(path), "--out", out, "--id", "trip_id", "--format", "csv",
                  "--shards", "2") == 0
    shards = sorted(glob.glob(os.path.join(out, "predictions-*.csv")))
    assert len(shards) == 2
    table = pd.concat(pd.read_csv(s) for s in shards)
    assert list(table.columns) == ["trip_id", "probability", "class"]
    assert sorted(table["trip_id"]) == [f"trip-{n:03d}" for n in range(40)]

    # The same examples as TFRecords score the same (CSV values are typed by the schema like the client's).
    records = str(tmp_path / "records" / "part.tfrecord.gz")
    write_examples(records, examples)
    tf_out = str(tmp_path / "tf_out")
    assert _score(config, "--input", records, "--out", tf_out, "--format", "tfrecord") == 0
    scored = read_examples(os.path.join(tf_out, "predictions-*"))
    by_record = {e.features.feature["record"].int64_list.value[0]:
                 e.features.feature["probability"].float_list.value[0] for e in scored}
    from_csv = table.set_index("trip_id")["probability"]
    np.testing.assert_allclose([by_record[n] for n in range(40)],
                               [from_csv[f"trip-{n:03d}"] for n in range(40)], atol=1e-5)


def test_two_models_in_one_pass(pushed_run, unlabelled, tmp_path):
    """`--model stable --model canary` writes both columns; with the int8 edge model, its parity with the float."""
    config, _ = pushed_run
    serving_dir = str(tmp_path / "serving")
    shutil.copytree(config.serving_dir, serving_dir)
    base = os.path.join(serving_dir, config.model_name)
    first = list_versions(base)[-1]
    shutil.copytree(os.path.join(base, str(first)), os.path.join(base, str(first + 1)))
    models_config = os.path.join(serving_dir, "models.config")
    model_config.ensure(models_config, config.model_name, base)
    model_config.rollout(models_config, config.model_name, first, "stable")
    model_config.rollout(models_config, config.model_name, first + 1, "canary")
    edge_version = os.path.join(config.model_edge_dir, str(list_versions(config.model_edge_dir)[-1]))
    out = str(tmp_path / "ab")
    assert serving_cli.main(["score", f"--set=output_dir={config.output_dir}", f"--set=serving_dir={serving_dir}",
                     "--input", unlabelled, "--out", out, "--model", "stable", "--model", "canary",
                     "--model", edge_version]) == 0
    table = pd.read_parquet(out)
    assert list(table.columns) == ["source", "record", "stable_probability", "stable_class",
                                   "canary_probability", "canary_class", "edge_probability", "edge_class"]
    assert len(table) == 2459
    result = json.loads(open(os.path.join(out, batch.RESULT_FILE)).read())
    assert [(m["name"], m["version"]) for m in result["models"]][:2] == [("stable", first), ("canary", first + 1)]
    np.testing.assert_allclose(table["stable_probability"], table["canary_probability"], atol=1e-6)
    # int8 vs float: close, most decisions the same, but not identical (a real second model).
    difference = np.abs(table["edge_probability"] - table["stable_probability"])
    assert difference.max() > 0 and difference.mean() < 0.05
    assert (table["edge_class"] == table["stable_class"]).mean() > 0.95


def test_strict_stops_a_bad_batch(pushed_run, small_sample, tmp_path, capsys):
    """Labelled data is not serving data (tips is not in the SERVING environment): --strict refuses it."""
    config, _ = pushed_run
    out, report_dir = str(tmp_path / "never"), str(tmp_path / "report")
    status = _score(config, "--input", os.path.join(small_sample, "Split-eval"), "--out", out, "--strict",
                    "--report-dir", report_dir)
    printed = capsys.readouterr().out
    assert status == batch.EXIT_REFUSED
    assert not os.path.exists(out) and _no_staging_left(out)
    assert os.path.join(report_dir, "report.html") in printed
    report = json.loads(open(os.path.join(report_dir, "report.json")).read())
    assert any(f["feature"] == "tips" and f["anomaly"] == "SCHEMA_NEW_COLUMN" and f["status"] == "fails"
               for f in report["findings"])
    # Drift against the training statistics is in the same report.
    assert {d["kind"] for d in report["distances"]} == {"skew"} and report["comparisons"]["skew"]


def _error(config, capsys, *args):
    status = _score(config, *args)
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_inputs_each_name_what_is_wrong(pushed_run, unlabelled, tmp_path, capsys):
    config, _ = pushed_run
    out = str(tmp_path / "out")
    good = sorted(glob.glob(os.path.join(unlabelled, "*")))[0]

    corrupt = tmp_path / "corrupt" / "part-0.gz"
    corrupt.parent.mkdir()
    corrupt.write_bytes(open(good, "rb").read()[:300])
    assert f"{corrupt}: corrupt or truncated gzip shard" in _error(config, capsys, "--input", str(corrupt.parent),
                                                                    "--out", out)

    foreign = str(tmp_path / "foreign" / "part-0.tfrecord")
    os.makedirs(os.path.dirname(foreign))
    with tf.io.TFRecordWriter(foreign) as writer:
        writer.write(json.dumps({"fare": 3.5}).encode())
    assert f"{foreign}: record 0 is a TFRecord but not a tf.Example" in _error(
        config, capsys, "--input", foreign, "--out", out)

    header_only = tmp_path / "short.csv"
    header_only.write_text("trip_miles,fare\n1.0,5.0\n")
    err = _error(config, capsys, "--input", str(header_only), "--out", out)
    assert str(header_only) in err and "no column" in err and "trip_seconds" in err

    names = sorted(config.features.raw_input_features)
    bad_value = tmp_path / "bad_value.csv"
    bad_value.write_text("\n".join([",".join(names)] + [",".join("1" for _ in names)] * 5 + [
        ",".join("not-a-number" if n == "fare" else "1" for n in names)]) + "\n")
    err = _error(config, capsys, "--input", str(bad_value), "--out", out)
    assert f"{bad_value} line 7: feature 'fare' must be FLOAT" in err

    assert "version 12345 is not pushed" in _error(config, capsys, "--input", good, "--out", out,
                                                   "--model", "12345")
    assert "label 'canary'" in _error(config, capsys, "--input", good, "--out", out, "--model", "canary")
    assert not os.path.exists(out)


def test_a_failed_job_leaves_no_output(pushed_run, unlabelled, tmp_path, capsys):
    """A changed type (trip_start_hour sent as a float) is flagged by validation, then fails the model's
    parse inside the scoring job: one line, exit 1, no output and no temporary directory left."""
    config, _ = pushed_run
    examples = read_examples(os.path.join(unlabelled, "*"), 30)
    for example in examples:
        feature = example.features.feature["trip_start_hour"]
        hour = feature.int64_list.value[0]
        feature.ClearField("int64_list")
        feature.float_list.value.append(hour + 0.5)
    records = write_examples(str(tmp_path / "floats" / "part-0.gz"), examples)
    out = str(tmp_path / "out")
    status = _score(config, "--input", records, "--out", out)
    err = capsys.readouterr().err.strip()
    assert status == 1 and len(err.splitlines()) == 1, err
    assert "the scoring job failed" in err and "trip_start_hour" in err
    assert not os.path.exists(out) and _no_staging_left(out)
    assert not glob.glob(os.path.join(tmp_path, ".out.incomplete*"))


def test_dataflow_job_options_offline(pushed_run):
    """The Dataflow job's options come from the dataflow.*/gcp.* settings; its graph builds without a network."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference

    config = load_config(None, [
        "gcp.project=acme-ml", "gcp.region=europe-west4", "gcp.image=europe-docker.pkg.dev/acme-ml/ml/taxi:1",
        "dataflow.temp_location=gs://acme-ml-tmp/beam", "dataflow.max_num_workers=8"])
    options = batch.pipeline_options(config, "dataflow", "score-taxi-1")
    cloud = options.view_as(GoogleCloudOptions)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert (cloud.project, cloud.region, cloud.job_name) == ("acme-ml", "europe-west4", "score-taxi-1")
    assert cloud.temp_location == "gs://acme-ml-tmp/beam"
    assert options.view_as(WorkerOptions).sdk_container_image == config.gcp.image
    assert options.view_as(WorkerOptions).max_num_workers == 8

    with pytest.raises(batch_models.ScoringError, match="is not on gs://"):
        batch.score(config, batch.ScoreJob(input="/data/batch", out="gs://acme-ml/out", runner="dataflow"))
    with pytest.raises(Exception, match="gcp.project is not set"):
        batch.pipeline_options(load_config(None, []), "dataflow", "x")

    # The job graph with gs:// input and output, built and serialized, never run. (A Pipeline made with the
    # Dataflow options would validate them against Cloud Storage: a network call.)
    pushed, _ = pushed_run
    choice = batch_models.resolve_model("latest", pushed)
    pipeline = beam.Pipeline()
    scored = (batch_inputs.read_examples(pipeline, ["gs://acme-ml/batch/part-0.gz"], config.schema_file, [], {}, 1024)
              | RunInference(batch_models.ScoringModelHandler([choice]).with_no_batching()))
    batch_outputs.write_rows(scored, "parquet", "gs://acme-ml/out/.staging/predictions",
                     [("source", "string"), ("record", "int")] + batch_models.column_names([choice]), 0)
    transforms = {t.unique_name for t in pipeline.to_runner_api().components.transforms.values()}
    assert any("RunInference" in name for name in transforms)


def test_a_batch_is_judged_against_its_own_pipelines_statistics_in_a_shared_store(tmp_path):
    """A fleet's tenants share one ML Metadata store: tenant b's newer statistics must not judge tenant a's batch."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from batch.checks import PIPELINE_CONTEXT, training_statistics

    config = load_config(None, [f"output_dir={tmp_path / 'a'}", "pipeline_name=tenant-a",
                                f"metadata_path={tmp_path / 'shared.sqlite'}"])
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = config.metadata_path
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(connection)
    artifact_type = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="ExampleStatistics"))
    context_type = store.put_context_type(metadata_store_pb2.ContextType(name=PIPELINE_CONTEXT))
    for tenant, rows in (("tenant-a", 10), ("tenant-b", 99)):  # tenant b's statistics are the newer
        uri = tmp_path / tenant / "stats"
        (uri / "Split-train").mkdir(parents=True)
        stats = statistics_pb2.DatasetFeatureStatisticsList(datasets=[{"num_examples": rows}])
        (uri / "Split-train" / "FeatureStats.pb").write_bytes(stats.SerializeToString())
        [artifact_id] = store.put_artifacts([metadata_store_pb2.Artifact(
            type_id=artifact_type, uri=str(uri), state=metadata_store_pb2.Artifact.LIVE)])
        [context_id] = store.put_contexts([metadata_store_pb2.Context(type_id=context_type, name=tenant)])
        store.put_attributions_and_associations(
            [metadata_store_pb2.Attribution(artifact_id=artifact_id, context_id=context_id)], [])
    statistics, source = training_statistics(config)
    assert statistics.datasets[0].num_examples == 10 and "tenant-a" in source
    other = load_config(None, [f"output_dir={tmp_path / 'c'}", "pipeline_name=tenant-c",
                               f"metadata_path={tmp_path / 'shared.sqlite'}"])
    assert training_statistics(other) == (None, f"no run of pipeline 'tenant-c' in {other.metadata_path}")
