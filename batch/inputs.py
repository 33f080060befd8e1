"""What a batch job reads: the input files (TFRecord, Parquet, CSV), their preflight, and the Beam readers that batch
records with ids."""

import csv
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import apache_beam as beam

import formats
from contract.config import is_remote
from contract.errors import BadInputError

# Default ids when no --id is given: where each row came from, enough to join results back.
POSITION_IDS = ("source", "record")

@dataclass
class ExampleBatch:
    """One element of the job: up to `serving.batch_scoring_batch_size` serialized tf.Examples and their ids."""

    ids: Dict[str, list]  # id column -> one value per example
    examples: List[bytes]

    def __len__(self) -> int:
        """RunInference counts a prebatched element's examples with len()."""
        return len(self.examples)


def input_files(location: str) -> List[str]:
    """A file, a directory (every file below it) or a glob, local or remote."""
    import tensorflow as tf

    if tf.io.gfile.isdir(location):
        found = sorted(os.path.join(root, name) for root, _, names in tf.io.gfile.walk(location)
                       for name in names if not name.startswith((".", "_")))
    elif any(ch in location for ch in "*?["):
        found = sorted(tf.io.gfile.glob(location))
    else:
        if not tf.io.gfile.exists(location):
            raise BadInputError(f"--input {location} does not exist")
        found = [location]
    if not found:
        raise BadInputError(f"--input {location} matches no file; pass a file, a directory or a glob of "
                            "TFRecord (gzip or plain), Parquet or CSV files")
    input_format(found)  # one format, or a one-line refusal naming a file of each
    return found


def input_format(files: Sequence[str]) -> str:
    """The format of the input files: by content for local files (formats.detect), by name for remote ones
    (`.csv`, `.parquet`, else TFRecord)."""
    if not any(is_remote(f) for f in files):
        return formats.detect(files).name
    kinds = {"csv" if f.endswith(".csv") else "parquet" if f.endswith(".parquet") else "tfrecord" for f in files}
    if len(kinds) > 1:
        raise BadInputError(f"the input mixes formats ({', '.join(sorted(kinds))}); score them in separate jobs")
    return kinds.pop()


def _tfrecord_compression(path: str) -> str:
    if is_remote(path):
        return "GZIP" if path.endswith(".gz") else ""
    with open(path, "rb") as f:
        return "GZIP" if f.read(2) == b"\x1f\x8b" else ""


def preflight(files: Sequence[str], needed: Sequence[str], id_columns: Sequence[str]) -> None:
    """The checks that need no Beam: shards readable as tf.Example, CSV headers and Parquet schemas complete (and
    of types tf.Example can hold)."""
    from validation.files import HEAD_CHECK_BYTES, check_files

    data_format = input_format(files)
    if data_format != "tfrecord":
        for path in files:
            header = _csv_header(path) if data_format == "csv" else _parquet_columns(path)
            missing = [c for c in list(needed) + list(id_columns) if c not in header]
            if missing:
                raise BadInputError(f"{path}: the {'CSV header' if data_format == 'csv' else 'Parquet schema'} has no "
                                    f"column {', '.join(missing)}, which the "
                                    f"{'model needs' if set(missing) & set(needed) else 'job passes through'}; "
                                    f"columns: {', '.join(header)}")
        return
    # Each shard's first megabyte (all of a small one): a whole read of a large batch would cost a pass in
    # one Python process; a fault further in fails the Beam job, which publishes nothing.
    check_files([f for f in files if not is_remote(f)], full_check_bytes=HEAD_CHECK_BYTES)


def _parquet_columns(path: str) -> List[str]:
    """The file's columns; a footer that does not read, or a column tf.Example cannot hold, is refused by name."""
    import pyarrow.parquet as pq

    from formats import parquet

    if not is_remote(path):
        parquet.FORMAT.check(path)
        return parquet.FORMAT.columns(path)
    with _open_binary(path) as f:
        return pq.ParquetFile(f).schema_arrow.names


def _open_binary(path: str):
    """A seekable binary file of any file system Beam knows (pyarrow reads Parquet footers by seeking)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _csv_header(path: str) -> List[str]:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "r") as f:
        return next(csv.reader([f.readline()]), [])


def _id_value(feature, type_name: str):
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if not values:
        return None
    value = values[0]
    if type_name == "string":
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return value


class ReadTFRecordShard(beam.DoFn):
    """ExampleBatches of one shard, in file order.

    A shard is read by one worker (shard your input for parallelism): that is what gives every
    row its position (`source`, `record`) for joining results back.
    """

    def __init__(self, id_columns: Sequence[str], id_types: Dict[str, str], batch_size: int):
        self.id_columns, self.id_types, self.batch_size = list(id_columns), dict(id_types), batch_size

    def process(self, path: str) -> Iterator[ExampleBatch]:
        import tensorflow as tf

        start = 0
        dataset = tf.data.TFRecordDataset(path, compression_type=_tfrecord_compression(path))
        for records in dataset.batch(self.batch_size).as_numpy_iterator():
            examples = records.tolist()
            if self.id_columns:
                parsed = [tf.train.Example.FromString(r).features.feature for r in examples]
                ids = {c: [_id_value(f[c], self.id_types[c]) if c in f else None for f in parsed]
                       for c in self.id_columns}
            else:
                ids = {"source": [path] * len(examples), "record": list(range(start, start + len(examples)))}
            start += len(examples)
            yield ExampleBatch(ids, examples)


class ReadCsvFile(beam.DoFn):
    """ExampleBatches of CSV rows; values typed by the schema as the online client types them."""

    def __init__(self, schema_file: str, id_columns: Sequence[str], id_types: Dict[str, str], batch_size: int):
        self.schema_file, self.id_columns, self.id_types = schema_file, list(id_columns), dict(id_types)
        self.batch_size = batch_size

    def setup(self):
        from serving.client import feature_types, load_schema

        self._types = feature_types(load_schema(self.schema_file))

    def process(self, path: str) -> Iterator[ExampleBatch]:
        import tensorflow as tf

        from serving.client import to_example

        names = self.id_columns or list(POSITION_IDS)
        batch = ExampleBatch({c: [] for c in names}, [])
        with tf.io.gfile.GFile(path, "r") as f:
            for number, row in enumerate(csv.DictReader(f), start=2):
                features = {k: v for k, v in row.items() if k in self._types}
                batch.examples.append(to_example(features, self._types, f"{path} line {number}").SerializeToString())
                if self.id_columns:
                    for c in self.id_columns:
                        batch.ids[c].append(_typed_csv_id(row.get(c), self.id_types[c]))
                else:
                    batch.ids["source"].append(path)
                    batch.ids["record"].append(number - 2)
                if len(batch.examples) == self.batch_size:
                    yield batch
                    batch = ExampleBatch({c: [] for c in names}, [])
        if batch.examples:
            yield batch


class ReadParquetFile(beam.DoFn):
    """ExampleBatches of one Parquet file's rows, converted as the Parquet ExampleGen converts them
    (`formats.parquet.to_examples`); ids read from their own columns, as the schema types them."""

    def __init__(self, id_columns: Sequence[str], id_types: Dict[str, str], batch_size: int):
        self.id_columns, self.id_types, self.batch_size = list(id_columns), dict(id_types), batch_size

    def process(self, path: str) -> Iterator[ExampleBatch]:
        import pyarrow.parquet as pq

        from formats.parquet import to_examples

        start = 0
        with _open_binary(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=self.batch_size):
                examples = to_examples(batch, path)
                if self.id_columns:
                    ids = {c: [_typed_id(v, self.id_types[c]) for v in batch.column(c).to_pylist()]
                           for c in self.id_columns}
                else:
                    ids = {"source": [path] * len(examples), "record": list(range(start, start + len(examples)))}
                start += len(examples)
                yield ExampleBatch(ids, examples)


def _typed_id(value, type_name: str):
    """A Parquet id value as the output column's type (the schema's, or string)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if type_name == "string":
        return str(value)
    return int(value) if type_name == "int" else float(value)


def _typed_csv_id(value: Optional[str], type_name: str):
    if value in (None, ""):
        return None
    return int(float(value)) if type_name == "int" else float(value) if type_name == "float" else value


def id_types(schema_file: str, id_columns: Sequence[str]) -> Dict[str, str]:
    """int/float/string per id column: from the schema when it is a feature, else string."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    from serving.client import feature_types, load_schema

    types = feature_types(load_schema(schema_file))
    names = {schema_pb2.INT: "int", schema_pb2.FLOAT: "float"}
    return {c: names.get(types.get(c), "string") for c in id_columns}


def read_examples(pipeline: beam.Pipeline, files: Sequence[str], schema_file: str, id_columns: Sequence[str],
                  types: Dict[str, str], batch_size: int) -> beam.PCollection:
    """ExampleBatches of every input file."""
    readers = {"csv": lambda: ReadCsvFile(schema_file, id_columns, types, batch_size),
               "parquet": lambda: ReadParquetFile(id_columns, types, batch_size),
               "tfrecord": lambda: ReadTFRecordShard(id_columns, types, batch_size)}
    reader = readers[input_format(files)]()
    return (pipeline
            | "ListInput" >> beam.Create(list(files))
            # Spreads the shards over the workers before they are read.
            | "SpreadShards" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(reader))
