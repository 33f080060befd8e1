"""The Tuner's `tuner_fn`: KerasTuner's search over the model in `model.py`.

KerasTuner 1.4 is written for Keras 3 and rejects tf_keras models in its
`Tuner` class (FatalTypeError). We keep KerasTuner's oracles (random,
Hyperband, Bayesian) and drive them from a `BaseTuner` whose trials build,
train and score the tf_keras model themselves. The best values reach the
Trainer through the Tuner's `best_hyperparameters` artifact. The objective is the
task's validation metric (`model.OBJECTIVES`): AUC (binary), accuracy
(multiclass), RMSE (regression, lower is better).
"""

import keras_tuner as kt
import tensorflow_transform as tft
from absl import logging
# Not `tfx.v1`: that namespace also imports the Google Cloud AI Platform client (~2 s per process).
from tfx.components.tuner.component import TunerFnResult

# The installed packages, also when TFX loads this file from its module wheel.
from contract.config import TrainingConfig, TunerConfig, section_from_dict
from models import features
from models.trainer import model


def objective(task: str) -> kt.Objective:
    metric, direction = model.OBJECTIVES[task]
    return kt.Objective(f"val_{metric}", direction=direction)


def search_space() -> kt.HyperParameters:
    """The hyper-parameters the Tuner explores; names match `model.DEFAULT_HPARAMS`."""
    hp = kt.HyperParameters()
    hp.Choice("hidden_units", [32, 64, 128], default=model.DEFAULT_HPARAMS["hidden_units"])
    hp.Int("num_layers", 1, 3, default=model.DEFAULT_HPARAMS["num_layers"])
    hp.Choice("learning_rate", [0.001, 0.003, 0.01], default=model.DEFAULT_HPARAMS["learning_rate"])
    hp.Choice("dropout", [0.0, 0.1, 0.2], default=model.DEFAULT_HPARAMS["dropout"])
    hp.Choice("l2", [0.001, 0.003, 0.01], default=model.DEFAULT_HPARAMS["l2"])
    return hp


def make_oracle(algorithm: str, max_trials: int, task: str = "binary", seed: int = 0) -> kt.Oracle:
    hp, goal = search_space(), objective(task)
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
        model.set_seed(self.seed)
        # Hyperband assigns epochs per trial; the other oracles train one epoch.
        epochs = int(trial.hyperparameters.values.get("tuner/epochs", 1))
        initial_epoch = int(trial.hyperparameters.values.get("tuner/initial_epoch", 0))
        # Trials decay the learning rate over their own budget as the Trainer does over its own,
        # so the rate a trial picks is the rate that trains well under that schedule.
        keras_model = model.build_keras_model(self.spec, trial.hyperparameters.values, label_stats=self.label_stats,
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


def tuner_fn(fn_args) -> TunerFnResult:
    """TFX Tuner entry point."""
    spec = features.spec_from_custom_config(fn_args.custom_config)
    custom_config = fn_args.custom_config or {}
    settings = section_from_dict(TunerConfig, custom_config.get("tuner"))
    training = section_from_dict(TrainingConfig, custom_config.get("training"))
    batch_size, seed = training.batch_size, training.seed
    # Before the datasets: a shuffle's order depends on the global seed as well as its own.
    model.set_seed(seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    train = model.input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output, spec, batch_size,
                           seed=seed)
    validation = model.input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, spec,
                                batch_size, shuffle=False)
    oracle = make_oracle(settings.algorithm, settings.max_trials, spec.task, seed=seed)
    label_stats = model.label_statistics(fn_args.train_files, fn_args.data_accessor, tf_transform_output, spec)
    tuner = TfKerasTuner(oracle, spec, label_stats, seed=seed, directory=fn_args.working_dir, project_name="search",
                         overwrite=True)
    return TunerFnResult(
        tuner=tuner,
        fit_kwargs={"train": train, "validation": validation,
                    "steps": fn_args.train_steps, "validation_steps": fn_args.eval_steps},
    )
