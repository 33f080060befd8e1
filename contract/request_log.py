"""The request log: what a model was asked and what it answered, one row per example, in Parquet files.

Written by the local server (`serving/request_log.py`) and by the sidecar in front of real TF Serving
(`serving/sidecar.py`); read by the training/serving skew check (`validation.checks.statistics_of`), the
monitoring job and the late-label join (`monitoring/`). One file format for all of them, so what the skew
check compares, what the monitoring job measures and what a late label joins to are the same rows.

Parquet (through pyarrow, which TFX already installs) because every tool of a data lake reads it (pandas,
Spark, BigQuery, DuckDB) and a sidecar in any language can write it; the columns:

    request_id   string   the request's id: the `x-request-id` header / gRPC metadata, or one the server made
    index        int32    the example's position in its request (late labels name it when a request held several)
    time         double   when the request arrived, seconds since the epoch (UTC)
    model        string   model name
    version      int64    the version that answered (0: none did, e.g. an unknown model)
    arm          string   the version label or experiment arm the request was routed to ("" = none)
    api          string   Predict | Classify | Regress (REST: predict | classify | regress)
    entrypoint   string   GRPC | REST
    status       string   OK or the gRPC status code name (INVALID_ARGUMENT, ...)
    latency_ms   double   the server's time for the whole request
    sample_rate  double   the share of requests logged, so counts scale back to traffic
    example      binary   the serialized tf.Example as the client sent it (null when the request had none)
    prediction   list<double>  the model's answer for the example: the primary output's row
                           (contract.serving; Classify: the scores), empty for a failed request

A failed request is one row (index 0) with its status and no prediction. Files are named
`requests-<UTC time>-<pid>-<random>.parquet` and appear whole (written under a hidden name, then renamed).
"""

import io
import re
import uuid
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from contract.errors import ConfigError
from contract.serving import PREDICTION_KEY, REGRESS_OUTPUTS, SCORES, VALUE_KEY

FILE_SUFFIX = ".parquet"
FILE_PREFIX = "requests-"
REQUEST_ID_HEADER = "x-request-id"
COLUMNS = ("request_id", "index", "time", "model", "version", "arm", "api", "entrypoint", "status", "latency_ms",
           "sample_rate", "example", "prediction")
# Client-chosen ids: UUIDs, ULIDs, trace ids. Anything else could not be written back in a header safely.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# The serving outputs a logged prediction is read from, in this order (contract/serving.py): the binary
# probability, the regression value (serving_default, then Regress), the per-class scores (multiclass, Classify).
_PREDICTION_OUTPUTS = (PREDICTION_KEY, VALUE_KEY, REGRESS_OUTPUTS, SCORES)


class RequestLogError(ConfigError):
    """A file in a request-log directory that is not a request log: named, with what to do (exit status 2)."""


def new_request_id() -> str:
    """A random id for a request that came without one (UUID4, 32 hex digits)."""
    return uuid.uuid4().hex


def request_id_problem(value: str) -> str:
    """Why a client's request id is refused ("" when it is fine)."""
    if _REQUEST_ID.match(value):
        return ""
    return (f"{REQUEST_ID_HEADER} {value[:40]!r}{'...' if len(value) > 40 else ''} is not a request id: send 1-128 "
            "letters, digits, '.', '_', ':' or '-' (a UUID, for example), or no header to get one")


def prediction_rows(outputs: Dict[str, np.ndarray], size: int) -> List[List[float]]:
    """The logged answer of each of `size` examples: the first of `_PREDICTION_OUTPUTS` the call returned."""
    for name in _PREDICTION_OUTPUTS:
        if name in outputs:
            values = np.asarray(outputs[name], dtype=np.float64).reshape(size, -1)
            return values.tolist()
    return [[] for _ in range(size)]


def schema():
    import pyarrow as pa

    return pa.schema([
        ("request_id", pa.string()), ("index", pa.int32()), ("time", pa.float64()), ("model", pa.string()),
        ("version", pa.int64()), ("arm", pa.string()), ("api", pa.string()), ("entrypoint", pa.string()),
        ("status", pa.string()), ("latency_ms", pa.float64()), ("sample_rate", pa.float64()),
        ("example", pa.binary()), ("prediction", pa.list_(pa.float64())),
    ])


def encode(rows: Sequence[dict]) -> bytes:
    """Rows (dicts of `COLUMNS`) as the bytes of one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(list(rows), schema=schema())
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def is_log_file(path: str) -> bool:
    return path.endswith(FILE_SUFFIX)


def read(paths: Iterable[str], columns: Optional[Sequence[str]] = None, since: Optional[float] = None):
    """The rows of request-log files as one pyarrow Table (only rows at or after `since`, if given).

    A file that is not a request log is named, with what to do: a RequestLogError.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = list(columns or COLUMNS)
    tables = []
    for path in paths:
        try:
            table = pq.read_table(path, columns=wanted)
        except (pa.ArrowInvalid, OSError) as error:
            raise RequestLogError(f"{path} is not a readable request log ({error}); move it out of the request "
                                  "log directory") from None
        if since is not None:
            import pyarrow.compute as pc

            table = table.filter(pc.greater_equal(table["time"], since))
        tables.append(table)
    if not tables:
        return schema().empty_table().select(wanted)
    return pa.concat_tables(tables)


def examples(paths: Iterable[str]) -> List[bytes]:
    """The logged serialized tf.Examples of request-log files (rows without one skipped)."""
    column = read(paths, ["example"])["example"]
    return [value for value in column.to_pylist() if value is not None]
