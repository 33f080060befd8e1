"""Experiments: a weighted split of traffic between version labels, shadow traffic, and the log of both.

TF Serving has no traffic split: a request names a version or a label, or gets
the newest version loaded. The split lives in a sidecar file next to
models.config, `<serving_dir>/experiments.json` (TF Serving ignores it), written
by `tfx-edge serving rollout --weight ...` and re-read by the local server every
poll, like models.config:

    {"taxi": {"split": {"stable": 90, "canary": 10},
              "sticky_feature": "",
              "shadow_label": "", "shadow_percent": 0}}

- The split applies only to requests that name no version and no label;
  clients that ask for `stable` still get stable.
- Assignment is sticky when the request carries a key: the
  `serving.experiment_key_header` header (gRPC metadata or HTTP), else the value
  of `sticky_feature` in its first tf.Example. The key is hashed, so the same key
  gets the same arm in every worker process and after a restart. Without a key
  the arm is drawn at random.
- Shadow: `shadow_percent` percent of the split's requests that went to another
  arm are also sent to `shadow_label`; its answer is logged, never returned.

Every request the split routed, and every shadow call, is one JSON line in
`<serving.experiment_log_dir>/<model>/experiment-*.jsonl`: arm, version, API,
latency, scores and, when the request's tf.Examples still carry the label column
(replayed or labelled traffic), the labels. `tfx-edge serving experiment report`
reads them (`experiment_report.py`).

A split whose weights do not sum to 100, or that names a label models.config
does not define, is refused when written, naming the file and the labels.
"""

import hashlib
import json
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from tfx.dsl.io import fileio

EXPERIMENTS_FILE = "experiments.json"
LOG_SUFFIX = ".jsonl"
_HASH_BUCKETS = 10_000


class ExperimentError(ValueError):
    """An experiment that cannot be applied: bad weights, unknown labels, malformed file."""


def experiments_path(models_config_path: str) -> str:
    """The sidecar next to models.config."""
    return os.path.join(os.path.dirname(models_config_path), EXPERIMENTS_FILE)


@dataclass
class Experiment:
    split: Dict[str, float]
    sticky_feature: str = ""
    shadow_label: str = ""
    shadow_percent: float = 0.0

    def check(self, model_name: str, labels: Dict[str, int], where: str) -> None:
        """Refuses weights that do not sum to 100 and labels `labels` (from models.config) does not define."""
        known = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"
        if not self.split:
            raise ExperimentError(f"{where}: the experiment of {model_name!r} has no split; give weights such as "
                                  "stable=90 canary=10")
        unknown = sorted(set(self.split) - set(labels))
        if unknown:
            raise ExperimentError(f"{where}: the split of {model_name!r} names label(s) {', '.join(unknown)} that "
                                  f"models.config does not define (labels there: {known}); roll the version out "
                                  "under that label first (tfx-edge serving rollout --label canary --version V)")
        negative = sorted(k for k, v in self.split.items() if v < 0)
        if negative:
            raise ExperimentError(f"{where}: weights must not be negative: {', '.join(negative)}")
        total = sum(self.split.values())
        if abs(total - 100.0) > 1e-9:
            weights = ", ".join(f"{k}={v:g}" for k, v in sorted(self.split.items()))
            raise ExperimentError(f"{where}: the weights of {model_name!r} sum to {total:g}, not 100 ({weights})")
        if self.shadow_label:
            if self.shadow_label not in labels:
                raise ExperimentError(f"{where}: shadow label {self.shadow_label!r} of {model_name!r} is not defined "
                                      f"in models.config (labels there: {known})")
            if not 0 < self.shadow_percent <= 100:
                raise ExperimentError(f"{where}: shadow_percent must be in (0, 100], got {self.shadow_percent:g}")

    def arm(self, key: Optional[str], rng: random.Random) -> str:
        """The label for one request: by the hash of `key` when given (sticky), else at random."""
        if key:
            digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
            point = (int.from_bytes(digest, "big") % _HASH_BUCKETS) * 100.0 / _HASH_BUCKETS
        else:
            point = rng.random() * 100.0
        cumulative = 0.0
        arms = sorted(self.split)  # a fixed order: the same key maps to the same arm everywhere
        for label in arms:
            cumulative += self.split[label]
            if point < cumulative:
                return label
        return [label for label in arms if self.split[label] > 0][-1]

    def shadow_for(self, arm: str, rng: random.Random) -> str:
        """The label to mirror this request to ('' for none)."""
        if self.shadow_label and arm != self.shadow_label and rng.random() * 100.0 < self.shadow_percent:
            return self.shadow_label
        return ""


def parse(text: str, where: str) -> Dict[str, Experiment]:
    try:
        raw = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as error:
        raise ExperimentError(f"{where} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ExperimentError(f"{where} must hold an object of model name -> experiment")
    experiments = {}
    for name, values in raw.items():
        try:
            experiments[name] = Experiment(
                split={str(k): float(v) for k, v in dict(values.get("split") or {}).items()},
                sticky_feature=str(values.get("sticky_feature", "")),
                shadow_label=str(values.get("shadow_label", "")),
                shadow_percent=float(values.get("shadow_percent", 0.0)))
        except (AttributeError, TypeError, ValueError) as error:
            raise ExperimentError(f"{where}: the experiment of {name!r} is malformed ({error}); expected "
                                  '{"split": {"stable": 90, "canary": 10}, "sticky_feature": "", '
                                  '"shadow_label": "", "shadow_percent": 0}') from None
    return experiments


def read(path: str) -> Dict[str, Experiment]:
    """The experiments in `path`; none when the file does not exist."""
    if not fileio.exists(path):
        return {}
    with fileio.open(path, "r") as f:
        return parse(f.read(), path)


def write(path: str, experiments: Dict[str, Experiment], labels_by_model: Dict[str, Dict[str, int]]) -> None:
    """Checks every experiment against the labels of its model, then replaces the file atomically."""
    for name, experiment in experiments.items():
        experiment.check(name, labels_by_model.get(name, {}), path)
    staging = f"{path}.tmp-{os.getpid()}"
    with fileio.open(staging, "w") as f:
        f.write(json.dumps({name: asdict(e) for name, e in sorted(experiments.items())}, indent=2) + "\n")
    fileio.rename(staging, path, overwrite=True)


@dataclass
class ArmRecord:
    """One routed request (or shadow call), as the experiment log stores it."""

    model: str
    arm: str
    version: int
    api: str
    latency_ms: float
    scores: List[float]
    labels: Optional[List[int]] = None
    shadow: bool = False
    live_arm: str = ""  # shadow records: the arm that answered the client
    live_scores: Optional[List[float]] = None
    time: float = field(default_factory=time.time)


class ExperimentLog:
    """Buffers records in memory; each flush writes one new JSON-lines file per model (temp name, then rename)."""

    def __init__(self, directory: str):
        self.directory = directory
        self._pending: Dict[str, List[str]] = {}
        self._lock = threading.Lock()
        self._files = 0

    def add(self, record: ArmRecord) -> None:
        if not self.directory:
            return
        line = json.dumps({k: v for k, v in asdict(record).items() if v is not None})
        with self._lock:
            self._pending.setdefault(record.model, []).append(line)

    def flush(self) -> List[str]:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._files += 1
            number = self._files
        written = []
        for model, lines in pending.items():
            directory = os.path.join(self.directory, model)
            fileio.makedirs(directory)
            name = f"experiment-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{number:05d}{LOG_SUFFIX}"
            staging = os.path.join(directory, f".{name}.tmp")
            with fileio.open(staging, "w") as f:
                f.write("\n".join(lines) + "\n")
            fileio.rename(staging, os.path.join(directory, name), overwrite=True)
            written.append(os.path.join(directory, name))
        return written
