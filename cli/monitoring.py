"""`tfx-edge monitoring`: watch served models and close the loop to retraining.

    tfx-edge monitoring run      [SETTINGS | --fleet FILE [--only NAME ...]]   measure new request-log windows
    tfx-edge monitoring labels   --input FILE [SETTINGS | --fleet FILE --only NAME]   join late labels
    tfx-edge monitoring report   [SETTINGS | --fleet FILE] [--out FILE.html]   the series, drawn
    tfx-edge monitoring exporter [SETTINGS | --fleet FILE] [--port N] [--target HOST:PORT] [--no-probe]
    tfx-edge monitoring webhook  --fleet FILE [--port N]                        Alertmanager -> fleet retrain

SETTINGS are --config FILE / --set KEY=VALUE as for every command (one model: model_name); with --fleet,
every tenant model of the fleet file (or those named by --only). Exit status: 0 done, 1 `labels` joined
none of a file's rows, 2 a bad setting, file or argument.
"""

import argparse
import sys
from typing import List

from cli import prologue
from contract.config import PipelineConfig
from contract.errors import ConfigError


def _configs(args) -> List[PipelineConfig]:
    if getattr(args, "fleet", ""):
        from fleet.config import find, load_fleet

        return [m.config for m in find(load_fleet(args.fleet).models, args.only)]
    if getattr(args, "only", None):
        raise ConfigError("--only names tenant models of a fleet: give --fleet FILE too")
    return [prologue.load_settings(args)]


def cmd_run(args) -> int:
    from monitoring import job
    from reports import html

    configs = _configs(args)
    for config in configs:
        result = job.run(config)
        print(result.describe() + (f" (training statistics: {result.baseline})" if result.baseline else ""))
    print(f"report: {html.write_monitoring(configs, args.out)}")
    return 0


def cmd_labels(args) -> int:
    from monitoring import job, labels
    from monitoring.store import Store

    configs = _configs(args)
    if len(configs) != 1:
        raise ConfigError(f"labels join one model's outcomes; name it with --only (one of "
                          f"{', '.join(c.model_name for c in configs)})")
    config = configs[0]
    imported = labels.join(config, args.input)
    print(imported.describe(config.model_name, config.monitoring.label_window_days))
    served = job.served_metric(config, Store(config.monitoring_path))
    if served:
        print(f"served metric updated for {len(served)} window(s) with at least {config.monitoring.min_labels} "
              "labels")
    return 1 if imported.rows and not imported.joined else 0


def cmd_report(args) -> int:
    from reports import html

    print(f"report: {html.write_monitoring(_configs(args), args.out)}")
    return 0


def cmd_exporter(args) -> int:
    from monitoring import exporter

    configs = _configs(args)
    config = configs[0]
    probe = None if args.no_probe else exporter.StatusProbe(
        config.models_config_path, args.target or f"{config.serving.host}:{config.serving.port}")
    server, port = exporter.serve(config.monitoring_path, config.serving.host,
                                  args.port or config.monitoring.exporter_port, probe)
    print(f"monitoring exporter: http://{config.serving.host}:{port}/metrics (store {config.monitoring_path}"
          + (f", status of {probe.target}" if probe else "") + ")", flush=True)
    prologue.wait_for_signal()
    server.shutdown()
    return 0


def cmd_webhook(args) -> int:
    from fleet import alerts
    from fleet.config import load_fleet

    fleet = load_fleet(args.fleet)
    settings = fleet.models[0].config
    server = alerts.serve(fleet, settings.serving.host, args.port or settings.monitoring.webhook_port, sys.stdout)
    host, port = server.server_address[:2]
    print(f"alert webhook: http://{host}:{port}{alerts.PATH} retrains the models of {fleet.path}", flush=True)
    prologue.wait_for_signal()
    server.shutdown()
    server.receiver.wait()  # the runs alerts started finish
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfx-edge monitoring", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name, func, text, fleet_only=False):
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(func=func)
        sub.add_argument("--fleet", required=fleet_only, default="", metavar="FILE",
                         help="the fleet file: its tenant models instead of one model's settings")
        if not fleet_only:
            prologue.add_settings_arguments(sub)
            sub.add_argument("--only", action="append", default=[], metavar="NAME",
                             help="with --fleet: a tenant or <tenant>-<model> (repeatable)")
        return sub

    run = add("run", cmd_run, "measure the request log's new windows: traffic, errors, latency, skew, drift, "
                              "served metric; then write the report page")
    run.add_argument("--out", default="", metavar="FILE.html",
                     help="the report page (default: monitoring.html beside the monitoring store)")
    labels = add("labels", cmd_labels, "join late labels (request_id, label, optional time and index; Parquet, "
                                       "CSV or JSON lines) to the logged predictions")
    labels.add_argument("--input", required=True, metavar="FILE", help="*.parquet, *.csv or *.jsonl")
    report = add("report", cmd_report, "write the monitoring page: each model's series as charts")
    report.add_argument("--out", default="", metavar="FILE.html",
                        help="default: monitoring.html beside the monitoring store")
    exporter = add("exporter", cmd_exporter, "serve the series' latest values and the served versions' state "
                                             "as Prometheus gauges, until SIGTERM")
    exporter.add_argument("--port", type=int, default=0, help="default monitoring.exporter_port")
    exporter.add_argument("--target", default="", metavar="HOST:PORT",
                          help="gRPC address of TF Serving or the local server to ask for model status "
                               "(default serving.host:serving.port)")
    exporter.add_argument("--no-probe", action="store_true", help="do not ask the server for model status")
    webhook = add("webhook", cmd_webhook, "receive Alertmanager's webhook and retrain the alerted tenant model, "
                                          "until SIGTERM", fleet_only=True)
    webhook.add_argument("--port", type=int, default=0, help="default monitoring.webhook_port")
    return parser


@prologue.command
def main(argv=None) -> int:
    prologue.prepare()
    args = build_parser().parse_args(argv)
    return args.func(args)
