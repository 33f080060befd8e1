"""Data formats without a pipeline: Parquet and CSV rows as their ExampleGen converts them, spans from dates, and
bad files named in one line (formats/)."""

import datetime
import decimal
import fnmatch
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

import formats
from contract.errors import BadInputError
from formats import csv_files, parquet
from formats.spans import describe, latest_pattern, span_files


def _parquet(path, table):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)
    return path


def _rows(serialized):
    """Serialized tf.Examples -> [{feature: (kind, values)}] (kind None for a feature without values)."""
    out = []
    for record in serialized:
        row = {}
        for name, feature in tf.train.Example.FromString(record).features.feature.items():
            kind = feature.WhichOneof("kind")
            row[name] = (kind, list(getattr(feature, kind).value) if kind else [])
        out.append(row)
    return out


def test_parquet_rows_keep_zeros_empty_strings_and_nulls_where_tfx_dict_to_example_drops_them(tmp_path):
    """0, 0.0, False and "" are values; null is a missing value. TFX's own dict_to_example loses the former."""
    from tfx.components.example_gen import utils

    table = pa.table({"tip": pa.array([0.0, 1.5, None], pa.float64()), "hour": pa.array([0, 23, 7], pa.int32()),
                      "flag": pa.array([False, True, None]), "note": pa.array(["", "ok", None]),
                      "big": pa.array([2 ** 40, 1, 2], pa.uint64())})
    path = _parquet(str(tmp_path / "part.parquet"), table)
    [(read, serialized)] = list(parquet.FORMAT.examples([path]))
    rows = _rows(serialized)
    assert read == path and len(rows) == 3
    assert rows[0]["tip"] == ("float_list", [0.0]) and rows[0]["hour"] == ("int64_list", [0])
    assert rows[0]["flag"] == ("int64_list", [0]) and rows[0]["note"] == ("bytes_list", [b""])
    assert rows[0]["big"] == ("int64_list", [2 ** 40])
    assert rows[2]["tip"] == (None, []) and rows[2]["flag"] == (None, []) and rows[2]["note"] == (None, [])
    # What TFX's Parquet executor writes for the first row: every zero value missing.
    tfx_row = utils.dict_to_example(table.to_pylist()[0]).features.feature
    assert all(tfx_row[name].WhichOneof("kind") is None for name in ("tip", "hour", "flag", "note"))


def test_parquet_types_map_onto_the_three_kinds_and_odd_ones_are_refused_by_name(tmp_path):
    moment = datetime.datetime(2024, 3, 1, 12, 30, 15, 999000, tzinfo=datetime.timezone.utc)
    table = pa.table({"at": pa.array([moment], pa.timestamp("ms", tz="UTC")),
                      "tags": pa.array([["a", "b"]], pa.list_(pa.string())),
                      "codes": pa.array([[3, 4, 5]], pa.list_(pa.int16(), 3)),
                      "city": pa.array(["Zürich"]).dictionary_encode(),
                      "ratio": pa.array(np.array([0.25], np.float16), pa.float16())})
    [row] = _rows(parquet.to_examples(table))
    assert row["at"] == ("int64_list", [int(moment.timestamp())])  # whole seconds since 1970-01-01 UTC
    assert row["tags"] == ("bytes_list", [b"a", b"b"]) and row["codes"] == ("int64_list", [3, 4, 5])
    assert row["city"] == ("bytes_list", ["Zürich".encode()]) and row["ratio"] == ("float_list", [0.25])

    refused = {
        "price": (pa.array([decimal.Decimal("9.99")], pa.decimal128(10, 2)), "write it as float64"),
        "day": (pa.array([datetime.date(2024, 3, 1)], pa.date32()), "days since 1970-01-01"),
        "spec": (pa.array([{"a": 1}]), "flatten it upstream"),
        "nested": (pa.array([[[1]]], pa.list_(pa.list_(pa.int64()))), "one list level at most"),
    }
    for name, (array, instead) in refused.items():
        path = _parquet(str(tmp_path / f"{name}.parquet"), pa.table({name: array, "x": pa.array([1.0])}))
        with pytest.raises(BadInputError) as raised:
            parquet.FORMAT.check(path)
        message = str(raised.value)
        assert message.startswith(f"{path}: column {name!r} is ") and instead in message and "\n" not in message
    too_big = _parquet(str(tmp_path / "big.parquet"), pa.table({"n": pa.array([2 ** 63 + 5], pa.uint64())}))
    with pytest.raises(BadInputError, match=r"big.parquet: column 'n' \(uint64\) cannot become a tf.Example feature"):
        list(parquet.FORMAT.examples([too_big]))


def test_a_corrupt_or_truncated_parquet_file_is_named(tmp_path):
    path = _parquet(str(tmp_path / "part.parquet"), pa.table({"x": pa.array(np.arange(1000.0))}))
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(BadInputError, match=r"part.parquet: not a readable Parquet file \(.*\); it is corrupt, "
                                            r"truncated or another format"):
        parquet.FORMAT.check(path)


def _csv(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def test_csv_types_are_inferred_over_one_unit_as_csv_example_gen_does(tmp_path):
    """Whole numbers are INT in a unit of files where every cell is; a fraction anywhere makes the column FLOAT."""
    a = _csv(str(tmp_path / "a.csv"), "fare,company,hour\n0,Acme,7\n12,\"Cab, Inc.\",\n")
    b = _csv(str(tmp_path / "b.csv"), "fare,company,hour\n3.5,,23\n")
    alone = _rows(next(csv_files.FORMAT.examples([a]))[1])
    assert alone[0]["fare"] == ("int64_list", [0]) and alone[1]["company"] == ("bytes_list", [b"Cab, Inc."])
    assert alone[1]["hour"] == ("int64_list", [])  # an empty cell: the feature with no value, as CsvExampleGen
    together = {path: _rows(rows) for path, rows in csv_files.FORMAT.examples([a, b])}
    assert together[a][0]["fare"] == ("float_list", [0.0]) and together[b][0]["company"] == ("bytes_list", [])


def test_csv_files_of_a_split_need_one_header(tmp_path):
    a = _csv(str(tmp_path / "a.csv"), "fare,company\n1.0,Acme\n")
    b = _csv(str(tmp_path / "b.csv"), "fare\n2.0\n")
    with pytest.raises(BadInputError) as raised:
        list(csv_files.FORMAT.examples([a, b]))
    assert str(raised.value) == (f"{b}: its header differs from {a} (it lacks ['company']); every CSV file of a split "
                                 "needs the same columns in the same order: re-export it with the split's header")
    empty = _csv(str(tmp_path / "empty.csv"), "")
    with pytest.raises(BadInputError, match="empty.csv: the file is empty"):
        csv_files.FORMAT.check(empty)


def test_the_format_is_told_by_content_and_a_mix_is_refused(tmp_path):
    from tests.datasets import example
    from tests.samples import write_examples

    records = write_examples(str(tmp_path / "a" / "part-0.gz"), [example({"x": 1.0})])
    table = _parquet(str(tmp_path / "b" / "part-0"), pa.table({"x": [1.0]}))  # no extension: the magic bytes tell
    text = _csv(str(tmp_path / "c" / "rows.csv"), "x\n1.0\n")
    assert [formats.detect([p]).name for p in (records, table, text)] == ["tfrecord", "parquet", "csv"]
    with pytest.raises(BadInputError, match=r"the files mix formats \(parquet: .*; tfrecord: .*\)"):
        formats.detect([records, table])
    other = _csv(str(tmp_path / "d" / "notes.txt"), "hello\n")  # neither: read as TFRecords, and named
    with pytest.raises(BadInputError, match="notes.txt: not a TFRecord file"):
        formats.read_all(formats.detect([other]), [other])


def test_date_partitions_are_spans_numbered_by_day_as_tfx_numbers_them(tmp_path):
    from tfx.components.example_gen import utils

    for day in ("2024-02-28", "2024-03-01", "2024-02-29"):
        _parquet(str(tmp_path / f"date={day}" / "part-0.parquet"), pa.table({"x": [1.0]}))
    (tmp_path / "date=2024-03-01" / "_SUCCESS").write_text("")  # a Spark marker: not data
    found = span_files(str(tmp_path), "date={YYYY}-{MM}-{DD}/*")
    assert list(found) == [utils.date_to_span_number(2024, 2, 28), utils.date_to_span_number(2024, 2, 29),
                           utils.date_to_span_number(2024, 3, 1)] == [19781, 19782, 19783]
    assert found[19783] == [str(tmp_path / "date=2024-03-01" / "part-0.parquet")]
    assert describe(19783, "date={YYYY}-{MM}-{DD}/*") == "2024-03-01" and describe(7, "span-{SPAN}/*") == "span 7"
    assert latest_pattern(str(tmp_path), "date={YYYY}-{MM}-{DD}/*") == str(tmp_path / "date=2024-03-01" / "*")


@pytest.mark.parametrize("pattern, path, span, version", [
    ("span-{SPAN}/train/*", "span-12/train/data.gz", 12, 0),
    ("span-{SPAN:3}/v{VERSION}/*.parquet", "span-007/v2/a.parquet", 7, 2),
    ("date={YYYY}-{MM}-{DD}/*", "date=2024-03-01/part-0.parquet", 19783, 0),
    ("{YYYY}{MM}{DD}/export.{VERSION:2}/*.csv", "20240229/export.10/rows.csv", 19782, 10),
])
def test_span_globs_and_numbers_are_tfx_examplegens(tmp_path, pattern, path, span, version):
    """formats.spans builds ExampleGen's glob and regex without importing TFX; both number every file alike."""
    from tfx.components.example_gen import utils
    from tfx.proto import example_gen_pb2

    from formats.spans import glob_and_regex, pattern_for_span, span_of_path

    root = str(tmp_path)
    split = example_gen_pb2.Input.Split(name="s", pattern=pattern)
    specs = utils.verify_split_pattern_specs(split)
    expected = utils._create_matching_glob_and_regex(root, split, *specs, None)  # pylint: disable=protected-access
    assert glob_and_regex(os.path.join(root, pattern)) == expected
    full = os.path.join(root, path)
    _, tfx_span, _, tfx_version = utils._find_matched_span_version_from_path(  # pylint: disable=protected-access
        full, expected[1], *specs)
    assert span_of_path(full, expected[1]) == (tfx_span, tfx_version or 0) == (span, version)
    # The span's own glob finds the file, as TFX's pattern for that span and version does.
    assert fnmatch.fnmatch(full, os.path.join(root, pattern_for_span(pattern, span)))
    assert fnmatch.fnmatch(full, os.path.join(root, utils.get_pattern_for_span_version(pattern, *specs, span, version)))
