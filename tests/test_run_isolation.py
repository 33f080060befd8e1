"""Runs of one pipeline go one at a time, and each run reports its own truth.

Three real `tfx-edge pipeline run` processes on one output directory: the first runs; a second started
meanwhile (with other settings) is refused, naming the first's pid and start time; a third with `--wait`
waits, then runs and reports its own run id. The first run's candidate is over the serving check's latency
budget (a budget nothing meets), so it also shows the check refusing a push end to end: nothing in the
serving or edge directory, the reason in the summary and in the lineage.
"""

import os
import subprocess
import sys

import pytest

from contract.locks import EXIT_BUSY, RunLock
from tests.samples import small_config

pytestmark = pytest.mark.slow


def _command(config_path, *extra):
    return [sys.executable, "-m", "cli", "pipeline", "run", "--config", config_path, *extra]


def _read_until(process, prefix: str) -> str:
    """The process's output up to and including its first line starting with `prefix`."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return "".join(lines)
    raise AssertionError(f"no line starting with {prefix!r} in:\n{''.join(lines)}")


def _run_id(output: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.startswith("Run "))


def test_a_second_run_is_refused_a_waiting_one_reports_its_own_run_and_a_slow_model_is_never_pushed(
        tmp_path, small_sample):
    config = small_config(str(tmp_path / "out"), small_sample, "tuner.enabled=false",
                          "serving_check.p99_budget_ms=0.000001", "serving_check.requests=5")
    config_path = str(tmp_path / "config.yaml")
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(config.to_yaml())
    first = subprocess.Popen(_command(config_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first_start = _read_until(first, "Pipeline taxi: data")  # printed once the run holds its lock
        holder = RunLock(config.run_lock_path).busy()
        assert holder and holder["pid"] == first.pid and holder["log"].endswith(".log")

        second = subprocess.run(_command(config_path, "--set", "training.train_steps=80"), capture_output=True,
                                text=True, timeout=300)
        assert second.returncode == EXIT_BUSY, second.stdout + second.stderr
        assert (f"error: pipeline taxi is already running on {config.metadata_path}: pid {first.pid} on "
                in second.stdout), second.stdout
        assert "started " in second.stdout and "wait for it with `tfx-edge pipeline run --wait`" in second.stdout

        third = subprocess.Popen(_command(config_path, "--wait"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        waiting = _read_until(third, "waiting: ")
        assert f"waiting: pipeline taxi is already running (pid {first.pid} on " in waiting, waiting
        first_output = first_start + first.stdout.read()
        assert first.wait(timeout=1800) == 0, first_output
        third_output = waiting + third.stdout.read()
        assert third.wait(timeout=1800) == 0, third_output
    finally:
        for process in (first, locals().get("third")):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    # Each run printed its own run (the third re-used the first's cached work, as an unchanged re-run does).
    assert _run_id(first_output) != _run_id(third_output)
    assert third_output.index("waiting:") < third_output.index("Pipeline taxi: data")
    for output in (first_output, third_output):
        assert "  serving check: FAILED (p99 latency " in output, output
        assert "exceeds the budget of 1e-06 ms (serving_check.p99_budget_ms)" in output
        assert f"  not pushed: the serving check refused the model; serving directory {config.model_serving_dir}" \
               in output
        assert "  edge model not pushed: the serving check refused the model: p99 latency" in output
    report_lines = [line for line in (first_output + third_output).splitlines() if line.startswith("  report:")]
    assert len(set(report_lines)) == 2
    assert not os.path.exists(config.model_serving_dir) or os.listdir(config.model_serving_dir) == []
    assert not os.path.exists(os.path.join(config.edge.edge_dir, config.model_name))

    from pipeline.metadata import open_metadata
    from reports.lineage import format_lineage, lineage_of, run_artifact

    store = open_metadata(config.metadata_path)
    lineage = lineage_of(store, run_artifact(store, _run_id(first_output)).id, "run")
    check = lineage.artifact("serving check")
    assert check is not None and check.properties["blessed"] == 0
    assert "serving check" in format_lineage(lineage) and "REFUSED: p99 latency" in format_lineage(lineage)
