"""The prologue every command line shares: a quiet start, `--config/--set`, and one way to report a bad setting.

Each CLI's `main` is decorated with `@command` (a ConfigError becomes one
`error: ...` line and exit status 2), calls `prepare()` before anything imports
TensorFlow, and builds its settings with `add_settings_arguments` + `load_settings`.
"""

import argparse
import functools
import logging
import os
import signal
import sys
from typing import Callable, List, Optional

from contract.config import PipelineConfig, load_config
from contract.errors import ConfigError


def prepare(tensorflow_log_level: str = "3") -> None:
    """Sets up the process before TensorFlow is first imported.

    - TFX 1.16 needs Keras 2: `TF_USE_LEGACY_KERAS=1` makes `tf.keras` tf_keras.
    - TensorFlow's C++ start-up lines (CUDA factory registrations on a machine
      without GPUs) are not output: level 3 hides them unless TF_CPP_MIN_LOG_LEVEL
      is set. The pipeline runner passes "2", because it sends fd 2 to the run log.
    - Python warnings (google.api_core's FutureWarnings at import) go to the
      logging system, and logging goes nowhere until a command attaches a log file.
    - `importlib.metadata.packages_distributions()` is computed once per process
      (`_memoize_packages_distributions`).
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", tensorflow_log_level)
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... | head` ends quietly
    _memoize_packages_distributions()


def _memoize_packages_distributions() -> None:
    """Makes `importlib.metadata.packages_distributions()` scan the installed packages once per process.

    google-api-core 2.29 (the newest that runs with TensorFlow 2.16's protobuf 3.20)
    calls it in the Python-version check of every Google client library it imports,
    15 times during `import tfx.v1`, and each call parses every installed
    distribution's metadata: 2.2 of the 13 s an unchanged (all cached) pipeline run
    takes (googleapis/python-api-core#878; later releases dropped the call but need
    protobuf >= 5.29). Nothing installs packages into a running command, so one
    scan is exact; each caller gets its own copy of the mapping.
    """
    from importlib import metadata

    original = getattr(metadata.packages_distributions, "__wrapped__", metadata.packages_distributions)
    cached = functools.lru_cache(maxsize=1)(original)

    @functools.wraps(original)
    def packages_distributions():
        return {name: list(dists) for name, dists in cached().items()}

    metadata.packages_distributions = packages_distributions


def log_to_file(config: PipelineConfig, command: str) -> str:
    """Sends library logging (TensorFlow, TFX, Beam, warnings) of this command to `<log_dir>/<command>.log`."""
    os.makedirs(config.log_dir, exist_ok=True)
    path = os.path.join(config.log_dir, f"{command}.log")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, logging.NullHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="YAML file with settings; any subset of pipeline/configs/default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting after --config, e.g. --set training.train_steps=500 (repeatable)")


def load_settings(args: argparse.Namespace) -> PipelineConfig:
    """Defaults, then --config, then each --set; a ConfigError names the setting."""
    return load_config(getattr(args, "config", None), getattr(args, "set", []))


def command(main: Callable[[Optional[List[str]]], int]) -> Callable[[Optional[List[str]]], int]:
    """Wraps a CLI's `main(argv) -> status`: a ConfigError becomes `error: ...` lines on stderr and status 2."""

    @functools.wraps(main)
    def wrapper(argv: Optional[List[str]] = None) -> int:
        try:
            return main(argv)
        except ConfigError as e:
            # One line per problem: a preflight may report several at once.
            print("".join(f"error: {line}\n" for line in str(e).splitlines()), end="", file=sys.stderr)
            return 2

    return wrapper


def wait_for_signal() -> None:
    """Blocks until SIGINT or SIGTERM (a long-running command's end), then returns for a clean shutdown."""
    import threading

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass
