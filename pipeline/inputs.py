"""Where the training TFRecords are, checked before any component starts."""

import glob
import os
import re

from pipeline.config import ConfigError, PipelineConfig, is_remote


def bundled_taxi_root() -> str:
    """The Chicago taxi TFRecords shipped inside the installed tfx wheel (never downloaded)."""
    import tfx

    root = os.path.join(os.path.dirname(tfx.__file__), "components", "testdata", "csv_example_gen")
    if not os.path.isdir(root):
        raise ConfigError(
            f"the bundled taxi data is missing from the tfx package at {root}; "
            "reinstall with `make setup` (tfx==1.16.0 ships it)")
    return root


def input_base(config: PipelineConfig) -> str:
    base = config.data.input_base
    if not base:
        return bundled_taxi_root()
    return base if is_remote(base) else os.path.abspath(base)


def split_patterns(config: PipelineConfig) -> dict:
    """Split name -> file pattern relative to the input base."""
    if config.data.pattern:
        return {"single_split": config.data.pattern}
    return {"train": config.data.train_pattern, "eval": config.data.eval_pattern}


def check_inputs(config: PipelineConfig) -> dict:
    """Fails early, naming the directory and pattern, when a split would read no file.

    Returns split name -> number of matching files. Patterns with `{SPAN}` or
    `{VERSION}` are resolved by ImportExampleGen itself; their files are still
    read by the preflight. Each shard is read once (`validation.files`), so a
    corrupt or foreign file is named here instead of failing inside Beam.
    """
    base = input_base(config)
    if is_remote(base):
        # Checked by ImportExampleGen where the credentials for the bucket live.
        return {split: -1 for split in split_patterns(config)}
    if not os.path.isdir(base):
        raise ConfigError(f"data.input_base {base} is not a directory of TFRecord files")
    counts = {}
    for split, pattern in split_patterns(config).items():
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


def check_files(files) -> None:
    """Reads each shard (large ones by their head): a corrupt gzip or non-tf.Example file fails here, named."""
    from validation.files import check_files as check_tfrecords

    check_tfrecords(files)
