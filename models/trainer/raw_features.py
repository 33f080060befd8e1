"""How every exported signature parses raw tf.Examples, whatever the schema says about presence.

Transform's raw feature spec turns a feature the schema calls required (presence
1.0 and a fixed shape, what `infer-schema` writes for a column present in every
row) into a FixedLenFeature without a default: parsing an example that lacks it
fails with "Feature: x (data type: float) is required but could not be found".
Serving requests, TFMA's evaluation examples and the edge mapping's one-feature
probes may all lack features, so the signatures parse with the same spec plus the
missing-value default Transform applies to optional features
(`features.missing_value`): a feature absent from a request then counts as missing,
exactly as in training.
"""

from typing import Dict

import numpy as np
import tensorflow as tf

# The installed packages, also when TFX loads this file from its module wheel.
from contract.config import FeaturesConfig
from models import features


def parsing_spec(tft_output, spec: FeaturesConfig, with_label: bool = False) -> Dict[str, object]:
    """The raw feature spec with a default for every fixed-length feature; without the label unless asked."""
    parsed = {}
    for key, feature in tft_output.raw_feature_spec().items():
        if not with_label and key in spec.label_only_columns:
            continue
        if isinstance(feature, tf.io.FixedLenFeature) and feature.default_value is None:
            size = int(np.prod(feature.shape)) if feature.shape else 1
            default = features.missing_value(feature.dtype.name)
            feature = tf.io.FixedLenFeature(feature.shape, feature.dtype,
                                            default_value=[default] * size if feature.shape else default)
        parsed[key] = feature
    return parsed
