"""Training strategies side by side: default vs mirrored (2 replicas) vs parameter server (1 ps + 2 workers).

    python -m bench.strategies [--steps 1000] [--out-dir DIR] [--keep]

How: one pipeline output directory on the bundled taxi data (Tuner off,
checkpoints off). The default run executes every component; the mirrored and
parameter-server runs change only `training.strategy`, so Transform and the
data stages come from cache and only Trainer, Evaluator and Pusher re-run on
the same transformed data for the same number of steps.

Columns: `examples/s` is examples consumed by training steps per second of
training-step time (models/strategies.py measures it, validation excluded);
`Trainer s` is the Trainer component's wall time, start-up and export
included (a child process for mirrored on CPU, a cluster of 3 more processes
for parameter_server); `eval AUC` is the Evaluator's AUC on the eval split.
Ratios are against the default strategy measured in the same run.

Reading it: on one multi-core CPU, mirrored replicas share the same cores
and parameter servers add gRPC round trips, so neither is expected to beat
the default here; they exist for several GPUs and several machines. Mirrored
replicas consume `replicas` x the batch per step, so at equal steps they see
more examples. Asynchronous parameter-server steps run on two workers at once.
Results also go to `<out-dir>/strategies.json`.
"""

import argparse
import io
import os
import re
import shutil
import tempfile
from typing import Dict

from bench import results as bench_results
from cli import prologue

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT_DIR = os.path.join(REPO_ROOT, "bench", "results")
STRATEGIES = ("default", "mirrored", "parameter_server")
_TRAINER_DONE = re.compile(r"\]\s+Trainer\s+done\s+([\d.]+)s")


def run_strategy(work_dir: str, strategy: str, steps: int) -> Dict:
    from contract.config import load_config
    from pipeline.metadata import open_metadata
    from reports.summary import read_run
    from runners import local

    config = load_config(None, [
        f"output_dir={work_dir}", "tuner.enabled=false", f"training.train_steps={steps}",
        "training.checkpoint_every_steps=0", f"training.strategy={strategy}",
        # Blessing is not what is measured; every candidate is evaluated either way.
        "evaluator.min_auc=0", "evaluator.min_binary_accuracy=0", "evaluator.max_auc_drop=1"])
    out = io.StringIO()
    if local.run(config, out=out) != 0:
        raise RuntimeError(f"the {strategy} run failed:\n{out.getvalue()}")
    summary = read_run(open_metadata(config.metadata_path), config.pipeline_name)
    trainer_seconds = float(_TRAINER_DONE.search(out.getvalue()).group(1))
    auc = next(v for k, v in summary.candidate_metrics.items() if k.lower() == "auc")
    facts = summary.training
    return {"strategy": strategy, "replicas": facts["replicas"], "global_batch": facts["global_batch"],
            "steps": facts["train_steps"], "examples_per_second": facts["examples_per_second"],
            "trainer_seconds": trainer_seconds, "eval_auc": auc,
            "cluster": [f"{t['job']}:{t['index']}" for t in facts.get("cluster", [])]}


def format_table(rows) -> str:
    base = rows[0]
    lines = [f"{'strategy':18s} {'replicas':>8s} {'batch':>6s} {'steps':>6s} {'examples/s':>11s} {'x default':>9s} "
             f"{'Trainer s':>9s} {'x default':>9s} {'eval AUC':>8s} {'- default':>9s}"]
    for row in rows:
        lines.append(
            f"{row['strategy']:18s} {row['replicas']:8d} {row['global_batch']:6d} {row['steps']:6d} "
            f"{row['examples_per_second']:11.1f} {row['examples_per_second'] / base['examples_per_second']:9.2f} "
            f"{row['trainer_seconds']:9.1f} {row['trainer_seconds'] / base['trainer_seconds']:9.2f} "
            f"{row['eval_auc']:8.4f} {row['eval_auc'] - base['eval_auc']:+9.4f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    prologue.prepare(tensorflow_log_level="2")
    parser = argparse.ArgumentParser(prog="python -m bench.strategies", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps for every strategy")
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR)
    parser.add_argument("--keep", action="store_true", help="keep the pipeline outputs (logs, models)")
    args = parser.parse_args(argv)
    work_dir = tempfile.mkdtemp(prefix="bench-strategies-")
    rows = []
    for strategy in STRATEGIES:
        print(f"training with {strategy} ...", flush=True)
        rows.append(run_strategy(work_dir, strategy, args.steps))
    print(format_table(rows))
    bench_results.write(args.out_dir, "strategies", rows)
    if args.keep:
        print(f"outputs kept in {work_dir}")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
