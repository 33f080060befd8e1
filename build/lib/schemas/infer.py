"""Infer a starting schema for a new dataset of tf.Example TFRecords.

    python -m schemas.infer --data-root DIR --out FILE [--pattern GLOB] [--label-column COL]

Reads every file matching the pattern (gzip or plain, told apart by content),
computes statistics with TFDV and writes the inferred schema as text proto,
with TRAINING and SERVING environments: the label column exists only in
TRAINING. Review and curate the result (domains, presence) before using it as
`schema_file`: inference describes the data you have, not the data you accept.
"""

import argparse
import glob
import os
import sys

from tensorflow_metadata.proto.v0 import schema_pb2

from contract import cli

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


@cli.command
def main(argv=None) -> int:
    cli.prepare()
    parser = argparse.ArgumentParser(prog="infer-schema", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True, help="directory of tf.Example TFRecord files")
    parser.add_argument("--pattern", default="*", help="glob under --data-root (default: *)")
    parser.add_argument("--out", required=True, help="where to write schema.pbtxt")
    parser.add_argument("--label-column", default="", help="column present only in training data")
    args = parser.parse_args(argv)
    import tensorflow_data_validation as tfdv

    files = tfrecord_files(args.data_root, args.pattern)
    schema = infer_schema(files, args.label_column)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tfdv.write_schema_text(schema, args.out)
    print(f"wrote {args.out}: {len(schema.feature)} features from {len(files)} files")
    for feature in schema.feature:
        kind = schema_pb2.FeatureType.Name(feature.type)
        presence = feature.presence.min_fraction
        envs = f" not in {list(feature.not_in_environment)}" if feature.not_in_environment else ""
        print(f"  {feature.name:28s} {kind:6s} presence>={presence:.2f}{envs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
