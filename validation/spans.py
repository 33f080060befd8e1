"""Lay tf.Example data out as time spans, so that windows and drift can be shown on real data.

    python -m validation make-spans --out DIR [--period month|quarter|year]

Each example goes to the span of its `trip_start_timestamp` (UTC), keeping the
split it came from: `DIR/span-1/train/data.tfrecord.gz`,
`DIR/span-1/eval/...`, numbered 1..N in time order; `DIR/spans.tsv` says which
period each span is. ImportExampleGen reads it with `{SPAN}` patterns
(`data.train_pattern=span-{SPAN}/train/*`).
"""

import datetime
import os
from collections import defaultdict
from typing import Dict, List, Tuple

from validation import files as input_files

SPAN_PROPERTY = "span"  # what ExampleGen records on every Examples artifact

SPLITS = {"train": "Split-train", "eval": "Split-eval"}
PERIODS = ("month", "quarter", "year")


def period_of(timestamp: int, period: str) -> str:
    when = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    if period == "month":
        return f"{when.year}-{when.month:02d}"
    if period == "quarter":
        return f"{when.year}-Q{(when.month - 1) // 3 + 1}"
    return str(when.year)


def span_dir(root: str, span: int) -> str:
    return os.path.join(root, f"span-{span}")


def make_spans(source_root: str, out: str, period: str = "month",
               timestamp_feature: str = "trip_start_timestamp") -> List[Tuple[int, str, int, int]]:
    """Writes the spans; returns (span, period, train examples, eval examples) in span order."""
    import tensorflow as tf

    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    grouped: Dict[str, Dict[str, List[bytes]]] = defaultdict(lambda: defaultdict(list))
    for split, directory in SPLITS.items():
        for path in input_files.list_files(os.path.join(source_root, directory), "*"):
            for record in input_files.read_examples(path):
                example = tf.train.Example.FromString(record)
                values = example.features.feature[timestamp_feature].int64_list.value
                if not values:
                    raise input_files.BadInputError(
                        f"{path}: an example has no {timestamp_feature}; spans need it in every example")
                grouped[period_of(values[0], period)][split].append(record)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    rows = []
    for span, name in enumerate(sorted(grouped), start=1):
        for split in SPLITS:
            path = os.path.join(span_dir(out, span), split, "data.tfrecord.gz")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with tf.io.TFRecordWriter(path, options) as writer:
                for record in grouped[name][split]:
                    writer.write(record)
        rows.append((span, name, len(grouped[name]["train"]), len(grouped[name]["eval"])))
    with open(os.path.join(out, "spans.tsv"), "w", encoding="utf-8") as f:
        f.write("span\tperiod\ttrain\teval\n")
        f.writelines(f"{s}\t{p}\t{t}\t{e}\n" for s, p, t, e in rows)
    return rows


def span_of(artifact) -> int:
    """The span of an Examples artifact: ImportExampleGen records it as a custom property (0 without spans)."""
    if artifact.has_custom_property(SPAN_PROPERTY):
        value = artifact.get_custom_property(SPAN_PROPERTY)
        return int(value)
    return int(artifact.span) if artifact.has_property(SPAN_PROPERTY) else 0
