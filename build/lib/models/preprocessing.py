"""Transform's `preprocessing_fn`: raw tf.Example features -> the model's inputs.

The same graph runs in the Transform component (full pass over the data) and
inside every exported serving signature, so training and serving prepare
features identically.
"""

import tensorflow as tf
import tensorflow_transform as tft

# The installed package, also when TFX loads this file from its module wheel.
from models import features


def _dense(x, default):
    """A [batch] tensor from an optional feature, `default` where it is missing."""
    if isinstance(x, tf.sparse.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default)
    elif isinstance(x, tf.RaggedTensor):
        x = x.to_tensor(default_value=default, shape=[None, 1])
    return tf.reshape(x, [-1])


def _missing_value(dtype):
    return "" if dtype == tf.string else (-1 if dtype.is_integer else 0.0)


def signed_log1p(x):
    """log1p that keeps the sign, so negative amounts stay ordered."""
    return tf.sign(x) * tf.math.log1p(tf.abs(x))


def preprocessing_fn(inputs, custom_config=None):
    spec = features.spec_from_custom_config(custom_config)
    outputs = {}
    for key in spec.numeric:
        x = tf.cast(_dense(inputs[key], _missing_value(inputs[key].dtype)), tf.float32)
        outputs[features.transformed_name(key)] = tft.scale_to_z_score(signed_log1p(x))
    for key in spec.bucketized:
        x = tf.cast(_dense(inputs[key], _missing_value(inputs[key].dtype)), tf.float32)
        outputs[features.transformed_name(key)] = tft.bucketize(x, spec.bucket_count)
    for key in spec.categorical:
        x = _dense(inputs[key], _missing_value(inputs[key].dtype))
        if x.dtype != tf.string:
            x = tf.strings.as_string(x)
        outputs[features.transformed_name(key)] = tft.compute_and_apply_vocabulary(
            x, top_k=spec.vocab_top_k, num_oov_buckets=features.OOV_BUCKETS,
            vocab_filename=key)
    # The label column is absent from serving requests; Transform then prunes
    # the label from the graph it applies.
    if spec.label_column in inputs:
        label = tf.cast(_dense(inputs[spec.label_column], 0.0), tf.float32)
        bound = tf.constant(spec.label_threshold, tf.float32)
        if spec.label_relative_to:
            bound = bound * tf.cast(_dense(inputs[spec.label_relative_to], 0.0), tf.float32)
        outputs[spec.label_key] = tf.cast(tf.greater(label, bound), tf.int64)
    return outputs
