"""Server-side batching: concurrent requests merged into one model call.

A model call on a batch of 32 costs little more than on a batch of 1 (the graph
overhead dominates), so under concurrent load merging raises throughput several
times. Like TF Serving's batcher: a batch runs when it holds `max_batch_size`
examples or when `timeout` has passed since its first request arrived, and it
always takes the requests already queued. With a timeout of 0 a batch is simply
whatever queued up while the previous call ran: no added latency at low load.

No batching thread: the request that finds no batch running leads, i.e. runs the
merged call itself in its own thread, and when it is done hands the lead to the
oldest request still waiting. A lone request therefore pays no thread handoff
(in Python each handoff waits for the GIL), and under load there is one handoff
per batch, not two per request. `num_threads` is how many batches may run at once.
An optional observer hears the queue depth and every merged call (metrics).
"""

import collections
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Protocol

import numpy as np

Tensors = Dict[str, np.ndarray]


@dataclass
class _Task:
    inputs: Tensors
    size: int
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)
    wake: threading.Event = field(default_factory=threading.Event)  # done, or asked to lead
    lead: bool = False


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
    """Merges the tasks of one signature of one loaded version; see the module docstring for who runs them."""

    def __init__(self, fn: Callable[[Tensors], Tensors], max_batch_size: int, timeout_micros: int,
                 num_threads: int = 1, observer: Optional[BatchObserver] = None):
        self._fn = fn
        self._max = max_batch_size
        self._timeout = timeout_micros / 1e6
        self._concurrency = num_threads
        self._observer = observer
        self._pending: Deque[_Task] = collections.deque()
        self._pending_examples = 0
        self._leaders = 0
        self._closed = False
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        # How many model calls served how many requests: tests and the bench read the merge ratio.
        self.calls = 0
        self.requests = 0

    def submit(self, inputs: Tensors, size: int) -> Tensors:
        task = _Task(inputs, size)
        with self._lock:
            closed = self._closed
            if not closed:
                self._pending.append(task)
                self._pending_examples += size
                self._arrived.notify()
                if self._leaders < self._concurrency:
                    self._leaders += 1
                    task.lead = True
        if closed:
            # The version was unloaded between lookup and submit: finish this request anyway.
            _run_alone(self._fn, task)
            return task.future.result()
        if self._observer is not None:
            self._observer.queued(1)
        if not task.lead:
            task.wake.wait()
        if task.lead:
            self._lead(task)
        return task.future.result()

    def close(self) -> None:
        """Stops accepting tasks; queued tasks still run (their leaders are running or woken)."""
        with self._lock:
            self._closed = True

    def _take(self) -> List[_Task]:
        """The next batch (called with the lock held): waits up to the timeout for a full one."""
        if self._timeout > 0 and self._pending:
            deadline = self._pending[0].queued_at + self._timeout
            while self._pending_examples < self._max and (remaining := deadline - time.monotonic()) > 0:
                self._arrived.wait(remaining)
        batch, total = [], 0
        while self._pending and (not batch or total + self._pending[0].size <= self._max):
            task = self._pending.popleft()
            batch.append(task)
            total += task.size
        self._pending_examples -= total
        return batch

    def _lead(self, mine: _Task) -> None:
        """Runs batches until `mine` is answered, then passes the lead on (or gives it up if nothing waits)."""
        while True:
            with self._lock:
                batch = self._take()
            if batch:
                started = time.monotonic()
                if self._observer is not None:
                    self._observer.queued(-len(batch))
                run_merged(self._fn, batch)
                with self._lock:
                    self.calls += 1
                    self.requests += len(batch)
                if self._observer is not None:
                    self._observer.batch([t.size for t in batch], [started - t.queued_at for t in batch])
                for task in batch:
                    if task is not mine:
                        task.wake.set()
            with self._lock:
                if self._pending and not mine.future.done():
                    continue
                if self._pending and not self._pending[0].lead:
                    successor = self._pending[0]
                    successor.lead = True
                    successor.wake.set()
                else:
                    self._leaders -= 1
                return
