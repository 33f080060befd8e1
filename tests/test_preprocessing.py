"""preprocessing_fn on real taxi examples through TF Transform."""

import numpy as np
import pytest

from contract.config import FeaturesConfig
from models import features
from tests.samples import read_examples
from tests.transform_helpers import analyze_and_transform

SPEC = FeaturesConfig()  # the bundled taxi data


@pytest.fixture(scope="module")
def transformed(tmp_path_factory, taxi_root):
    examples = read_examples(f"{taxi_root}/Split-train/*", 200)
    output, rows = analyze_and_transform(examples, str(tmp_path_factory.mktemp("tft")))
    return examples, output, rows


def test_numeric_features_are_standardised(transformed):
    _, _, rows = transformed
    for key in SPEC.numeric:
        values = np.array([r[features.transformed_name(key)] for r in rows])
        assert abs(values.mean()) < 1e-3 and abs(values.std() - 1) < 1e-2, key


def test_bucket_and_vocabulary_ids_fit_their_one_hot_blocks(transformed):
    _, _, rows = transformed
    for key in SPEC.bucketized + SPEC.categorical:
        ids = np.array([r[features.transformed_name(key)] for r in rows])
        assert ids.min() >= 0 and ids.max() < features.one_hot_size(SPEC, key), key


def test_label_matches_the_feature_spec_rule(transformed):
    examples, _, rows = transformed
    tips = [e.features.feature["tips"].float_list.value[0] for e in examples]
    fare = [e.features.feature["fare"].float_list.value[0] for e in examples]
    assert [r[SPEC.label_key] for r in rows] == SPEC.label(tips, fare).tolist()
    assert 0 < np.mean([r[SPEC.label_key] for r in rows]) < 1


def test_missing_values_get_defaults_not_errors(transformed):
    examples, _, rows = transformed
    # company is absent from about a third of taxi trips.
    missing = [i for i, e in enumerate(examples) if not e.features.feature["company"].bytes_list.value]
    assert missing, "sample should contain trips without a company"
    assert all(rows[i][features.transformed_name("company")] >= 0 for i in missing)


def test_vocabularies_are_exported_under_feature_names(transformed):
    _, output, _ = transformed
    for key in SPEC.categorical:
        assert output.vocabulary_size_by_name(key) > 0, key


def _screening(tmp_path, string_label: bool):
    """The issue's dataset, its schema as `init` infers it (every feature required), and its feature spec."""
    from contract.config import section_to_dict
    from schemas.init import infer
    from tests.datasets import MEASUREMENTS, example, screening_rows

    rows = screening_rows(60, string_label=string_label)
    examples = [example(r) for r in rows]
    schema = infer([e.SerializeToString() for e in examples], "diagnosis")
    classes = ["benign", "malignant"] if string_label else ["0", "1"]
    spec = FeaturesConfig(task="binary", classes=classes, label_column="diagnosis", label_relative_to="",
                          numeric=[c for m in MEASUREMENTS for c in (f"mean_{m}", f"{m}_error", f"worst_{m}")],
                          bucketized=[], categorical=["clinic"])
    return rows, examples, schema, spec, {"features": section_to_dict(spec)}


def test_an_int_label_the_schema_calls_optional_gets_an_int_default(tmp_path):
    """Was `ValueError: 0.0`: a float default for the int64 sparse tensor of an optional int label."""
    import tensorflow_data_validation as tfdv

    rows, examples, schema, spec, custom_config = _screening(tmp_path, string_label=False)
    label = tfdv.get_feature(schema, "diagnosis")
    label.ClearField("shape")
    label.presence.min_fraction = 0.0
    _, transformed = analyze_and_transform(examples, str(tmp_path / "tft"), custom_config, schema)
    assert [r[spec.label_key] for r in transformed] == [r["diagnosis"] for r in rows]


def test_a_string_label_is_the_index_of_its_class(tmp_path):
    rows, examples, schema, spec, custom_config = _screening(tmp_path, string_label=True)
    _, transformed = analyze_and_transform(examples, str(tmp_path / "tft"), custom_config, schema)
    assert [r[spec.label_key] for r in transformed] == [spec.classes.index(r["diagnosis"]) for r in rows]
