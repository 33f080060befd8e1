"""TFX's BulkInferrer as the optional pipeline step after blessing (`bulk_inference.enabled`).

`pushed_run` runs with the step on; these tests read what it wrote.
"""

import glob
import os

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from contract.config import load_config
from pipeline.pipeline import create_components
from reports.html import render
from pipeline.metadata import open_metadata
from reports.lineage import find_push, lineage_of
from reports.summary import format_summary


def test_off_by_default_on_in_its_config():
    assert "BulkInferrer" not in [c.id for c in create_components(load_config(None, []))]
    config = load_config(os.path.join("pipeline", "configs", "bulk_inference.yaml"))
    ids = [c.id for c in create_components(config)]
    assert ids[-2:] == ["UnlabelledExampleGen", "BulkInferrer"]


@pytest.mark.slow
def test_bulk_inferrer_scored_the_unlabelled_split(pushed_run):
    config, summary = pushed_run
    assert summary.component("BulkInferrer").state == "complete"
    assert summary.bulk_inference["predictions"] == 2459

    files = glob.glob(os.path.join(summary.bulk_inference["uri"], "*.gz"))
    first = next(iter(tf.data.TFRecordDataset(files, compression_type="GZIP")))
    log = prediction_log_pb2.PredictionLog.FromString(first.numpy())
    # Through the classify signature: one Classification per example, a score per class name.
    (classification,) = log.classify_log.response.result.classifications
    scores = {c.label: c.score for c in classification.classes}
    assert set(scores) == {"0", "1"} and 0.0 < scores["1"] < 1.0
    assert abs(scores["0"] + scores["1"] - 1.0) < 1e-5

    assert "bulk inference: 2459 PredictionLogs of unlabelled/*" in format_summary(summary, config, {})
    assert 'id="bulk-inference"' in render(summary, config, open_metadata(config.metadata_path))
    store = open_metadata(config.metadata_path)
    lineage = lineage_of(store, find_push(store).id, "push")
    assert [a.producer for a in lineage.stages["bulk inference"]] == ["BulkInferrer"]
