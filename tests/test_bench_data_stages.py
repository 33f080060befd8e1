"""`make bench-data`'s bookkeeping: which runs compare with which, and what its tables print.

The benchmark itself takes minutes and is run by hand; these checks keep its arithmetic honest.
"""

import argparse

import pytest

from bench import data_stages
from bench.data_stages import Run, compare, format_table


def _run(scale, mode, kind, stage_s):
    examples = {"train": 10 * scale, "eval": 5 * scale}
    run = Run(scale=scale, mode=mode, workers=None if mode == "in_memory" else 2, examples=examples,
              log="run.log", pipeline=kind, stage_s=stage_s,
              statistics_gen_s=stage_s["StatisticsGen"], transform_s=stage_s["Transform"])
    run.examples_per_s = run.total_examples / run.total_s
    return run


def test_whole_pipeline_runs_compare_only_with_whole_pipeline_runs():
    stages_1 = _run(1, "in_memory", "stages", {"StatisticsGen": 2.0, "Transform": 8.0})
    stages_10 = _run(10, "in_memory", "stages", {"StatisticsGen": 4.0, "Transform": 16.0})
    whole = {"StatisticsGen": 2.0, "Transform": 8.0, "Tuner": 30.0, "Trainer": 20.0, "Evaluator": 10.0,
             "EdgeExport": 5.0, "Pusher": 1.0, "ImportExampleGen": 4.0}
    whole_1 = _run(1, "in_memory", "whole", whole)
    whole_10 = _run(10, "in_memory", "whole", {**whole, "Evaluator": 70.0})
    runs = [stages_1, whole_1, stages_10, whole_10]
    compare(runs)

    assert whole_1.total_s == 80.0 and whole_10.total_s == 140.0
    assert stages_10.time_vs_base == pytest.approx(2.0)
    assert whole_10.time_vs_base == pytest.approx(140.0 / 80.0)
    table = format_table(runs, {1: 0.1, 10: 1.0}, {1: 1000.0, 10: 1000.0})
    stage_rows, whole_part = table.split("Whole pipeline")
    assert "80.0" not in stage_rows  # the whole runs are not in the StatisticsGen + Transform table
    whole_10_row = next(line for line in whole_part.splitlines() if line.lstrip().startswith("10x"))
    # stats, transform, tuner, trainer, evaluator, edge, then everything else (ImportExampleGen + Pusher)
    assert whole_10_row.split()[3:] == ["2.0", "8.0", "30.0", "20.0", "70.0", "5.0", "5.0", "140.0", "1.75x"]


def test_unknown_pipeline_kind_is_refused_with_the_known_ones():
    with pytest.raises(argparse.ArgumentTypeError, match="stages,whole"):
        data_stages.pipelines("stages,everything")
    assert data_stages.pipelines("whole, stages") == ["whole", "stages"]


def test_a_whole_pipeline_only_run_prints_no_empty_stage_table():
    whole = _run(1, "in_memory", "whole", {"StatisticsGen": 2.0, "Transform": 8.0, "Tuner": 3.0})
    compare([whole])
    table = format_table([whole], {1: 0.1}, {1: 1000.0})
    assert "StatisticsGen + Transform, Beam" not in table and "Whole pipeline" in table
