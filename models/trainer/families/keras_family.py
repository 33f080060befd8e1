"""What every Keras family shares: the model over Transform's outputs, its training, tuning and export.

A Keras family (`dnn`, `linear`, the `gbdt` family's edge student) supplies only its
`core`: a Keras model named "core" from the dense feature vector to the task's head.
Everything around the core is here, once:

- the inputs: every Transform output the feature spec lists (`models/features.py`:
  numeric z-scores, one-hot blocks), concatenated into one dense float vector, so a
  feature role added there reaches every family;
- the head (`contract.tasks`: sigmoid, softmax, or a linear output rescaled to the
  label's mean and std), loss, metrics and the Tuner's objective;
- training under `training.strategy` with checkpoints (`training/strategies.py`);
- the exported signatures (`export.py`) plus `edge` (the core behind numeric-only
  inputs, `edge_signature.py`), and the core itself as an asset for the edge
  export's quantization-aware retraining.

The Tuner searches a family's hyper-parameters with KerasTuner's oracles. KerasTuner
1.4 is written for Keras 3 and rejects tf_keras models in its `Tuner` class
(FatalTypeError), so the trials are run by a `BaseTuner` that builds, trains and
scores the tf_keras model itself; the best values reach the Trainer through the
Tuner's `best_hyperparameters` artifact.
"""

import math
from typing import Callable, Dict, Optional

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
    """The dense float vector every Keras core reads: numeric z-scores, each one-hot block, each bag block (the sum
    of its weights per id, or 1 per id present), in the order the `edge` signature and the edge runtime pack them."""
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


def head(spec: FeaturesConfig, logit, label_stats: Optional[Dict[str, float]]):
    """The task's output layer, named after its serving output."""
    task = spec.task_type
    if task.head_activation == "rescale":
        # The network learns a z-score; the model answers in the label's unit.
        stats = label_stats or {"mean": 0.0, "std": 1.0}
        return keras.layers.Rescaling(scale=float(stats["std"]), offset=float(stats["mean"]),
                                      name=task.primary_output)(logit)
    return keras.layers.Activation(task.head_activation, name=task.primary_output)(logit)


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


def objective(task: str) -> kt.Objective:
    metric, direction = tasks.task(task).tuner_objective
    return kt.Objective(f"val_{metric}", direction=direction)


def make_oracle(hp: kt.HyperParameters, algorithm: str, max_trials: int, task: str = "binary",
                seed: int = 0) -> kt.Oracle:
    goal = objective(task)
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
    """Runs each trial as a tf_keras fit of `build(values, decay_steps)` and reports its validation metrics."""

    def __init__(self, oracle, build: Callable, seed: int = 0, **kwargs):
        super().__init__(oracle=oracle, hypermodel=None, **kwargs)
        self.build = build
        self.seed = seed

    def run_trial(self, trial, train, validation, steps, validation_steps):
        # Each trial starts from the same seed: its score depends on its hyper-parameters, not on its turn.
        runtime.set_seed(self.seed)
        # Hyperband assigns epochs per trial; the other oracles train one epoch.
        epochs = int(trial.hyperparameters.values.get("tuner/epochs", 1))
        initial_epoch = int(trial.hyperparameters.values.get("tuner/initial_epoch", 0))
        # Trials decay the learning rate over their own budget as the Trainer does over its own,
        # so the rate a trial picks is the rate that trains well under that schedule.
        keras_model = self.build(trial.hyperparameters.values, steps * (epochs - initial_epoch))
        history = keras_model.fit(train, steps_per_epoch=steps, epochs=epochs, initial_epoch=initial_epoch,
                                  validation_data=validation, validation_steps=validation_steps, verbose=0)
        metrics = {name: values[-1] for name, values in history.history.items()}
        logging.info("Trial %s %s -> %s", trial.trial_id, trial.hyperparameters.values, metrics)
        return metrics

    def save_model(self, trial_id, model, step=0):
        """Trial models are not kept: the Trainer retrains the best configuration."""

    def load_model(self, trial):
        raise NotImplementedError("trial models are not kept; use the best hyper-parameters")


class KerasFamily(ModelFamily):
    """A family whose model is a tf_keras core over the dense feature vector. Subclasses set `default_hparams`
    and implement `search_space` and `build_core`."""

    default_hparams: Dict = {}

    def search_space(self, spec: Optional[FeaturesConfig] = None) -> kt.HyperParameters:
        """The hyper-parameters the Tuner explores for `spec`; names match `default_hparams`."""
        raise NotImplementedError

    def build_core(self, input_size: int, hparams: Dict, spec: FeaturesConfig,
                   label_stats: Optional[Dict[str, float]] = None) -> keras.Model:
        """The Keras model named "core": dense feature vector -> the task's head (`head`)."""
        raise NotImplementedError

    def hparams_with_defaults(self, values: Dict) -> Dict:
        merged = dict(self.default_hparams)
        merged.update({k: v for k, v in (values or {}).items() if k in self.default_hparams})
        return merged

    def build_keras_model(self, spec: FeaturesConfig, hparams: Dict, steps_per_execution: int = 1,
                          label_stats: Optional[Dict[str, float]] = None, decay_steps: int = 0) -> keras.Model:
        """Transformed features -> the task's output: the dense feature vector, then the core.

        `steps_per_execution` > 1 runs several steps per call: a parameter-server
        worker then makes one round trip to the coordinator for several steps.
        `label_stats` (regression): the training label's mean and std, see `data.label_statistics`.
        `decay_steps`: the steps the learning rate decays over, see `optimizer`.
        """
        hparams = self.hparams_with_defaults(hparams)
        inputs = feature_inputs(spec)
        core = self.build_core(features.dense_input_size(spec), hparams, spec, label_stats)
        model = keras.Model(inputs, core(feature_vector(spec, inputs)), name="model")
        loss, metrics = loss_and_metrics(spec)
        model.compile(optimizer=optimizer(hparams, decay_steps), loss=loss, metrics=metrics,
                      steps_per_execution=steps_per_execution)
        return model

    def serving_signatures(self, model: keras.Model, tf_transform_output, spec) -> Dict:
        """The shared signatures plus `edge`: the core behind numeric-only inputs (`edge_signature.py`)."""
        return {**export.signatures(model, tf_transform_output, spec),
                **edge_signature.edge_signatures(model, tf_transform_output, spec, spec.task_type.primary_output)}

    def fit(self, fn_args, hparams: Dict, strategy=None, splits: Optional[data.Splits] = None):
        """Builds and trains (under `strategy`) on `splits` (default: the train split, validated on eval); the one
        code path of every strategy. Returns (a strategy-free model, the facts `training.json` records: strategy,
        replicas, batch sizes, steps, the step training resumed from, and training throughput)."""
        strategy = strategy or tf.distribute.get_strategy()
        spec = features.spec_from_custom_config(fn_args.custom_config)
        settings = strategies.training_settings(fn_args.custom_config)
        splits = splits or data.Splits.of_trainer(fn_args)
        per_replica_batch = settings.batch_size
        replicas = strategy.num_replicas_in_sync
        # Synchronous replicas split one global batch; parameter-server workers each take their own.
        global_batch = per_replica_batch * replicas
        parameter_server = strategies.is_parameter_server(strategy)
        schedule = strategies.epoch_schedule(fn_args.train_steps, settings.checkpoint_every_steps)
        logging.info("Training %s with %s strategy (%s): %d replica(s), global batch %d = %d per replica x %d; "
                     "%d steps in %d round(s)%s", self.name, settings.strategy, type(strategy).__name__, replicas,
                     global_batch, per_replica_batch, replicas, schedule.total_steps, schedule.epochs,
                     ", checkpoint after each" if settings.checkpoint_every_steps > 0 else "")
        # Weight init, dropout and the shuffle order (it depends on the global seed too) follow `training.seed`.
        runtime.set_seed(settings.seed)
        train = strategies.distributed_dataset(strategy, lambda: splits.train(global_batch, seed=settings.seed))
        evaluation = splits.validation(global_batch, repeat=True)
        used = self.hparams_with_defaults(hparams)
        logging.info("Training with hyper-parameters %s", used)
        label_stats = splits.label_statistics()
        runtime.write_hyperparameters(fn_args.model_run_dir, used)
        steps_per_execution = math.gcd(settings.steps_per_execution, schedule.steps_per_epoch) \
            if parameter_server else 1
        with strategy.scope():
            # The decay spans the whole run; a resumed run restores the step count with the optimizer.
            model = self.build_keras_model(spec, hparams, steps_per_execution=steps_per_execution,
                                           label_stats=label_stats, decay_steps=schedule.total_steps)
        # The checkpoint belongs to this family on these examples (`auto` trains several in one Trainer).
        callbacks, progress = strategies.fault_tolerance_callbacks(
            fn_args, dict(used, model=self.name, examples=splits.key), settings)
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
        exported = self.build_keras_model(spec, hparams, label_stats=label_stats)
        exported.set_weights(model.get_weights())
        trained_steps = schedule.total_steps - progress.resumed_from_step
        facts = {
            "strategy": settings.strategy, "replicas": replicas, "per_replica_batch": per_replica_batch,
            "global_batch": global_batch, "train_steps": schedule.total_steps,
            "checkpoint_every_steps": schedule.steps_per_epoch if schedule.epochs > 1 else 0,
            "resumed_from_step": progress.resumed_from_step, "steps_per_execution": steps_per_execution,
            "train_seconds": round(progress.train_seconds, 3),
            "examples_per_second": round(trained_steps * global_batch / progress.train_seconds, 1)
            if progress.train_seconds else None,
            "task": spec.task, "model": self.name, "label_statistics": label_stats, "hyperparameters": used,
        }
        return exported, facts

    def export(self, model: keras.Model, fn_args, facts: Dict) -> None:
        spec = features.spec_from_custom_config(fn_args.custom_config)
        tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
        export.save_for_tf_serving(model, fn_args.serving_model_dir,
                                   self.serving_signatures(model, tf_transform_output, spec), spec,
                                   record=export.family_record(facts, edge_core=model.get_layer("core")))

    def tuner_fn(self, fn_args, splits: Optional[data.Splits] = None) -> TunerFnResult:
        """Searches `search_space` on `splits` (default: train, validated on eval)."""
        spec = features.spec_from_custom_config(fn_args.custom_config)
        custom_config = fn_args.custom_config or {}
        settings = section_from_dict(TunerConfig, custom_config.get("tuner"))
        training = section_from_dict(TrainingConfig, custom_config.get("training"))
        batch_size, seed = training.batch_size, training.seed
        # Before the datasets: a shuffle's order depends on the global seed as well as its own.
        runtime.set_seed(seed)
        splits = splits or data.Splits.of_tuner(fn_args)
        train = splits.train(batch_size, seed=seed)
        validation = splits.validation(batch_size, repeat=True)
        oracle = make_oracle(self.search_space(spec), settings.algorithm, settings.max_trials, spec.task, seed=seed)
        label_stats = splits.label_statistics()
        tuner = TfKerasTuner(
            oracle, lambda values, decay_steps: self.build_keras_model(spec, values, label_stats=label_stats,
                                                                       decay_steps=decay_steps),
            seed=seed, directory=fn_args.working_dir, project_name=f"search_{self.name}", overwrite=True)
        return TunerFnResult(
            tuner=tuner,
            fit_kwargs={"train": train, "validation": validation,
                        "steps": fn_args.train_steps, "validation_steps": fn_args.eval_steps},
        )
