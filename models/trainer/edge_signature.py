"""The `edge` signature: the served model's weights behind numeric-only inputs.

`serving_default` parses tf.Examples and runs the Transform graph: ops (ParseExampleV2,
hash tables, bucketize) that TFLite cannot run on integer hardware. The `edge`
signature starts after Transform instead, with at most two inputs:
- `numeric` [batch, numeric features]: every numeric feature's z-score, packed in one
  tensor. One tensor per feature cost a quantized input, a clip and its quantization
  parameters each: on 30 numeric columns the int8 file was 0.71x the float one;
- `one_hot` [batch, width]: the one-hot encoding of every bucketized and categorical
  id, in the order the model concatenates them.
It calls the model's `core` layer, so it shares every weight with `serving_default`,
and returns the task's output (probability, class scores or the predicted value).

The mapping from raw features to those inputs (vocabularies, z-score parameters,
bucket boundaries, missing-value defaults, the task and its class names) is read
from the Transform output itself and saved beside the model as the asset
`edge_mapping.json`, which the TF-free runtime in `edge/` applies on devices.
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
from models.trainer import raw_features

EDGE_SIGNATURE = "edge"
NUMERIC_INPUT = "numeric"
ONE_HOT_INPUT = "one_hot"
MAPPING_ASSET = "edge_mapping.json"
MAPPING_FORMAT = 2
# Bisection over the ordered float32 bit patterns finds each boundary exactly.
_FLOAT32_BITS = 33


class _TransformProbe:
    """Runs the Transform graph on tf.Examples holding a single feature each.

    The other features are absent and take their missing-value defaults
    (`raw_features.parsing_spec`), so probing works whether the schema calls
    them required or optional.
    """

    def __init__(self, tft_output, spec: FeaturesConfig):
        self.layer = tft_output.transform_features_layer()
        self.raw_spec = raw_features.parsing_spec(tft_output, spec)

    def kind(self, key: str) -> str:
        return features.raw_kind(self.raw_spec[key].dtype.name)

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


def transform_mapping(tft_output, spec: FeaturesConfig, output_key: str) -> Dict:
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
        "task": spec.task,
        "classes": spec.class_names,
        "output": {"name": output_key, "size": features.output_size(spec)},
        "numeric_transform": "z = scale * sign(x) * log1p(|x|) + offset",
        "missing": features.MISSING,
        "numeric_input": NUMERIC_INPUT if numeric else "",
        "numeric": numeric,
        "one_hot": {"input": ONE_HOT_INPUT if offset else "", "size": offset, "features": one_hot},
    }


def input_names(mapping: Dict) -> List[str]:
    """The edge signature's inputs in order: the packed numeric tensor, then the one-hot block (each if any)."""
    return [name for name in (mapping["numeric_input"], mapping["one_hot"]["input"]) if name]


def input_widths(mapping: Dict) -> Dict[str, int]:
    return {mapping["numeric_input"]: len(mapping["numeric"]), mapping["one_hot"]["input"]: mapping["one_hot"]["size"]}


def edge_signatures(model, tft_output, spec: FeaturesConfig, output_key: str) -> Dict:
    """{"edge": concrete function} for `model.save(signatures=...)`; attaches the mapping asset."""
    mapping = transform_mapping(tft_output, spec, output_key)
    mapping_dir = tempfile.mkdtemp(prefix="edge_mapping_")
    mapping_path = os.path.join(mapping_dir, MAPPING_ASSET)
    with open(mapping_path, "w", encoding="utf-8") as f:
        json.dump(mapping, f, indent=1)
    # Tracked as an asset: model.save copies it to <saved_model>/assets/edge_mapping.json.
    model.edge_mapping_asset = tf.saved_model.Asset(mapping_path)
    core = model.get_layer("core")
    widths = input_widths(mapping)
    specs = [tf.TensorSpec([None, widths[n]], tf.float32, name=n) for n in input_names(mapping)]

    @tf.function(input_signature=specs)
    def edge(*tensors):
        # Same order as build_keras_model's concatenation: numeric, then one-hot blocks.
        vector = tf.concat(list(tensors), axis=1) if len(tensors) > 1 else tensors[0]
        return {output_key: core(vector)}

    return {EDGE_SIGNATURE: edge}
