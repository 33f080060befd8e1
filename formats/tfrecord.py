"""tf.Example TFRecords (gzip or plain, told apart by content): read by ImportExampleGen as they are.

The check reads each file in plain Python (no Beam, no TensorFlow): a corrupt gzip
shard or a file of another format otherwise surfaces as a Beam traceback deep inside
ImportExampleGen or StatisticsGen.
"""

import gzip
import struct
import zlib
from typing import Iterator, List, Sequence, Tuple

from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2

from contract.errors import BadInputError
from formats import DataFormat

_GZIP_MAGIC = b"\x1f\x8b"
# A TFRecord is [uint64 length][uint32 crc of length][data][uint32 crc of data].
_HEADER = struct.Struct("<QI")
_MAX_RECORD_BYTES = 1 << 30


def _read_payload(path: str, head_bytes: int = 0) -> bytes:
    """The file's (decompressed) bytes; only the first `head_bytes` of them when that is set."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if not gzipped:
            return f.read(head_bytes or -1)
        try:
            return gzip.GzipFile(fileobj=f).read(head_bytes or -1)
        except (EOFError, OSError, zlib.error) as e:
            raise BadInputError(
                f"{path}: corrupt or truncated gzip shard ({e}). Re-export or re-copy this file, "
                "or move it out of the input directory") from None


def read_examples(path: str, head_bytes: int = 0) -> List[bytes]:
    """The serialized tf.Examples of one file, after checking its framing and that each record is a tf.Example.

    With `head_bytes`, only the records complete within that many (decompressed) bytes.
    """
    payload = _read_payload(path, head_bytes)
    if not payload:
        raise BadInputError(f"{path}: the file is empty (no records). Remove it or re-export it")
    records: List[bytes] = []
    offset, count = 0, 0
    cut_short = bool(head_bytes) and len(payload) == head_bytes  # the head may end inside a record
    while offset < len(payload):
        complete = offset + _HEADER.size <= len(payload)
        length = _HEADER.unpack_from(payload, offset)[0] if complete else 0
        end = offset + _HEADER.size + length + 4
        if not complete or end > len(payload):
            if cut_short and count > 0 and length <= _MAX_RECORD_BYTES:
                break
            raise _not_tfrecord(path, count)
        if length > _MAX_RECORD_BYTES:
            raise _not_tfrecord(path, count)
        record = payload[offset + _HEADER.size:offset + _HEADER.size + length]
        try:
            example = example_pb2.Example.FromString(record)
        except DecodeError:
            example = None
        if example is None or (record and not example.features.feature):
            raise BadInputError(
                f"{path}: record {count} is a TFRecord but not a tf.Example. The pipeline reads "
                "tf.train.Example protos only; convert the data (e.g. tf.train.Example(features=...))")
        records.append(record)
        offset, count = end, count + 1
    return records


def _not_tfrecord(path: str, good_records: int) -> BadInputError:
    where = "it" if good_records == 0 else f"it after record {good_records - 1}"
    return BadInputError(
        f"{path}: not a TFRecord file ({where} has no valid record framing; truncated or another format). "
        "Write tf.Example TFRecords (tf.io.TFRecordWriter, optionally gzip) or remove the file")


class TFRecord(DataFormat):
    name = "tfrecord"
    what = "TFRecord file"

    def sniff(self, path: str) -> bool:
        """What is neither Parquet nor CSV is read as TFRecords: reading names a file that is not one."""
        from formats import csv_files, parquet

        return not (parquet.FORMAT.sniff(path) or csv_files.FORMAT.sniff(path))

    def check(self, path: str) -> None:
        """Framing and record types are checked while reading (`read_examples`)."""

    def examples(self, paths: Sequence[str], head_bytes: int = 0) -> Iterator[Tuple[str, List[bytes]]]:
        for path in paths:
            yield path, read_examples(path, head_bytes)


FORMAT = TFRecord()
