"""A text dataset nobody here prepared, from `init` to a served model and an int8 edge model (one pipeline run).

The data (tests/datasets.py `write_titles`): product titles -> department (three classes), as Parquet with a
price and a list of tags; the eval split holds words no training row has, punctuation, emoji and text in
Latin, Cyrillic and CJK scripts. `init` sets it up alone (title: text, tags: category_sets); the run adds only
settings that shorten training. Then: the served SavedModel takes the raw string over gRPC and REST; batch
scoring reads the Parquet; the int8 edge model is within its gate and the device runtime's tokenization
equals the Transform graph's on every eval row; the token statistics feed validate, skew and drift.
"""

import contextlib
import io
import json
import os
from collections import Counter

import numpy as np
import pytest
import requests
import tensorflow as tf

from contract.config import load_config
from pipeline.metadata import open_metadata
from reports.summary import read_run
from runners import local
from cli import schema as schema_cli
from tests.datasets import UNSEEN_WORDS, write_titles
from tests.samples import read_examples

pytestmark = pytest.mark.slow

FAST = ["training.seed=1", "training.train_steps=300", "training.eval_steps=10", "training.batch_size=32",
        "tuner.max_trials=1", "tuner.train_steps=20", "tuner.eval_steps=5", "serving.warmup_requests=3",
        "edge.representative_examples=300"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("titles")
    data = write_titles(str(root / "titles"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert schema_cli.main(["init", "--data-root", data, "--label", "department",
                                "--out", str(root / "model")]) == 0
    config = load_config(str(root / "model" / "config.yaml"), FAST)
    out = io.StringIO()
    assert local.run(config, out=out) == 0, out.getvalue()
    summary = read_run(open_metadata(config.metadata_path), config.pipeline_name)
    return {"data": data, "config": config, "summary": summary, "init": printed.getvalue(), "printed": out.getvalue()}


def _eval_examples(run):
    """The raw eval rows as ParquetExampleGen wrote them, without the label: what a client sends."""
    examples = run["summary"].component("ParquetExampleGen").outputs["examples"][0]
    parsed = read_examples(os.path.join(examples, "Split-eval", "*"))
    for example in parsed:
        del example.features.feature["department"]
    return parsed


def test_init_tells_text_from_categories_and_lists_and_says_why(text_run):
    config, printed = text_run["config"], text_run["init"]
    assert config.data.format == "parquet" and "format: parquet (Parquet: every file starts with" in printed
    assert config.features.text == ["title"] and config.features.category_sets == ["tags"]
    assert config.features.task == "multiclass" and config.features.numeric == ["price"]
    assert "  title is text: strings, " in printed and "several words (mean " in printed
    import tensorflow_data_validation as tfdv

    schema = tfdv.load_schema_text(config.schema_file)
    assert tfdv.get_feature(schema, "title").WhichOneof("domain_info") == "natural_language_domain"
    # Nullable in the Parquet schema: optional in the schema, whatever the sample held.
    assert not tfdv.get_feature(schema, "price").HasField("presence")


def test_trained_blessed_pushed_and_exported_to_int8_within_its_gate(text_run):
    summary, printed = text_run["summary"], text_run["printed"]
    assert all(c.state == "complete" for c in summary.components), [(c.name, c.state) for c in summary.components]
    assert summary.blessed is True and summary.pushed and summary.edge.get("pushed"), printed
    manifest = json.load(open(os.path.join(summary.edge["version_dir"], "manifest.json")))
    assert manifest["gate"] and all(check["value"] <= check["limit"] for check in manifest["gate"])
    sizes = manifest["sizes"]
    assert sizes["int8_weights"] <= 0.36 * sizes["float_weights"] and sizes["int8"] < sizes["float"], sizes
    mapping = json.load(open(os.path.join(summary.edge["version_dir"], "edge_mapping.json")))
    assert [b["feature"] for b in mapping["bags"]["features"]] == ["title", "tags"]
    assert mapping["bags"]["size"] == text_run["config"].features.text_top_k + 1 + \
        text_run["config"].features.vocab_top_k + 1


def test_edge_tokenization_equals_the_transform_graph_on_every_eval_row(text_run):
    """Ids exactly, TF-IDF weights to float32 rounding; rows with unseen words, punctuation and other scripts."""
    from edge import export
    from edge.runtime import EdgeModel

    summary, spec = text_run["summary"], text_run["config"].features
    examples = [e.SerializeToString() for e in _eval_examples(text_run)]
    texts = [tf.train.Example.FromString(e).features.feature["title"].bytes_list.value[0].decode() for e in examples]
    assert any(any(w in t for w in UNSEEN_WORDS) for t in texts) and any("👍" in t for t in texts)
    assert any(any(ord(c) > 0x3000 for c in t) for t in texts) and any("," in t or "!" in t for t in texts)
    transformed = tf.saved_model.load(summary.pushed_path).signatures["transform_features"](
        examples=tf.constant(examples))
    encoder = EdgeModel(summary.edge["version_dir"]).encoder
    records = export.raw_records(examples, spec)
    weighted = 0
    for entry in encoder.bags:
        ids = tf.sparse.to_dense(transformed[entry["input"]], default_value=-1).numpy()
        weights = (tf.sparse.to_dense(transformed[entry["input"] + "_weights"]).numpy()
                   if entry["weighting"] == "tfidf" else np.ones(ids.shape))
        for row, record in enumerate(records):
            low, high = entry["offset"], entry["offset"] + entry["size"]
            device = {p - low: w for p, w in encoder.encode_bags(record) if low <= p < high}
            graph = Counter()
            for i, w in zip(ids[row], weights[row]):
                if i >= 0:
                    graph[int(i)] = float(w) if entry["weighting"] == "tfidf" else 1.0
            assert sorted(device) == sorted(graph), (entry["feature"], texts[row])
            for i, w in graph.items():
                assert device[i] == pytest.approx(w, rel=1e-6), (entry["feature"], texts[row], i)
            weighted += len(graph)
    assert weighted > len(records)


def test_served_over_grpc_and_rest_with_the_raw_text(text_run, tmp_path):
    from contract.config import ServingConfig
    from serving import model_config
    from serving.client import ServingClient
    from serving.process import ModelServer

    config, summary = text_run["config"], text_run["summary"]
    examples = _eval_examples(text_run)[:16]
    serialized = [e.SerializeToString() for e in examples]
    loaded = tf.saved_model.load(summary.pushed_path)
    expected = loaded.signatures["classify"](inputs=tf.constant(serialized))["scores"].numpy()
    path = str(tmp_path / "models.config")
    model_config.ensure(path, config.model_name, config.model_serving_dir)
    server = ModelServer(path, ServingConfig(port=0, rest_port=0, poll_interval_seconds=60,
                                             request_log_dir=str(tmp_path / "request_logs")))
    server.start()
    try:
        with ServingClient(f"127.0.0.1:{server.port}", config.model_name, batch_size=8) as client:
            over_grpc = [list(s.values()) for s in client.classify_api(examples)]
        np.testing.assert_allclose(over_grpc, expected, atol=1e-6)
        rows = [{"title": e.features.feature["title"].bytes_list.value[0].decode(),
                 "price": e.features.feature["price"].float_list.value[0],
                 "tags": [t.decode() for t in e.features.feature["tags"].bytes_list.value]} for e in examples]
        response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/{config.model_name}:classify",
                                 json={"signature_name": "classify", "examples": rows}, timeout=30)
        assert response.status_code == 200, response.text
        over_rest = [[score for _, score in row] for row in response.json()["results"]]
        np.testing.assert_allclose(over_rest, expected, atol=1e-6)
    finally:
        server.stop()


def test_batch_scoring_reads_the_parquet_as_the_pipeline_did(text_run, tmp_path):
    import pandas as pd

    from batch import job as batch
    from edge import export
    from formats import parquet

    config, summary = text_run["config"], text_run["summary"]
    source = os.path.join(text_run["data"], "eval", "part-0.parquet")
    out = str(tmp_path / "scored")
    job = batch.ScoreJob(input=source, out=out, models=["latest", summary.edge["version_dir"]])
    with contextlib.redirect_stdout(io.StringIO()):
        result = batch.score(config, job)
    assert result.status == "scored" and result.examples == 150
    table = pd.read_parquet(out).sort_values("record")
    rows = [r for _, records in parquet.FORMAT.examples([source]) for r in records]
    reference = export.serving_predictions(tf.saved_model.load(summary.pushed_path), rows, config.features)
    names = config.features.class_names
    np.testing.assert_allclose(table[[f"latest_score_{n}" for n in names]].to_numpy(), reference, atol=1e-5)
    agreement = np.mean(table["latest_class"].to_numpy() == table["edge_class"].to_numpy())
    assert agreement >= config.edge.min_agreement


def test_text_columns_are_validated_and_compared_by_their_tokens(text_run, tmp_path, capsys):
    """`validate` reports token statistics; skew compares token distributions and the vocabulary coverage."""
    from cli import validation as validation_cli

    config = text_run["config"]
    schema_file = str(tmp_path / "schema.pbtxt")
    with open(config.schema_file, encoding="utf-8") as f:
        written = f.read()
    # What a curator adds: a token skew threshold and the share of serving tokens training must have seen.
    written = written.replace("  natural_language_domain {\n  }", "  natural_language_domain {\n    coverage {\n"
                              "      min_coverage: 0.99\n    }\n  }\n  skew_comparator {\n    infinity_norm {\n"
                              "      threshold: 0.5\n    }\n  }")
    with open(schema_file, "w", encoding="utf-8") as f:
        f.write(written)
    common = ["--set", f"output_dir={tmp_path}", "--set", f"schema_file={schema_file}"]
    train, evaluation = (os.path.join(text_run["data"], s) for s in ("train", "eval"))
    assert validation_cli.main(common + ["validate", "--data-root", train]) == 0
    printed = capsys.readouterr().out
    assert "note: title: " in printed and " tokens per row (" in printed and "distinct tokens" in printed
    # The eval split's unseen words: some of its tokens no training row has, under min_coverage 0.99.
    assert validation_cli.main(common + ["skew", "--training", train, "--serving", evaluation]) == 1
    printed = capsys.readouterr().out
    assert "title__tokens            L_INFTY" in printed and "title__tokens            OOV_TOKEN_SHARE" in printed
    assert "FEATURE_COVERAGE_TOO_LOW" in printed
    assert "of the serving data's tokens never occur in the training data" in printed
