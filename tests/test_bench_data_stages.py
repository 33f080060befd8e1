"""`make bench-data`'s bookkeeping: which runs compare with which, and what its tables print.

The benchmark itself takes minutes and is run by hand; these checks keep its arithmetic honest.
"""

import argparse

import pytest

from bench import data_stages
from bench.data_stages import Run, compare, format_table


def _run(scale, mode, kind, stage_s, repeat=1, limit=None):
    examples = {"train": 10 * scale, "eval": 5 * scale}
    run = Run(scale=scale, mode=mode, workers=None if mode == "in_memory" else 2, examples=examples,
              log="run.log", pipeline=kind, stage_s=stage_s, repeat=repeat, limit_examples_per_s=limit,
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
    table = format_table(runs, {1: 0.1, 10: 1.0}, {1: [1000.0], 10: [1000.0]})
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
    table = format_table([whole], {1: 0.1}, {1: [1000.0]})
    assert "StatisticsGen + Transform, Beam" not in table and "Whole pipeline" in table


def test_repeats_compare_within_their_repeat_and_summarise_min_median_max():
    """Each repeat has its own limit and base run; the summary is over the repeats' own ratios."""
    def stages(scale, seconds, repeat, limit):
        return _run(scale, "in_memory", "stages", {"StatisticsGen": seconds / 4, "Transform": seconds * 3 / 4},
                    repeat=repeat, limit=limit)

    # 15 examples at 1x, 150 at 10x. Repeat 2 ran on a machine twice as slow, limit included.
    runs = [stages(1, 1.0, 1, 60.0), stages(10, 5.0, 1, 60.0),
            stages(1, 2.0, 2, 30.0), stages(10, 10.0, 2, 30.0),
            stages(1, 1.0, 3, 60.0), stages(10, 8.0, 3, 60.0)]
    compare(runs)

    # Compared with its own repeat's 1x run: 5/1, 10/2, 8/1 for 10x the examples.
    assert [r.time_vs_base for r in runs[1::2]] == pytest.approx([5.0, 5.0, 8.0])
    assert [r.per_example_vs_base for r in runs[1::2]] == pytest.approx([0.5, 0.5, 0.8])
    # 150 examples in 5 s = 30 ex/s against half of 60: 100 %; the slow repeat too, against its own limit.
    assert [r.of_limit for r in runs[1::2]] == pytest.approx([1.0, 1.0, 0.625])

    table = format_table(runs, {1: 0.1, 10: 1.0}, {1: [60.0, 30.0, 60.0], 10: [60.0, 30.0, 60.0]})
    assert "1x 30 / 60 / 60 ex/s" in table
    summary = table.split("Over the repeats (min / median / max)")[1]
    row_10x = next(line for line in summary.splitlines() if line.startswith("stages") and " 10x " in line)
    assert row_10x.split() == ["stages", "10x", "in_memory", "3", "5.0", "/", "8.0", "/", "10.0",
                               "62.5", "/", "100.0", "/", "100.0%", "0.50", "/", "0.50", "/", "0.80x"]


def test_a_single_run_prints_no_repeat_column_or_summary():
    runs = [_run(1, "in_memory", "stages", {"StatisticsGen": 1.0, "Transform": 3.0}, limit=30.0)]
    compare(runs)
    table = format_table(runs, {1: 0.1}, {1: [30.0]})
    assert "Over the repeats" not in table and " rep " not in table
    row = next(line for line in table.splitlines() if line.lstrip().startswith("1x"))
    assert "25.0%" in row.split()  # 15 examples in 4 s against half of 30 ex/s
