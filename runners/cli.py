"""`tfx-edge`: the one console entry point; each group is the `python -m <package>` command of its stage.

    tfx-edge pipeline run|compile|submit|dataflow-args ...   (python -m runners)
    tfx-edge serving serve|predict|classify|status|rollout|rollback|follow-latest|deploy-files ...
    tfx-edge validation validate|skew|drift|make-spans ...
    tfx-edge reports lineage|runs|html|check ...
    tfx-edge edge predict|bench|check ...                    (the device runtime, no TensorFlow)
    tfx-edge schema infer --data-root DIR --out FILE ...
    tfx-edge schema init --data-root DIR --label COLUMN --out DIR ...   (config.yaml + schema.pbtxt)
    tfx-edge fleet run|watch|status|print|demo|airflow|vertex --fleet FILE ...

Each group's module is imported only when asked for, so `tfx-edge edge ...`
never loads TensorFlow and `--help` answers at once.
"""

import importlib
import sys
from typing import List, Optional

GROUPS = {
    "pipeline": ("runners.__main__", "run the pipeline here, compile/submit it for Vertex AI, Dataflow options"),
    "serving": ("serving.__main__", "the local TF Serving-compatible server, its clients, rollouts, deploy files"),
    "validation": ("validation.__main__", "check data against the schema: validate, skew, drift, make-spans"),
    "reports": ("reports.__main__", "lineage, run list and HTML report from ML Metadata"),
    "edge": ("edge.__main__", "score, time and check int8 TFLite models with the device runtime"),
    "schema": ("schemas.infer", "your own TFRecords: init (config + schema in one step) or infer (schema only)"),
    "fleet": ("runners.fleet", "many tenants' models: run|watch|status|print|demo|airflow|vertex from one fleet file"),
}
# The schema group's commands, each its own module.
SCHEMA_COMMANDS = {"infer": "schemas.infer", "init": "schemas.init"}


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
    if group == "schema":
        if rest[:1] not in (["infer"], ["init"]):
            print("usage: tfx-edge schema init --data-root DIR --label COLUMN --out DIR [--task T] [--name N]\n"
                  "       tfx-edge schema infer --data-root DIR --out FILE [--pattern GLOB] [--label-column COL]",
                  file=sys.stderr)
            return 2
        return importlib.import_module(SCHEMA_COMMANDS[rest[0]]).main(rest[1:])
    return importlib.import_module(GROUPS[group][0]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
