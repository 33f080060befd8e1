"""The stock TFX Chicago taxi example vs this pipeline: wall time and model quality.

    python -m bench.stock_comparison [--repeats N] [--cached] [--out-dir DIR] [--keep] [--set KEY=VALUE ...]

Why: the tfx wheel ships `taxi_pipeline_native_keras`, a complete pipeline for
the same task on the same data (is a trip's tip more than 20% of its fare?).
It is the reference point for this project: whatever time our pipeline spends
beyond it (a Tuner, more training) has to buy a better model.

How: each pipeline runs from scratch (fresh pipeline root, MLMD and serving
directory) in its own subprocess, so both start cold; a wall time is its whole
subprocess, imports included. Both pushed models are then scored here on the
same 5,091 examples, the `Split-eval` TFRecords bundled with tfx, through their
`serving_default` signatures, as a serving client would call them: serialized
tf.Examples without the `tips` column. The label is `tips > 0.2 * fare` in float32.

Reading the output: `ours / stock` > 1 means our pipeline is slower; `AUC
ours - stock` > 0 means our model ranks big tippers better. AUC is the number
to compare; accuracy is at threshold 0.5 and means little without the share of
big tippers printed above the table. Neither AUC is a clean held-out score: the
stock example hash-splits its CSV itself and trains on about two thirds of
these examples, and our Tuner picks hyper-parameters on them. Both runs also
train from random weights and the machine may be shared, so repeat the run
before trusting a small difference.

`--repeats N` runs both pipelines N times (stock, then ours, alternating) and prints min/median/max of
wall time, AUC (its spread is what `training.seed` cannot fix: the stock example is unseeded) and peak
RSS, the largest resident memory of the whole process tree (Beam workers, training subprocesses),
sampled with psutil every 0.2 s. `--cached` re-runs ours once more after each fresh run, unchanged: the
second `make run` of a developer's loop, as a share of the fresh run. `--set` runs ours with other
settings (e.g. `--set training.model=gbdt`: another model family against the same stock run).

Logs and models live in a temporary directory, deleted at the end unless
`--keep`, and kept when a pipeline fails. Results also go to
`<out-dir>/stock_comparison.json`.
"""

import argparse
import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence, Tuple

from bench import results as bench_results
from cli import prologue
from contract.config import FeaturesConfig
from contract.serving import PREDICTION_KEY

TAXI = FeaturesConfig()  # the defaults: the bundled taxi data's roles and label rule
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT_DIR = os.path.join(REPO_ROOT, "bench", "results")
LOG_TAIL_LINES = 30
# Keras' BinaryAccuracy and TFMA count a prediction as positive above 0.5.
THRESHOLD = 0.5
RSS_SAMPLE_S = 0.2


class PipelineFailed(RuntimeError):
    """A pipeline exited non-zero or pushed no model; the message says where its log is."""

    def __init__(self, name: str, reason: str, log_path: str):
        super().__init__(f"{name} pipeline {reason}\n"
                         f"--- last {LOG_TAIL_LINES} lines of {log_path} ---\n{_tail(log_path)}")


@dataclasses.dataclass
class PipelineRun:
    wall_time_s: float
    pushed_model: str
    peak_rss_mb: float = float("nan")


@dataclasses.dataclass
class Score:
    auc: float
    accuracy: float


def _tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def _tree_rss(process) -> int:
    """Resident bytes of `process` and all its descendants (Beam workers, training subprocesses)."""
    import psutil

    total = 0
    for p in [process] + process.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            pass
    return total


def _timed_subprocess(command: Sequence[str], log_path: str) -> Tuple[int, float, float]:
    """Runs `command` with fd 1 and 2 in `log_path`; returns (exit status, wall seconds, peak RSS MB).

    Peak RSS is the largest sum over the process tree, sampled every RSS_SAMPLE_S (psutil).
    """
    import psutil

    started = time.monotonic()
    peak = 0
    with open(log_path, "wb") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        process = psutil.Process(child.pid)
        while child.poll() is None:
            peak = max(peak, _tree_rss(process))
            time.sleep(RSS_SAMPLE_S)
    return child.returncode, time.monotonic() - started, peak / 2**20


def run_stock_pipeline(work_dir: str) -> None:
    """Runs the wheel's taxi example as published, only with paths under `work_dir`.

    Called in a child process (see `stock_pipeline`); the example module reads
    $HOME and imports TFX at import time, so it is imported here, not at the top.
    """
    from absl import logging
    from tfx import v1 as tfx
    from tfx.examples.chicago_taxi_pipeline import taxi_pipeline_native_keras as stock

    example_dir = os.path.dirname(stock.__file__)
    logging.set_verbosity(logging.INFO)  # As the example's own __main__ does.
    tfx.orchestration.LocalDagRunner().run(stock._create_pipeline(
        pipeline_name=stock._pipeline_name,
        pipeline_root=os.path.join(work_dir, "pipeline_root"),
        data_root=os.path.join(example_dir, "data", "simple"),
        module_file=os.path.join(example_dir, "taxi_utils_native_keras.py"),
        serving_model_dir=os.path.join(work_dir, "serving"),
        metadata_path=os.path.join(work_dir, "metadata.sqlite"),
        beam_pipeline_args=["--direct_running_mode=in_memory"],
    ))


def stock_pipeline(work_dir: str) -> PipelineRun:
    log_path = os.path.join(work_dir, "stock.log")
    status, seconds, rss = _timed_subprocess([
        sys.executable, "-c",
        "import sys; from bench.stock_comparison import run_stock_pipeline; run_stock_pipeline(sys.argv[1])",
        work_dir,
    ], log_path)
    if status != 0:
        raise PipelineFailed("stock", f"exited with status {status}", log_path)
    # The stock Pusher writes `<serving_model_dir>/<unix time>/`; a fresh run writes one.
    pushed = glob.glob(os.path.join(work_dir, "serving", "[0-9]*"))
    if len(pushed) != 1:
        raise PipelineFailed("stock", f"pushed {len(pushed)} models instead of 1 (not blessed?)", log_path)
    return PipelineRun(seconds, pushed[0], rss)


def our_pipeline(work_dir: str, log_name: str = "ours.log", settings: Sequence[str] = ()) -> PipelineRun:
    """`make run` on `<work_dir>/ours` (fresh the first time); the runner prints where it pushed the model.

    Run again on the same directory (`log_name` ours-cached.log) it is the second `make run` with nothing
    changed; that run pushes nothing new, so its model is the one already serving.
    """
    log_path = os.path.join(work_dir, log_name)
    output_dir = os.path.join(work_dir, "ours")
    status, seconds, rss = _timed_subprocess(
        [sys.executable, "-m", "cli", "pipeline", "run", "--set", f"output_dir={output_dir}",
         *[arg for setting in settings for arg in ("--set", setting)]], log_path)
    if status != 0:
        raise PipelineFailed("our", f"exited with status {status}", log_path)
    with open(log_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    pushed = re.findall(r"^\s*pushed to: (.+)$", text, flags=re.MULTILINE)
    if not pushed and log_name == "ours.log":
        raise PipelineFailed("our", "pushed no model (not blessed?)", log_path)
    return PipelineRun(seconds, pushed[-1].strip() if pushed else "", rss)


def _first_float(example, key: str) -> float:
    """The feature's value; a missing one counts as 0, as both Transforms fill it."""
    feature = example.features.feature
    values = feature[key].float_list.value if key in feature else ()
    return values[0] if values else 0.0


def load_eval_set():
    """(serialized examples without the label column, labels) for the bundled eval split."""
    import numpy as np
    import tensorflow as tf
    import tfx

    pattern = os.path.join(os.path.dirname(tfx.__file__), "components", "testdata", "csv_example_gen",
                           "Split-eval", "*")
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no eval TFRecords match {pattern}")
    examples = [tf.train.Example.FromString(record.numpy())
                for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    # The stock example defines the label the same way (tips > 0.2 * fare, float32).
    labels = TAXI.label([_first_float(e, TAXI.label_column) for e in examples],
                        [_first_float(e, TAXI.label_relative_to) for e in examples])
    for example in examples:
        # Serving requests have no label; without it no signature can peek at the answer.
        del example.features.feature[TAXI.label_column]
    return [e.SerializeToString() for e in examples], np.asarray(labels)


def predict(model_dir: str, serialized: Sequence[bytes], batch_size: int = 1024):
    """P(big tipper) per example from the SavedModel's `serving_default` signature."""
    import numpy as np
    import tensorflow as tf

    from models.trainer import custom_ops

    model = custom_ops.load(model_dir)  # Keeps the signature's variables alive; a forest's ops registered.
    signature = model.signatures["serving_default"]
    # Ours answers "probabilities" (beside scores and classes), the stock one only "outputs".
    outputs = list(signature.structured_outputs)
    output = PREDICTION_KEY if PREDICTION_KEY in outputs else outputs[0]
    if output != PREDICTION_KEY and len(outputs) != 1:
        raise ValueError(f"{model_dir}: serving_default has outputs {outputs}, expected {PREDICTION_KEY} or one")
    batches = [signature(examples=tf.constant(serialized[i:i + batch_size]))[output].numpy().reshape(-1)
               for i in range(0, len(serialized), batch_size)]
    return np.concatenate(batches)


def score(labels, probabilities) -> Score:
    from sklearn.metrics import roc_auc_score

    return Score(auc=float(roc_auc_score(labels, probabilities)),
                 accuracy=float(((probabilities > THRESHOLD) == labels).mean()))


def build_report(repeats: List[Dict[str, PipelineRun]], scores: List[Dict[str, Score]], labels) -> Dict:
    """Every repeat, and min/median/max over them of wall time, AUC and peak RSS per pipeline."""
    report = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "eval_examples": int(len(labels)),
              "big_tipper_share": float(labels.mean()), "cpu_count": os.cpu_count(), "repeats": []}
    for runs, score_of in zip(repeats, scores):
        report["repeats"].append({name: {"wall_time_s": run.wall_time_s, "peak_rss_mb": run.peak_rss_mb,
                                         "auc": score_of[name].auc, "accuracy": score_of[name].accuracy,
                                         "pushed_model": run.pushed_model}
                                  for name, run in runs.items() if name in score_of})
        if "ours_cached" in runs:
            report["repeats"][-1]["ours_cached"] = {"wall_time_s": runs["ours_cached"].wall_time_s,
                                                    "peak_rss_mb": runs["ours_cached"].peak_rss_mb}
    for name in ("stock", "ours"):
        report[name] = {key: bench_results.spread([r[name][key] for r in report["repeats"]])
                        for key in ("wall_time_s", "auc", "peak_rss_mb")}
    ours, stock = report["ours"], report["stock"]
    report["wall_time_ratio_ours_over_stock"] = bench_results.spread(
        [r["ours"]["wall_time_s"] / r["stock"]["wall_time_s"] for r in report["repeats"]])
    report["peak_rss_ratio_ours_over_stock"] = ours["peak_rss_mb"]["median"] / stock["peak_rss_mb"]["median"]
    report["auc_ours_minus_stock"] = ours["auc"]["median"] - stock["auc"]["median"]
    cached = [r["ours_cached"]["wall_time_s"] / r["ours"]["wall_time_s"] for r in report["repeats"]
              if "ours_cached" in r]
    if cached:
        report["cached_over_fresh"] = bench_results.spread(cached)
    return report


def format_report(report: Dict) -> str:
    n = len(report["repeats"])
    lines = [f"Stock TFX taxi example vs this pipeline, {n} repeat(s), scored on {report['eval_examples']:,} eval "
             f"examples ({report['big_tipper_share']:.1%} big tippers)",
             f"  {'repeat':6s} {'pipeline':12s} {'wall time (s)':>13s} {'peak RSS MB':>11s} {'AUC':>7s} "
             f"{'accuracy':>8s}"]
    for i, repeat in enumerate(report["repeats"], 1):
        for name in ("stock", "ours", "ours_cached"):
            if name in repeat:
                r = repeat[name]
                quality = f"{r['auc']:7.4f} {r['accuracy']:8.4f}" if "auc" in r else f"{'-':>7s} {'-':>8s}"
                lines.append(f"  {i:<6d} {name:12s} {r['wall_time_s']:13.1f} {r['peak_rss_mb']:11.0f} {quality}")

    mmm = bench_results.format_spread
    lines.append("  min / median / max:")
    for name in ("stock", "ours"):
        r = report[name]
        lines.append(f"    {name:6s} wall {mmm(r['wall_time_s'], '.1f')} s; AUC {mmm(r['auc'], '.4f')} "
                     f"(spread {r['auc']['max'] - r['auc']['min']:.4f}); peak RSS {mmm(r['peak_rss_mb'], '.0f')} MB")
    lines.append(f"  wall time ours / stock: {mmm(report['wall_time_ratio_ours_over_stock'], '.2f')}x")
    lines.append(f"  peak RSS ours / stock (medians): {report['peak_rss_ratio_ours_over_stock']:.2f}x")
    lines.append(f"  AUC ours - stock (medians):      {report['auc_ours_minus_stock']:+.4f}")
    if "cached_over_fresh" in report:
        lines.append(f"  ours, unchanged re-run / fresh: {mmm(report['cached_over_fresh'], '.2f')}x")
    return "\n".join(lines)


def main(argv=None) -> int:
    prologue.prepare(tensorflow_log_level="2")
    parser = argparse.ArgumentParser(prog="python -m bench.stock_comparison",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="where stock_comparison.json goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary pipeline outputs and logs")
    parser.add_argument("--repeats", type=int, default=1, help="fresh runs of each pipeline (min/median/max)")
    parser.add_argument("--cached", action="store_true",
                        help="after each fresh run of ours, run it again unchanged (the second `make run`)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="settings of our runs, e.g. training.model=gbdt")
    args = parser.parse_args(argv)

    root = tempfile.mkdtemp(prefix="stock_comparison-")
    repeats: List[Dict[str, PipelineRun]] = []
    try:
        for i in range(args.repeats):
            work_dir = os.path.join(root, f"repeat-{i + 1}")
            os.makedirs(work_dir)
            runs: Dict[str, PipelineRun] = {}
            steps = [("stock", stock_pipeline), ("ours", lambda d: our_pipeline(d, settings=args.set))]
            if args.cached:
                steps.append(("ours_cached", lambda d: our_pipeline(d, "ours-cached.log", args.set)))
            # One after the other: side by side they would compete for the CPUs they are timed on.
            for name, run in steps:
                print(f"[{i + 1}/{args.repeats}] {name} (log: {work_dir}) ...", flush=True)
                runs[name] = run(work_dir)
                print(f"  done in {runs[name].wall_time_s:.1f}s, peak RSS {runs[name].peak_rss_mb:.0f} MB",
                      flush=True)
            repeats.append(runs)
    except PipelineFailed as failure:
        print(f"error: {failure}\nKept {root} for inspection.", file=sys.stderr)
        return 1
    work_dir = root

    serialized, labels = load_eval_set()
    scores = [{name: score(labels, predict(runs[name].pushed_model, serialized)) for name in ("stock", "ours")}
              for runs in repeats]
    report = build_report(repeats, scores, labels)
    report["settings"] = args.set
    json_path = bench_results.write(args.out_dir, "stock_comparison", report)
    print(format_report(report))
    print(f"Results: {json_path}")
    if args.keep:
        print(f"Pipeline outputs and logs kept in {work_dir}")
    else:
        shutil.rmtree(work_dir)
        print("Pipeline outputs and logs deleted (--keep keeps them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
