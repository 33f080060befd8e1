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

Beside the signatures, the SavedModel's assets hold the family's record
(`model_family.json`: the family, its hyper-parameters, what `auto` weighed, the
edge student), read by lineage, reports and the edge export, and the Keras core
behind `edge` (`edge_core.keras`), which the edge export retrains with
quantization-aware training when post-training int8 fails its gate.
"""

import json
import os
import tempfile
from typing import Dict, Iterable, Optional

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


FAMILY_ASSET = "model_family.json"
EDGE_CORE_ASSET = "edge_core.keras"


def signatures(model, tf_transform_output, spec, input_names: Optional[Iterable[str]] = None) -> Dict:
    """`serving_default` and `transform_features` for `model`, a Keras model over Transform's outputs.

    `input_names`: the Transform outputs the model reads (default: a functional model's `input_names`).
    """
    model.tft_layer = tf_transform_output.transform_features_layer()
    model_inputs = set(input_names if input_names is not None else model.input_names)
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


def family_record(facts: Dict, edge_core=None, **extra) -> Dict:
    """What `model_family.json` says of the model: family, task, hyper-parameters, what `auto` weighed, `extra`;
    and the edge core."""
    record = {"family": facts["model"], "task": facts["task"], "hyperparameters": facts.get("hyperparameters", {}),
              **({"auto": facts["auto"]} if facts.get("auto") else {}), **extra}
    if edge_core is not None:
        record["edge_core"] = edge_core
    return record


def read_family_record(saved_model_dir: str) -> Dict:
    """`model_family.json` of an exported model ({} for a model exported without one)."""
    path = os.path.join(saved_model_dir, "assets", FAMILY_ASSET)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _write_record(export_dir: str, record: Dict) -> None:
    """The family record and the Keras edge core (a `record["edge_core"]` model) into the SavedModel's assets."""
    assets = os.path.join(export_dir, "assets")
    tf.io.gfile.makedirs(assets)
    record = dict(record)
    core = record.pop("edge_core", None)
    if core is not None:
        with tempfile.TemporaryDirectory(prefix="edge_core_") as local:
            # Keras writes a local file; the export directory may be remote.
            path = os.path.join(local, EDGE_CORE_ASSET)
            core.save(path)
            tf.io.gfile.copy(path, os.path.join(assets, EDGE_CORE_ASSET), overwrite=True)
        record["edge_core"] = EDGE_CORE_ASSET
    with tf.io.gfile.GFile(os.path.join(assets, FAMILY_ASSET), "w") as f:
        f.write(json.dumps(record, indent=1, sort_keys=True, default=str))


def save_for_tf_serving(model, export_dir: str, functions: Dict, spec, record: Optional[Dict] = None,
                        save_traces: bool = False) -> None:
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
    # `save_traces`: a subclassed model without a config (a decision forest) needs its traces.
    model.save(export_dir, save_format="tf", signatures={**functions, api.signature: examples_api},
               save_traces=save_traces)
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[api.signature].method_name = api.method
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(saved_model.SerializeToString())
    if record:
        _write_record(export_dir, record)
