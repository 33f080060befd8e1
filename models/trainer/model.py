"""The Keras (tf_keras) model per task, its training loop and its exported signatures.

`run_fn` is the Trainer's entry point. The exported SavedModel carries:
- `serving_default`: serialized raw tf.Examples -> the task's outputs
  (contract/serving.py: probabilities, scores + classes, or predictions); the
  Transform graph runs inside it, so clients send raw features.
- `classify` (classification) or `regress` (regression): the same function behind
  TF Serving's Classify / Regress APIs (method `tensorflow/serving/classify|regress`,
  input `inputs`; outputs `classes` + `scores`, or `outputs`).
- `transform_features`: serialized tf.Examples -> transformed features; TFMA
  calls it to compute the label the same way training did.
- `edge`: numeric inputs after Transform, for TFLite (`edge_signature.py`).
Heads: binary a sigmoid (binary cross-entropy), multiclass a softmax over the
classes (sparse categorical cross-entropy), regression a linear output rescaled
to the label's mean and standard deviation (mean squared error).
"""

import json
import math
import os
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from absl import logging
from tensorflow.core.protobuf import saved_model_pb2
from tfx_bsl.public import tfxio

# The installed packages, also when TFX loads this file from its module wheel.
from contract.config import FeaturesConfig
from contract.serving import (CLASSES, CLASSIFY_INPUTS, CLASSIFY_METHOD, CLASSIFY_SIGNATURE, EXAMPLES_INPUT,
                              PREDICTED_CLASS, PREDICTION_KEY, PRIMARY_OUTPUT, REGRESS_INPUTS, REGRESS_METHOD,
                              REGRESS_OUTPUTS, REGRESS_SIGNATURE, SCORES, SERVING_SIGNATURE, TRANSFORM_SIGNATURE,
                              VALUE_KEY)
from models import features
from models.trainer import edge_signature, raw_features
from training import strategies


def skip_autograph_for_tf_keras() -> None:
    """Tells autograph not to rewrite tf_keras's own code, as it never rewrote Keras 2 under its old name.

    Autograph converts every Python function a `tf.function` calls unless its
    module is on a do-not-convert list. TF 2.16's list has `keras` (Keras 2's
    package name up to TF 2.15) but not `tf_keras`, where Keras 2 lives now, so
    the first `fit` of each process AST-converted some 1,700 Keras internals:
    measured 30.5 s for the first training step of this model in a fresh
    process, 2.6 s with this rule (README, Performance). Only Keras's own modules are
    skipped: the function given to `tf.function` (Keras's `train_function`, our
    signatures) is still converted, so its `tf.range` loops stay graph loops.
    There is no public API for the list; the rule is the one TF applies to `keras`.
    """
    from tensorflow.python.autograph.core import config as autograph_config

    if not any(rule.matches("tf_keras") for rule in autograph_config.CONVERSION_RULES
               if isinstance(rule, autograph_config.DoNotConvert)):
        autograph_config.CONVERSION_RULES = ((autograph_config.DoNotConvert("tf_keras"),)
                                             + tuple(autograph_config.CONVERSION_RULES))


skip_autograph_for_tf_keras()

HPARAMS_FILE = "hyperparameters.json"
# How a separate training process (mirrored on CPU, local parameter-server cluster) finds train_and_export.
TRAIN_FUNCTION = "models.trainer.model:train_and_export"

# Hyper-parameters used when the Tuner is off; the Tuner searches around them.
DEFAULT_HPARAMS = {"hidden_units": 64, "num_layers": 2, "learning_rate": 0.003, "dropout": 0.1, "l2": 0.01}
# Transformed training examples that give a regression label its mean and standard deviation.
LABEL_STATISTICS_EXAMPLES = 100_000
# Keras metric the Tuner optimises per task, with its direction (names as in `compile`).
OBJECTIVES = {"binary": ("auc", "max"), "multiclass": ("accuracy", "max"), "regression": ("rmse", "min")}


def hparams_with_defaults(values: Dict) -> Dict:
    merged = dict(DEFAULT_HPARAMS)
    merged.update({k: v for k, v in (values or {}).items() if k in DEFAULT_HPARAMS})
    return merged


def _head(spec: FeaturesConfig, logit, label_stats: Optional[Dict[str, float]]):
    """The task's output layer, named after its serving output."""
    if spec.task == "binary":
        return keras.layers.Activation("sigmoid", name=PREDICTION_KEY)(logit)
    if spec.task == "multiclass":
        return keras.layers.Activation("softmax", name=SCORES)(logit)
    # The network learns a z-score; the model answers in the label's unit.
    stats = label_stats or {"mean": 0.0, "std": 1.0}
    return keras.layers.Rescaling(scale=float(stats["std"]), offset=float(stats["mean"]), name=VALUE_KEY)(logit)


def build_core(input_size: int, hparams: Dict, spec: FeaturesConfig,
               label_stats: Optional[Dict[str, float]] = None) -> keras.Model:
    """The dense network over the feature vector; the part the edge export reuses."""
    vector = keras.Input(shape=(input_size,), name="feature_vector", dtype=tf.float32)
    # Most one-hot columns are rare values; without L2 the model memorises them.
    regularizer = keras.regularizers.l2(float(hparams["l2"])) if hparams["l2"] else None
    x = vector
    for i in range(int(hparams["num_layers"])):
        x = keras.layers.Dense(int(hparams["hidden_units"]), activation="relu",
                               kernel_regularizer=regularizer, name=f"hidden_{i}")(x)
        if hparams["dropout"]:
            x = keras.layers.Dropout(float(hparams["dropout"]), name=f"dropout_{i}")(x)
    # A wide (linear) path beside the deep one keeps one-hot features that
    # matter on their own (payment type) from being washed out.
    outputs = features.output_size(spec)
    wide = keras.layers.Dense(outputs, kernel_regularizer=regularizer, name="wide")(vector)
    deep = keras.layers.Dense(outputs, name="deep")(x)
    logit = keras.layers.Add(name="logit")([wide, deep])
    return keras.Model(vector, _head(spec, logit, label_stats), name="core")


def _loss_and_metrics(spec: FeaturesConfig):
    if spec.task == "binary":
        return keras.losses.BinaryCrossentropy(), [keras.metrics.AUC(name="auc"),
                                                   keras.metrics.BinaryAccuracy(name="binary_accuracy")]
    if spec.task == "multiclass":
        return keras.losses.SparseCategoricalCrossentropy(), [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    return keras.losses.MeanSquaredError(), [keras.metrics.RootMeanSquaredError(name="rmse")]


def optimizer(hparams: Dict, decay_steps: int = 0) -> keras.optimizers.Optimizer:
    """Adam at the `learning_rate` hyper-parameter, decayed along a cosine to 0 over `decay_steps` (0: constant).

    Large early steps find the basin, small late ones settle in it: on the
    bundled data the AUC after the same steps is higher and varies less
    between seeds than at a constant rate, at no extra cost per step.
    """
    rate = float(hparams["learning_rate"])
    if decay_steps > 0:
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=int(decay_steps))
    return keras.optimizers.Adam(rate)


def build_keras_model(spec: FeaturesConfig, hparams: Dict, steps_per_execution: int = 1,
                      label_stats: Optional[Dict[str, float]] = None, decay_steps: int = 0) -> keras.Model:
    """Transformed features -> the task's output: one-hot and concatenate, then the core.

    `steps_per_execution` > 1 runs several steps per call: a parameter-server
    worker then makes one round trip to the coordinator for several steps.
    `label_stats` (regression): the training label's mean and std, see `label_statistics`.
    `decay_steps`: the steps the learning rate decays over, see `optimizer`.
    """
    hparams = hparams_with_defaults(hparams)
    inputs, parts = {}, []
    for key in spec.numeric:
        name = features.transformed_name(key)
        inputs[name] = keras.Input(shape=(1,), name=name, dtype=tf.float32)
        parts.append(inputs[name])
    for block in features.one_hot_blocks(spec):
        inputs[block.input] = keras.Input(shape=(1,), name=block.input, dtype=tf.int64)
        parts.append(keras.layers.CategoryEncoding(
            num_tokens=block.size, output_mode="one_hot", name=f"{block.input}_one_hot")(inputs[block.input]))
    vector = keras.layers.Concatenate(name="feature_vector")(parts) if len(parts) > 1 else parts[0]
    output = build_core(features.dense_input_size(spec), hparams, spec, label_stats)(vector)
    model = keras.Model(inputs, output, name="model")
    loss, metrics = _loss_and_metrics(spec)
    model.compile(optimizer=optimizer(hparams, decay_steps), loss=loss, metrics=metrics,
                  steps_per_execution=steps_per_execution)
    return model


def set_seed(seed: int) -> None:
    """`training.seed` for Python, NumPy and TensorFlow; 0 leaves them unseeded (each run draws its own)."""
    if seed:
        keras.utils.set_random_seed(seed)


def input_fn(file_pattern: List[str], data_accessor, tf_transform_output, spec, batch_size: int,
             shuffle: bool = True, repeat: bool = True, seed: Optional[int] = None) -> tf.data.Dataset:
    """Batches of (transformed features, label) from Transform's output, repeated forever unless told not to.

    `seed` fixes the shuffle order (`training.seed`), so two runs see the examples in the same order.
    """
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=spec.label_key, shuffle=shuffle,
                                       shuffle_seed=seed or None, num_epochs=None if repeat else 1),
        tf_transform_output.transformed_metadata.schema,
    )
    return dataset.repeat() if repeat else dataset


def label_statistics(file_pattern: List[str], data_accessor, tf_transform_output, spec) -> Optional[Dict[str, float]]:
    """Mean and standard deviation of a regression label over (up to 100k of) the training examples; else None.

    The regression head predicts a z-score and rescales it with these, so the
    network trains on unit-scale targets whatever the label's unit.
    """
    if spec.task != "regression":
        return None
    total, count, squares = 0.0, 0, 0.0
    for _, labels in input_fn(file_pattern, data_accessor, tf_transform_output, spec, 1024, shuffle=False,
                              repeat=False):
        values = labels.numpy().astype(np.float64).reshape(-1)
        total, squares, count = total + values.sum(), squares + (values ** 2).sum(), count + len(values)
        if count >= LABEL_STATISTICS_EXAMPLES:
            break
    mean = total / max(count, 1)
    std = math.sqrt(max(squares / max(count, 1) - mean ** 2, 0.0))
    return {"mean": mean, "std": std or 1.0}


def task_outputs(spec: FeaturesConfig, predicted) -> Dict[str, tf.Tensor]:
    """The model's output -> serving_default's outputs for the task (contract/serving.py)."""
    if spec.task == "regression":
        return {VALUE_KEY: predicted}
    scores = tf.concat([1.0 - predicted, predicted], axis=1) if spec.task == "binary" else predicted
    names = tf.constant(spec.class_names)
    outputs = {SCORES: scores, CLASSES: tf.tile(tf.expand_dims(names, 0), [tf.shape(scores)[0], 1]),
               PREDICTED_CLASS: tf.gather(names, tf.argmax(scores, axis=1))}
    if spec.task == "binary":
        outputs[PREDICTION_KEY] = predicted
    return outputs


def serving_signatures(model: keras.Model, tf_transform_output, spec) -> Dict:
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

    return {SERVING_SIGNATURE: serve_tf_examples, TRANSFORM_SIGNATURE: transform_features,
            **edge_signature.edge_signatures(model, tf_transform_output, spec, PRIMARY_OUTPUT[spec.task])}


def save_for_tf_serving(model: keras.Model, export_dir: str, signatures: Dict, spec: FeaturesConfig) -> None:
    """Saves the model with TF Serving's `classify` (classification) or `regress` (regression) signature.

    Both call `serving_default`, so they run the same Transform graph and the
    same weights. TF2 marks every exported signature as a Predict signature; TF
    Serving's Classify/Regress (with --enable_signature_method_name_check) and the
    local server only accept one whose SignatureDef says `tensorflow/serving/classify`
    (or `regress`), so that field is set in saved_model.pb after saving.
    """
    predict = signatures[SERVING_SIGNATURE]
    if spec.is_classification:
        @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=CLASSIFY_INPUTS)])
        def classify(serialized):
            outputs = predict(serialized)
            return {CLASSES: outputs[CLASSES], SCORES: outputs[SCORES]}

        name, method, function = CLASSIFY_SIGNATURE, CLASSIFY_METHOD, classify
    else:
        @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=REGRESS_INPUTS)])
        def regress(serialized):
            return {REGRESS_OUTPUTS: predict(serialized)[VALUE_KEY]}

        name, method, function = REGRESS_SIGNATURE, REGRESS_METHOD, regress
    # Without Keras' per-layer call traces: every client (TF Serving, TFMA, the edge export, the local
    # server) calls the signatures, and `tf.keras.models.load_model` rebuilds the layers from their
    # configs. Tracing each layer's call for the SavedModel took 2.3-3.7 s of the export, 1.3-1.5 s without.
    model.save(export_dir, save_format="tf", signatures={**signatures, name: function}, save_traces=False)
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[name].method_name = method
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(saved_model.SerializeToString())


def train_and_export(fn_args, hparams: Dict, strategy=None) -> Dict:
    """Builds, trains (under `strategy`) and exports the model; the one code path of every strategy.

    Returns the facts `training.json` records: strategy, replicas, batch sizes,
    steps, the step training resumed from, and training throughput.
    """
    strategy = strategy or tf.distribute.get_strategy()
    spec = features.spec_from_custom_config(fn_args.custom_config)
    settings = strategies.training_settings(fn_args.custom_config)
    per_replica_batch = settings.batch_size
    replicas = strategy.num_replicas_in_sync
    # Synchronous replicas split one global batch; parameter-server workers each take their own.
    global_batch = per_replica_batch * replicas
    parameter_server = strategies.is_parameter_server(strategy)
    schedule = strategies.epoch_schedule(fn_args.train_steps, settings.checkpoint_every_steps)
    logging.info("Training with %s strategy (%s): %d replica(s), global batch %d = %d per replica x %d; "
                 "%d steps in %d round(s)%s", settings.strategy, type(strategy).__name__, replicas, global_batch,
                 per_replica_batch, replicas, schedule.total_steps, schedule.epochs,
                 ", checkpoint after each" if settings.checkpoint_every_steps > 0 else "")
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    # Weight init, dropout and the shuffle order (it depends on the global seed too) follow `training.seed`.
    set_seed(settings.seed)
    train = strategies.distributed_dataset(strategy, lambda: input_fn(
        fn_args.train_files, fn_args.data_accessor, tf_transform_output, spec, global_batch, seed=settings.seed))
    evaluation = input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, spec,
                          global_batch, shuffle=False)
    used = hparams_with_defaults(hparams)
    logging.info("Training with hyper-parameters %s", used)
    label_stats = label_statistics(fn_args.train_files, fn_args.data_accessor, tf_transform_output, spec)
    # Kept with the run so lineage can show exactly what trained this model.
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HPARAMS_FILE), "w") as f:
        f.write(json.dumps(used, sort_keys=True))
    steps_per_execution = math.gcd(settings.steps_per_execution, schedule.steps_per_epoch) if parameter_server else 1
    with strategy.scope():
        # The decay spans the whole run; a resumed run restores the step count with the optimizer.
        model = build_keras_model(spec, hparams, steps_per_execution=steps_per_execution, label_stats=label_stats,
                                  decay_steps=schedule.total_steps)
    callbacks, progress = strategies.fault_tolerance_callbacks(fn_args, used, settings)
    model.fit(
        train,
        epochs=schedule.epochs,
        steps_per_epoch=schedule.steps_per_epoch,
        validation_data=evaluation,
        validation_steps=fn_args.eval_steps,
        validation_freq=[schedule.epochs],
        callbacks=callbacks + [keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch")],
        verbose=2,
    )
    if progress.resumed_from_step:
        logging.info("Resumed from the checkpoint at step %d", progress.resumed_from_step)
    # Exported from a strategy-free copy: the SavedModel is the same whichever strategy trained it.
    exported = build_keras_model(spec, hparams, label_stats=label_stats)
    exported.set_weights(model.get_weights())
    save_for_tf_serving(exported, fn_args.serving_model_dir, serving_signatures(exported, tf_transform_output, spec),
                        spec)
    trained_steps = schedule.total_steps - progress.resumed_from_step
    return {
        "strategy": settings.strategy, "replicas": replicas, "per_replica_batch": per_replica_batch,
        "global_batch": global_batch, "train_steps": schedule.total_steps,
        "checkpoint_every_steps": schedule.steps_per_epoch if schedule.epochs > 1 else 0,
        "resumed_from_step": progress.resumed_from_step, "steps_per_execution": steps_per_execution,
        "train_seconds": round(progress.train_seconds, 3),
        "examples_per_second": round(trained_steps * global_batch / progress.train_seconds, 1)
        if progress.train_seconds else None,
        "task": spec.task, "label_statistics": label_stats,
    }


def run_fn(fn_args) -> None:
    """TFX Trainer entry point."""
    # The Tuner's best values arrive as KerasTuner's HyperParameters config.
    hparams = (fn_args.hyperparameters or {}).get("values", {})
    strategies.run(fn_args, hparams, train_and_export, TRAIN_FUNCTION)
