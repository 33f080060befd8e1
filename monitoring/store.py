"""The monitoring record: stdlib SQLite beside the ML Metadata store (`config.monitoring_path`).

MLMD records what pipeline runs produced; this records what happened to the served models afterwards: one
row per model, window and measure (the time series the exporter, the report and the fleet triggers read),
each window's feature statistics (the next window's drift is measured against them), the late labels
joined to their predictions, and every label import's counts. One file for every model of an output
directory (a fleet's tenants share it, keyed by model name), readable without TensorFlow, so the exporter
answers a scrape cheaply.
"""

import json
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from contract import records

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
  model TEXT NOT NULL, window_start REAL NOT NULL, window_end REAL NOT NULL, measure TEXT NOT NULL,
  feature TEXT NOT NULL DEFAULT '', value REAL NOT NULL, threshold REAL, updated REAL NOT NULL,
  PRIMARY KEY (model, window_start, measure, feature));
CREATE TABLE IF NOT EXISTS window_statistics (
  model TEXT NOT NULL, window_start REAL NOT NULL, statistics BLOB NOT NULL, PRIMARY KEY (model, window_start));
CREATE TABLE IF NOT EXISTS labels (
  model TEXT NOT NULL, request_id TEXT NOT NULL, idx INTEGER NOT NULL, label REAL NOT NULL,
  label_time REAL NOT NULL, predicted REAL NOT NULL, version INTEGER NOT NULL, prediction TEXT NOT NULL,
  joined REAL NOT NULL, PRIMARY KEY (model, request_id, idx));
CREATE TABLE IF NOT EXISTS label_imports (
  id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, source TEXT NOT NULL, imported REAL NOT NULL,
  counts TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS progress (
  model TEXT PRIMARY KEY, processed_until REAL NOT NULL, last_run REAL NOT NULL);
CREATE TABLE IF NOT EXISTS baselines (
  model TEXT NOT NULL, version INTEGER NOT NULL, source TEXT NOT NULL, statistics BLOB NOT NULL,
  PRIMARY KEY (model, version));
"""

# Measures of the series (`feature` is '' except for skew and drift, which have one row per feature).
REQUESTS = "requests"  # requests in the window, scaled back from the sample (rows / sample_rate)
REQUESTS_PER_SECOND = "requests_per_second"
ERROR_RATIO = "error_ratio"
LATENCY_P50 = "latency_p50_ms"
LATENCY_P99 = "latency_p99_ms"
EXAMPLES = "examples"  # logged examples the window's statistics are computed from
SKEW = "skew"  # per feature: distance to the training statistics; threshold from the schema's skew_comparator
DRIFT = "drift"  # per feature: distance to the previous window; threshold from the schema's drift_comparator
SERVED_METRIC = "served_metric"  # feature = the headline metric's key; threshold = monitoring.metric_bound
LABELS = "labels"  # joined late labels of the window's predictions
FEATURE_MEASURES = (SKEW, DRIFT)


@dataclass
class Point:
    model: str
    window_start: float
    window_end: float
    measure: str
    feature: str
    value: float
    threshold: Optional[float]


@dataclass
class JoinedLabel:
    request_id: str
    index: int
    label: float
    label_time: float
    predicted: float  # when the prediction was made
    version: int
    prediction: List[float]


class Store:
    def __init__(self, path: str):
        self.path = path
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self):
        return records.connect(self.path)

    # -- the series ------------------------------------------------------------------------------------------
    def put(self, points: Iterable[Point]) -> None:
        now = time.time()
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO series VALUES (?,?,?,?,?,?,?,?)",
                           [(p.model, p.window_start, p.window_end, p.measure, p.feature, p.value, p.threshold, now)
                            for p in points])

    def replace_window(self, model: str, window_start: float, measures: Sequence[str], points: List[Point],
                       statistics: Optional[bytes] = None) -> None:
        """The window's rows of `measures` become `points` (a feature no longer measured leaves no stale row),
        with the window's serialized statistics when given: one transaction."""
        now = time.time()
        with self._connect() as db:
            db.executemany("DELETE FROM series WHERE model=? AND window_start=? AND measure=?",
                           [(model, window_start, m) for m in measures])
            db.executemany("INSERT OR REPLACE INTO series VALUES (?,?,?,?,?,?,?,?)",
                           [(p.model, p.window_start, p.window_end, p.measure, p.feature, p.value, p.threshold, now)
                            for p in points])
            if statistics is not None:
                db.execute("INSERT OR REPLACE INTO window_statistics VALUES (?,?,?)",
                           (model, window_start, statistics))

    def series(self, model: str, measure: Optional[str] = None) -> List[Point]:
        query, args = "SELECT * FROM series WHERE model=?", [model]
        if measure:
            query, args = query + " AND measure=?", args + [measure]
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY window_start, measure, feature", args).fetchall()
        return [Point(r["model"], r["window_start"], r["window_end"], r["measure"], r["feature"], r["value"],
                      r["threshold"]) for r in rows]

    def latest(self, model: str) -> Dict[str, List[Point]]:
        """Per measure, the points of the newest window that has that measure."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT s.* FROM series s JOIN (SELECT measure, MAX(window_start) AS newest FROM series "
                "WHERE model=? GROUP BY measure) n ON s.measure=n.measure AND s.window_start=n.newest "
                "WHERE s.model=? ORDER BY s.measure, s.feature", (model, model)).fetchall()
        out: Dict[str, List[Point]] = {}
        for r in rows:
            out.setdefault(r["measure"], []).append(Point(r["model"], r["window_start"], r["window_end"],
                                                          r["measure"], r["feature"], r["value"], r["threshold"]))
        return out

    def models(self) -> List[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT model FROM series UNION SELECT model FROM progress "
                                             "ORDER BY 1")]

    # -- statistics (serialized DatasetFeatureStatisticsList): each window's, each served version's training -------
    def statistics_before(self, model: str, window_start: float) -> Optional[Tuple[float, bytes]]:
        """The newest window before `window_start` that has statistics: (its start, the statistics)."""
        with self._connect() as db:
            row = db.execute("SELECT window_start, statistics FROM window_statistics WHERE model=? AND "
                             "window_start<? ORDER BY window_start DESC LIMIT 1", (model, window_start)).fetchone()
        return (row[0], row[1]) if row else None

    def baseline(self, model: str, version: int) -> Optional[Tuple[str, bytes]]:
        """The training statistics a served version is compared with, once found: (where from, statistics)."""
        with self._connect() as db:
            row = db.execute("SELECT source, statistics FROM baselines WHERE model=? AND version=?",
                             (model, version)).fetchone()
        return (row[0], row[1]) if row else None

    def put_baseline(self, model: str, version: int, source: str, statistics: bytes) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO baselines VALUES (?,?,?,?)", (model, version, source, statistics))

    # -- progress of the job -----------------------------------------------------------------------------------
    def processed_until(self, model: str) -> float:
        """Log rows before this time are in closed windows the job has measured; 0 when it never ran."""
        with self._connect() as db:
            row = db.execute("SELECT processed_until FROM progress WHERE model=?", (model,)).fetchone()
        return row[0] if row else 0.0

    def set_progress(self, model: str, processed_until: float, ran: float) -> None:
        """`ran`: when the run listed the log files (a file written later is new to the next run)."""
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO progress VALUES (?,?,?)", (model, processed_until, ran))

    def last_run(self, model: str) -> Optional[float]:
        with self._connect() as db:
            row = db.execute("SELECT last_run FROM progress WHERE model=?", (model,)).fetchone()
        return row[0] if row else None

    # -- late labels -------------------------------------------------------------------------------------------
    def joined_keys(self, model: str, request_ids: Iterable[str]) -> set:
        """The (request_id, index) pairs of these requests that already have a label."""
        ids = sorted(set(request_ids))
        found = set()
        with self._connect() as db:
            for start in range(0, len(ids), 500):  # SQLite's limit on bound variables
                chunk = ids[start:start + 500]
                found.update((r[0], r[1]) for r in db.execute(
                    f"SELECT request_id, idx FROM labels WHERE model=? AND request_id IN "
                    f"({','.join('?' * len(chunk))})", [model, *chunk]))
        return found

    def add_labels(self, model: str, labels: Sequence[JoinedLabel], source: str, counts: Dict[str, int]) -> None:
        """The joined labels and the import's counts, in one transaction: an import is recorded whole or not."""
        now = time.time()
        with self._connect() as db:
            db.executemany("INSERT INTO labels VALUES (?,?,?,?,?,?,?,?,?)",
                           [(model, j.request_id, j.index, j.label, j.label_time, j.predicted, j.version,
                             json.dumps(j.prediction), now) for j in labels])
            db.execute("INSERT INTO label_imports (model, source, imported, counts) VALUES (?,?,?,?)",
                       (model, source, now, json.dumps(counts)))

    def labels(self, model: str) -> List[JoinedLabel]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM labels WHERE model=? ORDER BY predicted", (model,)).fetchall()
        return [JoinedLabel(r["request_id"], r["idx"], r["label"], r["label_time"], r["predicted"], r["version"],
                            json.loads(r["prediction"])) for r in rows]

    def label_imports(self, model: str) -> List[dict]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM label_imports WHERE model=? ORDER BY id", (model,)).fetchall()
        return [dict(r, counts=json.loads(r["counts"])) for r in rows]
