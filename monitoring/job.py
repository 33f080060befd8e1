"""The monitoring job of one model: its request log, window by window, into the series of `store.py`.

Per window of `monitoring.window_seconds` (aligned to the epoch, UTC): traffic (requests scaled back from
the sample), the error ratio, latency p50/p99, and the TFDV statistics of the logged examples, compared
with the served model's training statistics (skew) and with the previous window's (drift) by
`validation.checks.compare`, the anomaly gate's own comparison: TFDV's distances per feature (L-infinity
for categorical strings, Jensen-Shannon divergence for numbers) against the schema's skew_comparator and
drift_comparator thresholds. Then the served metric (the task's headline metric, `Task.headline`) of
every window whose predictions have at least `monitoring.min_labels` joined late labels (`labels.py`).

Each run reads only log files that may hold rows of the newest window it measured, and only when a file
was written since its last run; it measures that window again (it was still open) and the new ones, and
keeps its place in the store: running it every minute costs at most one window's work.
"""

import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from contract import request_log
from contract.config import PipelineConfig
from monitoring import store as series
from monitoring.store import Point, Store

# Columns the job reads (not api, entrypoint, model: the directory is the model's).
_COLUMNS = ("request_id", "index", "time", "version", "status", "latency_ms", "sample_rate", "example")
# Measures a window's log rows determine (the served metric comes from labels, at any later time).
TRAFFIC_MEASURES = (series.REQUESTS, series.REQUESTS_PER_SECOND, series.ERROR_RATIO, series.LATENCY_P50,
                    series.LATENCY_P99, series.EXAMPLES, series.SKEW, series.DRIFT)


@dataclass
class Result:
    """What one run measured: the windows it (re)computed and where the training statistics came from."""

    model: str
    windows: List[float] = field(default_factory=list)
    rows: int = 0
    baseline: str = ""
    served_windows: List[float] = field(default_factory=list)
    over: List[Point] = field(default_factory=list)  # the newest window's features over their threshold

    def describe(self) -> str:
        if not self.windows and not self.served_windows:
            return f"{self.model}: no new request log rows or labels"
        parts = [f"{self.model}: {self.rows} log row(s) in {len(self.windows)} window(s)"]
        if self.served_windows:
            parts.append(f"served metric in {len(self.served_windows)} window(s)")
        if self.over:
            parts.append("over threshold: " + ", ".join(f"{p.measure} {p.feature} {p.value:.3f} > {p.threshold:g}"
                                                        for p in self.over))
        return "; ".join(parts)


def log_files(directory: str, since: float = 0.0) -> List[str]:
    """The request-log files under `directory` that may hold rows at or after `since` (written after it)."""
    found = []
    for dirpath, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(dirpath, name)
            if request_log.is_log_file(name) and not name.startswith(".") and os.path.getmtime(path) >= since:
                found.append(path)
    return sorted(found)


def _window_points(model: str, start: float, end: float, now: float, first: np.ndarray, status: np.ndarray,
                   latency: np.ndarray, weight: np.ndarray) -> List[Point]:
    """Traffic, errors and latency of one window; `first` marks each request's first row."""
    requests = float(weight[first].sum())
    ok = first & (status == "OK")
    errors = float(weight[first & (status != "OK")].sum())
    elapsed = max(min(end, now) - start, 1e-9)
    values = {series.REQUESTS: requests, series.REQUESTS_PER_SECOND: requests / elapsed,
              series.ERROR_RATIO: errors / requests if requests else 0.0}
    if ok.any():
        p50, p99 = np.percentile(latency[ok], [50, 99])
        values[series.LATENCY_P50], values[series.LATENCY_P99] = float(p50), float(p99)
    return [Point(model, start, end, measure, "", value, None) for measure, value in values.items()]


def _distance_points(model: str, start: float, end: float, measure: str, distances) -> List[Point]:
    return [Point(model, start, end, measure, d.feature, float(d.value), float(d.threshold)) for d in distances]


def run(config: PipelineConfig, now: Optional[float] = None, store: Optional[Store] = None) -> Result:
    """Measures the model's new request-log rows and joined labels into the series."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from validation import checks
    from validation.report import GatePolicy

    now = time.time() if now is None else now
    store = store or Store(config.monitoring_path)
    model, width = config.model_name, config.monitoring.window_seconds
    result = Result(model)
    since, previous = store.processed_until(model), store.last_run(model)
    listed = time.time()
    files = log_files(config.model_request_log_dir, since)
    if previous is not None and not any(os.path.getmtime(f) >= previous for f in files):
        files = []  # no file written since the last run listed them: nothing new to measure
    table = request_log.read(files, _COLUMNS, since=since)
    result.rows = table.num_rows
    if table.num_rows:
        times = table["time"].to_numpy()
        starts = np.floor(times / width) * width
        first = table["index"].to_numpy() == 0
        status = np.asarray(table["status"].to_pylist(), dtype=object)
        latency = table["latency_ms"].to_numpy()
        weight = 1.0 / np.maximum(table["sample_rate"].to_numpy(), 1e-12)
        examples = table["example"].to_pylist()
        versions = table["version"].to_numpy()
        schema = checks.load_schema(config.schema_file)
        policy = GatePolicy.from_config(config.validation)
        for start in sorted(set(starts.tolist())):
            end = start + width
            mask = starts == start
            points = _window_points(model, start, end, now, first[mask], status[mask], latency[mask], weight[mask])
            records = [examples[i] for i in np.flatnonzero(mask & (status == "OK")) if examples[i] is not None]
            if records:
                statistics = checks.statistics_of_records(records, f"the request log of {model}")
                points.append(Point(model, start, end, series.EXAMPLES, "", float(len(records)), None))
                # Against what the newest version answering in the window was trained on.
                training, result.baseline = _baseline(config, store, int(versions[mask].max()))
                if training is not None:
                    _, skew = checks.compare(training, statistics, schema, "skew", policy)
                    points += _distance_points(model, start, end, series.SKEW, skew)
                previous = store.statistics_before(model, start)
                if previous is not None:
                    before = statistics_pb2.DatasetFeatureStatisticsList.FromString(previous[1])
                    _, drift = checks.compare(statistics, before, schema, "drift", policy)
                    points += _distance_points(model, start, end, series.DRIFT, drift)
            store.replace_window(model, start, TRAFFIC_MEASURES, points,
                                 statistics.SerializeToString() if records else None)
            result.windows.append(start)
        # The newest window may still grow: the next run starts there.
        store.set_progress(model, max(result.windows), listed)
        newest = max(result.windows)
        result.over = [p for p in store.series(model) if p.window_start == newest and
                       p.measure in series.FEATURE_MEASURES and p.value > p.threshold]
    else:
        store.set_progress(model, since, listed)
    result.served_windows = served_metric(config, store)
    return result


def _baseline(config: PipelineConfig, store: Store, version: int):
    """(training statistics or None, where from) of a served version, kept in the store once found: a version
    never changes, and computing them from the train split costs seconds."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from monitoring import baseline

    kept = store.baseline(config.model_name, version)
    if kept is not None:
        return statistics_pb2.DatasetFeatureStatisticsList.FromString(kept[1]), kept[0]
    training, source = baseline.training_statistics(config, version or None)
    if training is not None and version:
        store.put_baseline(config.model_name, version, source, training.SerializeToString())
    return training, source


def served_metric(config: PipelineConfig, store: Store) -> List[float]:
    """The headline metric of each window's predictions that have enough joined labels; returns those windows."""
    task = config.features.task_type
    headline = task.headline
    bound = config.monitoring.metric_bound
    width = config.monitoring.window_seconds
    grouped: Dict[float, list] = {}
    for label in store.labels(config.model_name):
        grouped.setdefault(math.floor(label.predicted / width) * width, []).append(label)
    done = []
    for start, joined in sorted(grouped.items()):
        points = [Point(config.model_name, start, start + width, series.LABELS, "", float(len(joined)), None)]
        if len(joined) >= config.monitoring.min_labels:
            labels = np.array([j.label for j in joined], dtype=np.float64)
            outputs = task.logged_outputs([j.prediction for j in joined])
            value = float(task.quality(labels, outputs)[headline.key])
            if value == value:  # AUC has no value when every label of the window is one class
                points.append(Point(config.model_name, start, start + width, series.SERVED_METRIC, headline.key,
                                    value, bound or None))
                done.append(start)
        store.replace_window(config.model_name, start, (series.LABELS, series.SERVED_METRIC), points)
    return done
