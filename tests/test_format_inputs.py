"""Bad Parquet and CSV input is named before any component runs: one line, exit status 2, nothing trained or pushed.

Each test breaks one thing in a small date-partitioned lake that `init` set up, and runs the real runner.
"""

import contextlib
import io
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli import schema as schema_cli
from contract.config import load_config
from runners import local

DATES = ("2024-03-01", "2024-03-02")


def _rows(count: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=count)
    return {"x": x.astype(np.float32), "n": rng.integers(0, 50, count), "c": rng.choice(["a", "b", "c"], count),
            "y": (x + rng.normal(scale=0.5, size=count) > 0).astype(np.int64)}


def _write(root, data_format: str, date: str, split: str, columns, name: str = "part-0"):
    path = os.path.join(str(root), f"date={date}", split, f"{name}.{data_format}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if data_format == "parquet":
        pq.write_table(pa.table(columns), path)
    else:
        names = list(columns)
        with open(path, "w", encoding="utf-8") as f:
            f.write(",".join(names) + "\n")
            for i in range(len(columns[names[0]])):
                f.write(",".join(repr(float(columns[c][i])) if columns[c].dtype.kind == "f" else str(columns[c][i])
                                 for c in names) + "\n")
    return path


def _lake(root, data_format: str):
    for i, date in enumerate(DATES):
        _write(root, data_format, date, "train", _rows(120, i))
        _write(root, data_format, date, "eval", _rows(40, 10 + i))
    return str(root)


def _initialise(tmp_path_factory, data_format: str):
    """A good lake of the format and the config.yaml `init` wrote for it."""
    root = tmp_path_factory.mktemp(f"lake-{data_format}")
    lake = _lake(root / "data", data_format)
    with contextlib.redirect_stdout(io.StringIO()):
        assert schema_cli.main(["init", "--data-root", lake, "--label", "y", "--out", str(root / "model")]) == 0
    return data_format, lake, str(root / "model" / "config.yaml")


@pytest.fixture(scope="module", params=["parquet", "csv"])
def initialised(request, tmp_path_factory):
    return _initialise(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def parquet_lake(tmp_path_factory):
    return _initialise(tmp_path_factory, "parquet")


def _run_broken(initialised, tmp_path, *overrides, problems: int = 1):
    """The runner on a copy of the lake (broken by the caller first): its one printed line per problem (the last)."""
    _, lake, config_path = initialised
    config = load_config(config_path, [f"data.input_base={lake}", f"output_dir={tmp_path / 'out'}", *overrides])
    out = io.StringIO()
    assert local.run(config, out=out) == 2, out.getvalue()
    printed = out.getvalue().splitlines()
    assert len(printed) == problems and all(line.startswith("error: ") for line in printed), printed
    assert not os.path.exists(config.serving_dir) and not os.path.exists(config.metadata_path)
    return printed[-1][len("error: "):]


@pytest.fixture
def lake_copy(initialised, tmp_path):
    data_format, lake, config_path = initialised
    copy = str(tmp_path / "lake")
    shutil.copytree(lake, copy)
    return data_format, copy, config_path


def test_the_good_lake_passes_the_preflight(initialised, tmp_path):
    from pipeline import inputs

    _, lake, config_path = initialised
    config = load_config(config_path, [f"output_dir={tmp_path}"])
    assert config.data.span_window == 2
    assert inputs.check_inputs(config) == {"train": 2, "eval": 2}


def test_a_corrupt_file_is_named(lake_copy, tmp_path):
    data_format, lake, _ = lake_copy
    path = os.path.join(lake, f"date={DATES[0]}", "train", f"part-0.{data_format}")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2] if data_format == "parquet" else b'x,n,c,y\n1.0,"2,a,1\n')
    message = _run_broken(lake_copy, tmp_path)
    expected = "not a readable Parquet file" if data_format == "parquet" else "not readable as CSV"
    assert message.startswith(f"{path}: {expected}"), message


def test_a_file_missing_a_column_is_named(lake_copy, tmp_path):
    data_format, lake, _ = lake_copy
    columns = _rows(120, 0)
    del columns["n"]
    path = _write(lake, data_format, DATES[0], "train", columns)
    message = _run_broken(lake_copy, tmp_path)
    assert message.startswith(f"{path}: has no column 'n' (its {'Parquet' if data_format == 'parquet' else 'CSV'} "
                              "file columns lack it"), message
    assert "has and the model reads; re-export the file with every column" in message


def test_a_column_whose_type_changes_between_files_is_named(lake_copy, tmp_path):
    data_format, lake, _ = lake_copy
    columns = _rows(120, 0)
    columns["x"] = np.round(columns["x"] * 10).astype(np.int64)  # whole numbers: integers in this file
    path = _write(lake, data_format, DATES[0], "train", columns)
    other = os.path.join(lake, f"date={DATES[1]}", "train", f"part-0.{data_format}")
    message = _run_broken(lake_copy, tmp_path)
    assert f"column 'x' has float values in {other} but int values in {path}" in message or \
        f"column 'x' has int values in {path} but float values in {other}" in message, message
    assert "a column needs one type in every file" in message
    if data_format == "csv":
        assert "write floats with a decimal point (1.0) in every file" in message


def test_a_decimal_column_is_refused_by_name(parquet_lake, tmp_path):
    data_format, lake, config_path = parquet_lake
    copy = str(tmp_path / "lake")
    shutil.copytree(lake, copy)
    columns = _rows(120, 0)
    table = pa.table(columns).append_column("price", pa.array([None] * 120, pa.decimal128(10, 2)))
    path = os.path.join(copy, f"date={DATES[0]}", "train", "part-0.parquet")
    pq.write_table(table, path)
    message = _run_broken((data_format, copy, config_path), tmp_path)
    assert message == (f"{path}: column 'price' is decimal128(10, 2), which tf.Example cannot hold: write it as "
                       "float64 (or as an integer of the smallest unit, e.g. cents) upstream")


def test_a_list_column_in_a_single_value_role_points_to_category_sets(parquet_lake, tmp_path):
    data_format, lake, config_path = parquet_lake
    copy = str(tmp_path / "lake")
    shutil.copytree(lake, copy)
    for date in DATES:
        for split, count, seed in (("train", 120, 0), ("eval", 40, 10)):
            columns = _rows(count, seed)
            table = pa.table(columns).append_column("tags", pa.array([["p", "q"][: i % 3] for i in range(count)],
                                                                      pa.list_(pa.string())))
            pq.write_table(table, os.path.join(copy, f"date={date}", split, "part-0.parquet"))
    # Two lines: init's schema (of the lake before the list column) does not have it either.
    message = _run_broken((data_format, copy, config_path), tmp_path, "features.categorical=[c, tags]", problems=2)
    assert message.startswith("features.categorical: 'tags' has up to 2 values in one row (first in "), message
    assert message.endswith("put it in features.category_sets (a multi-hot of its values)")
