"""The fault-injection suite's table: every case records one row, printed at the end of the run.

    fault | requests failed | files/models lost | recovered

`make chaos` runs every case (CHAOS_ALL=1); `make test` the fast ones (the others are skipped, naming
`make chaos`). A case asserts its own outcome too: a lost file or model, or no recovery, fails it.
"""

import os
from dataclasses import dataclass
from typing import List, Optional

import pytest

ROWS: List["Row"] = []
ALL = bool(os.environ.get("CHAOS_ALL"))
slow_case = pytest.mark.skipif(not ALL, reason="a pipeline-scale fault: `make chaos` runs it")


@dataclass
class Row:
    fault: str
    requests_failed: Optional[int]  # None: nothing was serving during this fault
    requests_sent: int
    lost: int  # files or models lost: a serving/edge version, a published output, an entry of models.config
    recovered: bool
    note: str = ""


@pytest.fixture
def chaos_row():
    """Call with the case's figures; the row joins the table whatever the case's assertions decide."""
    def record(fault: str, requests_failed: Optional[int], requests_sent: int, lost: int, recovered: bool,
               note: str = "") -> Row:
        row = Row(fault, requests_failed, requests_sent, lost, recovered, note)
        ROWS.append(row)
        return row
    return record


def table(rows: List[Row]) -> List[str]:
    width = max([len(r.fault) for r in rows] + [5])
    lines = [f"{'fault':{width}s} | requests failed | files/models lost | recovered",
             f"{'-' * width}-+-----------------+-------------------+----------"]
    for r in rows:
        failed = "-" if r.requests_failed is None else f"{r.requests_failed} of {r.requests_sent}"
        lines.append(f"{r.fault:{width}s} | {failed:>15s} | {r.lost:>17d} | {'yes' if r.recovered else 'NO':>9s}"
                     + (f"   ({r.note})" if r.note else ""))
    return lines


def pytest_terminal_summary(terminalreporter):
    if ROWS:
        terminalreporter.section("fault injection")
        for line in table(ROWS):
            terminalreporter.write_line(line)
