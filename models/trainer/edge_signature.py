"""The `edge` signature: the served model's weights behind numeric-only inputs.

`serving_default` parses tf.Examples and runs the Transform graph: ops (ParseExampleV2,
hash tables, bucketize) that TFLite cannot run on integer hardware. The `edge`
signature starts after Transform instead, with at most three inputs:
- `numeric` [batch, numeric features]: every numeric feature's z-score, packed in one
  tensor. One tensor per feature cost a quantized input, a clip and its quantization
  parameters each: on 30 numeric columns the int8 file was 0.71x the float one;
- `one_hot` [batch, width]: the one-hot encoding of every bucketized and categorical
  id, in the order the model concatenates them;
- `bags` [batch, width]: every bag block (text, category sets): at each vocabulary id
  its TF-IDF weight, or 1 where present. Apart from `one_hot` because its values are
  not 0/1: it gets its own int8 scale.
It calls the model's `core` layer, so it shares every weight with `serving_default`,
and returns the task's output (probability, class scores or the predicted value).
A decision forest has no such core: its `edge` signature calls a small network
distilled from the forest (`families/gbdt.py`), gated against the forest itself.

The mapping from raw features to those inputs (vocabularies, z-score parameters,
bucket boundaries, missing-value defaults, the task and its class names) is read
from the Transform output itself and saved beside the model as the asset
`edge_mapping.json`, which the TF-free runtime in `edge/` applies on devices.
"""

import json
import os
import shutil
import tempfile
import weakref
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

# The installed packages, also when TFX loads this file from its module wheel.
from contract import text
from contract.config import FeaturesConfig
from models import features
from models.trainer import raw_features

EDGE_SIGNATURE = "edge"
NUMERIC_INPUT = "numeric"
ONE_HOT_INPUT = "one_hot"
BAGS_INPUT = "bags"
MAPPING_ASSET = "edge_mapping.json"
# 4: bag blocks (text, category sets) in `bags`.
MAPPING_FORMAT = 4


class _TransformProbe:
    """Runs the Transform graph on tf.Examples holding only the features probed.

    The other features are absent and take their missing-value defaults
    (`raw_features.parsing_spec`), so probing works whether the schema calls
    them required or optional. Every numeric and bucketized output depends on
    its own feature only, so one call can probe several features at once.
    """

    def __init__(self, tft_output, spec: FeaturesConfig):
        layer, raw_spec = tft_output.transform_features_layer(), raw_features.parsing_spec(tft_output, spec)
        self.raw_spec = raw_spec
        # One trace for every probe: Transform's TF1 graph (pipeline.py) costs 0.48 s per eager call.
        self.transform = tf.function(lambda serialized: layer(tf.io.parse_example(serialized, raw_spec)),
                                     input_signature=[tf.TensorSpec([None], tf.string)])

    def kind(self, key: str) -> str:
        return features.raw_kind(self.raw_spec[key].dtype.name)

    def _examples(self, values: Dict[str, Sequence]) -> List[bytes]:
        """Example i holds every feature's i-th value (a shorter list repeats its last one); a list value holds
        several values."""
        rows = max(len(v) for v in values.values())
        examples = []
        for i in range(rows):
            example = tf.train.Example()
            for key, column in values.items():
                value = column[min(i, len(column) - 1)]
                items = value if isinstance(value, list) else [value]
                feature = example.features.feature[key]
                kind = self.kind(key)
                if kind == "int":
                    feature.int64_list.value.extend(int(v) for v in items)
                elif kind == "string":
                    feature.bytes_list.value.extend(str(v).encode("utf-8") for v in items)
                else:
                    feature.float_list.value.extend(float(v) for v in items)
            examples.append(example.SerializeToString())
        return examples

    def many(self, values: Dict[str, Sequence], outputs: Dict[str, str]) -> Dict[str, np.ndarray]:
        """{feature: Transform's `outputs[feature]` for each of `values[feature]`}, in one Transform call."""
        transformed = self.transform(tf.constant(self._examples(values)))
        return {key: transformed[outputs[key]].numpy().reshape(-1)[:len(column)] for key, column in values.items()}

    def bags(self, block, values: Sequence) -> List[Dict[int, float]]:
        """A bag block's Transform outputs for examples holding `values` of its feature: {id: weight} per row
        (weight 1.0 for each id present in an unweighted bag)."""
        transformed = self.transform(tf.constant(self._examples({block.feature: list(values)})))
        ids = tf.sparse.to_dense(transformed[block.ids], default_value=-1).numpy()
        weights = (tf.sparse.to_dense(transformed[block.weights]).numpy() if block.weights
                   else np.ones(ids.shape, np.float32))
        return [{int(i): float(w) for i, w in zip(row_ids, row_weights) if i >= 0}
                for row_ids, row_weights in zip(ids, weights)][:len(values)]

    def __call__(self, key: str, values, output: str = "") -> np.ndarray:
        """Transform's `output` (default: the feature's own, `<key>_xf`) for examples holding `key` only."""
        return self.many({key: list(values)}, {key: output or features.transformed_name(key)})[key]


def _ordered_to_float32(ordered) -> np.ndarray:
    ordered = np.asarray(ordered, dtype=np.int64)
    bits = np.where(ordered >= 0, ordered, (-ordered) | 0x80000000).astype(np.uint32)
    return bits.view(np.float32)


class _Search:
    """Bisection for one bucketized output: per bucket k, the smallest raw value Transform puts in bucket >= k.

    Floats bisect over the ordered float32 bit patterns (exact in 33 steps). Integers
    bisect over int64 (64 steps; Python integers, as the midpoints would overflow): the
    float32 of the smallest integer of bucket k separates the integers below from those
    at or above it, since Transform compares float32(x) with float32 boundaries.
    """

    def __init__(self, kind: str, count: int):
        self.kind, self.count = kind, count
        if kind == "int":
            self.low, self.high, self.steps = [_INT64_MIN] * count, [_INT64_MAX] * count, 64
        else:
            self.low, self.high, self.steps = [-_ORDERED_FLOAT32_MAX] * count, [_ORDERED_FLOAT32_MAX] * count, 33

    @staticmethod
    def largest(kind: str):
        """The largest raw value of the kind: its bucket is the number of boundaries."""
        return _INT64_MAX if kind == "int" else float(np.finfo(np.float32).max)

    def midpoints(self) -> List[int]:
        return [(lo + hi) // 2 for lo, hi in zip(self.low, self.high)]

    def values(self, midpoints: List[int]) -> List:
        """The raw values the midpoints stand for."""
        return midpoints if self.kind == "int" else _ordered_to_float32(midpoints).tolist()

    def update(self, midpoints: List[int], buckets: np.ndarray) -> None:
        reached = buckets >= np.arange(1, self.count + 1)
        self.high = [m if r else h for m, h, r in zip(midpoints, self.high, reached)]
        self.low = [lo if r else m for m, lo, r in zip(midpoints, self.low, reached)]

    def boundaries(self) -> List[float]:
        if self.kind == "int":
            return [float(np.float32(h)) for h in self.high]
        return [float(b) for b in _ordered_to_float32(self.high)]


_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
_ORDERED_FLOAT32_MAX = int(np.float32(np.finfo(np.float32).max).view(np.uint32))


def bucket_boundaries(probe: _TransformProbe, outputs: Dict[str, str]) -> Dict[str, List[float]]:
    """{feature: the boundaries `tft.bucketize` computed for `outputs[feature]`}: bucket(x) == boundaries <= x.

    All features bisect together, one Transform call per step: 7 outputs of the
    bundled data in 64 calls instead of 295 (5.6 s of the Trainer before).
    """
    if not outputs:  # no bucketized feature and numeric_buckets 0
        return {}
    kinds = {k: probe.kind(k) for k in outputs}
    counts = probe.many({k: [_Search.largest(kind)] for k, kind in kinds.items()}, outputs)
    searches = {k: _Search(kind, int(counts[k][0])) for k, kind in kinds.items()}
    for step in range(64):
        active = {k: s for k, s in searches.items() if s.count and step < s.steps}
        if not active:
            break
        midpoints = {k: s.midpoints() for k, s in active.items()}
        buckets = probe.many({k: s.values(midpoints[k]) for k, s in active.items()}, {k: outputs[k] for k in active})
        for k, s in active.items():
            s.update(midpoints[k], buckets[k])
    return {k: s.boundaries() for k, s in searches.items()}


def transform_mapping(tft_output, spec: FeaturesConfig, output_key: str) -> Dict:
    """Raw feature -> edge input, as numbers read from the fitted Transform graph.

    Numeric: preprocessing.py applies signed_log1p then tft.scale_to_z_score, an affine
    map after the log; two probes give its scale and offset. Bucketized (also numeric
    features' quantile buckets): the boundaries, by bisection. Categorical: the
    vocabulary files Transform wrote. Each one-hot entry names its Transform output.
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
    blocks = features.one_hot_blocks(spec)
    boundaries = bucket_boundaries(probe, {b.feature: b.input for b in blocks if b.kind == "bucketized"})
    bags, bags_size = [], 0
    for block in features.bag_blocks(spec):
        bags.append(bag_mapping(probe, tft_output, block, bags_size, spec))
        bags_size += block.size
    one_hot, offset = [], 0
    for block in blocks:
        entry = {"feature": block.feature, "input": block.input, "kind": block.kind, "offset": offset,
                 "size": block.size, "raw_type": probe.kind(block.feature)}
        if block.kind == "bucketized":
            entry.update(boundaries=boundaries[block.feature])
        else:
            vocabulary = [v.decode("utf-8") for v in tft_output.vocabulary_by_name(block.feature)]
            # compute_and_apply_vocabulary puts every unseen value in the first OOV bucket.
            entry.update(vocabulary=vocabulary, oov_id=len(vocabulary))
        one_hot.append(entry)
        offset += block.size
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
        "bags": {"input": BAGS_INPUT if bags else "", "size": bags_size, "features": bags},
    }


def bag_mapping(probe: _TransformProbe, tft_output, block, offset: int, spec: FeaturesConfig) -> Dict:
    """One bag block of the mapping: its vocabulary (the file Transform wrote), how a raw value becomes terms, and
    for TF-IDF the idf of each id.

    The idf is read back from the graph as the other numbers are: `tft.tfidf` weighs a term of a text by
    (count / terms) * idf, so probing with each vocabulary entry (and an unseen term) as the whole text gives
    idf = weight * terms / count; entries of one word are exact, longer n-grams within a float32 rounding.
    """
    vocabulary = [v.decode("utf-8") for v in tft_output.vocabulary_by_name(block.feature)]
    entry = {"feature": block.feature, "input": block.ids, "kind": block.kind, "offset": offset, "size": block.size,
             "raw_type": probe.kind(block.feature), "vocabulary": vocabulary, "oov_id": len(vocabulary),
             "weighting": "tfidf" if block.weights else "multi_hot"}
    if block.kind == "text":
        entry["ngram_range"] = [int(n) for n in spec.text_ngrams]
    if block.weights:
        index = {term: i for i, term in enumerate(vocabulary)}
        unseen = _unseen_text(index, int(spec.text_ngrams[0]))
        texts = vocabulary + [unseen]
        idf = [0.0] * block.size
        for i, (text_value, weights) in enumerate(zip(texts, probe.bags(block, texts))):
            target = i if i < len(vocabulary) else len(vocabulary)
            terms = text.terms(text_value, spec.text_ngrams)
            count = sum(1 for t in terms if index.get(t, len(vocabulary)) == target)
            idf[target] = weights[target] * len(terms) / count
        entry["idf"] = idf
    return entry


def _unseen_text(index: Dict[str, int], words: int) -> str:
    """A text of `words` words whose n-gram is in no vocabulary entry: it probes the OOV bucket's idf."""
    word = "zqxj"
    while any(word in term.split(text.NGRAM_SEPARATOR) for term in index):
        word += "q"
    return text.NGRAM_SEPARATOR.join([word] * words)


def input_names(mapping: Dict) -> List[str]:
    """The edge signature's inputs in order: the packed numeric tensor, the one-hot block, the bags (each if any)."""
    return [name for name in (mapping["numeric_input"], mapping["one_hot"]["input"], mapping["bags"]["input"])
            if name]


def input_widths(mapping: Dict) -> Dict[str, int]:
    return {mapping["numeric_input"]: len(mapping["numeric"]), mapping["one_hot"]["input"]: mapping["one_hot"]["size"],
            mapping["bags"]["input"]: mapping["bags"]["size"]}


def edge_signatures(model, tft_output, spec: FeaturesConfig, output_key: str, core=None) -> Dict:
    """{"edge": concrete function} for `model.save(signatures=...)`; attaches the mapping asset.

    `core`: the Keras model behind `edge` (default: `model`'s layer "core"; a decision forest's distilled
    student, which `model` must track so that its weights are saved).
    """
    mapping = transform_mapping(tft_output, spec, output_key)
    mapping_dir = tempfile.mkdtemp(prefix="edge_mapping_")
    # model.save copies the file; the directory goes with the model (or at exit), not left in /tmp.
    weakref.finalize(model, shutil.rmtree, mapping_dir, True)
    mapping_path = os.path.join(mapping_dir, MAPPING_ASSET)
    with open(mapping_path, "w", encoding="utf-8") as f:
        json.dump(mapping, f, indent=1)
    # Tracked as an asset: model.save copies it to <saved_model>/assets/edge_mapping.json.
    model.edge_mapping_asset = tf.saved_model.Asset(mapping_path)
    core = core if core is not None else model.get_layer("core")
    widths = input_widths(mapping)
    specs = [tf.TensorSpec([None, widths[n]], tf.float32, name=n) for n in input_names(mapping)]

    @tf.function(input_signature=specs)
    def edge(*tensors):
        # Same order as the model's feature vector: numeric, one-hot blocks, bag blocks.
        vector = tf.concat(list(tensors), axis=1) if len(tensors) > 1 else tensors[0]
        return {output_key: core(vector)}

    return {EDGE_SIGNATURE: edge}
