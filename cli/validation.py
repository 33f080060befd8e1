"""Data validation commands for data producers and operators.

    tfx-edge validation validate --data-root DIR [--schema FILE] [--environment TRAINING|SERVING]
    tfx-edge validation skew [--training GLOB] [--serving GLOB]
    tfx-edge validation drift --previous DIR --current DIR
    tfx-edge validation make-spans --out DIR [--period month|quarter|year]

The data may be tf.Example TFRecords, Parquet or CSV files (told by content, read as the
pipeline's ExampleGen reads them); text columns (a natural-language domain in the schema)
are compared by their tokens. Each check prints the same report the pipeline's anomaly
gate prints, writes it
as text, JSON and HTML under --report-dir, and exits 0 when the data passes, 1
when it does not, 2 when the input cannot be read (the message names the file).
Gate settings (severity, tolerated anomalies) come from the pipeline config:
--config FILE and --set validation.allow_anomalies=[...] work as for the runner.
"""

import argparse
import glob
import os
import time

from cli import prologue
from contract.config import PipelineConfig, bundled_taxi_root


def _policy(config: PipelineConfig):
    from validation.report import GatePolicy

    return GatePolicy.from_config(config.validation)


def _files(location: str):
    """A directory (every file below it) or a glob."""
    from validation import files

    if os.path.isdir(location):
        return files.list_files(location)
    found = sorted(f for f in glob.glob(location, recursive=True) if os.path.isfile(f))
    if not found:
        raise files.BadInputError(f"no file matches {location!r}; pass a directory or a glob of data files "
                                  "(TFRecord, Parquet or CSV)")
    return found


def _finish(report, report_dir: str) -> int:
    path = report.write(report_dir)
    print(report.to_text())
    print(f"  report: {path}")
    return 0 if report.passed else 1


def cmd_validate(args, config: PipelineConfig) -> int:
    from validation import checks

    schema_file = args.schema or config.schema_file
    report = checks.validate_batch(_files(args.data_root), checks.load_schema(schema_file), args.environment,
                                   _policy(config), f"validate {args.data_root} ({args.environment}, {schema_file})")
    return _finish(report, args.report_dir)


def _comparison(args, config: PipelineConfig, kind: str, current: str, control: str) -> int:
    from validation import checks
    from validation.report import Report

    schema_file = args.schema or config.schema_file
    schema = checks.load_schema(schema_file)
    current_stats, control_stats = checks.statistics_of(_files(current), schema), checks.statistics_of(_files(control),
                                                                                                       schema)
    report = Report(f"{kind} of {current} vs {control} ({schema_file})")
    report.findings, report.distances = checks.compare(current_stats, control_stats, schema, kind, _policy(config))
    report.comparisons[kind] = f"{current} vs {control}"
    return _finish(report, args.report_dir)


def cmd_skew(args, config: PipelineConfig) -> int:
    from validation import checks

    from formats.spans import latest_pattern

    # The latest span's files when the pattern names spans or dates.
    training = args.training or latest_pattern(config.input_base, config.data.pattern or config.data.train_pattern)
    serving = args.serving or checks.default_serving_data(config)
    return _comparison(args, config, "skew", training, serving)


def cmd_drift(args, config: PipelineConfig) -> int:
    return _comparison(args, config, "drift", args.current, args.previous)


def cmd_make_spans(args, config: PipelineConfig) -> int:
    from validation.spans import make_spans

    rows = make_spans(args.source or bundled_taxi_root(), args.out, args.period)
    print(f"{len(rows)} spans ({args.period}) under {args.out}: span {rows[0][0]} = {rows[0][1]} ... "
          f"span {rows[-1][0]} = {rows[-1][1]}; periods in {os.path.join(args.out, 'spans.tsv')}")
    print(f"train on them: --set data.input_base={args.out} --set 'data.train_pattern=span-{{SPAN}}/train/*' "
          "--set 'data.eval_pattern=span-{SPAN}/eval/*'")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfx-edge validation", description=__doc__.split("\n\n")[0])
    prologue.add_settings_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help_text):
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(func=func)
        if name != "make-spans":
            sub.add_argument("--schema", help="schema file (default: the config's schema_file)")
            sub.add_argument("--report-dir", help="where report.txt/.json/.html go "
                                                   "(default: <output_dir>/validation/<command>-<time>)")
        return sub

    validate = add("validate", cmd_validate, "check a batch of data files against the schema")
    validate.add_argument("--data-root", required=True, help="directory (or glob) of TFRecord, Parquet or CSV files")
    validate.add_argument("--environment", default="TRAINING", choices=["TRAINING", "SERVING"],
                          help="TRAINING data must have the label; SERVING data must not need it")
    skew = add("skew", cmd_skew, "training/serving skew per feature (thresholds: schema skew_comparator)")
    skew.add_argument("--training", help="training data dir or glob (default: the config's train split)")
    skew.add_argument("--serving", help="serving data dir or glob (default: request logs, else the bundled "
                                        "unlabelled split)")
    drift = add("drift", cmd_drift, "drift from the previous span to the current one (schema drift_comparator)")
    drift.add_argument("--previous", required=True, help="previous span: directory or glob")
    drift.add_argument("--current", required=True, help="current span: directory or glob")
    spans = add("make-spans", cmd_make_spans, "lay the bundled taxi data out as time spans")
    spans.add_argument("--out", required=True, help="output directory")
    spans.add_argument("--period", default="month", choices=["month", "quarter", "year"])
    spans.add_argument("--source", help="directory with Split-train/ and Split-eval/ (default: bundled taxi data)")
    return parser


@prologue.command
def main(argv=None) -> int:
    prologue.prepare()
    args = build_parser().parse_args(argv)
    config = prologue.load_settings(args)
    prologue.log_to_file(config, "validation")  # TFDV and Beam log at INFO/WARNING; the report is the output
    if args.command != "make-spans" and not args.report_dir:
        args.report_dir = os.path.join(config.output_dir, "validation",
                                       f"{args.command}-{time.strftime('%Y%m%d-%H%M%S')}")
    # An unreadable input (files.BadInputError, a ConfigError) is named by run_main, exit 2.
    return args.func(args, config)
