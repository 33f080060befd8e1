"""Faults during batch scoring (`tfx-edge serving score`): SIGKILL, SIGTERM and a full disk in the middle of a
real Beam job, then the same command again.

The job scores copies of the bundled unlabelled taxi split with a tiny real SavedModel pushed as version 1;
`--out` must hold either nothing or the whole result, and a re-run must publish the whole result.
"""

import glob
import os
import shutil
import signal

import pandas as pd
import pytest

from tests.chaos.conftest import slow_case
from tests.chaos.faults import CLI, fill, kill_group, run_until, small_disk
from tests.samples import tiny_saved_model

COPIES = 12  # of the 2,459-row unlabelled split: a job long enough to be caught in the middle


@pytest.fixture(scope="module")
def batch_input(taxi_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch_input")
    for copy in range(COPIES):
        for index, path in enumerate(sorted(glob.glob(os.path.join(taxi_root, "unlabelled", "*")))):
            shutil.copy(path, os.path.join(str(root), f"part-{copy:02d}-{index}.gz"))
    return str(root), COPIES * 2459


def _score_command(root, data, out):
    tiny_saved_model(os.path.join(root, "serving", "taxi", "1"))
    settings = [f"output_dir={root}", "beam.direct_running_mode=in_memory", "serving.batch_scoring_batch_size=256"]
    return CLI + ["serving", "score", "--input", data, "--out", out, "--format", "csv",
                  "--report-dir", os.path.join(root, "report")] + [a for s in settings for a in ("--set", s)]


def _staging(out):
    parent, name = os.path.split(out)
    return glob.glob(os.path.join(parent, f".{name}.incomplete-*"))


def _rows(out):
    return sum(len(pd.read_csv(path)) for path in glob.glob(os.path.join(out, "predictions*.csv")))


def _rerun(command, out, total):
    process, lines = run_until(command)
    process.wait()
    return process.returncode == 0 and _rows(out) == total and not _staging(out), lines.complete()


@pytest.mark.parametrize("how", [pytest.param("kill -9", marks=slow_case), "SIGTERM"])
def test_scoring_interrupted_in_the_middle(tmp_path, batch_input, chaos_row, how):
    data, total = batch_input
    out = str(tmp_path / "scored")
    command = _score_command(str(tmp_path), data, out)
    process, lines = run_until(command, appears=lambda: bool(_staging(out)))
    injected = process.poll() is None
    if how == "kill -9":
        kill_group(process)
    else:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    printed = lines.complete()
    published = os.path.exists(out)
    left = _staging(out)
    recovered, output = _rerun(command, out, total)
    note = (f"exit {process.returncode}; {'a staging dir was left, removed by the re-run' if left else 'nothing left'}")
    row = chaos_row(f"{how} while scoring a batch ({total:,} rows)", None, 0, int(published), injected and recovered,
                    note)
    assert injected and not published and row.recovered, output
    if how == "SIGTERM":
        assert process.returncode == 128 + signal.SIGTERM and not left
        assert f"score: stopped by SIGTERM; nothing was written to {out}" in printed


@slow_case
def test_disk_full_while_scoring(tmp_path, batch_input, chaos_row):
    data, total = batch_input
    with small_disk(str(tmp_path / "disk"), 40) as disk:
        out = os.path.join(disk, "scored")
        command = _score_command(str(tmp_path), data, out)
        process, lines = run_until(command, appears=lambda: bool(_staging(out)))
        injected = process.poll() is None
        filler = fill(disk)
        process.wait(timeout=600)
        output = lines.complete()
        failed_cleanly = (process.returncode == 1 and "No space left on device" in output
                          and not os.path.exists(out) and not _staging(out))
        os.remove(filler)
        recovered, rerun_output = _rerun(command, out, total)
    row = chaos_row(f"disk full while scoring a batch ({total:,} rows)", None, 0, int(os.path.exists(out) and not
                    recovered), injected and failed_cleanly and recovered, "one error line, staging removed")
    assert injected and failed_cleanly, output
    assert row.recovered, rerun_output
