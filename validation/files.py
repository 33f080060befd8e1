"""Preflight of input files: every shard must be a readable tf.Example TFRecord.

A corrupt gzip shard or a file of the wrong format otherwise surfaces as a Beam
traceback deep inside ImportExampleGen or StatisticsGen. These checks read each
file once in plain Python (no Beam, no TensorFlow) and fail with one line that
names the file and says what to do.
"""

import glob
import gzip
import os
import struct
import zlib
from typing import List

from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2

from pipeline.config import ConfigError

_GZIP_MAGIC = b"\x1f\x8b"
# A TFRecord is [uint64 length][uint32 crc of length][data][uint32 crc of data].
_HEADER = struct.Struct("<QI")
_MAX_RECORD_BYTES = 1 << 30


class BadInputError(ConfigError):
    """An input file or directory cannot be read as tf.Example TFRecords."""


def list_files(data_root: str, pattern: str = "**/*") -> List[str]:
    """The regular files under `data_root` matching `pattern`, sorted; fails clearly when there are none."""
    if not os.path.isdir(data_root):
        raise BadInputError(f"{data_root} is not a directory; pass the directory that holds the TFRecord files")
    files = sorted(f for f in glob.glob(os.path.join(data_root, pattern), recursive=True)
                   if os.path.isfile(f) and not os.path.basename(f).startswith("."))
    if not files:
        raise BadInputError(f"{data_root} holds no file matching {pattern!r}: the input directory is empty. "
                            "Point --data-root (or data.input_base) at the directory with the TFRecord shards")
    return files


def _read_payload(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise BadInputError(
            f"{path}: corrupt or truncated gzip shard ({e}). Re-export or re-copy this file, "
            "or move it out of the input directory") from None


def read_examples(path: str) -> List[bytes]:
    """The serialized tf.Examples of one file, after checking its framing and that each record is a tf.Example."""
    payload = _read_payload(path)
    if not payload:
        raise BadInputError(f"{path}: the file is empty (no records). Remove it or re-export it")
    records: List[bytes] = []
    offset, count = 0, 0
    while offset < len(payload):
        if offset + _HEADER.size > len(payload):
            raise _not_tfrecord(path, count)
        length, _ = _HEADER.unpack_from(payload, offset)
        end = offset + _HEADER.size + length + 4
        if length > _MAX_RECORD_BYTES or end > len(payload):
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


def check_files(files: List[str]) -> int:
    """Checks every file; returns the total number of records."""
    return sum(len(read_examples(f)) for f in files)
