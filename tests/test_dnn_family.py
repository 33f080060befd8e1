"""The dnn family's Keras model and the exported signatures (serving_default, classify, transform_features)."""

import numpy as np
import pytest
import tensorflow as tf

from contract.serving import PREDICTION_KEY
from contract.config import FeaturesConfig
from models import features
from models.trainer import export
from models.trainer.families import dnn
from tests.samples import read_examples
from tests.transform_helpers import analyze_and_transform

SPEC = FeaturesConfig()  # the bundled taxi data


def _batch(rows, keras_model):
    return {name: np.array([[r[name]] for r in rows]) for name in keras_model.input_names}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, taxi_root):
    examples = read_examples(f"{taxi_root}/Split-train/*", 300)
    tmp = tmp_path_factory.mktemp("model")
    tft_output, rows = analyze_and_transform(examples, str(tmp / "transform"))
    keras_model = dnn.FAMILY.build_keras_model(SPEC, {})
    labels = np.array([r[SPEC.label_key] for r in rows])
    keras_model.fit(_batch(rows, keras_model), labels, epochs=2, batch_size=64, verbose=0)
    export_dir = str(tmp / "serving_model")
    export.save_for_tf_serving(keras_model, export_dir, dnn.FAMILY.serving_signatures(keras_model, tft_output, SPEC), SPEC)
    return examples, rows, keras_model, tf.saved_model.load(export_dir), export_dir


def _serialized(examples, drop=()):
    out = []
    for example in examples:
        copy = tf.train.Example()
        copy.CopyFrom(example)
        for key in drop:
            del copy.features.feature[key]
        out.append(copy.SerializeToString())
    return tf.constant(out)


def test_serving_default_scores_raw_examples_without_the_label(exported):
    examples, _, _, loaded, _ = exported
    serve = loaded.signatures["serving_default"]
    result = serve(examples=_serialized(examples[:20], drop=["tips"]))
    probabilities = result[PREDICTION_KEY].numpy()
    assert probabilities.shape == (20, 1)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_serving_applies_the_same_transform_as_training(exported):
    """No training/serving skew: raw examples through the signature == model on Transform's output."""
    examples, rows, keras_model, loaded, _ = exported
    served = loaded.signatures["serving_default"](examples=_serialized(examples))[PREDICTION_KEY]
    direct = keras_model.predict(_batch(rows, keras_model), verbose=0)
    np.testing.assert_allclose(served.numpy(), direct, atol=1e-5)


def test_classify_signature_is_serving_default_as_tf_serving_classify_expects(exported):
    """TF Serving's Classify: method name, one string input `inputs`, `classes` + `scores` of [batch, classes]."""
    examples, _, _, loaded, export_dir = exported
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        definition = tf.compat.v1.saved_model.load(session, ["serve"], export_dir).signature_def["classify"]
    assert definition.method_name == "tensorflow/serving/classify"
    assert set(definition.inputs) == {"inputs"} and definition.inputs["inputs"].dtype == tf.string.as_datatype_enum
    assert set(definition.outputs) == {"classes", "scores"}
    serialized = _serialized(examples[:20], drop=["tips"])
    result = loaded.signatures["classify"](inputs=serialized)
    probabilities = loaded.signatures["serving_default"](examples=serialized)[PREDICTION_KEY].numpy()
    assert result["classes"].numpy().tolist() == [[b"0", b"1"]] * 20
    np.testing.assert_allclose(result["scores"].numpy(), np.hstack([1 - probabilities, probabilities]), atol=1e-7)


def test_transform_features_signature_yields_the_label(exported):
    examples, _, _, loaded, _ = exported
    out = loaded.signatures["transform_features"](examples=_serialized(examples[:50]))
    tips = [e.features.feature["tips"].float_list.value[0] for e in examples[:50]]
    fare = [e.features.feature["fare"].float_list.value[0] for e in examples[:50]]
    assert out[SPEC.label_key].numpy().tolist() == SPEC.label(tips, fare).tolist()


def test_core_consumes_the_dense_feature_vector(exported):
    _, _, keras_model, _, _ = exported
    core = keras_model.get_layer("core")
    assert core.input_shape == (None, features.dense_input_size(SPEC))


def test_hyperparameters_shape_the_model():
    small = dnn.FAMILY.build_keras_model(SPEC, {"num_layers": 1, "hidden_units": 32})
    large = dnn.FAMILY.build_keras_model(SPEC, {"num_layers": 3, "hidden_units": 128})
    hidden = lambda m: [l.units for l in m.get_layer("core").layers if l.name.startswith("hidden_")]  # noqa: E731
    assert hidden(small) == [32] and hidden(large) == [128, 128, 128]


def test_tuner_search_space_names_match_model_hyperparameters():
    assert set(dnn.FAMILY.search_space().values) == set(dnn.FAMILY.default_hparams) - {"embedding_dim"}
    with_text = FeaturesConfig(text=["title"], numeric=[], bucketized=[], categorical=[])
    assert set(dnn.FAMILY.search_space(with_text).values) == set(dnn.FAMILY.default_hparams)


def test_learning_rate_decays_along_a_cosine_over_the_training_steps():
    """The step count drives the rate: full at step 0, half at mid-run, 0 at the end; constant without decay_steps."""
    import tf_keras as keras

    decayed = dnn.FAMILY.build_keras_model(SPEC, {"learning_rate": 0.01}, decay_steps=100).optimizer
    rate = keras.optimizers.schedules.deserialize(decayed.get_config()["learning_rate"])
    assert [round(float(rate(step)), 6) for step in (0, 50, 100, 150)] == [0.01, 0.005, 0.0, 0.0]
    constant = dnn.FAMILY.build_keras_model(SPEC, {"learning_rate": 0.01}).optimizer
    assert constant.get_config()["learning_rate"] == pytest.approx(0.01)
