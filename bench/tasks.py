"""Per task type: SavedModel vs float vs int8 TFLite quality, int8/float size, edge latency per raw example.

    python -m bench.tasks [--out DIR] [--datasets penguin,screening,baskets] [--rounds N] [--set k=v ...]
    make bench-tasks

Three datasets this project was not written for (the same as tests/test_tasks.py):
- penguin: the Palmer penguins the tfx wheel ships, multiclass (species 0/1/2), 4 float columns;
- screening: the issue's binary dataset, 30 float columns, a string column, an int64 0/1 label;
- baskets: regression (basket value), optional columns, an integer category.
For each: `tfx-edge schema init` writes the config, the pipeline runs it as written (plus any
--set), then `bench.edge_latency.measure` scores the pushed SavedModel and both TFLite files on
the raw eval split and times each per example, preprocessing included, the SavedModel being the
baseline measured in the same run. Latencies: min/median/max over --rounds rounds.
Results: bench/results/tasks.json; each run's terminal output in <work dir>/<dataset>/run.txt.
"""

import argparse
import contextlib
import glob
import io
import os
import tempfile
import time

from bench import results as bench_results
from cli import prologue

DATASETS = {"penguin": "species", "screening": "diagnosis", "baskets": "basket_value"}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "tasks.json")


def _data(name: str, root: str) -> str:
    from tests.datasets import penguin_root, write_baskets, write_screening

    if name == "penguin":
        return penguin_root()
    return (write_screening if name == "screening" else write_baskets)(os.path.join(root, "data", name))


def _eval_records(config) -> list:
    """The raw eval split ImportExampleGen wrote (a hash split's eval rows too)."""
    import tensorflow as tf

    from pipeline.metadata import open_metadata
    from reports.summary import read_run

    summary = read_run(open_metadata(config.metadata_path), config.pipeline_name)
    examples = summary.component("ImportExampleGen").outputs["examples"][0]
    files = sorted(glob.glob(os.path.join(examples, "Split-eval", "*")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")], summary


def run_one(name: str, root: str, overrides, rounds: int, repeat: int) -> dict:
    from bench.edge_latency import measure
    from contract.config import load_config
    from cli import schema as schema_cli
    from runners import local

    out = os.path.join(root, name)
    with contextlib.redirect_stdout(io.StringIO()):
        assert schema_cli.main(["init", "--data-root", _data(name, root), "--label", DATASETS[name], "--out", out]) == 0
    config = load_config(os.path.join(out, "config.yaml"), overrides)
    started = time.time()
    printed = io.StringIO()
    status = local.run(config, out=printed)
    with open(os.path.join(out, "run.txt"), "w", encoding="utf-8") as f:
        f.write(printed.getvalue())
    if status != 0:
        raise SystemExit(f"{name}: the pipeline failed (status {status}):\n{printed.getvalue()}")
    serialized, summary = _eval_records(config)
    if not summary.edge.get("version_dir"):
        raise SystemExit(f"{name}: no edge model was exported: {summary.edge.get('reason')}")
    result = measure(summary.edge["version_dir"], serialized, config.features, repeat, rounds)
    result.update(dataset=name, pipeline_seconds=round(time.time() - started, 1),
                  edge_pushed=bool(summary.edge.get("pushed")), gate=summary.edge.get("gate"))
    return result


def table(results) -> str:
    from contract import tasks

    lines = [f"{'dataset':10s} {'task':10s} {'eval':>5s} {'metric':8s} {'SavedModel':>10s} {'float':>8s} {'int8':>8s}"
             f"   int8/float: {'file':>5s} {'no metadata':>11s} {'weights':>7s}"]
    for r in results:
        key, label = tasks.task(r["task"]).headline.key, tasks.task(r["task"]).headline.label
        q, sizes, bare, weights = r["quality"], r["sizes"], r["sizes_without_metadata"], r["weights"]
        lines.append(f"{r['dataset']:10s} {r['task']:10s} {r['examples']:5d} {label:8s} {q['SavedModel'][key]:10.4f} "
                     f"{q['float'][key]:8.4f} {q['int8'][key]:8.4f}   {'':11s} {sizes['int8'] / sizes['float']:4.2f}x "
                     f"{bare['int8'] / bare['float']:10.2f}x {weights['int8'] / weights['float']:6.2f}x")
    lines += ["", "latency per raw example (preprocessing included), us: min / median / max over rounds"]
    lines.append(f"{'dataset':10s} {'SavedModel':>24s} {'edge float TFLite':>24s} {'edge int8 TFLite':>24s}"
                 "   int8 vs SavedModel (median)")
    for r in results:
        s = r["seconds"]

        def cell(name):
            return f"{s[name]['min'] * 1e6:6.1f} / {s[name]['median'] * 1e6:6.1f} / {s[name]['max'] * 1e6:6.1f}"

        lines.append(f"{r['dataset']:10s} {cell('SavedModel'):>24s} {cell('float'):>24s} {cell('int8'):>24s}"
                     f"   {s['SavedModel']['median'] / s['int8']['median']:5.1f}x faster")
    return "\n".join(lines)


def main(argv=None) -> int:
    prologue.prepare(tensorflow_log_level="2")
    parser = argparse.ArgumentParser(prog="python -m bench.tasks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="", help="work directory (default: a new temporary one, kept)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds (min/median/max over them)")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the eval split per round")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra settings for every run, e.g. tuner.enabled=false")
    args = parser.parse_args(argv)
    root = args.out or tempfile.mkdtemp(prefix="bench_tasks_")
    results = []
    for name in args.datasets.split(","):
        print(f"{name}: init, pipeline run, measure ...", flush=True)
        results.append(run_one(name, root, args.set, args.rounds, args.repeat))
        print(f"  done (pipeline {results[-1]['pipeline_seconds']}s)", flush=True)
    print(table(results))
    bench_results.write(os.path.dirname(RESULTS), "tasks",
                        {"settings": args.set, "work_dir": root, "results": results})
    print(f"Results: {RESULTS} (runs under {root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
