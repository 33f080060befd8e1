"""Sampled request logging: the raw tf.Examples clients sent, for the training/serving skew check.

Files are gzip tf.Example TFRecords, the format of the training data, so the
skew check computes serving statistics exactly as it computes training ones.
Each flush writes a new file under a temporary name and renames it, so a reader
never sees a half-written file.
"""

import os
import random
import threading
import time
from typing import List

import tensorflow as tf

FILE_SUFFIX = ".tfrecord.gz"


class RequestLogger:
    def __init__(self, directory: str, sample_rate: float, seed=None):
        self.directory = directory
        self.sample_rate = sample_rate
        self._random = random.Random(seed)
        self._pending: List[bytes] = []
        self._lock = threading.Lock()
        self._files = 0

    def maybe_log(self, serialized_examples) -> bool:
        """Logs every example of a request with probability `sample_rate` (whole requests, not rows)."""
        if self._random.random() >= self.sample_rate:
            return False
        with self._lock:
            self._pending.extend(bytes(value) for value in serialized_examples)
        return True

    def flush(self) -> str:
        """Writes the examples logged since the last flush to a new file; returns its path ('' if none)."""
        with self._lock:
            records, self._pending = self._pending, []
            if not records:
                return ""
            self._files += 1
            number = self._files
        tf.io.gfile.makedirs(self.directory)
        name = f"requests-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{number:05d}{FILE_SUFFIX}"
        final = os.path.join(self.directory, name)
        staging = os.path.join(self.directory, "." + name + ".tmp")
        with tf.io.TFRecordWriter(staging, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
            for record in records:
                writer.write(record)
        tf.io.gfile.rename(staging, final, overwrite=True)
        return final
