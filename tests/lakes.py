"""The bundled taxi data laid out as a data lake: Hive-style date partitions, in each format the pipeline reads.

`write_lake(rows, root, format)` writes the same rows in the same order as tf.Example
TFRecords, Parquet (pyarrow) or CSV (a header row): `date=YYYY-MM-DD/train/part-00000.<ext>`
and `date=.../eval/...`. The rows are a sample of the bundled trips (`taxi_rows`) with the
taxi label rule written as a column, `big_tipper` (tip > 20% of the fare, computed as
Transform computes it), and `tips` left out (it would give the label away), so `init` can
set a lake up on its own. A partition holds the trips from its date to the next
partition's date: `partition_dates` cuts the trips, in time order, into equal shares.
"""

import csv
import datetime
import glob
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from contract.config import FeaturesConfig
from tests.datasets import example
from tests.samples import write_examples

LABEL = "big_tipper"
# Every column of the bundled trips but the tip, with its tf.Example kind; plus the label.
COLUMNS = {
    "company": "string", "payment_type": "string",
    "dropoff_census_tract": "int", "pickup_census_tract": "int", "dropoff_community_area": "int",
    "pickup_community_area": "int", "trip_seconds": "int", "trip_start_day": "int", "trip_start_hour": "int",
    "trip_start_month": "int", "trip_start_timestamp": "int",
    "dropoff_latitude": "float", "dropoff_longitude": "float", "pickup_latitude": "float", "pickup_longitude": "float",
    "fare": "float", "trip_miles": "float",
    LABEL: "int",
}
EXTENSIONS = {"tfrecord": "tfrecord.gz", "parquet": "parquet", "csv": "csv"}


def taxi_rows(examples) -> List[Dict[str, object]]:
    """tf.Examples of the bundled trips as {column: value or None}, with `big_tipper` in place of `tips`."""
    spec = FeaturesConfig()
    rows = []
    for e in examples:
        features = e.features.feature

        def value(name):
            feature = features.get(name)
            kind = feature.WhichOneof("kind") if feature is not None else None
            values = getattr(feature, kind).value if kind else []
            if not values:
                return None
            first = values[0]
            return first.decode("utf-8") if isinstance(first, bytes) else first

        row = {name: value(name) for name in COLUMNS if name != LABEL}
        row[LABEL] = int(spec.label([value("tips") or 0.0], [value("fare") or 0.0])[0])
        rows.append(row)
    return rows


def partition_dates(rows: Sequence[Dict[str, object]], partitions: int) -> List[str]:
    """`partitions` dates (ISO, ascending) cutting the rows' trip start times into equal shares."""
    times = np.sort([r["trip_start_timestamp"] for r in rows])
    starts = [int(times[int(i * len(times) / partitions)]) for i in range(partitions)]
    return [datetime.datetime.fromtimestamp(t, datetime.timezone.utc).date().isoformat() for t in starts]


def partition_of(row: Dict[str, object], dates: Sequence[str]) -> str:
    day = datetime.datetime.fromtimestamp(row["trip_start_timestamp"], datetime.timezone.utc).date().isoformat()
    return [d for d in dates if d <= day][-1]


def write_lake(splits: Dict[str, List[Dict[str, object]]], root: str, data_format: str, dates: Sequence[str]) -> str:
    """Each split's rows under `root/date=<d>/<split>/part-00000.<ext>`, in the rows' order; returns `root`."""
    for split, rows in splits.items():
        for date in dates:
            chosen = [r for r in rows if partition_of(r, dates) == date]
            path = os.path.join(root, f"date={date}", split, f"part-00000.{EXTENSIONS[data_format]}")
            WRITERS[data_format](path, chosen)
    return root


def _write_tfrecord(path: str, rows) -> None:
    write_examples(path, [example(dict(r)) for r in rows])


def _write_parquet(path: str, rows) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"string": pa.string(), "int": pa.int64(), "float": pa.float32()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    table = pa.table({name: pa.array([r[name] for r in rows], types[kind]) for name, kind in COLUMNS.items()})
    pq.write_table(table, path)


def csv_cell(value: Optional[object]) -> str:
    """A value as a CSV cell CsvExampleGen reads back to the same tf.Example value: floats keep a decimal point
    and round-trip their float32 exactly; a missing value is an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(float(np.float32(value)))
    return str(value)


def _write_csv(path: str, rows) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(list(COLUMNS))
        writer.writerows([[csv_cell(r[name]) for name in COLUMNS] for r in rows])


WRITERS = {"tfrecord": _write_tfrecord, "parquet": _write_parquet, "csv": _write_csv}


def lake_files(root: str, split: str, dates: Sequence[str]) -> List[str]:
    return sorted(f for d in dates for f in glob.glob(os.path.join(root, f"date={d}", split, "*")))
