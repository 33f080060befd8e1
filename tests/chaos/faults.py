"""What the fault cases share: clients under load, a server in its own process, a small disk, a killed process.

Everything is real: a `tfx-edge serving serve` process on loopback ports, gRPC clients, tmpfs mounts (as root),
SIGKILL of a whole process group.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator, List, Optional

import grpc
import psutil
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from contract.processes import free_port

CLI = [sys.executable, "-m", "cli"]


def wait_for(condition: Callable[[], bool], timeout: float = 120.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


class Load:
    """`clients` threads sending one Predict each, back to back, each on its own connection (so requests reach
    every worker process); counts answers, failures and the versions that answered.

    `wait_for_ready`: gRPC's option for a client that would rather wait for a connection than fail at once
    while its channel reconnects (without it, a channel whose server went away fails its calls for the length
    of its reconnect backoff, up to seconds, whatever the other workers could answer).
    """

    def __init__(self, target: str, model: str, example: tf.train.Example, clients: int = 4,
                 wait_for_ready: bool = False):
        self.target, self.clients, self.wait_for_ready = target, clients, wait_for_ready
        self.request = predict_pb2.PredictRequest()
        self.request.model_spec.name = model
        self.request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example.SerializeToString()], dtype=tf.string))
        self.answered: List[int] = []
        self.failures: List[str] = []
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []

    def _client(self) -> None:
        channel = grpc.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)])
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while not self._stop.is_set():
            try:
                self.answered.append(stub.Predict(self.request, timeout=30, wait_for_ready=self.wait_for_ready)
                                     .model_spec.version.value)
            except grpc.RpcError as error:
                self.failures.append(f"{error.code().name}: {error.details()}")
        channel.close()

    def __enter__(self) -> "Load":
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        assert wait_for(lambda: len(self.answered) >= 10), f"no answers before the fault: {self.failures[:3]}"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    @property
    def sent(self) -> int:
        return len(self.answered) + len(self.failures)


class Server:
    """`tfx-edge serving serve` on free ports in its own session; `kill()` SIGKILLs it."""

    def __init__(self, output_dir: str, model: str, workers: int = 1, poll: float = 0.2, *extra: str):
        settings = [f"output_dir={output_dir}", f"model_name={model}", f"serving.workers={workers}",
                    f"serving.poll_interval_seconds={poll}", "serving.load_retry_interval_seconds=0.5",
                    "serving.request_log_sample_rate=0", *extra]
        if workers == 1:
            settings += ["serving.port=0", "serving.rest_port=0"]
        else:
            settings += [f"serving.port={free_port()}", f"serving.rest_port={free_port()}"]
        self.process = subprocess.Popen(CLI + ["serving", "serve"] + [a for s in settings for a in ("--set", s)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self.lines: List[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()
        assert wait_for(lambda: any(l.startswith("serving ") for l in self.lines) or self.process.poll() is not None,
                        timeout=300), "".join(self.lines)
        banner = next((l for l in self.lines if l.startswith("serving ")), "")
        assert banner, "".join(self.lines)
        self.port = int(re.search(r"gRPC [^ ]+:(\d+),", banner).group(1))
        self.target = f"127.0.0.1:{self.port}"

    def worker_pids(self) -> List[int]:
        return [c.pid for c in psutil.Process(self.process.pid).children()
                if "spawn_main" in " ".join(c.cmdline())]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                kill_group(self.process)
        return self.process.returncode



def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to the process and everything in its process group: no `finally`, no atexit, no flush."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def survivors(marker: str, timeout: float = 20.0) -> List[str]:
    """Command lines of live processes that mention `marker` (a killed run's children that outlived it)."""
    def find() -> List[str]:
        found = []
        for process in psutil.process_iter(["cmdline", "status"]):
            try:
                line = " ".join(process.info["cmdline"] or [])
                if marker in line and process.info["status"] != psutil.STATUS_ZOMBIE and process.pid != os.getpid():
                    found.append(f"{process.pid}: {line[:200]}")
            except psutil.Error:
                continue
        return found

    wait_for(lambda: not find(), timeout=timeout, interval=0.2)
    return find()


@contextlib.contextmanager
def small_disk(path: str, size_mb: int) -> Iterator[str]:
    """A tmpfs of `size_mb` MB mounted at `path` (as root), unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        import pytest

        pytest.skip("mounting a small tmpfs needs root")
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}M", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


def fill(directory: str) -> str:
    """Writes a filler file until the disk under `directory` is full; returns its path (delete it to free)."""
    path = os.path.join(directory, ".filler")
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    with contextlib.suppress(OSError), open(path, "ab") as f:  # the last partial megabyte too
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    return path


class Output(list):
    """The lines a process printed, as they arrive; `complete()` once it has exited waits for the last of them."""

    reader: Optional[threading.Thread] = None

    def complete(self, timeout: float = 60.0) -> str:
        if self.reader is not None:
            self.reader.join(timeout)
        return "".join(self)


def run_until(command: List[str], line: Optional[Callable[[str], bool]] = None,
              appears: Optional[Callable[[], bool]] = None, timeout: float = 900.0, env=None):
    """Starts `command` in its own session and returns (process, output so far) once a printed line passes `line`
    or `appears()` holds; (process, output) with the process finished if neither happened."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env=env)
    lines = Output()
    seen = threading.Event()

    def read():
        for text in process.stdout:
            lines.append(text)
            if line is not None and line(text):
                seen.set()
        seen.set()

    lines.reader = threading.Thread(target=read, daemon=True)
    lines.reader.start()
    if appears is not None:
        wait_for(lambda: appears() or process.poll() is not None, timeout=timeout, interval=0.005)
    else:
        seen.wait(timeout)
    return process, lines
