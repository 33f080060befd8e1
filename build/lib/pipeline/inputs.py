"""Where the training TFRecords are, checked before any component starts."""

import glob
import os
import re

from contract.config import PipelineConfig, is_remote
from contract.errors import ConfigError
from validation.files import check_files


def check_inputs(config: PipelineConfig) -> dict:
    """Fails early, naming the directory and pattern, when a split would read no file.

    Returns split name -> number of matching files. Patterns with `{SPAN}` or
    `{VERSION}` are resolved by ImportExampleGen itself; their files are still
    read by the preflight. Each shard is read once (`validation.files`), so a
    corrupt or foreign file is named here instead of failing inside Beam.
    """
    base = config.input_base
    if is_remote(base):
        # Checked by ImportExampleGen where the credentials for the bucket live.
        return {split: -1 for split in config.split_patterns}
    if not os.path.isdir(base):
        raise ConfigError(f"data.input_base {base} is not a directory of TFRecord files")
    counts = {}
    for split, pattern in config.split_patterns.items():
        if "{" in pattern:
            span_files = [f for f in glob.glob(os.path.join(base, re.sub(r"\{[A-Z]+\}", "*", pattern)))
                          if os.path.isfile(f) and os.path.getsize(f) > 0]
            check_files(span_files)
            counts[split] = -1
            continue
        files = [f for f in glob.glob(os.path.join(base, pattern)) if os.path.isfile(f)]
        if not files:
            raise ConfigError(
                f"no file matches {pattern!r} in {base} (split {split!r}); set data.train_pattern/"
                "data.eval_pattern, or data.pattern to hash-split one set of files")
        empty = [f for f in files if os.path.getsize(f) == 0]
        if len(empty) == len(files):
            raise ConfigError(f"every file matching {pattern!r} in {base} is empty: {empty[:3]}")
        check_files([f for f in files if f not in empty])
        counts[split] = len(files)
    return counts
