"""What a batch job writes: ids + prediction columns as Parquet, CSV or tf.Example TFRecords, sharded."""

import csv
import io
from typing import Dict, Iterator, List, Sequence, Tuple

import apache_beam as beam

FORMATS = {"parquet": ".parquet", "csv": ".csv", "tfrecord": ".tfrecord.gz"}

SHARD_PREFIX = "predictions"

def _csv_lines(columns: Dict[str, list], names: Sequence[str]) -> str:
    """One batch as CSV lines (WriteToText adds the last newline)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(
        ["" if v is None else v for v in row] for row in zip(*(columns[n] for n in names)))
    return buffer.getvalue()[:-1]


def _examples_of(columns: Dict[str, list], kinds: Dict[str, str]) -> Iterator[bytes]:
    """One batch as serialized tf.Examples, one per row."""
    import tensorflow as tf

    names = list(kinds)
    for row in zip(*(columns[n] for n in names)):
        example = tf.train.Example()
        for name, value in zip(names, row):
            if value is None:
                continue
            feature = example.features.feature[name]
            if kinds[name] == "int":
                feature.int64_list.value.append(int(value))
            elif kinds[name] == "float":
                feature.float_list.value.append(float(value))
            else:
                feature.bytes_list.value.append(str(value).encode())
        yield example.SerializeToString()


def _arrow_table(columns: Dict[str, list], schema):
    import pyarrow as pa

    return pa.Table.from_pydict({name: columns[name] for name in schema.names}, schema=schema)


def write_rows(batches: beam.PCollection, output_format: str, prefix: str, columns: List[Tuple[str, str]],
               shards: int):
    """Writes scored batches (column -> values) as sharded Parquet, CSV or tf.Example TFRecord files."""
    suffix = FORMATS[output_format]
    names = [n for n, _ in columns]
    if output_format == "parquet":
        import pyarrow as pa

        arrow = {"int": pa.int64(), "float": pa.float64(), "string": pa.string()}
        schema = pa.schema([(n, arrow[k]) for n, k in columns])
        return (batches | "ToArrow" >> beam.Map(_arrow_table, schema)
                | "WriteParquet" >> beam.io.WriteToParquetBatched(prefix, schema, file_name_suffix=suffix,
                                                                   num_shards=shards))
    if output_format == "csv":
        return (batches | "ToCsv" >> beam.Map(_csv_lines, names)
                | "WriteCsv" >> beam.io.WriteToText(prefix, file_name_suffix=suffix, num_shards=shards,
                                                    header=",".join(names)))
    return (batches | "ToExamples" >> beam.FlatMap(_examples_of, dict(columns))
            | "WriteTFRecord" >> beam.io.WriteToTFRecord(prefix, file_name_suffix=suffix, num_shards=shards))
