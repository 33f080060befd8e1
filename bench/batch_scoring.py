"""Batch scoring throughput: `tfx-edge serving score` on Beam vs a naive loop and the in-process limit.

    python -m bench.batch_scoring [--scales 1,10,100] [--modes in_memory,multi_processing] [--workers 2]
                                  [--repeats 1] [--naive-examples 2000] [--out-dir bench/results]
                                  [--config FILE] [--set KEY=VALUE ...]

Why: batch scoring is judged by examples per second on a large file, and by cost
that grows linearly with the input. The figures only mean something next to
baselines measured in the same run on the same machine:

- naive: a Python loop calling the SavedModel's `serving_default` one example at
  a time (what a hand-written scoring script does), on the first
  `--naive-examples` examples;
- limit: the same signature called in-process on batches of 1,024 read with
  tf.data: no Beam, no validation, no output, so no job can beat it.

How: for each scale N the bundled train + eval splits (15,000 examples) are
written N times with jitter by `bench/data_stages.py`'s generator (100x =
1.5 M examples; writing is timed apart and never counted). Each `score` run is
a fresh `tfx-edge serving score` process (cold start, as a user runs it) with
the newest pushed model (`make run` first), Parquet output, and the Beam mode
under test. Its own timings (`_SCORING.json`) split the job into the check
(preflight + TFDV statistics + the gate's verdict) and the scoring pass
(RunInference + Parquet). `ex/s` is examples / total seconds; `score ex/s`
counts the scoring pass alone; `vs limit` divides by the limit's ex/s at the
same scale; `time vs 1x` is the total over the same mode's total at the
smallest scale (10 at 10x the data = linear). Each cell is min/median/max over
`--repeats`; the machine may be shared.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from bench import results as bench_results
from bench.data_stages import build_dataset, child_env, modes, positive_ints
from cli import prologue

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT_DIR = os.path.join(REPO_ROOT, "bench", "results")
LIMIT_BATCH = 1024


def _files(data_dir: str) -> List[str]:
    return sorted(os.path.join(root, name) for root, _, names in os.walk(data_dir) for name in names)


def _signature(config):
    import tensorflow as tf

    from contract.serving import SERVING_SIGNATURE
    from batch.models import resolve_model

    choice = resolve_model("latest", config)
    return tf.saved_model.load(choice.path).signatures[SERVING_SIGNATURE], choice


def limit_rate(signature, files: Sequence[str]) -> float:
    """Examples/s of the signature on tf.data batches of 1,024, reading included."""
    import tensorflow as tf

    started, count = time.monotonic(), 0
    for batch in tf.data.TFRecordDataset(list(files), compression_type="GZIP").batch(LIMIT_BATCH):
        signature(examples=batch)
        count += int(batch.shape[0])
    return count / (time.monotonic() - started)


def naive_rate(signature, files: Sequence[str], examples: int) -> float:
    """Examples/s of one `serving_default` call per example."""
    import tensorflow as tf

    records = [r.numpy() for r in tf.data.TFRecordDataset(list(files), compression_type="GZIP").take(examples)]
    started = time.monotonic()
    for record in records:
        signature(examples=tf.constant([record]))
    return len(records) / (time.monotonic() - started)


def run_score(data_dir: str, out: str, mode: str, workers: int, config_args: Sequence[str], log: str) -> Dict:
    command = [sys.executable, "-m", "cli", "serving", "score", "--input", data_dir, "--out", out, "--overwrite",
               *config_args, f"--set=beam.direct_running_mode={mode}", f"--set=beam.direct_num_workers={workers}",
               f"--report-dir={out}-report"]
    with open(log, "w", encoding="utf-8") as f:
        status = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=child_env(), cwd=REPO_ROOT)
    if status.returncode != 0:
        raise RuntimeError(f"score failed (exit {status.returncode}); log: {log}")
    with open(os.path.join(out, "_SCORING.json"), encoding="utf-8") as f:
        return json.load(f)


def format_table(rows: List[Dict]) -> str:
    header = (f"{'run':28s} {'examples':>10s} {'check s':>8s} {'score s':>8s} {'total s (min/med/max)':>23s} "
              f"{'ex/s':>8s} {'score ex/s':>10s} {'vs limit':>8s} {'time vs 1x':>10s}")
    lines = [header, "-" * len(header)]
    for r in rows:
        if r["kind"] != "score":
            lines.append(f"{r['name']:28s} {r['examples']:>10,d} {'':>8s} {'':>8s} {'':>23s} "
                         f"{r['rate']:>8,.0f} {'':>10s} {r.get('vs_limit', 1.0):>8.2f} {'':>10s}")
            continue
        t = r["total_s"]
        spread = f"{t['min']:.1f}/{t['median']:.1f}/{t['max']:.1f}"
        lines.append(f"{r['name']:28s} {r['examples']:>10,d} {r['check_s']:>8.1f} {r['score_s']:>8.1f} "
                     f"{spread:>23s} {r['rate']:>8,.0f} {r['score_rate']:>10,.0f} {r['vs_limit']:>8.2f} "
                     f"{r['vs_first']:>10.1f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_scoring", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=positive_ints, default=[1, 10, 100],
                        help="copies of the bundled data, comma-separated (default 1,10,100; 100x = 1.5 M)")
    parser.add_argument("--modes", type=modes, default=["in_memory", "multi_processing"])
    parser.add_argument("--workers", type=int, default=2, help="beam.direct_num_workers for multi_processing")
    parser.add_argument("--repeats", type=int, default=1, help="score runs per cell (min/median/max)")
    parser.add_argument("--naive-examples", type=int, default=2000)
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="where batch_scoring.json goes")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and the outputs")
    parser.add_argument("--config", help="pipeline config whose newest pushed model is scored")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    prologue.prepare()
    from contract.config import load_config

    config = load_config(args.config, args.set)
    config_args = ([f"--config={args.config}"] if args.config else []) + [f"--set={s}" for s in args.set]
    signature, choice = _signature(config)
    print(f"Model: {choice.path}", flush=True)
    work_root = tempfile.mkdtemp(prefix="batch_scoring-")
    started = time.monotonic()
    rows: List[Dict] = []
    generation_s: Dict[str, float] = {}
    first_total: Dict[str, float] = {}
    for scale in args.scales:
        data_dir = os.path.join(work_root, f"data-{scale}x")
        t0 = time.monotonic()
        examples = sum(build_dataset(data_dir, scale).values())
        generation_s[str(scale)] = time.monotonic() - t0
        files = _files(data_dir)
        print(f"{scale}x: wrote {examples:,} examples in {generation_s[str(scale)]:.1f}s", flush=True)
        limit = limit_rate(signature, files)
        rows.append({"kind": "limit", "name": f"{scale}x limit (in-process)", "examples": examples, "rate": limit})
        if scale == args.scales[0]:
            naive = naive_rate(signature, files, args.naive_examples)
            rows.append({"kind": "naive", "name": f"{scale}x naive loop", "examples": args.naive_examples,
                         "rate": naive, "vs_limit": naive / limit})
        for mode in args.modes:
            name = f"{scale}x score {mode}" + (f"/{args.workers}" if mode != "in_memory" else "")
            results = []
            for repeat in range(args.repeats):
                out = os.path.join(work_root, f"out-{scale}x-{mode}")
                log = os.path.join(work_root, f"{scale}x-{mode}-{repeat}.log")
                print(f"  {name} (log {log}) ...", flush=True)
                results.append(run_score(data_dir, out, mode, args.workers, config_args, log))
            totals = [r["seconds"]["total"] for r in results]
            median = statistics.median(totals)
            first_total.setdefault(mode, median)
            best = results[totals.index(min(totals))]
            rows.append({"kind": "score", "name": name, "examples": best["examples"],
                         "total_s": bench_results.spread(totals),
                         "check_s": best["seconds"]["preflight"] + best["seconds"]["check"],
                         "score_s": best["seconds"]["score"], "rate": best["examples"] / median,
                         "score_rate": best["examples"] / best["seconds"]["score"],
                         "vs_limit": (best["examples"] / median) / limit, "vs_first": median / first_total[mode]})
            print(f"    total {median:.1f}s, {best['examples'] / median:,.0f} ex/s", flush=True)
        if not args.keep:
            shutil.rmtree(data_dir)
    wall_s = time.monotonic() - started
    report = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu_count": os.cpu_count(),
              "command": "python -m bench.batch_scoring " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": choice.path, "benchmark_wall_s": wall_s, "data_generation_s": generation_s, "rows": rows}
    json_path = bench_results.write(args.out_dir, "batch_scoring", report)
    print(format_table(rows))
    print(f"Benchmark wall time: {wall_s:.0f}s; results: {json_path}")
    if not args.keep:
        shutil.rmtree(work_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
