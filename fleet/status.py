"""`fleet status`: one row per tenant model — last run, serving version and its metric, data span, next due."""

import datetime
import json
import os
import time
from typing import Any, Dict, List

from contract import versions
from contract.serving import PUSH_INFO
from fleet import triggers
from fleet.config import Fleet
from fleet.state import State

COLUMNS = ("model", "last run", "status", "reason", "serving", "auc", "span", "next due")


def _when(seconds) -> str:
    if not seconds:
        return "-"
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _auc(store, pipeline_name: str) -> str:
    """The AUC of the newest blessed candidate of this pipeline (the model it serves), from MLMD."""
    from reports.summary import read_run

    try:
        summary = read_run(store, pipeline_name)
    except LookupError:
        return ""
    auc = summary.candidate_metrics.get("auc")
    return f"{auc:.3f}" if auc is not None and summary.blessed else ""


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
        due = triggers.next_due(model, last.get("started"), now)
        out.append({
            "tenant": model.tenant, "model": model.model, "name": model.name,
            "last_run": last.get("started"), "status": last.get("status", "never run"),
            "exit_code": last.get("exit_code"), "reason": last.get("reason", ""),
            "last_check": check.get("checked"), "last_decision": check.get("decision", ""),
            "serving_version": serving[-1] if serving else None,
            "pushed_from": (info or {}).get("source_model", ""),
            "auc": _auc(store, model.name) if store is not None else "",
            "span": (last.get("data") or {}).get("span"), "next_due": due,
        })
    return out


def table(items: List[Dict[str, Any]]) -> str:
    lines = [[r["name"], _when(r["last_run"]), r["status"], r["reason"][:40], str(r["serving_version"] or "-"),
              r["auc"] or "-", "-" if r["span"] is None else str(r["span"]), _when(r["next_due"])] for r in items]
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(COLUMNS)]
    fmt = "  ".join(f"{{:{w}s}}" for w in widths)
    return "\n".join([fmt.format(*COLUMNS)] + [fmt.format(*line) for line in lines])


def to_json(items: List[Dict[str, Any]]) -> str:
    return json.dumps(items, indent=2)
