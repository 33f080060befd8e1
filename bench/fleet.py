"""One fleet cycle on this machine: full cycle wall time, per-tenant overhead, no-change cycle cost, MLMD growth.

    python -m bench.fleet [--tenants 20] [--full 2] [--repeats 3] [--out DIR]

Baseline, measured in the same run: one `tfx-edge pipeline run --config <tenant config>` run of the first
tenant's resolved settings in its own output directory (what a user runs by hand, without the fleet).
- full cycle: `fleet run` over the first `--full` tenants (demo settings: 60 train steps, tuner and edge off,
  400/200 examples per span), concurrency 1; per-tenant overhead = cycle / tenants - baseline.
- no-change cycle: `fleet run` again over those tenants (nothing new: every one skipped), and over all
  `--tenants` tenants after the others were recorded as run on their current data (the state a finished run
  leaves; only the skip check is timed, not their training); min/median/max over `--repeats`.
- MLMD growth: size of the shared metadata.sqlite before and after the full cycle, per run.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench import results as bench_results


def _timed(argv):
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    return time.perf_counter() - started, result


def _spread(values):
    return bench_results.format_spread(bench_results.spread(values), ".2f")


def main(argv=None) -> int:
    from cli import prologue

    prologue.prepare()
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--full", type=int, default=2, help="tenants that really train in the full cycle")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    from fleet import demo, triggers
    from fleet.config import load_fleet, write_model_config
    from fleet.state import State

    out = args.out or tempfile.mkdtemp(prefix="bench-fleet-")
    names = [f"t{i:02d}" for i in range(args.tenants)]
    path = demo.lay_out(out, names, spans=1)
    fleet = load_fleet(path)
    fleet_cli = [sys.executable, "-m", "cli", "fleet"]
    full = [m.name for m in fleet.models[:args.full]]
    print(f"bench.fleet: {args.tenants} tenants under {out}; {len(full)} train for real; machine: "
          f"{os.cpu_count()} cores")

    first = fleet.models[0]
    baseline_dir = os.path.join(out, "baseline")
    settings = dict(first.settings, output_dir=baseline_dir, pipeline_root=os.path.join(baseline_dir, "root"),
                    log_dir=os.path.join(baseline_dir, "logs"))
    first.settings = settings
    config_path = write_model_config(first, baseline_dir)
    baseline, result = _timed([sys.executable, "-m", "cli", "pipeline", "run", "--config", config_path])
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"baseline: one pipeline run without the fleet: {baseline:.1f}s")

    fleet = load_fleet(path)
    mlmd = fleet.models[0].config.metadata_path
    before = os.path.getsize(mlmd) if os.path.exists(mlmd) else 0
    only = [a for name in full for a in ("--only", name)]
    cycle, result = _timed(fleet_cli + ["run", "--fleet", path] + only)
    print(result.stdout.strip().splitlines()[-1])
    after = os.path.getsize(mlmd)
    per = cycle / len(full)
    print(f"full cycle ({len(full)} tenants, concurrency {fleet.concurrency}): {cycle:.1f}s = {per:.1f}s per "
          f"tenant; overhead vs baseline {per - baseline:+.1f}s per tenant ({per / baseline:.2f}x)")
    print(f"MLMD: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB: {(after - before) / len(full) / 1e6:.2f} MB per run")

    times = [_timed(fleet_cli + ["run", "--fleet", path] + only)[0] for _ in range(args.repeats)]
    print(f"no-change cycle, {len(full)} trained tenants: min/median/max {_spread(times)} s "
          f"= {statistics.median(times) / len(full):.2f} s per tenant (process start included)")
    state = State(fleet.state_path)
    for model in fleet.models[args.full:]:
        state.start_run(model.name, "recorded by bench", triggers.facts_dict(triggers.data_facts(model)), "")
    times = []
    for _ in range(args.repeats):
        elapsed, result = _timed(fleet_cli + ["run", "--fleet", path])
        assert "0 run(s)" in result.stdout, result.stdout
        times.append(elapsed)
    print(f"no-change cycle, {args.tenants} tenants: min/median/max {_spread(times)} s "
          f"= {statistics.median(times) / args.tenants:.3f} s per tenant (process start included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
