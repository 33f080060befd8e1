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
    blocks = features.one_hot_blocks(SPEC)
    assert {b.input for b in blocks} >= {features.bucket_name(k) for k in SPEC.numeric}
    for block in blocks:
        ids = np.array([r[block.input] for r in rows])
        assert ids.min() >= 0 and ids.max() < block.size, block.input
        # Quantile buckets spread the data: no bucket id holds most of a continuous column.
        if block.input == features.bucket_name("trip_seconds"):
            assert len(set(ids.tolist())) > block.size // 2 and np.bincount(ids).max() < 0.2 * len(ids)


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



def _sparse(values):
    """An optional feature as Transform feeds it: a SparseTensor with one value per row (None: missing)."""
    import tensorflow as tf

    present = [(i, v) for i, v in enumerate(values) if v is not None]
    return tf.SparseTensor([[i, 0] for i, _ in present], [v for _, v in present], [len(values), 1])


def test_an_optional_int_label_gets_an_int_default():
    """Was `ValueError: 0.0`: a float default for the int64 sparse tensor of an int label the schema calls optional."""
    from models import preprocessing

    spec = FeaturesConfig(classes=["0", "1"], label_column="diagnosis", label_relative_to="")
    labels = preprocessing.label({"diagnosis": _sparse([1, 0, None, 1])}, spec)
    assert labels.numpy().tolist() == [1, 0, -1, 1]  # a missing label is no class
    threshold = FeaturesConfig(label_column="diagnosis", label_threshold=0.5, label_relative_to="")
    assert preprocessing.label({"diagnosis": _sparse([1, 0, None, 1])}, threshold).numpy().tolist() == [1, 0, 0, 1]


def test_string_and_integer_labels_are_the_index_of_their_class():
    import tensorflow as tf

    from models import preprocessing

    spec = FeaturesConfig(task="multiclass", classes=["Adelie", "Chinstrap", "Gentoo"], label_column="species",
                          label_relative_to="")
    species = tf.constant([[b"Gentoo"], [b"Adelie"], [b"Emperor"], [b"Chinstrap"]])
    assert preprocessing.label({"species": species}, spec).numpy().tolist() == [2, 0, -1, 1]
    coded = FeaturesConfig(task="multiclass", classes=["10", "2", "7"], label_column="code", label_relative_to="")
    assert preprocessing.label({"code": _sparse([7, 10, 2])}, coded).numpy().tolist() == [2, 0, 1]
    value = FeaturesConfig(task="regression", label_column="basket", label_relative_to="")
    assert preprocessing.label({"basket": _sparse([3, None])}, value).numpy().tolist() == [3.0, -1.0]
