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

from contract.errors import ConfigError

_GZIP_MAGIC = b"\x1f\x8b"
# A TFRecord is [uint64 length][uint32 crc of length][data][uint32 crc of data].
_HEADER = struct.Struct("<QI")
_MAX_RECORD_BYTES = 1 << 30
# Files up to this size are read whole (the bundled shards are ~100 KB); larger ones only their head.
FULL_CHECK_BYTES = 64 << 20
HEAD_CHECK_BYTES = 1 << 20


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


def check_files(files: List[str], full_check_bytes: int = FULL_CHECK_BYTES, profile=None) -> None:
    """Checks every file: whole when small, its first records when large (a full read would cost a pass
    over the data in one Python process; Beam reads large inputs in parallel anyway).

    With `profile` (a `schemas.profile.DataProfile`), the records read are also profiled, column by column.
    """
    for path in files:
        large = os.path.getsize(path) > full_check_bytes
        records = read_examples(path, head_bytes=HEAD_CHECK_BYTES if large else 0)
        if profile is not None:
            profile.add(records, path)
