"""The project's own SQLite records (the fleet's state, the monitoring store): one way to open them."""

import contextlib
import os
import sqlite3
from typing import Iterator


@contextlib.contextmanager
def connect(path: str) -> Iterator[sqlite3.Connection]:
    """One connection per call, committed on success: the writers are threads and processes (fleet runs
    finishing, the monitoring job, the exporter's scrapes) and SQLite serialises them; rows read by name."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    db = sqlite3.connect(path, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        with db:
            yield db
    finally:
        db.close()
