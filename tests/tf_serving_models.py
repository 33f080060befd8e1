"""TF Serving's own test models, rebuilt here: what `tensorflow_model_server_test.py` serves as model `default`.

Written from the description in TF Serving's
`servables/tensorflow/testdata/saved_model_half_plus_two.py` (no file of TF Serving
is copied): y = a*x + b with a = 0.5, b = 2 (b = 3 for half_plus_three), plus
y2 = a*x + c and y3 = a2*x2 + c2 (c = c2 = 3), with the same signature keys, tensor
names and method names, each under `<model>/00000123` (version 123, written with
leading zeros as TF Serving's test data is):

- `saved_model_half_plus_two_cpu`: a TF1 graph saved by SavedModelBuilder;
  `serving_default` (predict, x -> y), `classify_x_to_y`, `regress_x_to_y`,
  `regress_x_to_y2` (serialized tf.Examples of feature `x` in) and
  `regress_x2_to_y3` (float x2 in), each with its proper method name;
- `saved_model_half_plus_two_tf2_cpu`: the same from TF2's `tf.saved_model.save`,
  which marks every signature a predict signature;
- `saved_model_half_plus_three`: the TF1 model with b = 3;
- the small models that test's `test_tf_saved_model_save*` and Keras cases build
  themselves.

`python -m tests.tf_serving_models distrat DIR` builds the MirroredStrategy Keras
model in its own process: two virtual CPUs must be configured before TensorFlow
starts, which a test process that already ran TensorFlow cannot do.
"""

import os
import sys

VERSION_DIR = "00000123"
VERSION = 123


def _feature_spec(tf):
    return {"x": tf.io.FixedLenFeature([1], tf.float32),
            "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}


def half_plus_tf1(base: str, b: float = 2.0) -> str:
    """The TF1 SavedModel: a graph, variables, SignatureDefs built by hand with their method names."""
    import tensorflow as tf

    v1 = tf.compat.v1
    path = os.path.join(base, VERSION_DIR)
    with tf.Graph().as_default(), v1.Session() as session:
        a = tf.Variable(0.5, name="a")
        offset_b = tf.Variable(b, name="b")
        c = tf.Variable(3.0, name="c")
        # Unknown rank, as in TF Serving's stored model (its metadata reads `unknown_rank: true` here).
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = tf.io.parse_example(serialized, _feature_spec(tf))
        for value in parsed.values():  # [batch, 1], as TF 1.14's parse_example inferred it from unknown rank
            value.set_shape([None, 1])
        x = tf.identity(parsed["x"], name="x")
        y = tf.identity(a * x + offset_b, name="y")
        y2 = tf.identity(a * x + c, name="y2")
        x2 = tf.identity(parsed["x2"], name="x2")
        y3 = tf.identity(tf.Variable(0.5, name="a2") * x2 + tf.Variable(3.0, name="c2"), name="y3")
        info = v1.saved_model.utils.build_tensor_info
        constants = v1.saved_model.signature_constants

        def signature(inputs, outputs, method):
            return v1.saved_model.signature_def_utils.build_signature_def(
                {k: info(v) for k, v in inputs.items()}, {k: info(v) for k, v in outputs.items()}, method)

        signatures = {
            "regress_x_to_y": signature({"inputs": serialized}, {"outputs": y}, constants.REGRESS_METHOD_NAME),
            "regress_x_to_y2": signature({"inputs": serialized}, {"outputs": y2}, constants.REGRESS_METHOD_NAME),
            "regress_x2_to_y3": signature({"inputs": x2}, {"outputs": y3}, constants.REGRESS_METHOD_NAME),
            "classify_x_to_y": signature({"inputs": serialized}, {"scores": y}, constants.CLASSIFY_METHOD_NAME),
            "serving_default": signature({"x": x}, {"y": y}, constants.PREDICT_METHOD_NAME),
        }
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(path)
        builder.add_meta_graph_and_variables(session, [v1.saved_model.tag_constants.SERVING],
                                             signature_def_map=signatures)
        builder.save()
    return base


def half_plus_two_tf2(base: str) -> str:
    """The TF2 SavedModel: tf.functions of a tf.Module; `tf.saved_model.save` names every method predict."""
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = tf.Variable(0.5), tf.Variable(2.0), tf.Variable(3.0)

        def _parse(self, serialized):
            return tf.io.parse_example(serialized, _feature_spec(tf))["x"]

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_xy(self, serialized):
            return {"outputs": self.a * self._parse(serialized) + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_xy2(self, serialized):
            return {"outputs": self.a * self._parse(serialized) + self.c}

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
        def regress_x2y3(self, x2):
            return {"outputs": self.a * x2 + self.c}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify_xy(self, serialized):
            return {"scores": self.a * self._parse(serialized) + self.b}

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
        def classify_x2y3(self, x2):
            return {"scores": self.a * x2 + self.c}

    model = HalfPlusTwo()
    tf.saved_model.save(model, os.path.join(base, VERSION_DIR), signatures={
        "regress_x_to_y": model.regress_xy, "regress_x_to_y2": model.regress_xy2,
        "regress_x2_to_y3": model.regress_x2y3, "classify_x_to_y": model.classify_xy,
        "classify_x2_to_y3": model.classify_x2y3, "serving_default": model.predict})
    return base


def tf_saved_model_save(base: str) -> str:
    """`test_tf_saved_model_save`: y = v1 * v2 * x (6x), an input of unknown shape."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.v1, root.v2 = tf.Variable(3.0), tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    tf.saved_model.save(root, os.path.join(base, VERSION_DIR),
                        root.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))
    return base


def tf_saved_model_save_multiple_signatures(base: str) -> str:
    """`test_tf_saved_model_save_multiple_signatures`: serving_default answers 1.0, custom_signature_key 2.0."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.f = tf.function(lambda x: {"y": 1.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    root.g = tf.function(lambda x: {"y": 2.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    tf.saved_model.save(root, os.path.join(base, VERSION_DIR),
                        signatures={"serving_default": root.f, "custom_signature_key": root.g})
    return base


def keras_sequential(base: str, distributed: bool = False) -> str:
    """`test_sequential_keras_saved_model_save` (and, distributed, `test_distrat_...`): y = x, input `x`."""
    import tensorflow as tf

    def build():
        model = tf.keras.models.Sequential()
        model.add(tf.keras.layers.Input(dtype="float32", shape=(1,), name="x"))
        if distributed:
            model.add(tf.keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros"))
        model.add(tf.keras.layers.Lambda(lambda x: x, name="y"))
        return model

    if distributed:
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
        with tf.distribute.MirroredStrategy(devices=("/cpu:0", "/cpu:1")).scope():
            model = build()
    else:
        model = build()
    tf.saved_model.save(model, os.path.join(base, VERSION_DIR))
    return base


if __name__ == "__main__":
    from cli import prologue

    prologue.prepare(tensorflow_log_level="2")
    if sys.argv[1:2] != ["distrat"] or len(sys.argv) != 3:
        sys.exit("usage: python -m tests.tf_serving_models distrat DIR")
    keras_sequential(sys.argv[2], distributed=True)
