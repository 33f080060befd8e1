"""Version directories: `<base>/<version>/`, as TF Serving and the edge devices read them.

One listing, one rule for the next version, one check for "this model is already
the latest version", and one atomic publish, used by the serving push and the
edge push alike. Local paths use the os module; remote ones (gs://) TensorFlow's
file system layer, imported only then.
"""

import json
import os
import time
from typing import Any, Callable, Dict, List, Optional

from contract.config import is_remote


class _LocalFiles:
    exists = staticmethod(os.path.exists)
    listdir = staticmethod(os.listdir)
    makedirs = staticmethod(lambda path: os.makedirs(path, exist_ok=True))
    rename = staticmethod(os.rename)

    @staticmethod
    def rmtree(path: str) -> None:
        import shutil

        shutil.rmtree(path)

    @staticmethod
    def read_text(path: str) -> str:
        with open(path, encoding="utf-8") as f:
            return f.read()


class _RemoteFiles:
    def __init__(self):
        import tensorflow as tf

        self._gfile = tf.io.gfile
        self.exists, self.listdir, self.makedirs = tf.io.gfile.exists, tf.io.gfile.listdir, tf.io.gfile.makedirs
        self.rename, self.rmtree = tf.io.gfile.rename, tf.io.gfile.rmtree

    def read_text(self, path: str) -> str:
        with self._gfile.GFile(path) as f:
            return f.read()


def _files(path: str):
    return _RemoteFiles() if is_remote(path) else _LocalFiles


def list_versions(base_directory: str) -> List[int]:
    """Versions under a model base path (numeric directory names), ascending; hidden staging dirs are not versions."""
    files = _files(base_directory)
    if not files.exists(base_directory):
        return []
    return sorted(int(name.rstrip("/")) for name in files.listdir(base_directory) if name.rstrip("/").isdigit())


def version_path(base_directory: str, version: int) -> str:
    """The directory of `version`: its number as written, leading zeros included (`00000123` is version 123,
    as TF Serving reads it)."""
    files = _files(base_directory)
    names = files.listdir(base_directory) if files.exists(base_directory) else []
    name = next((n.rstrip("/") for n in sorted(names) if n.rstrip("/").isdigit() and int(n.rstrip("/")) == version),
                str(version))
    return os.path.join(base_directory, name)


def next_version(existing: List[int], now: Optional[float] = None) -> int:
    """Unix time, but always above the latest version: versions only increase, even with clock skew."""
    return max(int(now if now is not None else time.time()), (existing[-1] + 1) if existing else 0)


def read_record(version_dir: str, record_file: str) -> Optional[Dict[str, Any]]:
    """The JSON record a push left in its version (push_info.json, manifest.json), or None."""
    path = os.path.join(version_dir, record_file)
    files = _files(path)
    if not files.exists(path):
        return None
    return json.loads(files.read_text(path))


def latest_if_same_source(base_directory: str, record_file: str, source_model: str) -> Optional[int]:
    """The latest version when its record says it was made from `source_model` (so pushing again would
    only make servers reload the same model), else None."""
    existing = list_versions(base_directory)
    if not existing:
        return None
    record = read_record(os.path.join(base_directory, str(existing[-1])), record_file) or {}
    return existing[-1] if record.get("source_model") == source_model else None


def publish_version(base_directory: str, version: int, fill: Callable[[str], None]) -> str:
    """Makes `<base>/<version>` appear whole or not at all.

    `fill(staging_dir)` writes the version's files into `<base>/.incomplete-<version>-<pid>`,
    which is then renamed into place; on any failure the staging directory is removed
    and the base directory is left as it was. A server watching the base path never
    sees a half-written version.
    """
    files = _files(base_directory)
    final = os.path.join(base_directory, str(version))
    if files.exists(final):
        raise FileExistsError(f"version {version} already exists in {base_directory}; versions are never rewritten")
    staging = os.path.join(base_directory, f".incomplete-{version}-{os.getpid()}")
    files.makedirs(base_directory)
    if files.exists(staging):
        files.rmtree(staging)
    try:
        files.makedirs(staging)
        fill(staging)
        files.rename(staging, final)
    except BaseException:
        if files.exists(staging):
            files.rmtree(staging)
        raise
    return final
