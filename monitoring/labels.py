"""Late labels: outcomes that arrive days after the prediction, joined to it by the request id.

A labels file is Parquet, CSV (with a header) or JSON lines (pyarrow reads all three), one outcome a row:

    request_id   the id the server returned for the request (the x-request-id header / gRPC metadata)
    label        the model's target: for a classifier the class id (0/1 for binary) or the class name as
                 features.classes names it; for a regression the value
    time         optional: when the outcome happened, seconds since the epoch or ISO 8601 (default: now)
    index        optional: the example's position in its request, for requests that held several (default 0)

Each row is joined to the logged prediction of (request_id, index) in the model's request log and kept in
the monitoring store. Nothing is dropped silently: every row is joined or counted under one reason.
"""

import datetime
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from contract import request_log
from contract.config import PipelineConfig, class_key
from contract.errors import ConfigError
from monitoring.job import log_files
from monitoring.store import JoinedLabel, Store

FORMATS = (".parquet", ".csv", ".jsonl", ".json")
REQUIRED = ("request_id", "label")
# Why a row was not joined, in the order the report lists them.
REASONS = {
    "unknown": "no logged prediction has this request id (not sampled, another model, or its log was deleted)",
    "duplicate": "the same (request_id, index) again, in this file or joined before: the first one counts",
    "too_late": "the outcome came more than monitoring.label_window_days after the prediction",
    "before_prediction": "the outcome's time is before the prediction was made",
    "bad_label": "the label is empty or not a value of this model's target",
    "failed_request": "the request was answered with an error, so there is no prediction to judge",
}
_SHOWN = 3  # request ids shown per reason


class LabelsError(ConfigError):
    """A labels file that cannot be read at all (format, columns); exit status 2."""


@dataclass
class Import:
    source: str
    rows: int = 0
    joined: List[JoinedLabel] = field(default_factory=list)
    skipped: Dict[str, List[str]] = field(default_factory=dict)  # reason -> request ids

    def counts(self) -> Dict[str, int]:
        return {"rows": self.rows, "joined": len(self.joined),
                **{reason: len(self.skipped.get(reason, [])) for reason in REASONS}}

    def skip(self, reason: str, request_id: str) -> None:
        self.skipped.setdefault(reason, []).append(request_id)

    def describe(self, model: str, window_days: float) -> str:
        lines = [f"labels {self.source} for {model}: {self.rows} row(s), {len(self.joined)} joined"]
        for reason, text in REASONS.items():
            ids = self.skipped.get(reason, [])
            if ids:
                shown = ", ".join(ids[:_SHOWN]) + (", ..." if len(ids) > _SHOWN else "")
                text = text.replace("monitoring.label_window_days", f"monitoring.label_window_days ({window_days:g})")
                lines.append(f"  {len(ids)} {reason.replace('_', ' ')}: {text} (e.g. {shown})")
        return "\n".join(lines)


def read_table(path: str):
    """The labels file as a pyarrow Table with request_id (string), label, time (epoch seconds), index."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not os.path.isfile(path):
        raise LabelsError(f"labels file {path} does not exist")
    if not path.endswith(FORMATS):
        raise LabelsError(f"labels file {path}: unknown format; name it *.parquet, *.csv or *.jsonl")
    try:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        elif path.endswith(".csv"):
            from pyarrow import csv

            table = csv.read_csv(path, convert_options=csv.ConvertOptions(
                column_types={"request_id": pa.string(), "label": pa.string()}))
        else:
            from pyarrow import json

            table = json.read_json(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise LabelsError(f"labels file {path} cannot be read: {error}") from None
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise LabelsError(f"labels file {path} has no column {', '.join(missing)}; it needs request_id and label "
                          f"(optional: time, index), has {', '.join(table.column_names) or 'none'}")
    table = table.set_column(table.column_names.index("request_id"), "request_id",
                             pc.cast(table["request_id"], pa.string()))
    return table


def _epoch(value, default: float, where: str) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
        return moment.timestamp()
    try:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise LabelsError(f"{where}: time {value!r} is neither seconds since the epoch nor ISO 8601 "
                          "(2026-12-01T10:00:00Z)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)).timestamp()


def _label_value(config: PipelineConfig, value) -> Optional[float]:
    """The label as the number the task's metric takes (a class id, or the regression value); None if invalid.

    A classifier's label is a class as `features.classes` names it (the value in the training data), else a
    class id.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    features = config.features
    if not features.is_classification:
        return number if number is not None and abs(number) != float("inf") and number == number else None
    names = features.class_names
    integer = number is not None and number.is_integer()
    text = value.strip() if isinstance(value, str) else class_key(int(number)) if integer else None
    if text in names:
        return float(names.index(text))
    return number if integer and 0 <= number < len(names) else None


def _predictions(config: PipelineConfig, since: float,
                 request_ids: List[str]) -> Dict[Tuple[str, int], Tuple[float, int, str, list]]:
    """(request_id, index) -> (time, version, status, prediction) of the model's log rows of these requests,
    in log files written since `since` (only those rows become Python objects)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = request_log.read(log_files(config.model_request_log_dir, since),
                             ("request_id", "index", "time", "version", "status", "prediction"))
    table = table.filter(pc.is_in(table["request_id"], value_set=pa.array(request_ids, pa.string())))
    columns = [table[name].to_pylist() for name in ("request_id", "index", "time", "version", "status", "prediction")]
    return {(rid, idx): (t, v, s, p) for rid, idx, t, v, s, p in zip(*columns)}


def join(config: PipelineConfig, path: str, store: Optional[Store] = None, now: Optional[float] = None) -> Import:
    """Joins the labels in `path` to the model's logged predictions and records them (with the counts)."""
    store = store or Store(config.monitoring_path)
    now = time.time() if now is None else now
    table = read_table(path)
    ids = table["request_id"].to_pylist()
    labels = table["label"].to_pylist()
    times = [_epoch(v, now, f"{path} row {i + 1}") for i, v in
             enumerate(table["time"].to_pylist() if "time" in table.column_names else [None] * len(ids))]
    indexes = table["index"].to_pylist() if "index" in table.column_names else [0] * len(ids)
    window = config.monitoring.label_window_days * 86400.0
    result = Import(os.path.abspath(path), rows=len(ids))
    # Log files older than the oldest outcome minus the window can only hold predictions too old to join.
    predictions = _predictions(config, (min(times) - window) if times else now, [i for i in ids if i is not None])
    already = store.joined_keys(config.model_name, [i for i in ids if i is not None])
    seen = set()
    for request_id, raw, label_time, index in zip(ids, labels, times, indexes):
        request_id = request_id or ""
        key = (request_id, int(index or 0))
        if key in seen or key in already:
            result.skip("duplicate", request_id)
            continue
        seen.add(key)
        found = predictions.get(key)
        value = _label_value(config, raw)
        if found is None:
            result.skip("unknown", request_id)
        elif value is None:
            result.skip("bad_label", request_id)
        elif found[2] != "OK" or not found[3]:
            result.skip("failed_request", request_id)
        elif label_time < found[0]:
            result.skip("before_prediction", request_id)
        elif label_time - found[0] > window:
            result.skip("too_late", request_id)
        else:
            result.joined.append(JoinedLabel(request_id, key[1], value, label_time, found[0], found[1], found[3]))
    store.add_labels(config.model_name, result.joined, result.source, result.counts())
    return result
