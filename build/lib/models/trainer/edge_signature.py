"""The `edge` signature: the served model's weights behind numeric-only inputs.

`serving_default` parses tf.Examples and runs the Transform graph: ops (ParseExampleV2,
hash tables, bucketize) that TFLite cannot run on integer hardware. The `edge`
signature starts after Transform instead:
- one `[batch, 1]` float input per numeric feature, holding its z-score (each gets
  its own int8 quantization range when converted);
- one `one_hot` float input, the one-hot encoding of every bucketized and
  categorical id, in the order the model concatenates them.
It calls the model's `core` layer, so it shares every weight with `serving_default`.

The mapping from raw features to those inputs (vocabularies, z-score parameters,
bucket boundaries, missing-value defaults) is read from the Transform output
itself and saved beside the model as the asset `edge_mapping.json`, which the
TF-free runtime in `edge/` applies on devices.
"""

import json
import os
import tempfile
from typing import Dict, List

import numpy as np
import tensorflow as tf

# The installed packages, also when TFX loads this file from its module wheel.
from contract.config import FeaturesConfig
from models import features

EDGE_SIGNATURE = "edge"
ONE_HOT_INPUT = "one_hot"
MAPPING_ASSET = "edge_mapping.json"
MAPPING_FORMAT = 1
# What preprocessing.py substitutes for a missing raw value, by raw dtype.
MISSING = {"string": "", "int": -1, "float": 0.0}
# Bisection over the ordered float32 bit patterns finds each boundary exactly.
_FLOAT32_BITS = 33


def _raw_kind(dtype: tf.DType) -> str:
    return "string" if dtype == tf.string else ("int" if dtype.is_integer else "float")


class _TransformProbe:
    """Runs the Transform graph on tf.Examples holding a single feature each."""

    def __init__(self, tft_output, spec: FeaturesConfig):
        self.layer = tft_output.transform_features_layer()
        self.raw_spec = {k: v for k, v in tft_output.raw_feature_spec().items()
                         if k not in spec.label_only_columns}

    def kind(self, key: str) -> str:
        return _raw_kind(self.raw_spec[key].dtype)

    def __call__(self, key: str, values) -> np.ndarray:
        examples = []
        for value in values:
            example = tf.train.Example()
            feature = example.features.feature[key]
            if self.kind(key) == "int":
                feature.int64_list.value.append(int(value))
            else:
                feature.float_list.value.append(float(value))
            examples.append(example.SerializeToString())
        parsed = tf.io.parse_example(tf.constant(examples), self.raw_spec)
        return self.layer(parsed)[features.transformed_name(key)].numpy().reshape(-1)


def _ordered_to_float32(ordered: np.ndarray) -> np.ndarray:
    bits = np.where(ordered >= 0, ordered, (-ordered) | 0x80000000).astype(np.uint32)
    return bits.view(np.float32)


def _bucket_boundaries(probe: _TransformProbe, key: str) -> List[float]:
    """The boundaries `tft.bucketize` computed: bucket(x) == number of boundaries <= x."""
    largest = np.finfo(np.float32).max
    count = int(probe(key, [largest])[0])
    if count == 0:
        return []
    # Smallest float32 whose bucket is >= k, for k = 1..count, by bisection on ordered bits.
    low = np.full(count, -int(np.float32(largest).view(np.uint32)), dtype=np.int64)
    high = np.full(count, int(np.float32(largest).view(np.uint32)), dtype=np.int64)
    wanted = np.arange(1, count + 1)
    for _ in range(_FLOAT32_BITS):
        middle = (low + high) // 2
        reached = probe(key, _ordered_to_float32(middle)) >= wanted
        high = np.where(reached, middle, high)
        low = np.where(reached, low, middle)
    return [float(b) for b in _ordered_to_float32(high)]


def transform_mapping(tft_output, spec: FeaturesConfig) -> Dict:
    """Raw feature -> edge input, as numbers read from the fitted Transform graph.

    Numeric: preprocessing.py applies signed_log1p then tft.scale_to_z_score, an affine
    map after the log; two probes give its scale and offset. Bucketized: the quantile
    boundaries, by bisection. Categorical: the vocabulary files Transform wrote.
    """
    probe = _TransformProbe(tft_output, spec)
    numeric = []
    for key in spec.numeric:
        # Integers probe as well as floats at 0 and 1; log1p(1) in float32, as Transform computes it.
        at_zero, at_one = probe(key, [0.0, 1.0])
        log_one = float(np.log1p(np.float32(1.0)))
        scale = float((at_one - at_zero) / log_one)
        numeric.append({"feature": key, "input": features.transformed_name(key), "raw_type": probe.kind(key),
                        "scale": scale, "offset": float(at_zero),
                        "mean": -float(at_zero) / scale, "std": 1.0 / scale})
    one_hot, offset = [], 0
    for key in spec.bucketized + spec.categorical:
        size = features.one_hot_size(spec, key)
        entry = {"feature": key, "offset": offset, "size": size, "raw_type": probe.kind(key)}
        if key in spec.bucketized:
            entry.update(kind="bucketized", boundaries=_bucket_boundaries(probe, key))
        else:
            vocabulary = [v.decode("utf-8") for v in tft_output.vocabulary_by_name(key)]
            # compute_and_apply_vocabulary puts every unseen value in the first OOV bucket.
            entry.update(kind="categorical", vocabulary=vocabulary, oov_id=len(vocabulary))
        one_hot.append(entry)
        offset += size
    return {
        "format": MAPPING_FORMAT,
        "signature": EDGE_SIGNATURE,
        "numeric_transform": "z = scale * sign(x) * log1p(|x|) + offset",
        "missing": MISSING,
        "numeric": numeric,
        "one_hot": {"input": ONE_HOT_INPUT, "size": offset, "features": one_hot},
    }


def edge_signatures(model, tft_output, spec: FeaturesConfig, output_key: str) -> Dict:
    """{"edge": concrete function} for `model.save(signatures=...)`; attaches the mapping asset."""
    mapping = transform_mapping(tft_output, spec)
    mapping_dir = tempfile.mkdtemp(prefix="edge_mapping_")
    mapping_path = os.path.join(mapping_dir, MAPPING_ASSET)
    with open(mapping_path, "w", encoding="utf-8") as f:
        json.dump(mapping, f, indent=1)
    # Tracked as an asset: model.save copies it to <saved_model>/assets/edge_mapping.json.
    model.edge_mapping_asset = tf.saved_model.Asset(mapping_path)
    core = model.get_layer("core")
    numeric_names = [n["input"] for n in mapping["numeric"]]
    specs = [tf.TensorSpec([None, 1], tf.float32, name=n) for n in numeric_names]
    specs.append(tf.TensorSpec([None, mapping["one_hot"]["size"]], tf.float32, name=ONE_HOT_INPUT))

    @tf.function(input_signature=specs)
    def edge(*tensors):
        # Same order as build_keras_model's concatenation: numeric, then one-hot blocks.
        return {output_key: core(tf.concat(list(tensors), axis=1))}

    return {EDGE_SIGNATURE: edge}
