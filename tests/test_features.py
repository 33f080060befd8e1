"""The feature spec: its rules, and its agreement with the curated schema."""

import dataclasses

import numpy as np
import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from contract.config import DEFAULT_SCHEMA, FeaturesConfig, section_from_dict, section_to_dict
from models import features

SPEC = FeaturesConfig()  # the defaults: the bundled taxi data


@pytest.fixture(scope="module")
def schema():
    return tfdv.load_schema_text(DEFAULT_SCHEMA)


def test_every_input_feature_is_in_the_schema(schema):
    names = {f.name for f in schema.feature}
    missing = set(SPEC.raw_input_features) - names
    assert not missing, f"features the model reads but the schema does not describe: {missing}"


def test_label_exists_only_in_training(schema):
    label = tfdv.get_feature(schema, SPEC.label_column)
    assert list(label.not_in_environment) == ["SERVING"]
    assert set(schema.default_environment) == {"TRAINING", "SERVING"}


def test_numeric_features_are_numeric_in_schema(schema):
    for key in SPEC.numeric + SPEC.bucketized:
        assert tfdv.get_feature(schema, key).type in (schema_pb2.INT, schema_pb2.FLOAT), key


def test_label_rule_is_computed_in_float32():
    # 0.2 * 5.0 in float32 is 1.0000000149...; a 1.0 tip is not above it, as in Transform.
    assert SPEC.label([1.0], [5.0]).tolist() == [0]
    assert SPEC.label([1.01, 0.0, 3.0], [5.0, 0.0, 10.0]).tolist() == [1, 0, 1]


def test_label_rule_without_reference_column():
    spec = FeaturesConfig(numeric=["x"], bucketized=[], categorical=[], label_column="y", label_threshold=0.5,
                          label_relative_to="")
    assert spec.label(np.array([0.4, 0.6])).tolist() == [0, 1]


def test_dense_input_size_counts_every_block():
    expected = 3 + 4 * SPEC.bucket_count + 8 * (SPEC.vocab_top_k + features.OOV_BUCKETS) + 3 * SPEC.numeric_buckets
    assert features.dense_input_size(SPEC) == expected
    assert features.dense_input_size(dataclasses.replace(SPEC, numeric_buckets=0)) == expected - 3 * SPEC.numeric_buckets


def test_numeric_bucket_blocks_follow_the_others_and_name_their_transform_output():
    blocks = features.one_hot_blocks(SPEC)
    assert [b.input for b in blocks[-3:]] == ["trip_miles_xf_bucket", "fare_xf_bucket", "trip_seconds_xf_bucket"]
    assert [b.feature for b in blocks[:4]] == SPEC.bucketized
    assert len({b.input for b in blocks}) == len(blocks)


@pytest.mark.parametrize("kwargs, message", [
    (dict(numeric=("tips",)), "label column 'tips' is also an input"),
    (dict(numeric=("fare", "fare")), "appear in more than one role"),
    (dict(numeric=(), bucketized=(), categorical=()), "no input features"),
    (dict(bucket_count=1), "bucket_count"),
    (dict(numeric_buckets=1), "numeric_buckets: 1 must be 0"),
])
def test_invalid_specs_are_rejected_with_the_reason(kwargs, message):
    values = section_to_dict(SPEC)
    values.update({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})
    with pytest.raises(ValueError, match=message):
        features.spec_from_custom_config({"features": values})


def test_spec_round_trips_through_custom_config():
    restored = features.spec_from_custom_config({"features": section_to_dict(SPEC)})
    assert restored == SPEC
    assert features.spec_from_custom_config(None) == SPEC


def test_unknown_spec_setting_is_named():
    with pytest.raises(ValueError, match="unknown settings \\['colour'\\]"):
        section_from_dict(FeaturesConfig, {**section_to_dict(SPEC), "colour": 1})
