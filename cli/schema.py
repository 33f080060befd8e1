"""`tfx-edge schema`: your own data in one step (`init`: config.yaml + schema.pbtxt) or a schema only (`infer`).

    tfx-edge schema init --data-root DIR --label COLUMN --out DIR [--task auto|binary|multiclass|regression]
                         [--name NAME] [--pattern GLOB] [--window N]
    tfx-edge schema infer --data-root DIR --out FILE [--pattern GLOB] [--label-column COL]
"""

import argparse
import os

from cli import prologue
from contract.config import TASKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfx-edge schema", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    init = commands.add_parser("init", help="a dataset to a working config.yaml and schema.pbtxt, each guess explained",
                               description="Read the data once, guess the split, the task, the classes and each "
                                           "column's role, and write config.yaml + schema.pbtxt saying why.")
    init.add_argument("--data-root", required=True, help="directory of the data: tf.Example TFRecords (gzip or "
                                                          "plain), Parquet or CSV files; date=YYYY-MM-DD/ partitions "
                                                          "become spans")
    init.add_argument("--label", required=True, help="the column the model predicts")
    init.add_argument("--out", required=True, help="directory for config.yaml and schema.pbtxt")
    init.add_argument("--task", default="auto", choices=("auto",) + TASKS, help="default: guessed from the label")
    init.add_argument("--name", default="", help="pipeline and model name (default: the data directory's name)")
    init.add_argument("--pattern", default="", help="glob of the data files under --data-root, hash-split 4:1 "
                                                    "(default: existing train/eval directories, else every file)")
    init.add_argument("--window", type=int, default=0, help="date partitions a run trains on, the latest ones "
                                                            "(default: every partition found, at most 30)")
    infer = commands.add_parser("infer", help="a starting schema only (TFDV's inferred one, curated by hand)",
                                description="Infer a schema from tf.Example TFRecords with TFDV: TRAINING and "
                                            "SERVING environments, the label column only in TRAINING.")
    infer.add_argument("--data-root", required=True, help="directory of tf.Example TFRecord files")
    infer.add_argument("--pattern", default="*", help="glob under --data-root (default: *)")
    infer.add_argument("--out", required=True, help="where to write schema.pbtxt")
    infer.add_argument("--label-column", default="", help="column present only in training data")
    return parser


def _init(args) -> int:
    from schemas.init import initialise, report

    found = initialise(args.data_root, args.label, args.out, args.task, args.name, args.pattern, args.window)
    print(report(found, args.data_root))
    return 0


def _infer(args) -> int:
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    from schemas.infer import infer_schema, tfrecord_files

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


@prologue.command
def main(argv=None) -> int:
    prologue.prepare()
    args = build_parser().parse_args(argv)
    return {"init": _init, "infer": _infer}[args.command](args)
