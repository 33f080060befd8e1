"""Processes that must not outlive the process that started them (cluster tasks, the training child, the
serving check's server)."""

import os
import signal
import socket
import sys
import threading
import time


def exit_with_parent(parent: int) -> None:
    """Ends this process when `parent`, the process that started it, dies, even by SIGKILL.

    Linux delivers SIGKILL through PR_SET_PDEATHSIG; elsewhere a thread polls the parent pid. The launcher
    passes its pid: read here, after the interpreter's start-up, `os.getppid()` would already be the reaper's
    pid if the launcher died during that start-up, and the task would outlive it.
    """
    if os.getppid() != parent:  # The launcher died before this process got here.
        os._exit(1)
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # The parent died before prctl took effect.
            os._exit(1)
        return

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a server about to start (cluster tasks,
    test and benchmark servers): bind to port 0, read the port the kernel chose, release it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
