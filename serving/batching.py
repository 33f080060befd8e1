"""Server-side batching: concurrent requests merged into one model call.

A model call on a batch of 32 costs little more than on a batch of 1 (the graph
overhead dominates), so under concurrent load merging raises throughput several
times. Like TF Serving's batcher: a batch runs when it holds `max_batch_size`
examples or when `timeout` has passed since its first request arrived, and it
always takes the requests already queued. With a timeout of 0 a batch is simply
whatever queued up while the previous call ran: no added latency at low load.
An optional observer hears the queue depth and every merged call (metrics).
"""

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol

import numpy as np

Tensors = Dict[str, np.ndarray]
_STOP = object()


@dataclass
class _Task:
    inputs: Tensors
    size: int
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)


class BatchObserver(Protocol):
    def queued(self, delta: int) -> None:
        """The queue grew or shrank by `delta` requests."""

    def batch(self, request_sizes: List[int], queued_seconds: List[float]) -> None:
        """One model call ran the requests of these sizes, which waited this long."""


def run_merged(fn: Callable[[Tensors], Tensors], tasks: List[_Task]) -> None:
    """One call for all tasks, outputs split back by size; a failing batch is retried task by task
    so one bad request (garbage bytes) fails alone instead of failing its neighbours."""
    if len(tasks) == 1:
        _run_alone(fn, tasks[0])
        return
    try:
        merged = {name: np.concatenate([t.inputs[name] for t in tasks]) for name in tasks[0].inputs}
        outputs = fn(merged)
        total = sum(t.size for t in tasks)
        if any(value.ndim == 0 or value.shape[0] != total for value in outputs.values()):
            raise ValueError("outputs without a batch dimension cannot be split")
    except Exception:  # noqa: BLE001 - isolate the request that caused it
        for task in tasks:
            _run_alone(fn, task)
        return
    start = 0
    for task in tasks:
        task.future.set_result({k: v[start:start + task.size] for k, v in outputs.items()})
        start += task.size


def _run_alone(fn: Callable[[Tensors], Tensors], task: _Task) -> None:
    try:
        task.future.set_result(fn(task.inputs))
    except Exception as error:  # noqa: BLE001 - delivered to the waiting request
        task.future.set_exception(error)


class Batcher:
    """A queue and `num_threads` workers merging tasks for one signature of one loaded version."""

    def __init__(self, fn: Callable[[Tensors], Tensors], max_batch_size: int, timeout_micros: int,
                 num_threads: int = 1, observer: Optional[BatchObserver] = None):
        self._fn = fn
        self._observer = observer
        self._max = max_batch_size
        self._timeout = timeout_micros / 1e6
        self._queue: "queue.Queue" = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        # How many model calls served how many requests: tests and the bench read the merge ratio.
        self.calls = 0
        self.requests = 0
        self._threads = [threading.Thread(target=self._loop, daemon=True, name="batcher")
                         for _ in range(num_threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: Tensors, size: int) -> Tensors:
        task = _Task(inputs, size)
        with self._lock:
            closed = self._closed
            if not closed:
                self._queue.put(task)
                if self._observer is not None:
                    self._observer.queued(1)
        if closed:
            # The version was unloaded between lookup and submit: finish this request anyway.
            _run_alone(self._fn, task)
        return task.future.result()

    def close(self) -> None:
        """Stops accepting tasks; queued tasks still run, then the workers exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(_STOP)
        for thread in self._threads:
            thread.join()

    def _loop(self) -> None:
        carried: Optional[_Task] = None
        while True:
            first = carried if carried is not None else self._queue.get()
            carried = None
            if first is _STOP:
                return
            batch, total = [first], first.size
            deadline = time.monotonic() + self._timeout
            stop = False
            while total < self._max:
                remaining = deadline - time.monotonic()
                try:
                    # What is already queued always joins; waiting for more lasts until the deadline.
                    task = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if task is _STOP:
                    stop = True
                    break
                if total + task.size > self._max:
                    carried = task  # still counted as queued: it runs first in the next batch
                    break
                batch.append(task)
                total += task.size
            started = time.monotonic()
            if self._observer is not None:
                self._observer.queued(-len(batch))
            run_merged(self._fn, batch)
            self.calls += 1
            self.requests += len(batch)
            if self._observer is not None:
                self._observer.batch([t.size for t in batch], [started - t.queued_at for t in batch])
            if stop:
                if carried is not None:
                    if self._observer is not None:
                        self._observer.queued(-1)
                    _run_alone(self._fn, carried)
                return
