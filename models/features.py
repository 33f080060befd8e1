"""How the feature spec becomes model inputs: the naming and encoding Transform, the model and the edge share.

The roles of the raw columns and the label rule are the `features:` section of
the configuration (`contract.config.FeaturesConfig`); a TFX module function gets
it back from `custom_config` with `spec_from_custom_config`. This file and
`preprocessing.py` are the whole of Transform's module directory: TFX
fingerprints the directory, so only what changes Transform's output lives here.

Every feature becomes part of one dense float vector inside the model, in blocks
every model family reads the same way: numeric features are z-scored; bucketized and
categorical ones are one-hot blocks of an integer id (a bucket or vocabulary index);
text and category sets are bag blocks, a weight per vocabulary id (TF-IDF, or 1 for
each id present). A model whose core is a plain dense vector is what lets the same
weights run on edge devices later.
"""

from typing import List, NamedTuple

from contract.config import FeaturesConfig, section_from_dict

# Ids beyond the vocabulary share these buckets, so unseen values never fail.
OOV_BUCKETS = 1
CUSTOM_CONFIG_KEY = "features"
# What a missing raw value becomes, by raw kind: Transform, the serving signatures' parsing and the
# edge runtime substitute the same value, so an incomplete record scores the same everywhere.
MISSING = {"string": "", "int": -1, "float": 0.0}


def raw_kind(dtype_name: str) -> str:
    """`string`, `int` or `float` for a TensorFlow dtype name (`string`, `int64`, `float32`)."""
    return "string" if dtype_name == "string" else ("int" if dtype_name.startswith("int") else "float")


def missing_value(dtype_name: str):
    return MISSING[raw_kind(dtype_name)]


def transformed_name(key: str) -> str:
    """Name of a feature after Transform: `fare` -> `fare_xf`."""
    return key + "_xf"


def bucket_name(key: str) -> str:
    """Name of a numeric feature's quantile bucket id after Transform: `fare` -> `fare_xf_bucket`."""
    return key + "_xf_bucket"


class OneHotBlock(NamedTuple):
    """One integer id Transform outputs and the model one-hot encodes."""

    feature: str  # the raw column
    input: str  # Transform's output, the model's input
    kind: str  # bucketized (quantile boundaries) | categorical (vocabulary)
    size: int


def one_hot_size(spec: FeaturesConfig, key: str) -> int:
    """Width of a bucketized or categorical feature's one-hot block."""
    if key in spec.bucketized:
        return spec.bucket_count
    if key in spec.categorical:
        return spec.vocab_top_k + OOV_BUCKETS
    raise KeyError(f"{key!r} is not a bucketized or categorical feature")


def one_hot_blocks(spec: FeaturesConfig) -> List[OneHotBlock]:
    """The one-hot blocks in the order the model concatenates them after the numeric z-scores.

    Bucketized, then categorical features, then (`numeric_buckets` > 0) each numeric
    feature's quantile bucket: beside its z-score, which a dense layer can only
    use monotonically at first, the bucket lets the wide path learn any shape.
    """
    blocks = [OneHotBlock(k, transformed_name(k), "bucketized", one_hot_size(spec, k)) for k in spec.bucketized]
    blocks += [OneHotBlock(k, transformed_name(k), "categorical", one_hot_size(spec, k)) for k in spec.categorical]
    if spec.numeric_buckets:
        blocks += [OneHotBlock(k, bucket_name(k), "bucketized", spec.numeric_buckets) for k in spec.numeric]
    return blocks


class BagBlock(NamedTuple):
    """A bag of vocabulary ids Transform outputs for one column (varlen int64), with a weight per id when
    `weights` names a second output (varlen float32, aligned with the ids). The model's block is `size` wide:
    at each id, the sum of its weights; without weights, 1 where the id is present (multi-hot)."""

    feature: str  # the raw column
    ids: str  # Transform's output of ids, the model's input
    weights: str  # Transform's output of their weights; "" for presence
    kind: str  # text (n-grams of free text) | category_set (a list of values)
    size: int  # the vocabulary's top k plus one OOV bucket


def weights_name(key: str) -> str:
    """Name of a text feature's TF-IDF weights after Transform: `title` -> `title_xf_weights`."""
    return key + "_xf_weights"


def bag_blocks(spec: FeaturesConfig) -> List[BagBlock]:
    """The bag blocks in the order the model concatenates them after the one-hot blocks: text, then category sets."""
    weighted = spec.text_weighting == "tfidf"
    blocks = [BagBlock(k, transformed_name(k), weights_name(k) if weighted else "", "text",
                       spec.text_top_k + OOV_BUCKETS) for k in spec.text]
    blocks += [BagBlock(k, transformed_name(k), "", "category_set", spec.vocab_top_k + OOV_BUCKETS)
               for k in spec.category_sets]
    return blocks


def dense_input_size(spec: FeaturesConfig) -> int:
    """Length of the dense vector the model's core consumes."""
    return (len(spec.numeric) + sum(block.size for block in one_hot_blocks(spec))
            + sum(block.size for block in bag_blocks(spec)))


def bag_offsets(spec: FeaturesConfig) -> List[int]:
    """Where each bag block starts in the dense vector (after the numeric z-scores and the one-hot blocks)."""
    offsets, offset = [], len(spec.numeric) + sum(block.size for block in one_hot_blocks(spec))
    for block in bag_blocks(spec):
        offsets.append(offset)
        offset += block.size
    return offsets


def output_size(spec: FeaturesConfig) -> int:
    """Width of the model's output: one probability (binary), one per class, or one value."""
    return spec.task_type.output_size(len(spec.class_names))


def spec_from_custom_config(custom_config) -> FeaturesConfig:
    """The spec a TFX module function should use: the pipeline's (its defaults when a test passes none)."""
    spec = section_from_dict(FeaturesConfig, (custom_config or {}).get(CUSTOM_CONFIG_KEY))
    spec.check()
    return spec
