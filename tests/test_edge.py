"""Edge logic without a pipeline: raw-feature encoding, atomic push, configuration."""

import math
import os

import pytest

from edge.encoder import FeatureEncoder, FeatureError
from contract.config import load_config
from contract.errors import ConfigError

MAPPING = {
    "missing": {"string": "", "int": -1, "float": 0.0},
    "numeric_input": "numeric",
    "numeric": [{"feature": "fare", "input": "fare_xf", "raw_type": "float", "scale": 2.0, "offset": -1.0}],
    "one_hot": {"input": "one_hot", "size": 9, "features": [
        {"feature": "lat", "kind": "bucketized", "raw_type": "float", "offset": 0, "size": 3,
         "boundaries": [41.5, 42.0]},
        {"feature": "hour", "kind": "categorical", "raw_type": "int", "offset": 3, "size": 3,
         "vocabulary": ["19", "-1"], "oov_id": 2},
        {"feature": "payment", "kind": "categorical", "raw_type": "string", "offset": 6, "size": 3,
         "vocabulary": ["Cash", "Credit Card"], "oov_id": 2},
    ]},
    "clip": {"fare_xf": [-1.0, 5.0]},
}


def test_encoder_reproduces_transform_rules():
    encoder = FeatureEncoder(MAPPING)
    numeric, hot = encoder.encode({"fare": [3.0], "lat": 41.5, "hour": 19, "payment": "Credit Card"})
    assert numeric == [pytest.approx(2.0 * math.log1p(3.0) - 1.0)]
    # lat 41.5 sits on a boundary: bucket = number of boundaries <= x (tft.apply_buckets).
    assert hot == [0 + 1, 3 + 0, 6 + 1]


def test_encoder_missing_values_match_transform_defaults_and_unseen_values_are_oov():
    encoder = FeatureEncoder(MAPPING)
    numeric, hot = encoder.encode({"payment": "Bitcoin"})
    assert numeric == [-1.0]  # missing fare -> 0.0 -> z = offset
    # missing lat -> 0.0 -> bucket 0; missing hour -> -1 -> "-1" (in this vocabulary); unseen payment -> OOV.
    assert hot == [0, 3 + 1, 6 + 2]


def test_encoder_clips_numeric_inputs_and_reads_csv_strings():
    encoder = FeatureEncoder(MAPPING)
    numeric, hot = encoder.encode({"fare": "1e30", "hour": "19.0", "lat": "43", "payment": ""})
    assert numeric == [5.0]
    assert hot == [2, 3, 6 + 2]


@pytest.mark.parametrize("record, message", [
    ({"fare": "abc"}, "feature 'fare': 'abc' is not a number"),
    ({"fare": float("nan")}, "feature 'fare': nan is not a finite number"),
    ({"hour": "7.5"}, "feature 'hour': '7.5' is not an integer"),
])
def test_encoder_names_the_bad_feature(record, message):
    with pytest.raises(FeatureError, match=message):
        FeatureEncoder(MAPPING).encode(record)


def test_failed_push_leaves_the_previous_version_and_no_staging(tmp_path):
    from edge.export import publish

    base = str(tmp_path / "taxi")
    first = publish(base, 1, {"manifest.json": b"{}", "model_int8.tflite": b"v1"})
    with pytest.raises(Exception):
        # A file name that cannot be created inside the staging directory fails half-way.
        publish(base, 2, {"manifest.json": b"{}", "missing/dir/model.tflite": b"v2"})
    assert sorted(os.listdir(base)) == ["1"]
    assert open(os.path.join(first, "model_int8.tflite"), "rb").read() == b"v1"


def test_edge_config_defaults_follow_output_dir(tmp_path):
    config = load_config(None, [f"output_dir={tmp_path}"])
    assert config.edge.edge_dir == str(tmp_path / "edge")
    assert config.model_edge_dir == str(tmp_path / "edge" / "taxi")
    assert config.edge.max_auc_drop == 0.005 and config.edge.io_type == "int8"
    assert load_config(None, [f"output_dir={tmp_path}", "edge.edge_dir=/srv/edge"]).edge.edge_dir == "/srv/edge"


@pytest.mark.parametrize("override, message", [
    ("edge.io_type=int16", "edge.io_type: 'int16' is not one of int8, uint8"),
    ("edge.representative_examples=0", "edge.representative_examples must be positive"),
    ("edge.clip_quantile=0.5", r"edge.clip_quantile must be in \[0, 0.5\)"),
])
def test_bad_edge_settings_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
