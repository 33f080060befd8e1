"""The `dnn` family: a wide-and-deep Keras (tf_keras) network over the one-hot and z-scored feature vector.

Every feature becomes part of one dense float vector (`models/features.py`); the
network's `core` (hidden layers plus a wide linear path) maps it to the task's
head. A text block enters the deep path as a pooled embedding: a bias-free dense
layer on its TF-IDF (or 0/1) block is the weighted mean of one learnt vector per
n-gram, the pooled embedding of the text, in one fully connected op TFLite
quantizes to int8; the wide path reads the block itself (a linear bag of words). The
head is a sigmoid (binary cross-entropy), a softmax over the classes (sparse
categorical cross-entropy) or a linear output rescaled to the label's mean and
standard deviation (mean squared error), as `contract.tasks` says. The core on the
dense vector is what the `edge` signature exports for TFLite.

The Tuner searches its hyper-parameters with KerasTuner's oracles. KerasTuner 1.4
is written for Keras 3 and rejects tf_keras models in its `Tuner` class
(FatalTypeError), so the trials are run by a `BaseTuner` that builds, trains and
scores the tf_keras model itself; the best values reach the Trainer through the
Tuner's `best_hyperparameters` artifact. The objective is the task's validation
metric (`Task.tuner_objective`).
"""

import math
from typing import Dict, Optional

import keras_tuner as kt
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from absl import logging
# Not `tfx.v1`: that namespace also imports the Google Cloud AI Platform client (~2 s per process).
from tfx.components.tuner.component import TunerFnResult

from contract import tasks
from contract.config import FeaturesConfig, TrainingConfig, TunerConfig, section_from_dict
from models import features
from models.trainer import data, edge_signature, export, runtime
from models.trainer.families import ModelFamily
from training import strategies

# Hyper-parameters used when the Tuner is off; the Tuner searches around them.
# `embedding_dim`: the width of each text block's pooled embedding (read only when the spec has text).
DEFAULT_HPARAMS = {"hidden_units": 64, "num_layers": 2, "learning_rate": 0.003, "dropout": 0.1, "l2": 0.01,
                   "embedding_dim": 16}


def hparams_with_defaults(values: Dict) -> Dict:
    merged = dict(DEFAULT_HPARAMS)
    merged.update({k: v for k, v in (values or {}).items() if k in DEFAULT_HPARAMS})
    return merged


def _head(spec: FeaturesConfig, logit, label_stats: Optional[Dict[str, float]]):
    """The task's output layer, named after its serving output."""
    task = spec.task_type
    if task.head_activation == "rescale":
        # The network learns a z-score; the model answers in the label's unit.
        stats = label_stats or {"mean": 0.0, "std": 1.0}
        return keras.layers.Rescaling(scale=float(stats["std"]), offset=float(stats["mean"]),
                                      name=task.primary_output)(logit)
    return keras.layers.Activation(task.head_activation, name=task.primary_output)(logit)


def build_core(input_size: int, hparams: Dict, spec: FeaturesConfig,
               label_stats: Optional[Dict[str, float]] = None) -> keras.Model:
    """The dense network over the feature vector; the part the edge export reuses."""
    vector = keras.Input(shape=(input_size,), name="feature_vector", dtype=tf.float32)
    # Most one-hot columns are rare values; without L2 the model memorises them.
    regularizer = keras.regularizers.l2(float(hparams["l2"])) if hparams["l2"] else None
    x = deep_inputs(vector, spec, int(hparams["embedding_dim"]), regularizer)
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


def deep_inputs(vector, spec: FeaturesConfig, embedding_dim: int, regularizer):
    """What the hidden layers read: the vector with each text block replaced by its pooled embedding."""
    texts = [(block, offset) for block, offset in zip(features.bag_blocks(spec), features.bag_offsets(spec))
             if block.kind == "text"]
    if not texts:
        return vector
    parts, start = [], 0
    for block, offset in texts:
        if offset > start:
            parts.append(vector[:, start:offset])
        parts.append(keras.layers.Dense(embedding_dim, use_bias=False, kernel_regularizer=regularizer,
                                        name=f"{block.feature}_embedding")(vector[:, offset:offset + block.size]))
        start = offset + block.size
    if start < vector.shape[-1]:
        parts.append(vector[:, start:])
    return keras.layers.Concatenate(name="deep_inputs")(parts) if len(parts) > 1 else parts[0]


def feature_inputs(spec: FeaturesConfig) -> Dict[str, keras.Input]:
    """A Keras input per Transform output the model reads: numeric z-scores (float), one-hot ids (int), and each
    bag block's ids and weights (sparse: a row holds any number)."""
    inputs = {features.transformed_name(key): keras.Input(shape=(1,), name=features.transformed_name(key),
                                                          dtype=tf.float32) for key in spec.numeric}
    for block in features.one_hot_blocks(spec):
        inputs[block.input] = keras.Input(shape=(1,), name=block.input, dtype=tf.int64)
    for block in features.bag_blocks(spec):
        inputs[block.ids] = keras.Input(shape=(None,), name=block.ids, dtype=tf.int64, sparse=True)
        if block.weights:
            inputs[block.weights] = keras.Input(shape=(None,), name=block.weights, dtype=tf.float32, sparse=True)
    return inputs


def feature_vector(spec: FeaturesConfig, inputs: Dict[str, keras.Input]):
    """The dense float vector every core reads: numeric z-scores, each one-hot block, each bag block (the sum of
    its weights per id, or 1 per id present), in the order the `edge` signature and the edge runtime pack them."""
    parts = [inputs[features.transformed_name(key)] for key in spec.numeric]
    parts += [keras.layers.CategoryEncoding(num_tokens=block.size, output_mode="one_hot",
                                            name=f"{block.input}_one_hot")(inputs[block.input])
              for block in features.one_hot_blocks(spec)]
    for block in features.bag_blocks(spec):
        encode = keras.layers.CategoryEncoding(num_tokens=block.size, output_mode="count" if block.weights
                                               else "multi_hot", name=f"{block.ids}_bag")
        parts.append(encode(inputs[block.ids], count_weights=inputs[block.weights]) if block.weights
                     else encode(inputs[block.ids]))
    return keras.layers.Concatenate(name="feature_vector")(parts) if len(parts) > 1 else parts[0]


def loss_and_metrics(spec: FeaturesConfig):
    """The task's Keras loss and compiled metrics (`Task.keras_loss`, `Task.keras_metrics`)."""
    task = spec.task_type
    metrics = [keras.metrics.get({"class_name": class_name, "config": {"name": name}})
               for class_name, name in task.keras_metrics]
    return keras.losses.get(task.keras_loss), metrics


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
    `label_stats` (regression): the training label's mean and std, see `data.label_statistics`.
    `decay_steps`: the steps the learning rate decays over, see `optimizer`.
    """
    hparams = hparams_with_defaults(hparams)
    inputs = feature_inputs(spec)
    output = build_core(features.dense_input_size(spec), hparams, spec, label_stats)(feature_vector(spec, inputs))
    model = keras.Model(inputs, output, name="model")
    loss, metrics = loss_and_metrics(spec)
    model.compile(optimizer=optimizer(hparams, decay_steps), loss=loss, metrics=metrics,
                  steps_per_execution=steps_per_execution)
    return model


def serving_signatures(model: keras.Model, tf_transform_output, spec) -> Dict:
    """The shared signatures plus `edge`: the core behind numeric-only inputs (`edge_signature.py`)."""
    return {**export.signatures(model, tf_transform_output, spec),
            **edge_signature.edge_signatures(model, tf_transform_output, spec, spec.task_type.primary_output)}


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
    runtime.set_seed(settings.seed)
    train = strategies.distributed_dataset(strategy, lambda: data.input_fn(
        fn_args.train_files, fn_args.data_accessor, tf_transform_output, spec, global_batch, seed=settings.seed))
    evaluation = data.input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, spec,
                               global_batch, shuffle=False)
    used = hparams_with_defaults(hparams)
    logging.info("Training with hyper-parameters %s", used)
    label_stats = data.label_statistics(fn_args.train_files, fn_args.data_accessor, tf_transform_output, spec)
    runtime.write_hyperparameters(fn_args.model_run_dir, used)
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
    export.save_for_tf_serving(exported, fn_args.serving_model_dir,
                               serving_signatures(exported, tf_transform_output, spec), spec)
    trained_steps = schedule.total_steps - progress.resumed_from_step
    return {
        "strategy": settings.strategy, "replicas": replicas, "per_replica_batch": per_replica_batch,
        "global_batch": global_batch, "train_steps": schedule.total_steps,
        "checkpoint_every_steps": schedule.steps_per_epoch if schedule.epochs > 1 else 0,
        "resumed_from_step": progress.resumed_from_step, "steps_per_execution": steps_per_execution,
        "train_seconds": round(progress.train_seconds, 3),
        "examples_per_second": round(trained_steps * global_batch / progress.train_seconds, 1)
        if progress.train_seconds else None,
        "task": spec.task, "model": FAMILY.name, "label_statistics": label_stats,
    }


def search_space(spec: Optional[FeaturesConfig] = None) -> kt.HyperParameters:
    """The hyper-parameters the Tuner explores; names match `DEFAULT_HPARAMS` (`embedding_dim` only with text)."""
    hp = kt.HyperParameters()
    if spec is not None and spec.text:
        hp.Choice("embedding_dim", [8, 16, 32], default=DEFAULT_HPARAMS["embedding_dim"])
    hp.Choice("hidden_units", [32, 64, 128], default=DEFAULT_HPARAMS["hidden_units"])
    hp.Int("num_layers", 1, 3, default=DEFAULT_HPARAMS["num_layers"])
    hp.Choice("learning_rate", [0.001, 0.003, 0.01], default=DEFAULT_HPARAMS["learning_rate"])
    hp.Choice("dropout", [0.0, 0.1, 0.2], default=DEFAULT_HPARAMS["dropout"])
    hp.Choice("l2", [0.001, 0.003, 0.01], default=DEFAULT_HPARAMS["l2"])
    return hp


def objective(task: str) -> kt.Objective:
    metric, direction = tasks.task(task).tuner_objective
    return kt.Objective(f"val_{metric}", direction=direction)


def make_oracle(algorithm: str, max_trials: int, task: str = "binary", seed: int = 0,
                spec: Optional[FeaturesConfig] = None) -> kt.Oracle:
    hp, goal = search_space(spec), objective(task)
    if algorithm == "random":
        return kt.oracles.RandomSearchOracle(goal, max_trials=max_trials, hyperparameters=hp, seed=seed or None)
    if algorithm == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(
            goal, max_trials=max_trials, hyperparameters=hp, seed=seed or None)
    if algorithm == "hyperband":
        # Hyperband counts budget in epochs; each of our epochs is `steps` steps.
        return kt.oracles.HyperbandOracle(goal, max_epochs=max(2, max_trials), factor=3,
                                          hyperparameters=hp, seed=seed or None)
    raise ValueError(f"tuner algorithm {algorithm!r} is not one of random, hyperband, bayesian")


class TfKerasTuner(kt.engine.base_tuner.BaseTuner):
    """Runs each trial as a tf_keras fit and reports its validation metrics to the oracle."""

    def __init__(self, oracle, spec, label_stats=None, seed: int = 0, **kwargs):
        super().__init__(oracle=oracle, hypermodel=None, **kwargs)
        self.spec = spec
        self.label_stats = label_stats
        self.seed = seed

    def run_trial(self, trial, train, validation, steps, validation_steps):
        # Each trial starts from the same seed: its score depends on its hyper-parameters, not on its turn.
        runtime.set_seed(self.seed)
        # Hyperband assigns epochs per trial; the other oracles train one epoch.
        epochs = int(trial.hyperparameters.values.get("tuner/epochs", 1))
        initial_epoch = int(trial.hyperparameters.values.get("tuner/initial_epoch", 0))
        # Trials decay the learning rate over their own budget as the Trainer does over its own,
        # so the rate a trial picks is the rate that trains well under that schedule.
        keras_model = build_keras_model(self.spec, trial.hyperparameters.values, label_stats=self.label_stats,
                                        decay_steps=steps * (epochs - initial_epoch))
        history = keras_model.fit(train, steps_per_epoch=steps, epochs=epochs, initial_epoch=initial_epoch,
                                  validation_data=validation, validation_steps=validation_steps, verbose=0)
        metrics = {name: values[-1] for name, values in history.history.items()}
        logging.info("Trial %s %s -> %s", trial.trial_id, trial.hyperparameters.values, metrics)
        return metrics

    def save_model(self, trial_id, model, step=0):
        """Trial models are not kept: the Trainer retrains the best configuration."""

    def load_model(self, trial):
        raise NotImplementedError("trial models are not kept; use the best hyper-parameters")


class Dnn(ModelFamily):
    name = "dnn"
    train_function = "models.trainer.families.dnn:train_and_export"

    def tuner_fn(self, fn_args) -> TunerFnResult:
        spec = features.spec_from_custom_config(fn_args.custom_config)
        custom_config = fn_args.custom_config or {}
        settings = section_from_dict(TunerConfig, custom_config.get("tuner"))
        training = section_from_dict(TrainingConfig, custom_config.get("training"))
        batch_size, seed = training.batch_size, training.seed
        # Before the datasets: a shuffle's order depends on the global seed as well as its own.
        runtime.set_seed(seed)
        tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
        train = data.input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output, spec, batch_size,
                              seed=seed)
        validation = data.input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, spec,
                                   batch_size, shuffle=False)
        oracle = make_oracle(settings.algorithm, settings.max_trials, spec.task, seed=seed, spec=spec)
        label_stats = data.label_statistics(fn_args.train_files, fn_args.data_accessor, tf_transform_output, spec)
        tuner = TfKerasTuner(oracle, spec, label_stats, seed=seed, directory=fn_args.working_dir,
                             project_name="search", overwrite=True)
        return TunerFnResult(
            tuner=tuner,
            fit_kwargs={"train": train, "validation": validation,
                        "steps": fn_args.train_steps, "validation_steps": fn_args.eval_steps},
        )


FAMILY = Dnn()
