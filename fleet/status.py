"""`fleet status`: one row per tenant model — last run, the served version and its metric, data span, next due."""

import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from contract import versions
from contract.serving import PUSH_INFO
from fleet import triggers
from fleet.config import Fleet, FleetModel
from fleet.state import State

COLUMNS = ("model", "last run", "status", "reason", "serving", "metric", "span", "next due")


def _served_metric(store, model: FleetModel, pushed_from: str) -> Tuple[str, Optional[float]]:
    """The task's headline metric (AUC, accuracy or RMSE) of the model the serving version was pushed from.

    Not the latest run's candidate: that one may have been refused by the Evaluator or never evaluated
    (a run stopped at the gate), while the served version stays what it was.
    """
    from reports.summary import served_model_metrics

    first = model.config.features.task_type.report_metrics[0]
    key, label = first.key, first.label
    if store is None or not pushed_from:
        return label, None
    return label, served_model_metrics(store, pushed_from).get(key)


def rows(fleet: Fleet, with_metrics: bool = True) -> List[Dict[str, Any]]:
    state = State(fleet.state_path)
    store = None
    if with_metrics and fleet.models and os.path.exists(fleet.models[0].config.metadata_path):
        from pipeline.metadata import open_metadata

        store = open_metadata(fleet.models[0].config.metadata_path)
    now = time.time()
    out = []
    for model in fleet.models:
        last = state.last_run(model.name) or {}
        check = state.last_check(model.name) or {}
        serving = versions.list_versions(model.config.model_serving_dir)
        info = versions.read_record(os.path.join(model.config.model_serving_dir, str(serving[-1])),
                                    PUSH_INFO) if serving else None
        pushed_from = (info or {}).get("source_model", "")
        metric, value = _served_metric(store, model, pushed_from)
        due = triggers.next_due(model, last.get("started"), now)
        out.append({
            "tenant": model.tenant, "model": model.model, "name": model.name,
            "last_run": last.get("started"), "status": last.get("status", "never run"),
            "exit_code": last.get("exit_code"), "reason": last.get("reason", ""),
            "last_check": check.get("checked"), "last_decision": check.get("decision", ""),
            "serving_version": serving[-1] if serving else None,
            "pushed_from": pushed_from, "metric": metric, "metric_value": value,
            "span": (last.get("data") or {}).get("span"), "next_due": due,
        })
    return out


def table(items: List[Dict[str, Any]]) -> str:
    from reports.html import utc_minute

    lines = [[r["name"], utc_minute(r["last_run"]), r["status"], r["reason"][:40], str(r["serving_version"] or "-"),
              "-" if r["metric_value"] is None else f"{r['metric']} {r['metric_value']:.3f}",
              "-" if r["span"] is None else str(r["span"]), utc_minute(r["next_due"])] for r in items]
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(COLUMNS)]
    fmt = "  ".join(f"{{:{w}s}}" for w in widths)
    return "\n".join([fmt.format(*COLUMNS)] + [fmt.format(*line) for line in lines])


def to_json(items: List[Dict[str, Any]]) -> str:
    return json.dumps(items, indent=2)


def write_html(fleet: Fleet, items: List[Dict[str, Any]], path: str) -> str:
    """The fleet page of the HTML report (reports/html.py): these rows, each linked to its latest run report."""
    from reports import html

    base = os.path.dirname(os.path.abspath(path))
    links = {}
    for model in fleet.models:
        report = html.latest_report(model.config.pipeline_root)
        if report:
            links[model.name] = os.path.relpath(report, base)
    return html.write_page(html.render_fleet(items, fleet.path, links), path)
