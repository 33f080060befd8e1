"""Why a tenant's model should retrain now: new data landed, its cron schedule is due, its traffic drifted,
or the served model scores worse than its bound on newly labelled data or on late labels.

Cheap by design: new data is a fingerprint of file names, sizes and modification times (no file is read);
the schedule is croniter arithmetic; the monitoring job (`monitoring/job.py`: skew of the request log
against the training statistics and drift against the previous window, thresholds from the schema's
comparators) runs only when the request logs changed, and the drift trigger reads its newest window; the
metric check (the served SavedModel on the labelled files, and the monitoring series' served metric on
late labels) only when those files, its bound, the served version or the series did.
"""

import glob
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from croniter import croniter

from contract import versions
from contract.config import has_span_spec
from fleet.config import FleetModel
from fleet.state import State
from formats.spans import pattern_for_span, span_files
from monitoring import store as series
from monitoring.store import Store


@dataclass
class DataFacts:
    fingerprint: str
    files: int
    span: Optional[int]  # latest span with {SPAN} or date patterns, else None


@dataclass
class Decision:
    reasons: List[str] = field(default_factory=list)
    data: Optional[DataFacts] = None
    logs: Optional[str] = None  # request-log fingerprint seen by this check
    labelled: Optional[str] = None  # labelled files + served version seen by the metric check

    @property
    def due(self) -> bool:
        return bool(self.reasons)


def data_facts(model: FleetModel) -> DataFacts:
    """The files the pipeline would read, as a fingerprint; with span or date patterns, only the latest span's
    (numbered as ExampleGen numbers them, `formats.spans`)."""
    config = model.config
    base = config.input_base
    patterns = list(config.split_patterns.values())
    if not config.data.spanned_pattern:
        paths = [p for pattern in patterns for p in sorted(glob.glob(os.path.join(base, pattern))) if os.path.isfile(p)]
        return DataFacts(_fingerprint(paths, base), len(paths), None)
    found = [span_files(base, pattern) for pattern in patterns]
    common = set.intersection(*(set(by_span) for by_span in found))
    latest = max(common) if common else None
    paths = [path for by_span in found for path in by_span.get(latest, [])]
    return DataFacts(_fingerprint(paths, base), len(paths), latest)


def _fingerprint(paths: List[str], base: str) -> str:
    """Names, sizes and modification times of `paths`, hashed ("" for none): no file is read."""
    digest = hashlib.sha256()
    for path in paths:
        st = os.stat(path)
        digest.update(f"{os.path.relpath(path, base)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16] if paths else ""


def labelled_files(model: FleetModel, data: DataFacts) -> List[str]:
    """The labelled files (the data's format) the metric check scores: `metric.labelled` under the data root, by default the
    latest span's eval split (labelled rows; new ones whenever a span lands)."""
    config = model.config
    pattern = model.metric.get("labelled") or config.split_patterns.get("eval", "")
    if data.span is not None and has_span_spec(pattern):
        pattern = pattern_for_span(pattern, data.span)
    if not pattern:
        return []
    return sorted(p for p in glob.glob(os.path.join(config.input_base, pattern)) if os.path.isfile(p))


def served_metric(model: FleetModel, files: List[str], version: int) -> float:
    """The served version's headline metric (`Task.headline`) on `files`, computed as the edge gate does."""
    import formats
    from edge.export import labels_of, serving_predictions
    from models.trainer import custom_ops

    spec = model.config.features
    examples = formats.read_all(formats.detect(files), files)
    loaded = custom_ops.load(os.path.join(model.config.model_serving_dir, str(version)))
    outputs = serving_predictions(loaded, examples, spec)
    task = spec.task_type
    return task.quality(labels_of(examples, spec), outputs)[task.headline.key]


def metric_reason(model: FleetModel, files: List[str], version: int) -> str:
    """"" when the served model is on the good side of `metric.bound` on `files`, else by how much not."""
    headline = model.config.features.task_type.headline
    label, higher_is_better = headline.label, headline.higher_is_better
    bound = model.metric["bound"]
    value = served_metric(model, files, version)
    worse = value < bound if higher_is_better else value > bound
    if not worse:
        return ""
    return (f"served {label} {value:.3f} {'<' if higher_is_better else '>'} {bound:g} on newly labelled data "
            f"({len(files)} file(s), version {version})")


def logs_fingerprint(model: FleetModel) -> str:
    root = model.config.model_request_log_dir
    digest = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            st = os.stat(os.path.join(dirpath, name))
            digest.update(f"{dirpath}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16] if os.path.isdir(root) else ""


def next_due(model: FleetModel, last_started: Optional[float], now: float) -> Optional[float]:
    """When the cron schedule is next due: now if the model never ran, None without a schedule trigger."""
    if "schedule" not in model.triggers or not model.schedule:
        return None
    return croniter(model.schedule, last_started).get_next(float) if last_started else now


def drift_reason(model: FleetModel) -> str:
    """"" when the monitoring series' newest window is within the schema's skew and drift thresholds, else
    which features are over."""
    latest = Store(model.config.monitoring_path).latest(model.name)
    over = [p for measure in series.FEATURE_MEASURES for p in latest.get(measure, []) if p.value > p.threshold]
    return ", ".join(f"{p.feature} {p.measure} {p.value:.3f} > {p.threshold:g}" for p in over)


def served_metric_reason(model: FleetModel) -> str:
    """"" unless the monitoring series' newest served metric (late labels) is worse than its bound."""
    points = Store(model.config.monitoring_path).latest(model.name).get(series.SERVED_METRIC, [])
    if not points or points[0].threshold is None:
        return ""
    point = points[0]
    headline = model.config.features.task_type.headline
    worse = point.value < point.threshold if headline.higher_is_better else point.value > point.threshold
    if not worse:
        return ""
    window = time.strftime("%Y-%m-%d %H:%M", time.gmtime(point.window_start))
    return (f"served {headline.label} {point.value:.3f} {'<' if headline.higher_is_better else '>'} "
            f"{point.threshold:g} on late labels (window from {window} UTC)")


def served_series_fingerprint(model: FleetModel) -> str:
    """What the served-metric reason depends on: the newest served metric's window and value."""
    points = Store(model.config.monitoring_path).latest(model.name).get(series.SERVED_METRIC, [])
    return f"{points[0].window_start:.0f}:{points[0].value:.6f}" if points else ""


def evaluate(model: FleetModel, state: State, now: Optional[float] = None) -> Decision:
    """The reasons `model` is due now (empty: skip). Never runs a pipeline."""
    now = time.time() if now is None else now
    last = state.last_run(model.name)
    data = data_facts(model)
    decision = Decision(data=data)
    if "new_data" in model.triggers and data.files:
        if last is None:
            decision.reasons.append("first run")
        elif data.fingerprint != last["data"].get("fingerprint"):
            span = f" (span {data.span})" if data.span is not None else ""
            decision.reasons.append(f"new data{span}")
    if "schedule" in model.triggers and model.schedule:
        if next_due(model, last["started"] if last else None, now) <= now:
            decision.reasons.append(f"schedule {model.schedule!r} due")
    check = state.last_check(model.name) or {}
    fingerprint = logs_fingerprint(model)
    decision.logs = fingerprint
    if fingerprint and fingerprint != check.get("logs"):
        # New request-log files: the monitoring job measures them (every model, for its series).
        from monitoring import job

        job.run(model.config)
        if "drift" in model.triggers and data.files:
            over = drift_reason(model)
            if over:
                decision.reasons.append(f"request log over threshold: {over}")
    if "metric" in model.triggers:
        served = versions.list_versions(model.config.model_serving_dir)
        files = labelled_files(model, data)
        # What the scores depend on: the files, the bound they are held to (an edited fleet file re-checks), the
        # version, and the series' newest served metric.
        scored = (f"{_fingerprint(files, model.config.input_base)}@{model.metric['bound']:g}@{served[-1]}"
                  if served and files else "")
        late = served_series_fingerprint(model)
        decision.labelled = scored + (f"|{late}" if late else "")
        if decision.labelled and decision.labelled != check.get("labelled"):
            worse = [metric_reason(model, files, served[-1]) if scored else "", served_metric_reason(model)]
            decision.reasons.extend(reason for reason in worse if reason)
    return decision


def facts_dict(data: Optional[DataFacts]) -> Dict[str, Any]:
    return {"fingerprint": data.fingerprint, "files": data.files, "span": data.span} if data else {}
