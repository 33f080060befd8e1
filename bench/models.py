"""Model families side by side per dataset: quality, training cost, size, online latency, int8; auto's choice.

    python -m bench.models [--datasets taxi,penguins,interactions,linear,interactions-100k,linear-100k]
                           [--families dnn,linear,gbdt,auto] [--rounds N] [--requests N] [--out DIR]
                           [--set KEY=VALUE ...]
    make bench-models ARGS="..."

Datasets: the bundled taxi data (binary, its own config); the penguins the tfx wheel ships (multiclass);
the synthetic interaction set (binary, trees win) and linear set (regression) of tests/datasets.py at a
few hundred rows and at 100,000 rows. Each non-taxi dataset is configured by `tfx-edge schema init`
alone. For each dataset and family, one fresh pipeline run with `training.model=<family>` (plus
--set); then, from what it pushed:
- eval metric: the pushed SavedModel's headline metric (`Task.headline`: AUC, accuracy, RMSE) on the raw
  eval split, computed the same way for every family and for the reference below;
- training cost: the Tuner's and the Trainer's seconds, and the whole run's;
- model size: the pushed version directory's bytes;
- online latency: gRPC Predict, one example per request, to the local server serving that version
  (min/median/max over --rounds rounds of --requests requests);
- int8: the edge model's size and metric (a forest's is its distilled student), and which way it was made.
The reference is a plain regularized linear model, scikit-learn's LogisticRegressionCV / RidgeCV
(regularization chosen by 5-fold cross-validation on the train split), fitted on the same Transform
output (the dense vector every Keras family reads) of the same train split, scored on the same eval
split. `auto` is compared with the best single family (relative gap) and with the reference (paired
bootstrap 95% interval of the metric difference over the eval examples: "worse beyond noise" means
the whole interval is worse).
Results: bench/results/models.json; each run's terminal output in <work dir>/<dataset>/<family>/run.txt.
"""

import argparse
import contextlib
import glob
import io
import json
import os
import re
import tempfile
import time
from typing import Dict, List

import numpy as np

from bench import results as bench_results
from cli import prologue

DATASETS = {"taxi": "", "penguins": "species", "interactions": "returned", "linear": "price",
            "interactions-100k": "returned", "linear-100k": "price"}
FAMILIES = ("dnn", "linear", "gbdt", "auto")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "models.json")
LARGE_ROWS = 100_000
BOOTSTRAP = 200


def _data(name: str, root: str) -> str:
    from tests.datasets import penguin_root, write_interactions, write_linear

    if name == "penguins":
        return penguin_root()
    rows = LARGE_ROWS if name.endswith("-100k") else (600 if name.startswith("interactions") else 400)
    writer = write_interactions if name.startswith("interactions") else write_linear
    return writer(os.path.join(root, "data", name), rows=rows)


def _config(name: str, root: str, family: str, overrides: List[str]):
    from cli import schema as schema_cli
    from contract.config import load_config

    out = os.path.join(root, name, family)
    settings = [f"training.model={family}"] + list(overrides)
    if name == "taxi":
        return load_config(None, [f"output_dir={os.path.join(out, 'outputs')}"] + settings), out
    with contextlib.redirect_stdout(io.StringIO()):
        assert schema_cli.main(["init", "--data-root", _data(name, root), "--label", DATASETS[name],
                                "--out", out]) == 0
    return load_config(os.path.join(out, "config.yaml"), settings), out


def _component_seconds(printed: str) -> Dict[str, float]:
    return {name: float(seconds) for name, seconds in re.findall(r"\] (\S+)\s+done\s+([\d.]+)s", printed)}


def _split_records(summary, component: str, key: str, split: str) -> List[bytes]:
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(summary.component(component).outputs[key][0], f"Split-{split}", "*")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def _bytes(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(directory) for f in files)


def _grpc_latency(config, rounds: int, requests: int, serialized: List[bytes]) -> Dict[str, float]:
    """Seconds per example of one-example gRPC Predict requests to the local server (min/median/max)."""
    import tensorflow as tf

    from contract.config import ServingConfig
    from serving import model_config
    from serving.client import ServingClient
    from serving.process import ModelServer

    with tempfile.TemporaryDirectory(prefix="bench_models_serve_") as root:
        path = os.path.join(root, "models.config")
        model_config.ensure(path, config.model_name, config.model_serving_dir)
        server = ModelServer(path, ServingConfig(port=0, rest_port=0, poll_interval_seconds=600,
                                                 request_log_sample_rate=0.0,
                                                 request_log_dir=os.path.join(root, "logs")))
        server.start()
        try:
            examples = [tf.train.Example.FromString(s) for s in serialized]
            per_round = []
            with ServingClient(f"127.0.0.1:{server.port}", config.model_name, batch_size=1) as client:
                list(client.answers(examples[:20]))  # warm-up
                for _ in range(rounds):
                    chosen = [examples[i % len(examples)] for i in range(requests)]
                    started = time.perf_counter()
                    list(client.answers(chosen))
                    per_round.append((time.perf_counter() - started) / requests)
        finally:
            server.stop()
    return bench_results.spread(per_round)


class ReferenceLinear:
    """scikit-learn's cross-validated L2 logistic / ridge regression on the dense vector every Keras family
    reads (numeric z-scores, one-hot blocks: the Transform output packed by the edge mapping), fitted on a
    run's transformed train split."""

    def __init__(self, summary, spec):
        import tensorflow as tf
        import tensorflow_transform as tft
        from sklearn.linear_model import LogisticRegressionCV, RidgeCV

        from edge.export import transformed_inputs

        self.spec = spec
        with tf.io.gfile.GFile(os.path.join(summary.pushed_path, "assets", "edge_mapping.json")) as f:
            self.mapping = json.load(f)
        transform = summary.component("Transform").outputs["transform_graph"][0]
        feature_spec = tft.TFTransformOutput(transform).transformed_feature_spec()
        records = _split_records(summary, "Transform", "transformed_examples", "train")
        x = np.concatenate(transformed_inputs(records, feature_spec, self.mapping), axis=1)
        y = tf.io.parse_example(tf.constant(records), {spec.label_key: feature_spec[spec.label_key]})
        y = y[spec.label_key].numpy().reshape(-1)
        self.model = (LogisticRegressionCV(Cs=10, cv=5, max_iter=2000) if spec.task_type.is_classification
                      else RidgeCV(alphas=np.logspace(-3, 3, 13))).fit(x, y)

    def outputs(self, run: Dict) -> np.ndarray:
        """Its answers on `run`'s raw eval split, transformed by that run's own served Transform graph."""
        import tensorflow as tf

        from edge.export import edge_inputs
        from models.trainer import custom_ops

        transform = custom_ops.load(run["_summary"].pushed_path).signatures["transform_features"]
        transformed = transform(examples=tf.constant(run["_raw_eval"]))
        x = np.concatenate(edge_inputs({k: v.numpy() for k, v in transformed.items()}, self.mapping), axis=1)
        task = self.spec.task_type
        if not task.is_classification:
            return self.model.predict(x)
        probabilities = self.model.predict_proba(x)
        return probabilities if task.per_class_scores else probabilities[:, 1]


def _bootstrap(task, labels, first, second, seed: int = 0) -> Dict[str, float]:
    """2.5% / 97.5% quantiles of headline(first) - headline(second) over resampled eval examples."""
    rng = np.random.default_rng(seed)
    key = task.headline.key
    differences = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(labels), len(labels))
        if task.is_classification and len(np.unique(labels[idx])) < 2:
            continue
        differences.append(task.quality(labels[idx], first[idx])[key] - task.quality(labels[idx], second[idx])[key])
    return {"low": float(np.quantile(differences, 0.025)), "high": float(np.quantile(differences, 0.975))}


def run_family(name: str, root: str, family: str, overrides, rounds: int, requests: int) -> Dict:
    from edge.export import labels_of, serving_predictions
    from models.trainer import custom_ops
    from pipeline.metadata import open_metadata
    from reports.summary import read_run
    from runners import local

    config, out = _config(name, root, family, overrides)
    started = time.time()
    printed = io.StringIO()
    status = local.run(config, out=printed)
    with open(os.path.join(out, "run.txt"), "w", encoding="utf-8") as f:
        f.write(printed.getvalue())
    if status != 0:
        raise SystemExit(f"{name}/{family}: the pipeline failed (status {status}):\n{printed.getvalue()}")
    seconds = time.time() - started
    summary = read_run(open_metadata(config.metadata_path), config.pipeline_name)
    if not summary.pushed:
        raise SystemExit(f"{name}/{family}: no model was pushed:\n{printed.getvalue()}")
    spec, task = config.features, config.features.task_type
    raw_eval = _split_records(summary, "ImportExampleGen", "examples", "eval")
    labels = labels_of(raw_eval, spec)
    outputs = serving_predictions(custom_ops.load(summary.pushed_path), raw_eval, spec)
    components = _component_seconds(printed.getvalue())
    edge = summary.edge or {}
    key = task.headline.key
    return {
        "dataset": name, "family": family, "task": spec.task, "eval_examples": len(labels),
        "chosen": (summary.training.get("auto") or {}).get("chosen", family),
        "auto_scores": (summary.training.get("auto") or {}).get("scores"),
        "metric": task.quality(labels, outputs)[key], "tfma": summary.candidate_metrics,
        "pipeline_seconds": round(seconds, 1), "tuner_seconds": components.get("Tuner", 0.0),
        "trainer_seconds": components.get("Trainer", 0.0), "model_bytes": _bytes(summary.pushed_path),
        "grpc_seconds_per_example": _grpc_latency(config, rounds, requests, raw_eval),
        "int8": {"pushed": bool(edge.get("pushed")), "path": edge.get("path"), "reason": edge.get("reason"),
                 "bytes": (edge.get("sizes") or {}).get("int8"),
                 "metric": ((edge.get("metrics") or {}).get("int8") or {}).get(key)},
        "_labels": labels, "_outputs": outputs, "_raw_eval": raw_eval, "_summary": summary, "_config": config,
    }


def compare(runs: List[Dict]) -> Dict:
    """auto vs the best single family and vs the reference linear model, for one dataset."""
    from contract import tasks

    by_family = {r["family"]: r for r in runs}
    first = runs[0]
    task = tasks.task(first["task"])
    key = task.headline.key
    reference = ReferenceLinear(first["_summary"], first["_config"].features)
    out = {"reference_linear": task.quality(first["_labels"], reference.outputs(first))[key]}
    singles = {f: r["metric"] for f, r in by_family.items() if f != "auto"}
    if singles:
        best = (max if task.headline.higher_is_better else min)(singles, key=singles.get)
        out.update(best_family=best, best_metric=singles[best])
    auto = by_family.get("auto")
    if auto is not None:
        if singles:
            gap = (singles[best] - auto["metric"]) if task.headline.higher_is_better else \
                (auto["metric"] - singles[best])
            out["auto_gap_to_best_relative"] = gap / abs(singles[best])
        difference = _bootstrap(task, auto["_labels"], auto["_outputs"], reference.outputs(auto))
        out["auto_minus_reference_95"] = difference
        out["auto_worse_than_reference_beyond_noise"] = bool(
            difference["high"] < 0 if task.headline.higher_is_better else difference["low"] > 0)
        if "dnn" in by_family:
            out["auto_cost_vs_dnn"] = {
                "pipeline": auto["pipeline_seconds"] / by_family["dnn"]["pipeline_seconds"],
                "tuner_and_trainer": (auto["tuner_seconds"] + auto["trainer_seconds"]) /
                max(by_family["dnn"]["tuner_seconds"] + by_family["dnn"]["trainer_seconds"], 1e-9)}
    return out


def table(results: List[Dict], comparisons: Dict[str, Dict]) -> str:
    from contract import tasks

    lines = [f"{'dataset':18s} {'family':7s} {'chosen':7s} {'metric':>16s} {'tuner+trainer s':>15s} {'run s':>7s} "
             f"{'model KB':>9s} {'gRPC ms/ex (median)':>19s} {'int8 KB':>8s} {'int8 metric':>11s}  int8 by"]
    for r in results:
        label = tasks.task(r["task"]).headline.label
        int8 = r["int8"]
        lines.append(
            f"{r['dataset']:18s} {r['family']:7s} {r['chosen']:7s} {label + ' ' + format(r['metric'], '.4f'):>16s} "
            f"{r['tuner_seconds'] + r['trainer_seconds']:15.1f} {r['pipeline_seconds']:7.1f} "
            f"{r['model_bytes'] / 1024:9.0f} {r['grpc_seconds_per_example']['median'] * 1e3:19.2f} "
            f"{(int8['bytes'] or 0) / 1024:8.0f} {format(int8['metric'], '.4f') if int8['metric'] is not None else '-':>11s}"
            f"  {int8['path'] if int8['pushed'] else 'not pushed: ' + str(int8['reason'])[:60]}")
    lines.append("")
    for name, c in comparisons.items():
        text = f"{name}: reference linear (scikit-learn) {c['reference_linear']:.4f}"
        if "best_family" in c:
            text += f"; best single family {c['best_family']} {c['best_metric']:.4f}"
        if "auto_gap_to_best_relative" in c:
            text += f"; auto behind the best by {c['auto_gap_to_best_relative']:.2%}"
        if "auto_minus_reference_95" in c:
            d = c["auto_minus_reference_95"]
            text += (f"; auto - reference 95% [{d['low']:+.4f}, {d['high']:+.4f}]"
                     f"{' WORSE' if c['auto_worse_than_reference_beyond_noise'] else ''}")
        if "auto_cost_vs_dnn" in c:
            cost = c["auto_cost_vs_dnn"]
            text += (f"; auto cost vs dnn: run {cost['pipeline']:.2f}x, tuner+trainer "
                     f"{cost['tuner_and_trainer']:.2f}x")
        lines.append(text)
    return "\n".join(lines)


def main(argv=None) -> int:
    prologue.prepare(tensorflow_log_level="2")
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="", help="work directory (default: a new temporary one, kept)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds (min/median/max over them)")
    parser.add_argument("--requests", type=int, default=200, help="one-example gRPC requests per round")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra settings for every run, e.g. tuner.max_trials=2")
    args = parser.parse_args(argv)
    unknown = [d for d in args.datasets.split(",") if d not in DATASETS] + \
        [f for f in args.families.split(",") if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown dataset or family {unknown}; datasets: {', '.join(DATASETS)}; "
                     f"families: {', '.join(FAMILIES)}")
    root = args.out or tempfile.mkdtemp(prefix="bench_models_")
    results, comparisons = [], {}
    for name in args.datasets.split(","):
        runs = []
        for family in args.families.split(","):
            print(f"{name} / {family}: pipeline run, measure ...", flush=True)
            runs.append(run_family(name, root, family, args.set, args.rounds, args.requests))
            print(f"  done (pipeline {runs[-1]['pipeline_seconds']}s, {runs[-1]['metric']:.4f})", flush=True)
        comparisons[name] = compare(runs)
        results += runs
    print(table(results, comparisons))
    kept = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    bench_results.write(os.path.dirname(RESULTS), "models",
                        {"settings": args.set, "work_dir": root, "cpu_count": os.cpu_count(),
                         "date": time.strftime("%Y-%m-%d"), "results": kept, "comparisons": comparisons})
    print(f"Results: {RESULTS} (runs under {root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
