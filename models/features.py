"""The single source of truth for the model's features.

Transform (`preprocessing.py`), the Keras model and its signatures (`model.py`),
the tuner (`tuning.py`) and the clients read their feature lists from a
`FeatureSpec`. `TAXI` is the spec for the bundled Chicago taxi data; another
dataset gets its own spec through the `features:` section of the pipeline
configuration, which reaches Transform, Tuner and Trainer as `custom_config`.
The checked-in schema (`schemas/taxi/schema.pbtxt`) describes the raw data;
`tests/test_features.py` keeps the two in agreement.

Every feature becomes part of one dense float vector inside the model: numeric
features are z-scored, the others are one-hot encoded from an integer id (a
vocabulary index or a bucket index). A model whose core is a plain dense vector
is what lets the same weights run on edge devices later.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

# Ids beyond the vocabulary share these buckets, so unseen values never fail.
OOV_BUCKETS = 1


@dataclass(frozen=True)
class FeatureSpec:
    """Roles of the raw columns and the label rule.

    numeric: signed log1p, then z-score.
    bucketized: quantile buckets (`bucket_count`), one-hot encoded.
    categorical: strings or integer codes; vocabulary of the `vocab_top_k` most
        frequent values plus OOV buckets, one-hot encoded.
    label: positive when `label_column > label_threshold * label_relative_to`
        (or `> label_threshold` when `label_relative_to` is empty), computed in
        float32. The label column is never a model input and is absent at serving.
    """

    numeric: Tuple[str, ...]
    bucketized: Tuple[str, ...]
    categorical: Tuple[str, ...]
    label_column: str
    label_threshold: float
    label_relative_to: str = ""
    bucket_count: int = 10
    vocab_top_k: int = 100

    LABEL_KEY = "big_tipper"

    def __post_init__(self):
        inputs = self.raw_input_features
        if not inputs:
            raise ValueError("features: no input features configured")
        duplicated = sorted({k for k in inputs if inputs.count(k) > 1})
        if duplicated:
            raise ValueError(f"features: {duplicated} appear in more than one role")
        if self.label_column in inputs:
            raise ValueError(
                f"features: the label column {self.label_column!r} is also an input; "
                "remove it from the input lists (it would leak the label)")
        if self.bucket_count < 2 or self.vocab_top_k < 1:
            raise ValueError("features: bucket_count must be >= 2 and vocab_top_k >= 1")

    @property
    def raw_input_features(self) -> Tuple[str, ...]:
        return self.numeric + self.bucketized + self.categorical

    @property
    def label_key(self) -> str:
        """Name of the label after Transform (what the model and TFMA see)."""
        return self.LABEL_KEY

    @property
    def label_only_columns(self) -> Tuple[str, ...]:
        """Raw columns that exist only in training data and must not be parsed at serving."""
        return (self.label_column,)

    def one_hot_size(self, key: str) -> int:
        if key in self.bucketized:
            return self.bucket_count
        if key in self.categorical:
            return self.vocab_top_k + OOV_BUCKETS
        raise KeyError(f"{key!r} is not a bucketized or categorical feature")

    def dense_input_size(self) -> int:
        """Length of the dense vector the model's core consumes."""
        return len(self.numeric) + sum(
            self.one_hot_size(k) for k in self.bucketized + self.categorical)

    def label(self, label_values, relative_values=None) -> np.ndarray:
        """The label rule on numpy values, in float32 exactly as Transform computes it.

        float64 would flip examples that sit on the boundary (a $1.00 tip on a $5.00 fare).
        """
        column = np.asarray(label_values, dtype=np.float32)
        bound = np.float32(self.label_threshold)
        if self.label_relative_to:
            bound = bound * np.asarray(relative_values, dtype=np.float32)
        return (column > bound).astype(np.int64)

    def to_dict(self) -> Dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "FeatureSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"features: unknown settings {unknown}; known: {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)


def transformed_name(key: str) -> str:
    """Name of a feature after Transform: `fare` -> `fare_xf`."""
    return key + "_xf"


TAXI = FeatureSpec(
    # Heavy-tailed amounts: a handful of $1000 fares would otherwise set the scale.
    numeric=("trip_miles", "fare", "trip_seconds"),
    bucketized=("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude"),
    # pickup_census_tract is left out: 1 of 9,909 training examples has it and
    # the eval split has none. trip_start_timestamp is decomposed into hour/day/month.
    categorical=(
        "payment_type",
        "company",
        "trip_start_hour",
        "trip_start_day",
        "trip_start_month",
        "dropoff_census_tract",
        "pickup_community_area",
        "dropoff_community_area",
    ),
    label_column="tips",
    label_threshold=0.2,
    label_relative_to="fare",
)

CUSTOM_CONFIG_KEY = "features"


def spec_from_custom_config(custom_config) -> FeatureSpec:
    """The spec a TFX module function should use: the pipeline's, else the taxi default."""
    if custom_config and custom_config.get(CUSTOM_CONFIG_KEY):
        return FeatureSpec.from_dict(custom_config[CUSTOM_CONFIG_KEY])
    return TAXI
