"""Preflight of input files: every file must be readable as the dataset's format (formats/).

A corrupt shard or a file of the wrong format otherwise surfaces as a Beam traceback
deep inside ExampleGen or StatisticsGen. These checks read each file once in plain
Python (no Beam) and fail with one line that names the file and says what to do.
"""

import glob
import os
from typing import List

import formats
from contract.errors import BadInputError
from formats import FULL_CHECK_BYTES, HEAD_CHECK_BYTES  # noqa: F401  (the check's limits, for callers)
from formats.tfrecord import read_examples  # noqa: F401  (TFRecord-only callers read shards through here)


def list_files(data_root: str, pattern: str = "**/*") -> List[str]:
    """The regular files under `data_root` matching `pattern`, sorted; fails clearly when there are none."""
    if not os.path.isdir(data_root):
        raise BadInputError(f"{data_root} is not a directory; pass the directory that holds the data files")
    files = sorted(f for f in glob.glob(os.path.join(data_root, pattern), recursive=True)
                   if os.path.isfile(f) and not os.path.basename(f).startswith((".", "_")))
    if not files:
        raise BadInputError(f"{data_root} holds no file matching {pattern!r}: the input directory is empty. "
                            "Point --data-root (or data.input_base) at the directory with the data files")
    return files


def check_files(files: List[str], full_check_bytes: int = FULL_CHECK_BYTES, profile=None,
                data_format: str = "tfrecord") -> None:
    """Checks every file (one unit of ExampleGen's work) as `data_format`: whole when small, its first rows when
    large (`formats.DataFormat.checked_examples`).

    With `profile` (a `schemas.profile.DataProfile`), the rows read are also profiled, column by column.
    """
    for path, records in formats.get(data_format).checked_examples(files, full_check_bytes):
        if profile is not None:
            profile.add(records, path)
