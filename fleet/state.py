"""The fleet's own record (stdlib SQLite next to the shared MLMD): every trigger decision and run, with its reason.

MLMD records what a pipeline run produced; this records why the controller started it (or did not), which
MLMD has no place for, and must be readable without TensorFlow so a no-change cycle stays cheap.
"""

import json
import time
from typing import Any, Dict, List, Optional

from contract import records

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, started REAL NOT NULL, finished REAL,
  status TEXT NOT NULL, exit_code INTEGER, reason TEXT NOT NULL, data TEXT NOT NULL, log TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checks (
  name TEXT PRIMARY KEY, checked REAL NOT NULL, decision TEXT NOT NULL, logs TEXT NOT NULL DEFAULT '',
  labelled TEXT NOT NULL DEFAULT '');
"""
# Columns added after a release, for fleet.sqlite files made before them.
_ADDED = {"checks": {"labelled": "TEXT NOT NULL DEFAULT ''"}}


class State:
    def __init__(self, path: str):
        self.path = path
        with self._connect() as db:
            db.executescript(_SCHEMA)
            for table, columns in _ADDED.items():
                have = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                for column, kind in columns.items():
                    if column not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def _connect(self):
        return records.connect(self.path)

    def start_run(self, name: str, reason: str, data: Dict[str, Any], log: str) -> int:
        with self._connect() as db:
            cursor = db.execute("INSERT INTO runs (name, started, status, reason, data, log) VALUES (?,?,?,?,?,?)",
                                (name, time.time(), "running", reason, json.dumps(data), log))
            return int(cursor.lastrowid)

    def finish_run(self, run_id: int, status: str, exit_code: Optional[int]) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET finished=?, status=?, exit_code=? WHERE id=?",
                       (time.time(), status, exit_code, run_id))

    def last_run(self, name: str) -> Optional[Dict[str, Any]]:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE name=? ORDER BY id DESC LIMIT 1", (name,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["data"] = json.loads(out["data"])
        return out

    def runs(self, name: str) -> List[Dict[str, Any]]:
        with self._connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM runs WHERE name=? ORDER BY id", (name,))]

    def record_check(self, name: str, decision: str, logs: Optional[str] = None,
                     labelled: Optional[str] = None) -> None:
        """`logs`/`labelled`: the request-log and labelled-data fingerprints this check saw (None: keep)."""
        with self._connect() as db:
            previous = db.execute("SELECT logs, labelled FROM checks WHERE name=?", (name,)).fetchone()
            kept = [new if new is not None else (previous[key] if previous else "")
                    for key, new in (("logs", logs), ("labelled", labelled))]
            db.execute("INSERT OR REPLACE INTO checks (name, checked, decision, logs, labelled) VALUES (?,?,?,?,?)",
                       (name, time.time(), decision, *kept))

    def last_check(self, name: str) -> Optional[Dict[str, Any]]:
        with self._connect() as db:
            row = db.execute("SELECT * FROM checks WHERE name=?", (name,)).fetchone()
        return dict(row) if row else None
