"""Whole files or none: what every generated file (configs, DAGs, manifests, reports, results) is written with."""

import os
import threading


def write_text(path: str, text: str) -> str:
    """Writes `text` to `path` through a temporary file beside it and a rename; returns `path`.

    A reader (Airflow's DagBag, a config watcher, a browser) never sees half a file, and a failed write
    leaves the previous one. The temporary name carries the process and thread ids, so two writers never share it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path
