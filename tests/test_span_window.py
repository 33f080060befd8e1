"""Training on a rolling window of spans: the resolver's choice, the setting, and two real pipeline runs."""

import io
import shutil

import pytest
from tfx.types import standard_artifacts

from pipeline.resolvers import latest_spans
from validation.spans import span_of
from contract.config import load_config
from contract.errors import ConfigError
from tests.samples import small_config

SPAN_PATTERNS = ["data.train_pattern=span-{SPAN}/train/*", "data.eval_pattern=span-{SPAN}/eval/*"]


def _examples(artifact_id: int, span: int):
    artifact = standard_artifacts.Examples()
    artifact.id = artifact_id
    artifact.set_int_custom_property("span", span)
    return artifact


def test_window_takes_the_newest_artifact_of_each_of_the_latest_spans():
    artifacts = [_examples(1, 1), _examples(2, 2), _examples(3, 3), _examples(4, 2), _examples(5, 4)]
    chosen = latest_spans(artifacts, 3)
    assert [(a.id, span_of(a)) for a in chosen] == [(5, 4), (3, 3), (4, 2)]
    assert [a.id for a in latest_spans(artifacts, 10)] == [5, 3, 4, 1]


def test_span_window_needs_span_patterns():
    with pytest.raises(ConfigError, match=r"data.span_window=3 needs span-partitioned input.*\{SPAN\}"):
        load_config(None, ["data.span_window=3"])
    with pytest.raises(ConfigError, match="data.span_window must be 1"):
        load_config(None, ["data.span_window=0"])
    assert load_config(None, ["data.span_window=3", *SPAN_PATTERNS]).data.span_window == 3


def _ingest_only(config, monkeypatch):
    """What an earlier run left in MLMD for the window: ImportExampleGen's Examples of the span it ingested."""
    from tfx import v1 as tfx

    from pipeline.pipeline import example_gen_configs

    input_config, output_config = example_gen_configs(config)
    example_gen = tfx.components.ImportExampleGen(  # the same node as in the pipeline, alone
        input_base=config.input_base, input_config=input_config, output_config=output_config)
    monkeypatch.setattr("sys.argv", ["ingest"])  # Beam parses sys.argv; pytest's flags are not Beam's
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name, pipeline_root=config.pipeline_root, components=[example_gen],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path)))


@pytest.mark.slow
def test_a_run_trains_on_the_two_latest_spans(tmp_path, small_sample, monkeypatch):
    """An earlier run ingested one span; a new span arrives; this run's Transform (so the Trainer) reads both."""
    from runners import local
    from pipeline.metadata import open_metadata
    from reports.summary import read_run
    from validation.spans import make_spans, span_dir

    spans_root = str(tmp_path / "spans")
    written = [row[0] for row in make_spans(small_sample, spans_root, period="year")]
    previous, latest = written[-2], written[-1]
    held_back = str(tmp_path / "not-yet-arrived")
    shutil.move(span_dir(spans_root, latest), held_back)
    for span in written[:-2]:  # older spans are not part of this story
        shutil.rmtree(span_dir(spans_root, span))
    config = small_config(str(tmp_path / "out"), spans_root, *SPAN_PATTERNS, "data.span_window=2",
                          "tuner.enabled=false", "edge.enabled=false", "training.train_steps=20",
                          "evaluator.min_auc=0", "evaluator.min_binary_accuracy=0")
    _ingest_only(config, monkeypatch)

    shutil.move(held_back, span_dir(spans_root, latest))
    out = io.StringIO()
    assert local.run(config, out=out) == 0, out.getvalue()
    summary = read_run(open_metadata(config.metadata_path), config.pipeline_name)
    assert summary.component("Trainer").state == "complete"
    examples = open_metadata(config.metadata_path).get_artifacts_by_id(summary.component("Transform").input_ids["examples"])
    assert sorted(a.custom_properties["span"].int_value for a in examples) == [previous, latest]
    # The gate and the Evaluator judge the new span only.
    gate_examples = summary.component("AnomalyGate").input_ids["examples"]
    assert [a.custom_properties["span"].int_value for a in open_metadata(config.metadata_path).get_artifacts_by_id(
        gate_examples)] == [latest]
    assert "span_window_resolver" in out.getvalue()
