"""The exported SavedModel every model family shares: signatures over raw tf.Examples, TF Serving's APIs.

- `serving_default`: serialized raw tf.Examples -> the task's outputs
  (contract/serving.py: probabilities, scores + classes, or predictions); the
  Transform graph runs inside it, so clients send raw features.
- `classify` (classification) or `regress` (regression): the same function behind
  TF Serving's Classify / Regress APIs (the task's `examples_api`: method
  `tensorflow/serving/classify|regress`, input `inputs`; outputs `classes` +
  `scores`, or `outputs`).
- `transform_features`: serialized tf.Examples -> transformed features; TFMA
  calls it to compute the label the same way training did.
A family adds its `edge` signature (numeric inputs after Transform, for TFLite).
"""

import os
from typing import Dict

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from contract.serving import (CLASSES, EXAMPLES_INPUT, PREDICTED_CLASS, SCORES, SERVING_SIGNATURE,
                              TRANSFORM_SIGNATURE)
from models.trainer import raw_features


def task_outputs(spec, predicted) -> Dict[str, tf.Tensor]:
    """The model's output -> serving_default's outputs for the task (contract/serving.py).

    Classification answers a score per class (a binary model's one probability becomes
    two), the class names aligned with them, and the top class; the task's primary
    output is always there too.
    """
    task = spec.task_type
    if not task.is_classification:
        return {task.primary_output: predicted}
    scores = predicted if task.per_class_scores else tf.concat([1.0 - predicted, predicted], axis=1)
    names = tf.constant(spec.class_names)
    outputs = {SCORES: scores, CLASSES: tf.tile(tf.expand_dims(names, 0), [tf.shape(scores)[0], 1]),
               PREDICTED_CLASS: tf.gather(names, tf.argmax(scores, axis=1))}
    outputs.setdefault(task.primary_output, predicted)
    return outputs


def signatures(model, tf_transform_output, spec) -> Dict:
    """`serving_default` and `transform_features` for `model`, a Keras model over Transform's outputs."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    model_inputs = set(model.input_names)
    serving_spec = raw_features.parsing_spec(tf_transform_output, spec)
    labelled_spec = raw_features.parsing_spec(tf_transform_output, spec, with_label=True)

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=EXAMPLES_INPUT)])
    def serve_tf_examples(serialized):
        transformed = model.tft_layer(tf.io.parse_example(serialized, serving_spec))
        return task_outputs(spec, model({k: v for k, v in transformed.items() if k in model_inputs}))

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=EXAMPLES_INPUT)])
    def transform_features(serialized):
        return model.tft_layer(tf.io.parse_example(serialized, labelled_spec))

    return {SERVING_SIGNATURE: serve_tf_examples, TRANSFORM_SIGNATURE: transform_features}


def save_for_tf_serving(model, export_dir: str, functions: Dict, spec) -> None:
    """Saves the model with its signatures plus the task's `classify` or `regress` one.

    That one calls `serving_default`, so it runs the same Transform graph and the same
    weights. TF2 marks every exported signature as a Predict signature; TF Serving's
    Classify/Regress with --enable_signature_method_name_check (and the local server
    with the same setting) only accept one whose SignatureDef says
    `tensorflow/serving/classify` (or `regress`), so that field is set in
    saved_model.pb after saving.
    """
    predict = functions[SERVING_SIGNATURE]
    api = spec.task_type.examples_api

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=api.inputs)])
    def examples_api(serialized):
        outputs = predict(serialized)
        return {name: outputs[source] for name, source in api.outputs}

    # Without Keras' per-layer call traces: every client (TF Serving, TFMA, the edge export, the local
    # server) calls the signatures, and `tf.keras.models.load_model` rebuilds the layers from their
    # configs. Tracing each layer's call for the SavedModel took 2.3-3.7 s of the export, 1.3-1.5 s without.
    model.save(export_dir, save_format="tf", signatures={**functions, api.signature: examples_api}, save_traces=False)
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[api.signature].method_name = api.method
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(saved_model.SerializeToString())
