"""`tfx-edge fleet`: many tenants' models kept fresh by continuous training, from one fleet file.

    tfx-edge fleet run     --fleet FILE [--only NAME ...] [--force]   run every due model now; exit = failures
    tfx-edge fleet watch   --fleet FILE --interval N [--on-stop finish|abandon]
    tfx-edge fleet status  --fleet FILE [--json] [--html OUT.html]
    tfx-edge fleet print   --fleet FILE NAME [--full]                 the resolved settings of <tenant>-<model>
    tfx-edge fleet demo    --out DIR [--tenants acme,globex] [--no-run]
    tfx-edge fleet airflow --fleet FILE --out DAGS_DIR [--command PREFIX] [--poll SCHEDULE]
    tfx-edge fleet k8s     --fleet FILE --out DIR                       one multi-model TF Serving deployment
    tfx-edge fleet vertex  --fleet FILE --out DIR [--only NAME ...]   a PipelineJob + Vertex AI schedule per model
"""

import argparse
import os
import sys

from cli import prologue


def _fleet(args):
    from fleet.config import load_fleet

    return load_fleet(args.fleet)


def cmd_run(args) -> int:
    from fleet.config import find
    from fleet.controller import MAX_EXIT, Controller

    fleet = _fleet(args)
    outcomes = Controller(fleet).cycle(find(fleet.models, args.only), force=args.force)
    failed = [o for o in outcomes if o.failed]
    ran = [o for o in outcomes if o.status != "skipped"]
    print(f"fleet run: {len(ran)} run(s), {len(outcomes) - len(ran)} skipped, {len(failed)} failed"
          + (f" ({', '.join(o.name + ': ' + o.status for o in failed)})" if failed else ""))
    return min(len(failed), MAX_EXIT)


def cmd_watch(args) -> int:
    from fleet.controller import Controller

    return Controller(_fleet(args)).watch(args.interval, args.on_stop, args.cycles)


def cmd_status(args) -> int:
    from fleet import status

    fleet = _fleet(args)
    items = status.rows(fleet)
    print(status.to_json(items) if args.json else status.table(items))
    if args.html:
        path = status.write_html(fleet, items, args.html)
        print(f"fleet report: {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_print(args) -> int:
    from fleet.config import describe

    print(describe(_fleet(args).get(args.name), args.full), end="")
    return 0


def cmd_airflow(args) -> int:
    from fleet import airflow

    fleet = _fleet(args)
    for path in airflow.write_dags(fleet, args.out, args.command, args.poll).values():
        print(f"wrote {path}")
    for stale in airflow.stale_dags(fleet, args.out):
        print(f"note: {os.path.join(args.out, stale)} is for a model no longer in {args.fleet}; delete it")
    return 0


def cmd_k8s(args) -> int:
    from contract.errors import ConfigError
    from deploy import kubernetes

    fleet = _fleet(args)
    shared = fleet.models[0].config  # serving_dir, image, batching and poll interval are the fleet's defaults
    models, missing = kubernetes.fleet_models_config(shared.models_config_path,
                                                 {m.name: m.config.model_serving_dir for m in fleet.models})
    if not models.model_config_list.config:
        raise ConfigError(f"no model of {fleet.path} has a served version yet (under {shared.serving_dir}); "
                          f"run `tfx-edge fleet run --fleet {args.fleet}` first")
    for path in kubernetes.write_fleet_files(shared, models, args.out).values():
        print(f"wrote {path}")
    print(f"one TF Serving Deployment serves {len(models.model_config_list.config)} model(s): "
          + ", ".join(m.name for m in models.model_config_list.config))
    for name in missing:
        print(f"note: {name} has no served version yet and is left out (TF Serving would not start); "
              "write the files again after its first push")
    return 0


def cmd_demo(args) -> int:
    from fleet import demo

    path = demo.lay_out(args.out, [t.strip() for t in args.tenants.split(",") if t.strip()])
    print(f"demo fleet: {path}")
    if args.no_run:
        return 0
    args.fleet, args.only, args.force = path, [], False
    return cmd_run(args)


def cmd_vertex(args) -> int:
    from runners.vertex_schedules import build_schedules

    for path in build_schedules(_fleet(args), args.out, args.only):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fleet import airflow

    parser = argparse.ArgumentParser(prog="tfx-edge fleet", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, text, fleet=True):
        p = sub.add_parser(name, help=text, description=text)
        if fleet:
            p.add_argument("--fleet", required=True, metavar="FILE", help="the fleet file (YAML)")
        p.set_defaults(func=func)
        return p

    run = add("run", cmd_run, "run every due tenant model now (bounded concurrency); exit status = failed runs")
    run.add_argument("--only", action="append", default=[], metavar="NAME", help="a tenant or <tenant>-<model>")
    run.add_argument("--force", action="store_true", help="run even when no trigger is due")
    watch = add("watch", cmd_watch, "check triggers every --interval seconds and run what is due, until SIGTERM")
    watch.add_argument("--interval", type=float, default=60.0, metavar="SECONDS",
                       help="seconds between two trigger checks")
    watch.add_argument("--on-stop", choices=("finish", "abandon"), default="finish",
                       help="on SIGTERM: let running pipelines finish (default) or end them now")
    watch.add_argument("--cycles", type=int, default=0, help="stop after N cycles (0 = until a signal)")
    status = add("status", cmd_status, "one row per tenant model: last run, serving version, metric, next due")
    status.add_argument("--json", action="store_true", help="the rows as JSON (stdout holds only the JSON)")
    status.add_argument("--html", default="", metavar="OUT.html",
                        help="also write the fleet page of the HTML report: this table, each model linked to its "
                             "latest run report")
    show = add("print", cmd_print, "the resolved pipeline settings of one tenant model")
    show.add_argument("name", help="<tenant>-<model>")
    show.add_argument("--full", action="store_true", help="every setting, defaults included")
    dags = add("airflow", cmd_airflow, "write one Apache Airflow DAG per tenant model (its schedule, one task)")
    dags.add_argument("--out", required=True, metavar="DAGS_DIR", help="Airflow's dags folder (or a copy of it)")
    dags.add_argument("--command", default="", metavar="PREFIX",
                      help="what runs `tfx-edge` on the Airflow worker (default: this environment's tfx-edge), "
                           "e.g. 'docker run --rm -v /data:/data IMAGE tfx-edge'")
    dags.add_argument("--poll", default=airflow.DEFAULT_POLL, metavar="SCHEDULE",
                      help="Airflow schedule of models that have no cron (their new-data/drift checks)")
    k8s = add("k8s", cmd_k8s, "write Kubernetes files serving every tenant model from one TF Serving Deployment "
                              "(ConfigMap with models.config, Deployment, Service, autoscaler)")
    k8s.add_argument("--out", required=True, metavar="DIR", help="where kubernetes.yaml and models.config go")
    demo = add("demo", cmd_demo, "lay out demo tenants (spans of the bundled taxi data) and run a cycle", fleet=False)
    demo.add_argument("--out", required=True, metavar="DIR",
                      help="where the demo tenants' data, fleet.yaml and outputs go")
    demo.add_argument("--tenants", default="acme,globex", help="comma-separated demo tenants (acme, globex, initech)")
    demo.add_argument("--no-run", action="store_true", help="lay out the tenants only; run no cycle")
    vertex = add("vertex", cmd_vertex, "per tenant model: the compiled PipelineJob and a Vertex AI "
                                       "CreateScheduleRequest (cron), built and validated offline")
    vertex.add_argument("--out", required=True, metavar="DIR",
                        help="where <name>.pipeline.json and <name>.schedule.json go")
    vertex.add_argument("--only", action="append", default=[], metavar="NAME", help="a tenant or <tenant>-<model>")
    return parser


@prologue.command
def main(argv=None) -> int:
    prologue.prepare()
    args = build_parser().parse_args(argv)
    return args.func(args)
