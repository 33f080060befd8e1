"""The whole pipeline, real components, on a small sample of the taxi data.

One output directory (MLMD, serving dir) is shared by three runs, in order:
1. a first run: every component completes and a model is pushed;
2. the same run again: every component cached (the candidate is never its own
   baseline, so the Evaluator is cached too), nothing new pushed;
3. a run on data with shuffled labels: the worse candidate is not blessed and
   not pushed; the first version stays the latest and still serves.
"""

import io
import json
import os

import pytest
import tensorflow as tf

from contract.versions import list_versions
from contract.serving import PREDICTION_KEY
from models.trainer import runtime
from models.trainer.families import dnn
from runners import local
from pipeline import tuning_reuse
from pipeline.metadata import open_metadata
from reports.summary import read_run
from tests.samples import make_sample, small_config

pytestmark = pytest.mark.slow

COMPONENTS = {"ImportExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "AnomalyGate",
              "Transform", "Tuner", "Trainer", "latest_blessed_model_resolver", "Evaluator", "ServingCheck", "Pusher",
              "EdgeExport"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


def _run(config):
    out = io.StringIO()
    status = local.run(config, out=out)
    return status, out.getvalue()


@pytest.fixture(scope="module")
def first_run(workspace, small_sample):
    config = small_config(str(workspace / "out"), small_sample)
    status, printed = _run(config)
    assert status == 0, printed
    return config, printed, read_run(open_metadata(config.metadata_path), config.pipeline_name)


def test_every_component_completes_and_a_model_is_pushed(first_run):
    config, printed, summary = first_run
    assert {c.name for c in summary.components} == COMPONENTS
    assert all(c.state == "complete" for c in summary.components), [(c.name, c.state) for c in summary.components]
    assert summary.blessed is True and summary.pushed
    assert list_versions(config.model_serving_dir) == [int(os.path.basename(summary.pushed_path))]
    assert "pushed to: " + summary.pushed_path in printed
    for name in COMPONENTS - {"latest_blessed_model_resolver"}:
        assert f"{name}" in printed


def test_pushed_model_answers_serving_default_on_raw_examples(first_run, eval_examples):
    _, _, summary = first_run
    loaded = tf.saved_model.load(summary.pushed_path)
    batch = tf.constant([e.SerializeToString() for e in eval_examples[:32]])
    probabilities = loaded.signatures["serving_default"](examples=batch)[PREDICTION_KEY].numpy()
    assert probabilities.shape == (32, 1) and ((probabilities >= 0) & (probabilities <= 1)).all()


def test_tuner_best_hyperparameters_reach_the_trainer(first_run):
    _, _, summary = first_run
    trainer = summary.component("Trainer")
    used = json.load(open(os.path.join(trainer.outputs["model_run"][0], runtime.HPARAMS_FILE)))
    assert summary.hyperparameters, "the Tuner wrote no best hyper-parameters"
    for name, value in summary.hyperparameters.items():
        if name in dnn.FAMILY.default_hparams:
            assert used[name] == value, name


@pytest.fixture(scope="module")
def second_run(first_run):
    config, _, _ = first_run
    edge_versions = list_versions(config.model_edge_dir)
    status, printed = _run(config)
    assert status == 0, printed
    return config, printed, read_run(open_metadata(config.metadata_path), config.pipeline_name), edge_versions


def test_unchanged_rerun_is_all_cached_and_pushes_nothing_new(first_run, second_run):
    """The baseline resolver leaves out the candidate (the cached Trainer's model, which the first run blessed).

    So the Evaluator sees the first run's inputs again (no baseline) and is cached, and so are the
    Pusher and the edge export behind it; only the resolver itself runs.
    """
    config, _, first = first_run
    _, printed, second, edge_versions = second_run
    assert edge_versions, "the first run should have pushed an edge model"
    states = {c.name: c.state for c in second.components}
    assert {n: s for n, s in states.items() if s != "cached"} == {"latest_blessed_model_resolver": "complete"}
    assert second.candidate_model == first.candidate_model
    assert second.baseline_model == "" and not second.baseline_metrics
    assert second.pushed_path == first.pushed_path
    assert len(list_versions(config.model_serving_dir)) == 1
    assert list_versions(config.model_edge_dir) == edge_versions
    assert "reused from cache" in printed and "not pushed again: the Pusher is cached" in printed
    assert "\n  pushed to: " not in printed and "edge model pushed to" not in printed


def test_worse_candidate_is_not_blessed_and_serving_is_unchanged(first_run, second_run, workspace, taxi_root):
    """New data (shuffled labels), same schema and features, `tuner.retune: on_change`.

    The Tuner does not search again: the first run's best hyper-parameters artifact is imported
    (the same MLMD artifact, so lineage leads to the first run's Tuner).
    """
    config, _, first = first_run
    before = list_versions(config.model_serving_dir)
    bad_data = make_sample(str(workspace / "shuffled"), taxi_root, 600, 300, shuffle_train_labels=True)
    bad_config = small_config(config.output_dir, bad_data, "tuner.retune=on_change")
    status, printed = _run(bad_config)
    assert status == 0, printed
    store = open_metadata(bad_config.metadata_path)
    summary = read_run(store, bad_config.pipeline_name)
    names = {c.name for c in summary.components}
    assert "Tuner" not in names and tuning_reuse.IMPORTER_ID in names, names
    searched = first.component("Tuner").output_ids["best_hyperparameters"]
    assert summary.component(tuning_reuse.IMPORTER_ID).output_ids["result"] == searched
    assert summary.component("Trainer").input_ids["hyperparameters"] == searched
    assert summary.hyperparameters == first.hyperparameters and "Tuner skipped" in printed
    assert summary.blessed is False
    assert summary.baseline_model == first.candidate_model
    assert summary.candidate_metrics["auc"] < summary.baseline_metrics["auc"]
    assert not summary.pushed
    assert "blessed: NO" in printed and "serving directory" in printed
    assert list_versions(config.model_serving_dir) == before
    latest = os.path.join(config.model_serving_dir, str(before[-1]))
    assert "serving_default" in tf.saved_model.load(latest).signatures


def test_failed_component_exits_non_zero_with_a_one_line_reason(workspace, small_sample):
    """A component that fails stops the run with exit status 1 and one line; nothing is pushed.

    Here Transform, parsing the float `fare` as the integer a wrong schema says it is (the anomaly gate
    is told to tolerate that). A column the features name but the data lacks no longer gets this far:
    the preflight names it (tests/test_inputs.py).
    """
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    from contract.config import DEFAULT_SCHEMA

    schema = tfdv.load_schema_text(DEFAULT_SCHEMA)
    fare = tfdv.get_feature(schema, "fare")
    fare.type = schema_pb2.INT
    fare.ClearField("float_domain")
    wrong = str(workspace / "wrong_schema.pbtxt")
    tfdv.write_schema_text(schema, wrong)
    config = small_config(str(workspace / "broken"), small_sample, f"schema_file={wrong}",
                          "validation.allow_anomalies=[trip_miles:FLOAT_TYPE_BIG_FLOAT, fare:UNEXPECTED_DATA_TYPE]")
    status, printed = _run(config)
    assert status == 1, printed
    failed = [line for line in printed.splitlines() if line.startswith("FAILED in Transform: ")]
    assert len(failed) == 1 and "fare" in failed[0], printed
    assert not os.path.exists(config.model_serving_dir)
