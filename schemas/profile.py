"""What a set of tf.Example records holds, column by column, in one pass of plain Python (any data format: its
rows as its ExampleGen converts them, `formats/`).

Two readers need the same facts: `init` proposes feature roles and the task from
them (which type, how many distinct values, present in how many rows, one value or
a list), and the pipeline's preflight refuses data that cannot train (a missing or
constant label, a column whose type changes between files, a class too small to
split) before any component runs. TFDV's statistics would need a Beam job for the
first and do not say which file a type came from for the second. String columns also
count their words (contract/text.py), which tells free text from categories.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from contract.text import tokens

# Distinct values counted per column; a column with more is "many" (an id, or a continuous number).
DISTINCT_LIMIT = 1000
KINDS = {"bytes_list": "string", "int64_list": "int", "float_list": "float"}


@dataclass
class ColumnProfile:
    name: str
    # kind ("string", "int", "float") -> the first file a value of that kind came from
    kinds: Dict[str, str] = field(default_factory=dict)
    present: int = 0  # rows with at least one value
    first_missing: str = ""  # the first file with a row that lacks the column
    max_values: int = 0  # most values in one row
    max_values_file: str = ""
    counts: Counter = field(default_factory=Counter)  # value (as text) -> rows, up to DISTINCT_LIMIT values
    many: bool = False  # more than DISTINCT_LIMIT distinct values
    low: float = math.inf
    high: float = -math.inf
    total: float = 0.0
    squares: float = 0.0
    numbers: int = 0
    # Strings: values of several words (contract/text.py), and words over all values; what tells text from
    # categories.
    multi_word: int = 0
    words: int = 0

    @property
    def kind(self) -> str:
        """The column's one kind (the first seen when the files disagree)."""
        return next(iter(self.kinds), "")

    @property
    def distinct(self) -> int:
        """Distinct values seen; DISTINCT_LIMIT + 1 stands for "more than the limit"."""
        return DISTINCT_LIMIT + 1 if self.many else len(self.counts)

    @property
    def mean(self) -> float:
        return self.total / self.numbers if self.numbers else float("nan")

    @property
    def std(self) -> float:
        if not self.numbers:
            return float("nan")
        return math.sqrt(max(self.squares / self.numbers - self.mean ** 2, 0.0))


@dataclass
class DataProfile:
    rows: int = 0
    files: List[str] = field(default_factory=list)
    columns: Dict[str, ColumnProfile] = field(default_factory=dict)
    # With `label_of` (tf.Example -> the row's class, or None), rows per class: what the label rule makes of them.
    label_of: Optional[Callable] = None
    label_counts: Counter = field(default_factory=Counter)
    # The columns whose values are counted and summed (`counts`, `low`...`numbers`); None: every column.
    # The preflight needs them for the label only: kinds, presence and list lengths are kept for all.
    values_of: Optional[frozenset] = None

    def add(self, records: Iterable[bytes], path: str) -> None:
        """Adds the serialized tf.Examples of one file."""
        from tensorflow.core.example import example_pb2  # the protobuf class only

        self.files.append(path)
        for serialized in records:
            example = example_pb2.Example.FromString(serialized)
            self.rows += 1
            row = example.features.feature
            for name, feature in row.items():
                kind = feature.WhichOneof("kind")
                values = getattr(feature, kind).value if kind else ()
                self._add_value(name, KINDS.get(kind, ""), values, path)
            # Every column of this row is known by now: fewer in the row means some are missing from it.
            if len(row) < len(self.columns):
                for name, column in self.columns.items():
                    if name not in row and not column.first_missing:
                        column.first_missing = path
            if self.label_of is not None:
                self.label_counts[self.label_of(example)] += 1

    def _add_value(self, name: str, kind: str, values, path: str) -> None:
        column = self.columns.get(name)
        if column is None:
            column = self.columns[name] = ColumnProfile(name)
            if self.rows > 1:  # every earlier row lacked it, the very first one among them
                column.first_missing = self.files[0]
        if not values:
            column.first_missing = column.first_missing or path
            return
        column.kinds.setdefault(kind, path)
        column.present += 1
        if len(values) > column.max_values:
            column.max_values, column.max_values_file = len(values), path
        if self.values_of is not None and name not in self.values_of:
            return
        first = values[0]
        text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
        if kind == "string":
            words = len(tokens(text))
            column.words += words
            column.multi_word += words > 1
        if text in column.counts or len(column.counts) < DISTINCT_LIMIT:
            column.counts[text] += 1
        else:
            column.many = True
        if kind in ("int", "float"):
            number = float(first)
            column.low, column.high = min(column.low, number), max(column.high, number)
            column.total += number
            column.squares += number * number
            column.numbers += 1

    def column(self, name: str) -> Optional[ColumnProfile]:
        return self.columns.get(name)


def merged(profiles: Iterable[DataProfile]) -> DataProfile:
    """One profile of several (the splits of a dataset), counting every row once."""
    profiles = list(profiles)
    result = DataProfile()
    for profile in profiles:
        result.rows += profile.rows
        result.files.extend(profile.files)
        for name, column in profile.columns.items():
            target = result.columns.setdefault(name, ColumnProfile(name))
            for kind, path in column.kinds.items():
                target.kinds.setdefault(kind, path)
            target.present += column.present
            target.first_missing = target.first_missing or column.first_missing
            if column.max_values > target.max_values:
                target.max_values, target.max_values_file = column.max_values, column.max_values_file
            target.counts.update(column.counts)
            target.many = target.many or column.many or len(target.counts) > DISTINCT_LIMIT
            target.low, target.high = min(target.low, column.low), max(target.high, column.high)
            target.total += column.total
            target.squares += column.squares
            target.numbers += column.numbers
            target.multi_word += column.multi_word
            target.words += column.words
        result.label_counts.update(profile.label_counts)
    for name, column in result.columns.items():
        for profile in profiles:
            if name not in profile.columns and profile.rows and not column.first_missing:
                column.first_missing = profile.files[0]  # absent from a whole split
    return result


def kind_conflict(column: ColumnProfile) -> Optional[Tuple[str, str, str, str]]:
    """(kind, file, other kind, other file) when files give the column different types; None when they agree."""
    if len(column.kinds) < 2:
        return None
    (kind, path), (other, other_path) = list(column.kinds.items())[:2]
    return kind, path, other, other_path
