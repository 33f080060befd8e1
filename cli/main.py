"""`tfx-edge`: the one console entry point; each group is one module of this package.

    tfx-edge pipeline run|compile|submit|dataflow-args ...
    tfx-edge serving serve|predict|classify|regress|status|rollout|promote|rollback|follow-latest|experiment|
                     deploy-files|score ...
    tfx-edge validation validate|skew|drift|make-spans ...
    tfx-edge reports lineage|runs|html|check ...
    tfx-edge edge predict|bench|check ...                    (the device runtime, no TensorFlow)
    tfx-edge schema init|infer ...                           (your own data: config.yaml + schema.pbtxt)
    tfx-edge fleet run|watch|status|print|demo|airflow|k8s|vertex --fleet FILE ...
    tfx-edge monitoring run|labels|report|exporter|webhook ...

Each group's module is imported only when asked for, so `tfx-edge edge ...`
never loads TensorFlow and `--help` answers at once.
"""

import importlib
import sys
from typing import List, Optional

# Group -> (module under cli/, one line of help). Every module has `build_parser()` and `main(argv)`.
GROUPS = {
    "pipeline": ("cli.pipeline", "run the pipeline here, compile/submit it for Vertex AI, Dataflow options"),
    "serving": ("cli.serving", "the local TF Serving-compatible server, its clients, rollouts, deploy files, "
                               "batch scoring"),
    "validation": ("cli.validation", "check data against the schema: validate, skew, drift, make-spans"),
    "reports": ("cli.reports", "lineage, run list and HTML report from ML Metadata"),
    "edge": ("cli.edge", "score, time and check int8 TFLite models with the device runtime"),
    "schema": ("cli.schema", "your own data: init (config + schema in one step) or infer (schema only)"),
    "fleet": ("cli.fleet", "many tenants' models: run|watch|status|print|demo|airflow|k8s|vertex from one fleet file"),
    "monitoring": ("cli.monitoring", "served models over time: run the job, join late labels, report, exporter, "
                                     "alert webhook"),
}


def group_module(name: str):
    """The module of group `name` (imported now)."""
    return importlib.import_module(GROUPS[name][0])


def _usage() -> str:
    lines = [__doc__.split("\n\n")[0], "", "usage: tfx-edge GROUP [COMMAND] [OPTIONS]   (tfx-edge GROUP --help)", ""]
    lines += [f"  {name:11s} {text}" for name, (_, text) in GROUPS.items()]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    group, rest = argv[0], argv[1:]
    if group not in GROUPS:
        print(f"error: unknown group {group!r}; one of {', '.join(GROUPS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    return group_module(group).main(rest)


if __name__ == "__main__":
    sys.exit(main())
