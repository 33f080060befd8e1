"""Infer a starting schema for a new dataset of tf.Example TFRecords.

    tfx-edge schema infer --data-root DIR --out FILE [--pattern GLOB] [--label-column COL]

Reads every file matching the pattern (gzip or plain, told apart by content),
computes statistics with TFDV and writes the inferred schema as text proto,
with TRAINING and SERVING environments: the label column exists only in
TRAINING. Review and curate the result (domains, presence) before using it as
`schema_file`: inference describes the data you have, not the data you accept.
"""

import glob
import os

from tensorflow_metadata.proto.v0 import schema_pb2


TRAINING, SERVING = "TRAINING", "SERVING"


def is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def tfrecord_files(data_root: str, pattern: str):
    files = sorted(f for f in glob.glob(os.path.join(data_root, pattern), recursive=True) if os.path.isfile(f))
    if not files:
        raise SystemExit(f"infer-schema: no file matches {pattern!r} under {data_root}; "
                         "pass --pattern (e.g. 'Split-train/*' or '**/*.gz')")
    return files


def infer_schema(files, label_column: str = "") -> schema_pb2.Schema:
    import tensorflow_data_validation as tfdv

    compressed = {is_gzip(f) for f in files}
    if len(compressed) > 1:
        raise SystemExit("infer-schema: the files mix gzip and plain TFRecords; pass a --pattern that picks one kind")
    options = tfdv.StatsOptions()
    stats = tfdv.generate_statistics_from_tfrecord(
        data_location=",".join(files) if len(files) == 1 else _common_pattern(files),
        stats_options=options)
    schema = tfdv.infer_schema(stats)
    schema.default_environment.extend([TRAINING, SERVING])
    if label_column:
        names = [f.name for f in schema.feature]
        if label_column not in names:
            raise SystemExit(f"infer-schema: label column {label_column!r} is not in the data; columns: {names}")
        tfdv.get_feature(schema, label_column).not_in_environment.append(SERVING)
    return schema


def _common_pattern(files):
    """One glob covering exactly the given files' directory (TFDV reads a single pattern)."""
    dirs = {os.path.dirname(f) for f in files}
    exts = {os.path.splitext(f)[1] for f in files}
    if len(dirs) == 1 and len(exts) == 1:
        return os.path.join(dirs.pop(), "*" + exts.pop())
    raise SystemExit("infer-schema: files span several directories; pass a --pattern within one directory")
