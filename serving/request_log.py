"""Sampled request logging: a share of the requests, with their ids, examples and answers, in the request log.

The format is `contract/request_log.py` (Parquet, one row per example), read by the skew check, the
monitoring job and the late-label join. Requests are sampled whole, failed ones too (their status and
latency feed the monitoring job's error ratio and latency). Each flush writes a new file under a hidden
name and renames it, so a reader never sees a half-written file; `tf.io.gfile` so that the log directory
may be on gs:// as well.
"""

import os
import random
import re
import threading
import time
import uuid
from typing import Callable, Dict, List, Optional, Sequence

import tensorflow as tf

from contract import request_log

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class RequestLogger:
    """One model's log directory: rows of sampled requests, written out at each flush."""

    def __init__(self, directory: str, sample_rate: float, seed=None):
        self.directory = directory
        self.sample_rate = sample_rate
        self._random = random.Random(seed)
        self._pending: List[dict] = []
        self._lock = threading.Lock()

    def sampled(self) -> bool:
        """Whether to log the next request (with probability `sample_rate`; whole requests, not rows)."""
        return self._random.random() < self.sample_rate

    def add(self, request_id: str, arrived: float, model: str, api: str, entrypoint: str, status: str,
            seconds: float, version: int = 0, arm: str = "", examples: Sequence[bytes] = (),
            predictions: Optional[Sequence[Sequence[float]]] = None) -> None:
        """Queues one request's rows: one per example, or one for a request without examples."""
        common = {"request_id": request_id, "time": arrived, "model": model, "version": version, "arm": arm,
                  "api": api, "entrypoint": entrypoint, "status": status, "latency_ms": seconds * 1e3,
                  "sample_rate": self.sample_rate}
        predictions = list(predictions or [])
        rows = [dict(common, index=index, example=bytes(example),
                     prediction=predictions[index] if index < len(predictions) else [])
                for index, example in enumerate(examples)]
        if not rows:
            rows = [dict(common, index=0, example=None, prediction=[])]
        with self._lock:
            self._pending.extend(rows)

    def flush(self) -> str:
        """Writes the rows logged since the last flush to a new file; returns its path ('' if none)."""
        with self._lock:
            rows, self._pending = self._pending, []
        if not rows:
            return ""
        data = request_log.encode(rows)
        tf.io.gfile.makedirs(self.directory)
        # Unique whoever writes: worker processes, a sidecar, a server restarted within the same second.
        name = (f"{request_log.FILE_PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-"
                f"{uuid.uuid4().hex[:8]}{request_log.FILE_SUFFIX}")
        final = os.path.join(self.directory, name)
        staging = os.path.join(self.directory, "." + name + ".tmp")
        with tf.io.gfile.GFile(staging, "wb") as f:
            f.write(data)
        tf.io.gfile.rename(staging, final, overwrite=True)
        return final


class RequestLoggers:
    """One request logger per model, under `<request_log_dir>/<model_name>/`; `metrics` counts what they log."""

    def __init__(self, directory: str, sample_rate: float, metrics=None):
        self._directory = directory
        self._sample_rate = sample_rate
        self._metrics = metrics
        self._loggers: Dict[str, RequestLogger] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._sample_rate > 0 and bool(self._directory)

    def logger(self, model_name: str) -> Optional[RequestLogger]:
        """The model's logger when this request is sampled, else None (also for a name that is no safe directory
        name: it comes from the client)."""
        if not self.enabled or not _SAFE_NAME.match(model_name) or model_name in (".", ".."):
            return None
        with self._lock:
            logger = self._loggers.get(model_name)
            if logger is None:
                logger = self._loggers[model_name] = RequestLogger(os.path.join(self._directory, model_name),
                                                                   self._sample_rate)
        return logger if logger.sampled() else None

    def log(self, model_name: str, request_id: str, arrived: float, api: str, entrypoint: str, status: str,
            seconds: float, answer: Callable[[], dict] = dict) -> None:
        """Logs one finished request if it is sampled. `answer()` gives its version, arm, examples and
        predictions: made only for a sampled request, so an unsampled one costs a random draw."""
        logger = self.logger(model_name)
        if logger is None:
            return
        answer = answer()
        logger.add(request_id, arrived, model_name, api, entrypoint, status, seconds, **answer)
        if self._metrics is not None:
            self._metrics.request_log_count.labels(model_name, status).inc()
            self._metrics.request_log_examples.labels(model_name).inc(len(answer.get("examples", ())))

    def flush(self) -> None:
        with self._lock:
            loggers = list(self._loggers.values())
        for logger in loggers:
            logger.flush()
