"""Questions about past runs, answered from ML Metadata.

    tfx-edge reports lineage [--version V | --path DIR | --run RUN_ID] [--json]
    tfx-edge reports runs [--json]
    tfx-edge reports html [--run RUN_ID] [--out FILE]
    tfx-edge reports check FILE [--screenshot PNG]

Each reads the store of the configured output_dir (--config/--set as for the
runners), or a production MySQL store with --mysql user@host:port/database.
Exit status: 0 answered, 1 nothing matches, 2 bad arguments.
"""

import argparse
import dataclasses
import json
import sys

from cli import prologue
from reports import lineage as lineage_lib
from pipeline.metadata import open_metadata


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfx-edge reports", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    prologue.add_settings_arguments(common)
    common.add_argument("--mysql", default="", metavar="USER@HOST:PORT/DB",
                        help="read a MySQL MLMD store instead of <output_dir>/metadata.sqlite "
                             "(password from $MLMD_MYSQL_PASSWORD)")
    common.add_argument("--json", action="store_true", help="print JSON for machines")

    lineage = commands.add_parser("lineage", parents=[common], help="what made a pushed model",
                                  description="The chain input examples -> statistics -> schema -> anomalies -> "
                                              "transform graph -> hyper-parameters -> model -> evaluation -> "
                                              "blessing -> push. Default: the newest push.")
    which = lineage.add_mutually_exclusive_group()
    which.add_argument("--version", default="", help="a pushed version number (serving or edge)")
    which.add_argument("--path", default="", help="a pushed version directory")
    which.add_argument("--run", default="", help="a pipeline run id (see `runs`)")

    commands.add_parser("runs", parents=[common], help="every recorded run with status, duration and metrics")

    html = commands.add_parser("html", parents=[common], help="write the HTML report of a run",
                               description="Write the self-contained HTML report of a run (default: the newest).")
    html.add_argument("--run", default="", help="a pipeline run id (see `runs`)")
    html.add_argument("--out", default="", help="where to write it (default: <pipeline_root>/reports/<run>.html)")
    check = commands.add_parser("check", help="open a report in headless Chromium; fail on console errors",
                                description="Load an HTML report in headless Chromium (offline), list every console "
                                            "message, optionally save a screenshot. Exit 1 if the page logged any.")
    check.add_argument("file", help="the HTML file")
    check.add_argument("--screenshot", default="", metavar="PNG", help="also save a full-width screenshot here")
    return parser


def check_report(path: str, screenshot: str) -> int:
    from reports.browser import open_in_chromium

    result = open_in_chromium(path, screenshot or None)
    sections = result.dom.count("<section")
    for message in result.console:
        print(f"console: {message}")
    print(f"{path}: {sections} sections rendered, {len(result.console)} console messages"
          + (f", screenshot {screenshot}" if screenshot else ""))
    return 1 if result.console else 0


@prologue.command
def main(argv=None) -> int:
    prologue.prepare()
    args = build_parser().parse_args(argv)
    if args.command == "check":
        try:
            return check_report(args.file, args.screenshot)
        except (FileNotFoundError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    config = prologue.load_settings(args)
    prologue.log_to_file(config, "reports")
    try:
        store = open_metadata(config.metadata_path, args.mysql)
        if args.command == "lineage":
            if args.run:
                target = lineage_lib.run_artifact(store, args.run)
                label = f"run {args.run}"
            else:
                target = lineage_lib.find_push(store, args.version, args.path)
                props = target.custom_properties
                label = (f"pushed version {props['pushed_version'].string_value}"
                         if "pushed_version" in props else "push") + f" at {props['pushed_destination'].string_value}"
            result = lineage_lib.lineage_of(store, target.id, label)
            print(result.to_json() if args.json else lineage_lib.format_lineage(result))
        elif args.command == "runs":
            rows = lineage_lib.list_runs(store, config.pipeline_name)
            print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2) if args.json
                  else lineage_lib.format_runs(rows))
        else:
            from reports import html as html_lib

            path = html_lib.write_report(config, run_id=args.run or None, out=args.out or None, store=store)
            print(json.dumps({"report": path}) if args.json else f"report: {path}")
    except (LookupError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
