"""Several server processes on the same gRPC and REST ports: one per core by default (`serving.workers`).

One Python process spends most of a batch-1 request in Python (gRPC or HTTP
handling, tensor conversion) under one GIL, so it uses about one core however
many the machine has. Here N worker processes each run the whole server
(`ModelServer`: its own model copies, batching queues, poller, request and
experiment logs) and listen on the same ports with SO_REUSEPORT; the kernel
spreads incoming connections over them. Each worker polls models.config and
loads a new version before swapping it in, so a hot swap drops nothing in any
of them.

A connection stays with the worker that accepted it: one gRPC channel (one
HTTP/2 connection) is served by one worker. Many clients spread by themselves;
a single client process that wants every worker opens several channels
(`grpc.use_local_subchannel_pool`, as bench/serving_latency.py does).

The supervisor (this module) reserves the ports before the workers start (a
bound, non-listening SO_REUSEPORT socket: nobody else can take the port and port
0 resolves once), points prometheus_client's multiprocess mode at a fresh
directory so a scrape of any worker sums all of them, restarts a worker that
dies, and stops them all on Ctrl-C / SIGTERM.
"""

import dataclasses
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Callable, List, Optional, Tuple

from contract.config import PipelineConfig, ServingConfig
from serving.metrics import MULTIPROCESS_ENV

READY_TIMEOUT_SECONDS = 600
GIL_SWITCH_SECONDS = 0.0005


def worker_count(serving: ServingConfig) -> int:
    """`serving.workers`, or one per core this process may run on."""
    return serving.workers or len(os.sched_getaffinity(0))


def reserve_port(host: str, port: int, setting: str) -> socket.socket:
    """A bound SO_REUSEPORT socket that holds `port` (0: a free one) for the workers; refuses a port in use."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))  # without SO_REUSEPORT: fails if anyone holds the port
        except OSError as error:
            raise OSError(f"could not bind {host}:{port} ({error.strerror}); is another server using port {port}? "
                          f"Choose another with --set {setting}=N") from None
        port = probe.getsockname()[1]
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind((host, port))
    return reserved


def configure_logging(prefix: str = "") -> None:
    """Loads, unloads and bad configs are what an operator watches for: one timestamped line each."""
    import logging

    events = logging.StreamHandler(sys.stdout)
    events.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(message)s", "%H:%M:%S"))
    server_log = logging.getLogger("absl")
    server_log.addHandler(events)
    server_log.setLevel(logging.INFO)
    server_log.propagate = False


def _worker(config: PipelineConfig, serving: ServingConfig, index: int, ready,
            prepare: Optional[Callable[[], None]] = None) -> None:
    """One worker process: the whole server on the reserved ports.

    `prepare` (the command line's prologue) runs before anything is imported: a spawned worker starts a fresh
    interpreter, where importing TFX would otherwise print google.api_core's FutureWarnings on stderr.
    """
    if prepare is not None:
        prepare()
    # A request changes threads (gRPC's poller -> handler, a waiting request -> its batch's leader); with
    # Python's default 5 ms GIL switch interval each change can wait that long, which dwarfs a 1 ms model call.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    from serving.process import ModelServer, serve_forever

    configure_logging(f"[worker {index}] ")  # after the imports: TFX logs its optional packages while importing

    try:
        server = ModelServer(config.models_config_path, serving, config.features, reuse_port=True)
        server.start()
    except Exception as error:  # noqa: BLE001 - reported by the supervisor, which stops the others
        ready.put((index, os.getpid(), str(error)))
        return
    ready.put((index, os.getpid(), ""))
    serve_forever(server)


class Supervisor:
    """Starts `count` workers, restarts any that dies, stops them all on SIGINT/SIGTERM."""

    def __init__(self, config: PipelineConfig, count: int, prepare: Optional[Callable[[], None]] = None):
        """`prepare`: a module-level function (workers are spawned, so it is pickled) each worker runs first."""
        self.config = config
        self.count = count
        self._prepare = prepare
        serving = config.serving
        self._sockets = [reserve_port(serving.host, serving.port, "serving.port"),
                         reserve_port(serving.host, serving.rest_port, "serving.rest_port")]
        self.serving = dataclasses.replace(serving, port=self._sockets[0].getsockname()[1],
                                           rest_port=self._sockets[1].getsockname()[1])
        self.metrics_dir = tempfile.mkdtemp(prefix="serving-metrics-")
        os.environ[MULTIPROCESS_ENV] = self.metrics_dir  # inherited by the workers before they import anything
        self._context = multiprocessing.get_context("spawn")
        self._ready = self._context.Queue()
        self._workers: List[Optional[multiprocessing.Process]] = [None] * count
        self._stopping = False

    def _spawn(self, index: int) -> multiprocessing.Process:
        process = self._context.Process(target=_worker, args=(self.config, self.serving, index, self._ready,
                                                              self._prepare),
                                        name=f"serving-worker-{index}", daemon=False)
        process.start()
        self._workers[index] = process
        return process

    def _await_ready(self, expected: int) -> List[Tuple[int, int]]:
        """Waits for `expected` workers to have loaded their models and opened the ports."""
        started = []
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while len(started) < expected:
            try:
                index, pid, error = self._ready.get(timeout=1.0)
            except queue.Empty:
                dead = [i for i, p in enumerate(self._workers) if p is not None and p.exitcode is not None]
                if dead or time.monotonic() > deadline:
                    raise OSError(f"worker {dead[0] if dead else '?'} exited before it was ready; see its output "
                                  "above") from None
                continue
            if error:
                raise OSError(f"worker {index} could not start: {error}")
            started.append((index, pid))
        return started

    def start(self) -> None:
        try:
            for index in range(self.count):
                self._spawn(index)
            self._await_ready(self.count)
        except Exception:
            self.stop()
            raise

    def run(self) -> None:
        """Until SIGINT/SIGTERM: restart dead workers; then stop every worker gracefully."""
        def request_stop(*_):
            self._stopping = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, request_stop)
        while not self._stopping:
            time.sleep(0.5)
            for index, process in enumerate(self._workers):
                if process is not None and not process.is_alive() and not self._stopping:
                    print(f"{time.strftime('%H:%M:%S')} worker {index} (pid {process.pid}) exited with "
                          f"{process.exitcode}; restarting it", flush=True)
                    self._forget(process)
                    self._spawn(index)
                    self._await_ready(1)
        self.stop()

    def _forget(self, process: multiprocessing.Process) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(process.pid, self.metrics_dir)

    def stop(self) -> None:
        for process in self._workers:
            if process is not None and process.is_alive():
                process.terminate()  # SIGTERM: the worker finishes its in-flight requests
        for process in self._workers:
            if process is not None:
                process.join(timeout=30)
                if process.is_alive():
                    process.kill()
                    process.join()
                self._forget(process)
        for reserved in self._sockets:
            reserved.close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
