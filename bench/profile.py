"""Where a `make run` spends its time: per component, split into start-up, Beam, tracing and fitting.

    python -m bench.profile [--out-dir DIR] [--cached] [--keep] [--set section.key=value ...]

Runs the pipeline once from scratch (fresh outputs, bundled taxi data unless
`--set data.input_base=...`) in this process, with a cProfile profiler around
each component's launch (TFX's portable `Launcher.launch`: driver, executor,
publisher). `--cached` runs it a second time on the same outputs, as a second
`make run` with nothing changed would.

Columns, from each component's profile (cumulative seconds):
- `launch`: the component's whole launch, wall time with the profiler on;
- `start-up`: the launch outside the executor (input resolution, MLMD,
  cache lookup, module wheel install);
- `beam build`: `beam.Pipeline.apply` (building the Beam graph);
- `data passes`: `beam.Pipeline.run` (running it: reading, analysing, writing);
- `keras fit`: `Model.fit` (training, the Tuner's trials included);
- `tracing`: `func_graph_from_py_func` (tf.function / tf.data tracing), wherever
  it happens, so it overlaps the columns before it;
- `other`: executor time in none of build, passes or fit (model export,
  TFMA/TFLite set-up, Python glue).
cProfile sees the Python thread that launches the component; C++ work (TF
kernels, TFRecord I/O) counts towards the Python call waiting for it, and the
profiler slows Python-heavy code (the Beam DirectRunner) by some percent, so
compare columns, not the totals with an unprofiled run. Each component's top
functions (by cumulative time) are appended to the run log.
"""

import argparse
import contextlib
import cProfile
import glob
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from typing import Dict, List

from bench import results as bench_results
from cli import prologue

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT_DIR = os.path.join(REPO_ROOT, "bench", "results")
# (column, file suffix, function name) whose cumulative time makes the column.
STAGES = [
    ("beam build", "apache_beam/pipeline.py", "apply"),
    ("data passes", "apache_beam/pipeline.py", "run"),
    ("keras fit", "tf_keras/src/engine/training.py", "fit"),
    ("tracing", "tensorflow/python/framework/func_graph.py", "func_graph_from_py_func"),
]
EXECUTOR = ("tfx/orchestration/portable/launcher.py", "_run_executor")
TOP_FUNCTIONS = 25


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    return sum(entry[3] for (path, _, function), entry in stats.stats.items()
               if function == name and path.endswith(suffix))


def split(profile: cProfile.Profile, launch_s: float) -> Dict[str, float]:
    """One component's row: the launch split into the columns of the module docstring."""
    stats = pstats.Stats(profile)
    row = {"launch": launch_s}
    executor = _cumulative(stats, *EXECUTOR)
    row["start-up"] = max(launch_s - executor, 0.0)
    for column, suffix, name in STAGES:
        row[column] = _cumulative(stats, suffix, name)
    row["other"] = max(executor - row["beam build"] - row["data passes"] - row["keras fit"], 0.0)
    return row


def top_functions(profile: cProfile.Profile) -> str:
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(TOP_FUNCTIONS)
    return text.getvalue()


@contextlib.contextmanager
def profiled_launches(rows: Dict[str, Dict[str, float]], summaries: Dict[str, str]):
    """Profiles every component launch of the pipelines run inside the block."""
    from tfx.orchestration.portable import launcher

    original = launcher.Launcher.launch

    def launch(self):
        node = self._pipeline_node.node_info.id
        profile, started = cProfile.Profile(), time.perf_counter()
        profile.enable()
        try:
            return original(self)
        finally:
            profile.disable()
            rows[node] = split(profile, time.perf_counter() - started)
            summaries[node] = top_functions(profile)

    launcher.Launcher.launch = launch
    try:
        yield
    finally:
        launcher.Launcher.launch = original


COLUMNS = ["launch", "start-up", "beam build", "data passes", "keras fit", "tracing", "other"]


def format_table(rows: Dict[str, Dict[str, float]], wall_s: float, process_s: float) -> str:
    lines = [f"{'component':30s}" + "".join(f"{c:>12s}" for c in COLUMNS)]
    for node, row in rows.items():
        lines.append(f"{node:30s}" + "".join(f"{row[c]:12.1f}" for c in COLUMNS))
    total = {c: sum(r[c] for r in rows.values()) for c in COLUMNS}
    lines.append(f"{'all components':30s}" + "".join(f"{total[c]:12.1f}" for c in COLUMNS))
    lines.append(f"run wall time {wall_s:.1f}s; outside the components (preflight, imports, pipeline "
                 f"compile, summary, report) {wall_s - total['launch']:.1f}s; process start-up (imports "
                 f"before the run) {process_s:.1f}s")
    return "\n".join(lines)


def profile_run(config, label: str, process_s: float, out) -> Dict:
    from runners import local

    rows: Dict[str, Dict[str, float]] = {}
    summaries: Dict[str, str] = {}
    before = set(glob.glob(os.path.join(config.log_dir, "run-*.log")))
    started = time.perf_counter()
    with profiled_launches(rows, summaries):
        status = local.run(config, out=io.StringIO())
    wall_s = time.perf_counter() - started
    logs = sorted(set(glob.glob(os.path.join(config.log_dir, "run-*.log"))) - before)
    if logs:
        with open(logs[-1], "a", encoding="utf-8") as log:
            for node, text in summaries.items():
                log.write(f"\n==== cProfile: {node} (top {TOP_FUNCTIONS} by cumulative time) ====\n{text}")
    table = format_table(rows, wall_s, process_s)
    out.write(f"\n{label} run (exit status {status}), cProfile summaries in {logs[-1] if logs else '?'}\n{table}\n")
    return {"label": label, "status": status, "wall_s": round(wall_s, 2), "log": logs[-1] if logs else "",
            "components": {n: {c: round(v, 2) for c, v in r.items()} for n, r in rows.items()}}


@prologue.command
def main(argv: List[str] = None) -> int:
    process_started = time.perf_counter()
    prologue.prepare(tensorflow_log_level="2")
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    prologue.add_settings_arguments(parser)
    parser.add_argument("--cached", action="store_true", help="profile a second, unchanged run too")
    parser.add_argument("--keep", action="store_true", help="keep the pipeline outputs and logs")
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="where profile.json goes")
    args = parser.parse_args(argv)
    work_dir = tempfile.mkdtemp(prefix="profile-")
    args.set = [f"output_dir={work_dir}"] + list(args.set or [])
    config = prologue.load_settings(args)
    import tfx.v1  # noqa: F401  (imported before the clock: the start-up column is the process's own)

    process_s = time.perf_counter() - process_started
    results = [profile_run(config, "fresh", process_s, sys.stdout)]
    if args.cached and results[0]["status"] == 0:
        results.append(profile_run(config, "cached (nothing changed)", 0.0, sys.stdout))
    path = bench_results.write(args.out_dir, "profile",
                               {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": results})
    print(f"\nResults: {path}")
    if args.keep or any(r["status"] for r in results):
        print(f"Outputs and logs kept in {work_dir}")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    return max(r["status"] for r in results)


if __name__ == "__main__":
    sys.exit(main())
