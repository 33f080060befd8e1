"""Which files of a split pattern belong to which span, numbered exactly as TFX's ExampleGen numbers them.

A pattern names spans by `{SPAN}` (`span-{SPAN}/train/*`) or by a date
(`date={YYYY}-{MM}-{DD}/*`, a Hive-style partition of a data lake); a date's span is
its day number since 1970-01-01 (2024-03-01 -> 19783), so spans sort by date and the
latest date is the latest span. `{VERSION}` picks the newest version within a span.
The glob and regex come from TFX's own ExampleGen helpers (tfx 1.16,
tfx/components/example_gen/utils.py), so the preflight, the window's backfill and the
drift check agree with ExampleGen on every file's span.
"""

from __future__ import annotations

import datetime
import os
import re
from typing import Dict, List

from contract.config import has_span_spec


def span_files(input_base: str, pattern: str) -> Dict[int, List[str]]:
    """{span: its files (newest version only), sorted} for a pattern with span or date specs; {} without."""
    if not has_span_spec(pattern):
        return {}
    from tfx.components.example_gen import utils
    from tfx.dsl.io import fileio
    from tfx.proto import example_gen_pb2

    split = example_gen_pb2.Input.Split(name="split", pattern=pattern)
    is_span, is_date, is_version = utils.verify_split_pattern_specs(split)
    glob_pattern, regex = utils._create_matching_glob_and_regex(  # pylint: disable=protected-access
        input_base, split, is_span, is_date, is_version, None)
    versions: Dict[int, Dict[int, List[str]]] = {}
    for path in fileio.glob(glob_pattern):
        if not os.path.isfile(path) or os.path.basename(path).startswith((".", "_")):
            continue
        _, span, _, version = utils._find_matched_span_version_from_path(  # pylint: disable=protected-access
            path, regex, is_span, is_date, is_version)
        versions.setdefault(span, {}).setdefault(version or 0, []).append(path)
    return {span: sorted(by_version[max(by_version)]) for span, by_version in sorted(versions.items())}


def pattern_for_span(pattern: str, span: int) -> str:
    """The glob of one span's files: the span (or its date) in place of the specs; any version."""
    from tfx.components.example_gen import utils
    from tfx.proto import example_gen_pb2

    is_span, is_date, _ = utils.verify_split_pattern_specs(example_gen_pb2.Input.Split(name="split", pattern=pattern))
    unversioned = re.sub(utils.VERSION_FULL_REGEX, "*", pattern)
    return utils.get_pattern_for_span_version(unversioned, is_span, is_date, False, span, None)


def latest_pattern(input_base: str, pattern: str) -> str:
    """The glob of the latest span's files of a span or date pattern (the pattern itself without specs)."""
    found = span_files(input_base, pattern)
    return os.path.join(input_base, pattern_for_span(pattern, max(found)) if found else pattern)


def describe(span: int, pattern: str) -> str:
    """A span as a person names it: its date for a date pattern (`2024-03-01`), else `span 7`."""
    if "{YYYY}" in pattern:
        return (datetime.date(1970, 1, 1) + datetime.timedelta(days=span)).isoformat()
    return f"span {span}"
