"""One way to open and read ML Metadata: the run summary, lineage, run list and HTML report all use it.

Local runs keep MLMD in SQLite (`metadata_path`); production pipelines in MySQL
(`--mysql user@host:port/database`, password from MLMD_MYSQL_PASSWORD, never a flag).
"""

import datetime
import os

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

STATES = {
    metadata_store_pb2.Execution.COMPLETE: "complete",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "failed",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.CANCELED: "canceled",
    metadata_store_pb2.Execution.NEW: "new",
}
OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)


def open_metadata(sqlite_path: str = "", mysql: str = "") -> metadata_store.MetadataStore:
    """A store to read: `mysql` (user@host:port/database) when given, else the local SQLite file, read-only."""
    config = metadata_store_pb2.ConnectionConfig()
    if mysql:
        user, _, rest = mysql.rpartition("@")
        address, _, database = rest.partition("/")
        host, _, port = address.partition(":")
        if not (host and database):
            raise ValueError(f"--mysql {mysql!r}: expected user@host:port/database")
        config.mysql.host = host
        config.mysql.port = int(port or 3306)
        config.mysql.database = database
        config.mysql.user = user or "root"
        config.mysql.password = os.environ.get("MLMD_MYSQL_PASSWORD", "")
    else:
        if not os.path.exists(sqlite_path):
            raise FileNotFoundError(f"no ML Metadata store at {sqlite_path}: run the pipeline first (make run), "
                                    "or pass the output_dir of the run you mean")
        config.sqlite.filename_uri = sqlite_path
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def node_name(store: metadata_store.MetadataStore, execution_id: int) -> str:
    """The pipeline node (component id) an execution belongs to."""
    for context in store.get_contexts_by_execution(execution_id):
        if store.get_context_types_by_id([context.type_id])[0].name == "node":
            return context.name.split(".", 1)[-1]
    return str(execution_id)


def iso(ms: int) -> str:
    """MLMD's milliseconds since the epoch as an ISO-8601 UTC time."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
