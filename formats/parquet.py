"""Parquet files (a data lake's columnar files, Hive-style `key=value/` directories included), read with pyarrow.

Arrow types map onto tf.Example's three kinds, and from there onto the schema:
- signed and unsigned integers, booleans (0/1) -> INT (int64; an unsigned value beyond
  int64 is refused, naming the column);
- floats (16, 32, 64 bit) -> FLOAT (tf.Example stores float32);
- strings and binaries, dictionary-encoded or not -> BYTES (UTF-8);
- timestamps (any unit, with or without a time zone) -> INT, whole seconds since
  1970-01-01 UTC (floored), as the bundled taxi data stores its trip start times;
- lists (list, large_list, fixed_size_list) of the above -> the same kind, several values per row;
- null -> the row lacks the feature; a nullable column is an optional feature of the schema
  (`init` writes optional presence for it), a non-nullable one a required feature.
Refused by name, with what to write instead: decimals, dates and times of day, durations,
intervals, structs, maps and lists of lists: tf.Example has no such types.

The rows become tf.Examples by tfx_bsl's C++ encoder (`RecordBatchToExamples`), the one
TFX's own coders use. Not by TFX's Parquet executor's `dict_to_example`: it tests
`if not value:` and so writes every 0, 0.0, False and "" as a missing value (tfx 1.16,
tfx/components/example_gen/utils.py); a zero tip or a trip at midnight would be lost.
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

from contract.errors import BadInputError
from formats import DataFormat

MAGIC = b"PAR1"
# Rows per record batch read from a file: bounded memory whatever the row group size.
BATCH_ROWS = 65_536


def _arrow():
    import pyarrow as pa

    return pa


def value_kind(arrow_type) -> Optional[str]:
    """"int", "float" or "string" for an Arrow scalar type tf.Example can hold; None for one it cannot."""
    pa = _arrow()
    if pa.types.is_dictionary(arrow_type):
        return value_kind(arrow_type.value_type)
    if pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type) or pa.types.is_timestamp(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type):
        return "float"
    if (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_binary(arrow_type)
            or pa.types.is_large_binary(arrow_type) or pa.types.is_fixed_size_binary(arrow_type)):
        return "string"
    return None


def _is_list(arrow_type) -> bool:
    pa = _arrow()
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or \
        pa.types.is_fixed_size_list(arrow_type)


def field_kind(field) -> Tuple[Optional[str], bool]:
    """(kind of its values or None if unsupported, whether a row holds a list) of one Arrow schema field."""
    if _is_list(field.type):
        return value_kind(field.type.value_type), True
    return value_kind(field.type), False


_INSTEAD = {
    "decimal": "write it as float64 (or as an integer of the smallest unit, e.g. cents) upstream",
    "date": "write it as a timestamp, or as an integer (days since 1970-01-01) upstream",
    "time": "write it as an integer (seconds since midnight) upstream",
    "duration": "write it as an integer (seconds) upstream",
    "nested": "flatten it upstream into columns of numbers or strings (one list level at most)",
}


def unsupported(field) -> str:
    """Why a field's type cannot become a feature and what to write instead ("" when it can)."""
    pa = _arrow()
    kind, _ = field_kind(field)
    if kind is not None:
        return ""
    arrow_type = field.type.value_type if _is_list(field.type) else field.type
    if pa.types.is_decimal(arrow_type):
        instead = _INSTEAD["decimal"]
    elif pa.types.is_date(arrow_type):
        instead = _INSTEAD["date"]
    elif pa.types.is_time(arrow_type):
        instead = _INSTEAD["time"]
    elif pa.types.is_duration(arrow_type) or pa.types.is_interval(arrow_type):
        instead = _INSTEAD["duration"]
    else:
        instead = _INSTEAD["nested"]
    return f"column {field.name!r} is {field.type}, which tf.Example cannot hold: {instead}"


def _values(array, kind: str):
    """A flat Arrow array of a supported scalar type as tf.Example's value type (no nulls may remain)."""
    import numpy as np

    pa = _arrow()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_timestamp(array.type):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[array.type.unit]
        counts = array.cast(pa.int64()).to_numpy(zero_copy_only=False)
        return pa.array(np.floor_divide(counts, per_second), pa.int64())
    if pa.types.is_float16(array.type):  # pyarrow 10 casts no half float
        return pa.array(array.to_numpy(zero_copy_only=False).astype(np.float32), pa.float32())
    target = {"int": pa.int64(), "float": pa.float32(), "string": pa.large_binary()}[kind]
    # float64 -> float32 rounds, as tf.Example's float_list does; integer overflow raises (safe cast).
    return array.cast(target, safe=kind != "float")


def _as_list_array(column, kind: str, is_list: bool):
    """One column as the large_list<int64|float32|large_binary> RecordBatchToExamples encodes; nulls -> absent."""
    import numpy as np

    pa = _arrow()
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not is_list:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(valid, dtype=np.int64)])
        values = _values(column.drop_null() if column.null_count else column, kind)
        return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values,
                                             mask=pa.array(~valid) if column.null_count else None)
    if pa.types.is_fixed_size_list(column.type):  # pyarrow 10 casts no fixed_size_list to list
        column = pa.array(column.to_pylist(), pa.list_(column.type.value_type))
    flat = column.flatten()
    if flat.null_count:
        raise ValueError("a list holds null values")
    offsets = column.offsets.cast(pa.int64())
    valid = column.is_valid()
    return pa.LargeListArray.from_arrays(offsets, _values(flat, kind),
                                         mask=pa.compute.invert(valid) if column.null_count else None)


def to_examples(table, where: str = "") -> List[bytes]:
    """An Arrow table or record batch as serialized tf.Examples, one per row (see the module docstring).

    Raises BadInputError naming the column (and `where`, the file) for a type tf.Example cannot hold.
    """
    from tfx_bsl.coders import example_coder

    pa = _arrow()
    place = f"{where}: " if where else ""
    names, arrays = [], []
    for field, column in zip(table.schema, table.columns):
        problem = unsupported(field)
        if problem:
            raise BadInputError(f"{place}{problem}")
        kind, is_list = field_kind(field)
        try:
            arrays.append(_as_list_array(column, kind, is_list))
        except (pa.ArrowInvalid, ValueError) as error:
            raise BadInputError(f"{place}column {field.name!r} ({field.type}) cannot become a tf.Example feature "
                                f"({str(error).splitlines()[0]}); fix its values upstream") from None
        names.append(field.name)
    if not names:
        return []
    return example_coder.RecordBatchToExamples(pa.RecordBatch.from_arrays(arrays, names))


def _open(path: str):
    import pyarrow.parquet as pq

    pa = _arrow()
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise BadInputError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]}); it is corrupt, "
                            "truncated or another format: re-export or re-copy it, or move it out of the input "
                            "directory") from None


class Parquet(DataFormat):
    name = "parquet"
    what = "Parquet file"

    def sniff(self, path: str) -> bool:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC

    def schema(self, path: str):
        """The file's Arrow schema (from its footer)."""
        return _open(path).schema_arrow

    def columns(self, path: str) -> List[str]:
        return [field.name for field in self.schema(path)]

    def check(self, path: str) -> None:
        """The footer reads and every column has a type tf.Example can hold."""
        for field in self.schema(path):
            problem = unsupported(field)
            if problem:
                raise BadInputError(f"{path}: {problem}")

    def examples(self, paths: Sequence[str], head_bytes: int = 0) -> Iterator[Tuple[str, List[bytes]]]:
        pa = _arrow()
        for path in paths:
            parquet = _open(path)
            records: List[bytes] = []
            try:
                if head_bytes and parquet.metadata.num_row_groups:
                    records = to_examples(parquet.read_row_group(0), path)
                else:
                    for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                        records += to_examples(batch, path)
            except (pa.ArrowException, OSError) as error:
                raise BadInputError(f"{path}: corrupt Parquet data ({str(error).splitlines()[0]}); re-export or "
                                    "re-copy it, or move it out of the input directory") from None
            yield path, records


FORMAT = Parquet()
