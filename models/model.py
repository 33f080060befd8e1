"""The Keras (tf_keras) model, its training loop and its exported signatures.

`run_fn` is the Trainer's entry point. The exported SavedModel carries:
- `serving_default`: serialized raw tf.Examples -> {"probabilities"}; the
  Transform graph runs inside it, so clients send raw features.
- `classify`: the same function behind TF Serving's Classify API (method
  `tensorflow/serving/classify`: input `inputs`, outputs `classes` + `scores`).
- `transform_features`: serialized tf.Examples -> transformed features; TFMA
  calls it to compute the label the same way training did.
- `edge`: numeric inputs after Transform, for TFLite (`edge_signature.py`).
"""

import json
import math
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from typing import Dict, List  # noqa: E402

import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import logging  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

try:
    from models import edge_signature, features, strategies
except ImportError:  # Loaded from TFX's module wheel, where sibling files are top-level.
    import edge_signature  # type: ignore[no-redef]
    import features  # type: ignore[no-redef]
    import strategies  # type: ignore[no-redef]

PREDICTION_KEY = "probabilities"
CLASSIFY_SIGNATURE = "classify"
# Class labels of the binary task in the classify signature, as tf.estimator's classifiers exported them.
CLASS_LABELS = ("0", "1")
HPARAMS_FILE = "hyperparameters.json"

# Hyper-parameters used when the Tuner is off; the Tuner searches around them.
DEFAULT_HPARAMS = {"hidden_units": 64, "num_layers": 2, "learning_rate": 0.003, "dropout": 0.1, "l2": 0.01}


def hparams_with_defaults(values: Dict) -> Dict:
    merged = dict(DEFAULT_HPARAMS)
    merged.update({k: v for k, v in (values or {}).items() if k in DEFAULT_HPARAMS})
    return merged


def build_core(input_size: int, hparams: Dict) -> keras.Model:
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
    wide = keras.layers.Dense(1, kernel_regularizer=regularizer, name="wide")(vector)
    deep = keras.layers.Dense(1, name="deep")(x)
    logit = keras.layers.Add(name="logit")([wide, deep])
    probability = keras.layers.Activation("sigmoid", name=PREDICTION_KEY)(logit)
    return keras.Model(vector, probability, name="core")


def build_keras_model(spec: features.FeatureSpec, hparams: Dict, steps_per_execution: int = 1) -> keras.Model:
    """Transformed features -> probability: one-hot and concatenate, then the core.

    `steps_per_execution` > 1 runs several steps per call: a parameter-server
    worker then makes one round trip to the coordinator for several steps.
    """
    hparams = hparams_with_defaults(hparams)
    inputs, parts = {}, []
    for key in spec.numeric:
        name = features.transformed_name(key)
        inputs[name] = keras.Input(shape=(1,), name=name, dtype=tf.float32)
        parts.append(inputs[name])
    for key in spec.bucketized + spec.categorical:
        name = features.transformed_name(key)
        inputs[name] = keras.Input(shape=(1,), name=name, dtype=tf.int64)
        parts.append(keras.layers.CategoryEncoding(
            num_tokens=spec.one_hot_size(key), output_mode="one_hot", name=f"{key}_one_hot")(inputs[name]))
    vector = keras.layers.Concatenate(name="feature_vector")(parts)
    output = build_core(spec.dense_input_size(), hparams)(vector)
    model = keras.Model(inputs, output, name="taxi" if spec == features.TAXI else "model")
    model.compile(
        optimizer=keras.optimizers.Adam(float(hparams["learning_rate"])),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="binary_accuracy")],
        steps_per_execution=steps_per_execution,
    )
    return model


def input_fn(file_pattern: List[str], data_accessor, tf_transform_output, spec, batch_size: int,
             shuffle: bool = True) -> tf.data.Dataset:
    """Batches of (transformed features, label) from Transform's output, repeated forever."""
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=spec.label_key, shuffle=shuffle),
        tf_transform_output.transformed_metadata.schema,
    ).repeat()


def _serving_signatures(model: keras.Model, tf_transform_output, spec) -> Dict:
    model.tft_layer = tf_transform_output.transform_features_layer()
    model_inputs = set(model.input_names)

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name="examples")])
    def serve_tf_examples(serialized):
        raw_spec = tf_transform_output.raw_feature_spec()
        for column in spec.label_only_columns:
            raw_spec.pop(column, None)
        parsed = tf.io.parse_example(serialized, raw_spec)
        transformed = model.tft_layer(parsed)
        return {PREDICTION_KEY: model({k: v for k, v in transformed.items() if k in model_inputs})}

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name="examples")])
    def transform_features(serialized):
        parsed = tf.io.parse_example(serialized, tf_transform_output.raw_feature_spec())
        return model.tft_layer(parsed)

    return {"serving_default": serve_tf_examples, "transform_features": transform_features,
            **edge_signature.edge_signatures(model, tf_transform_output, spec, PREDICTION_KEY)}


def save_for_tf_serving(model: keras.Model, export_dir: str, signatures: Dict) -> None:
    """Saves the model with a `classify` signature beside `signatures`, marked for TF Serving's Classify API.

    `classify` calls `serving_default`, so it runs the same Transform graph and the
    same weights. TF2 marks every exported signature as a Predict signature; TF
    Serving's Classify (with --enable_signature_method_name_check) and the local
    server only accept one whose SignatureDef says `tensorflow/serving/classify`,
    so that field is set in saved_model.pb after saving.
    """
    predict = signatures["serving_default"]

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=tf.saved_model.CLASSIFY_INPUTS)])
    def classify(serialized):
        probability = predict(serialized)[PREDICTION_KEY]
        scores = tf.concat([1.0 - probability, probability], axis=1)
        classes = tf.tile(tf.constant([CLASS_LABELS]), [tf.shape(scores)[0], 1])
        return {tf.saved_model.CLASSIFY_OUTPUT_CLASSES: classes, tf.saved_model.CLASSIFY_OUTPUT_SCORES: scores}

    model.save(export_dir, save_format="tf", signatures={**signatures, CLASSIFY_SIGNATURE: classify})
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[CLASSIFY_SIGNATURE].method_name = tf.saved_model.CLASSIFY_METHOD_NAME
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(saved_model.SerializeToString())


def train_and_export(fn_args, hparams: Dict, strategy=None) -> Dict:
    """Builds, trains (under `strategy`) and exports the model; the one code path of every strategy.

    Returns the facts `training.json` records: strategy, replicas, batch sizes,
    steps, the step training resumed from, and training throughput.
    """
    strategy = strategy or tf.distribute.get_strategy()
    spec = features.spec_from_custom_config(fn_args.custom_config)
    config = fn_args.custom_config or {}
    settings = strategies.StrategySettings.from_custom_config(config)
    per_replica_batch = int(config.get("batch_size", 128))
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
    train = strategies.distributed_dataset(strategy, lambda: input_fn(
        fn_args.train_files, fn_args.data_accessor, tf_transform_output, spec, global_batch))
    evaluation = input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, spec,
                          global_batch, shuffle=False)
    used = hparams_with_defaults(hparams)
    logging.info("Training with hyper-parameters %s", used)
    # Kept with the run so lineage can show exactly what trained this model.
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HPARAMS_FILE), "w") as f:
        f.write(json.dumps(used, sort_keys=True))
    steps_per_execution = math.gcd(settings.steps_per_execution, schedule.steps_per_epoch) if parameter_server else 1
    with strategy.scope():
        model = build_keras_model(spec, hparams, steps_per_execution=steps_per_execution)
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
    exported = build_keras_model(spec, hparams)
    exported.set_weights(model.get_weights())
    save_for_tf_serving(exported, fn_args.serving_model_dir, _serving_signatures(exported, tf_transform_output, spec))
    trained_steps = schedule.total_steps - progress.resumed_from_step
    return {
        "strategy": settings.strategy, "replicas": replicas, "per_replica_batch": per_replica_batch,
        "global_batch": global_batch, "train_steps": schedule.total_steps,
        "checkpoint_every_steps": schedule.steps_per_epoch if schedule.epochs > 1 else 0,
        "resumed_from_step": progress.resumed_from_step, "steps_per_execution": steps_per_execution,
        "train_seconds": round(progress.train_seconds, 3),
        "examples_per_second": round(trained_steps * global_batch / progress.train_seconds, 1)
        if progress.train_seconds else None,
    }


def run_fn(fn_args) -> None:
    """TFX Trainer entry point."""
    # The Tuner's best values arrive as KerasTuner's HyperParameters config.
    hparams = (fn_args.hyperparameters or {}).get("values", {})
    strategies.run(fn_args, hparams, train_and_export)
