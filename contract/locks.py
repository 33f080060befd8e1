"""One run of a pipeline at a time, and one writer of a shared file at a time: advisory file locks.

A `flock(2)` lock belongs to an open file and ends with the process holding it, SIGKILL included, so a crashed
holder never leaves a stale lock behind and nobody has to clean one up. Local files only: a gs:// path has no
locks (Vertex AI and Dataflow runs are isolated by their own run ids and roots).
"""

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from typing import Callable, Dict, Iterator, Optional

from contract.config import is_remote
from contract.files import write_text

# Exit status of `tfx-edge pipeline run` when another run of the same pipeline holds the lock (and no --wait).
EXIT_BUSY = 4


class Busy(RuntimeError):
    """Another process holds the lock; `holder` says which (pid, start time, command, log)."""

    def __init__(self, path: str, holder: Dict[str, object]):
        super().__init__(f"{path} is held by {describe(holder)}")
        self.path, self.holder = path, holder


def describe(holder: Dict[str, object]) -> str:
    """`pid 4242 on host, started 2026-12-05 10:31:07 (95 s ago), log /out/logs/run-...log`."""
    if not holder.get("pid"):
        return "another process (it has not said which yet)"
    started = float(holder.get("started", 0))
    text = (f"pid {holder['pid']} on {holder.get('host', '?')}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))} ({time.time() - started:.0f} s ago)")
    return text + (f", log {holder['log']}" if holder.get("log") else "")


class RunLock:
    """The lock at `path` with a note beside it (`<path>.holder.json`) saying who holds it, for the refusal line."""

    def __init__(self, path: str):
        self.path = path
        self.holder_path = path + ".holder.json"
        self._fd: Optional[int] = None

    def holder(self) -> Dict[str, object]:
        try:
            with open(self.holder_path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def busy(self) -> Optional[Dict[str, object]]:
        """Who holds the lock now, or None when it is free (asked without taking it)."""
        if not os.path.exists(self.path):
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self.holder()
        finally:
            os.close(fd)
        return None

    def acquire(self, wait: bool = False, on_wait: Callable[[Dict[str, object]], None] = lambda holder: None,
                **note: object) -> None:
        """Takes the lock, or raises `Busy`; with `wait`, calls `on_wait(holder)` once and blocks until it is free.

        `note` (e.g. log=PATH) goes into the holder note with this process's pid, host, start time and command.
        """
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_exclusive(fd):
            holder = self.holder()
            if not wait:
                os.close(fd)
                raise Busy(self.path, holder)
            on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        write_text(self.holder_path, json.dumps(dict(
            pid=os.getpid(), host=socket.gethostname(), started=time.time(), command=" ".join(sys.argv), **note)))

    def note(self, **values: object) -> None:
        """Adds to the holder note (e.g. the log path, once known)."""
        write_text(self.holder_path, json.dumps(dict(self.holder(), **values)))

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.holder_path)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _try_exclusive(fd: int, patience: float = 1.0) -> bool:
    """LOCK_EX without blocking, tried for `patience` seconds: `RunLock.busy()` holds a shared lock for an instant."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


@contextlib.contextmanager
def exclusive(path: str) -> Iterator[None]:
    """Serialises read-modify-write of a shared local file across processes (a lock on `<path>.lock`)."""
    if is_remote(path):
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
