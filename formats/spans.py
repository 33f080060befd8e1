"""Which files of a split pattern belong to which span, numbered exactly as TFX's ExampleGen numbers them.

A pattern names spans by `{SPAN}` (`span-{SPAN}/train/*`; `{SPAN:4}` for a fixed width) or by a date
(`date={YYYY}-{MM}-{DD}/*`, a Hive-style partition of a data lake); a date's span is its day number since
1970-01-01 (2024-03-01 -> 19783), so spans sort by date and the latest date is the latest span.
`{VERSION}` picks the newest version within a span. The glob and the capturing regex are built by
ExampleGen's own rules (tfx 1.16, tfx/components/example_gen/utils.py `_create_matching_glob_and_regex`,
`_glob_to_regex`, `date_to_span_number`), here in plain Python: the fleet's triggers list spans every
cycle and must not import TensorFlow for it. tests/test_formats.py checks both give the same spans.
"""

from __future__ import annotations

import datetime
import glob
import os
import re
from typing import Dict, List, Optional, Tuple

from contract.config import DATE_SPECS, has_span_spec

_SPAN = re.compile(r"{SPAN(?::(?P<width>\d+))?}")
_VERSION = re.compile(r"{VERSION(?::(?P<width>\d+))?}")
_EPOCH = datetime.date(1970, 1, 1)


def _glob_to_regex(pattern: str) -> str:
    """ExampleGen's `_glob_to_regex`: the pattern's glob characters as a regex, literal dots and brackets."""
    for old, new in (("\\", "\\\\"), (".", r"\."), ("+", r"\+"), ("*", r"[^\\/]*"), ("?", r"[^\\/]"),
                     ("(", r"\("), (")", r"\)")):
        pattern = pattern.replace(old, new)
    return pattern


def glob_and_regex(path_pattern: str) -> Tuple[str, str]:
    """The glob of every span's files and the regex capturing span (or year/month/day) and version."""
    glob_pattern, regex = path_pattern, _glob_to_regex(path_pattern)
    match = _SPAN.search(path_pattern)
    if match:
        width = match.group("width")
        glob_pattern = _SPAN.sub("*", glob_pattern)
        regex = _SPAN.sub(lambda _: f"(?P<span>{'.{' + width + '}' if width else '.*'})", regex)
    elif all(spec in path_pattern for spec in DATE_SPECS):
        for spec, name, width in zip(DATE_SPECS, ("year", "month", "day"), (4, 2, 2)):
            glob_pattern = glob_pattern.replace(spec, "*")
            regex = regex.replace(spec, f"(?P<{name}>.{{{width}}})")
    version = _VERSION.search(path_pattern)
    if version:
        width = version.group("width")
        glob_pattern = _VERSION.sub("*", glob_pattern)
        regex = _VERSION.sub(lambda _: f"(?P<version>{'.{' + width + '}' if width else '.*'})", regex)
    return glob_pattern, regex


def span_of_path(path: str, regex: str) -> Tuple[Optional[int], int]:
    """(span, version) of a file the glob found; (None, 0) when its span part is not a number or a date."""
    found = re.search(regex, path)
    if found is None:
        return None, 0
    groups = found.groupdict()
    try:
        if "span" in groups:
            span = int(groups["span"])
        else:
            date = datetime.date(int(groups["year"]), int(groups["month"]), int(groups["day"]))
            span = (date - _EPOCH).days
        return span, int(groups["version"]) if groups.get("version") else 0
    except ValueError:
        return None, 0


def span_files(input_base: str, pattern: str) -> Dict[int, List[str]]:
    """{span: its files (newest version only), sorted} for a pattern with span or date specs; {} without."""
    if not has_span_spec(pattern):
        return {}
    glob_pattern, regex = glob_and_regex(os.path.join(input_base, pattern))
    versions: Dict[int, Dict[int, List[str]]] = {}
    for path in glob.glob(glob_pattern):
        if not os.path.isfile(path) or os.path.basename(path).startswith((".", "_")):
            continue
        span, version = span_of_path(path, regex)
        if span is not None:
            versions.setdefault(span, {}).setdefault(version, []).append(path)
    return {span: sorted(by_version[max(by_version)]) for span, by_version in sorted(versions.items())}


def pattern_for_span(pattern: str, span: int) -> str:
    """The glob of one span's files: its number (zero-padded to a `{SPAN:width}`) or its date in place of the
    specs, any version."""
    match = _SPAN.search(pattern)
    if match:
        width = int(match.group("width") or 0)
        pattern = _SPAN.sub(str(span).zfill(width), pattern)
    else:
        date = _EPOCH + datetime.timedelta(days=span)
        for spec, value in zip(DATE_SPECS, (f"{date.year:04d}", f"{date.month:02d}", f"{date.day:02d}")):
            pattern = pattern.replace(spec, value)
    return _VERSION.sub("*", pattern)


def latest_pattern(input_base: str, pattern: str) -> str:
    """The glob of the latest span's files of a span or date pattern (the pattern itself without specs)."""
    found = span_files(input_base, pattern)
    return os.path.join(input_base, pattern_for_span(pattern, max(found)) if found else pattern)


def latest_span_files(input_base: str, pattern: str) -> Tuple[Optional[int], List[str]]:
    """(newest span, its files) of a span or date pattern; (None, the pattern's files) of a pattern without."""
    if has_span_spec(pattern):
        found = span_files(input_base, pattern)
        return (max(found), found[max(found)]) if found else (None, [])
    return None, sorted(p for p in glob.glob(os.path.join(input_base, pattern)) if os.path.isfile(p))


def describe(span: int, pattern: str) -> str:
    """A span as a person names it: its date for a date pattern (`2024-03-01`), else `span 7`."""
    if DATE_SPECS[0] in pattern:
        return (_EPOCH + datetime.timedelta(days=span)).isoformat()
    return f"span {span}"
