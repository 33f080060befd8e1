"""The `auto` family: every other family trained, the best on held-out training data exported.

The choice is made on a validation part cut out of the train split
(`training.auto_validation_share`, `data.Splits`), never on the eval split: the
Evaluator then judges the chosen model on examples nothing chose it by, and
blesses it against the last blessed model, whatever family that one was.

- Tuner: each family's own search (its `tuner_fn`), `tuner.max_trials` trials each,
  fitted on the fit part and scored on the validation part; the best values of all
  families reach the Trainer as one set, each name prefixed with its family
  (`dnn/hidden_units`, `gbdt/max_depth`).
- Trainer: each family fitted on the fit part with its values and scored on the
  validation part by the task's headline metric (`contract.tasks`: AUC, accuracy,
  RMSE); the best family is then fitted again on the whole train split and exported.
  Every family's scores and the choice go to `training.json` and the model's family
  record (`model_family.json`), where the run summary, the HTML report and lineage
  read them.
"""

import math
from typing import Dict, List

from absl import logging

from contract.config import AUTO_MIN_VALIDATION_ROWS, TrainingConfig, section_from_dict
from models import features
from models.trainer import data
from models.trainer.families import ModelFamily, candidates


def values_of(hparams: Dict, family: str) -> Dict:
    """`family`'s own values out of the auto set (`dnn/hidden_units` -> `hidden_units`)."""
    prefix = f"{family}/"
    return {k[len(prefix):]: v for k, v in (hparams or {}).items() if k.startswith(prefix)}


def better(task, score: float, than: float) -> bool:
    return score > than if task.headline.higher_is_better else score < than


class AutoTuner:
    """Runs each family's own search in turn; what TFX's Tuner asks of a tuner, over all of them."""

    tuner_id = "auto"

    def __init__(self, searches: Dict[str, object]):
        self.searches = searches  # family name -> its TunerFnResult
        self.oracle = _Oracles({name: result.tuner.oracle for name, result in searches.items()})

    def search_space_summary(self):
        for result in self.searches.values():
            result.tuner.search_space_summary()

    def search(self, **_):
        for name, result in self.searches.items():
            logging.info("auto: searching the %s family", name)
            result.tuner.search(**result.fit_kwargs)

    def results_summary(self):
        for result in self.searches.values():
            result.tuner.results_summary()

    def get_best_hyperparameters(self, num_trials: int = 1):
        import keras_tuner as kt

        hp = kt.HyperParameters()
        for name, result in self.searches.items():
            best = result.tuner.get_best_hyperparameters(1)
            for key, value in (best[0].values.items() if best else ()):
                if not key.startswith("tuner/"):
                    hp.Fixed(f"{name}/{key}", value)
        return [hp]


class _Oracles:
    """The trials of every family's oracle, each value named with its family (TFX writes them as results)."""

    def __init__(self, oracles: Dict[str, object]):
        self.oracles = oracles
        self.max_trials = sum(o.max_trials for o in oracles.values())

    def get_best_trials(self, num_trials: int = 1) -> List:
        import keras_tuner as kt

        found = []
        for name, oracle in self.oracles.items():
            for trial in oracle.get_best_trials(oracle.max_trials):
                hp = kt.HyperParameters()
                for key, value in trial.hyperparameters.values.items():
                    hp.Fixed(f"{name}/{key}", value)
                renamed = kt.engine.trial.Trial(hp, trial_id=f"{name}_{trial.trial_id}", status=trial.status)
                renamed.score = trial.score
                found.append(renamed)
        return found[:num_trials]


class Auto(ModelFamily):
    name = "auto"
    # It trains every family in the Trainer's own process, one after the other.
    strategies = ("default",)
    train_function = "models.trainer.families.auto:train_and_export"

    def problems(self, config) -> List[str]:
        found = self.strategy_problems(config)
        share = config.training.auto_validation_share
        if not 0.0 < share < 1.0:
            found.append(f"training.auto_validation_share {share} must be between 0 and 1 (e.g. 0.2): the share of "
                         "the train split training.model auto holds out to choose the family")
        for family in candidates():
            found.extend(family.task_problems(config))
        return found

    def strategy_problems(self, config) -> List[str]:
        if config.training.strategy in self.strategies:
            return []
        return [f"training.strategy {config.training.strategy} is not available with training.model auto: it "
                "trains every family in the Trainer's own process, one after the other. Use training.strategy "
                "default, or set training.model to the family to train with it (dnn, linear)"]

    def data_problems(self, config, train_rows: int) -> List[str]:
        share = config.training.auto_validation_share
        held_out = int(train_rows * share)
        if held_out >= AUTO_MIN_VALIDATION_ROWS:
            return []
        needed = math.ceil(AUTO_MIN_VALIDATION_ROWS / share)
        return [f"training.model auto holds out {share:g} of the train split to choose the family: {held_out} of "
                f"its {train_rows} rows, fewer than the {AUTO_MIN_VALIDATION_ROWS} a choice needs. Give it at least "
                f"{needed} training rows, raise training.auto_validation_share, or set training.model to one "
                "family (dnn, linear, gbdt)"]

    def splits(self, fn_args, tuner: bool = False) -> data.Splits:
        share = section_from_dict(TrainingConfig, (fn_args.custom_config or {}).get("training")).auto_validation_share
        return (data.Splits.of_tuner if tuner else data.Splits.of_trainer)(fn_args, holdout=share)

    def tuner_fn(self, fn_args):
        from tfx.components.tuner.component import TunerFnResult

        splits = self.splits(fn_args, tuner=True)
        searches = {family.name: family.tuner_fn(fn_args, splits=splits) for family in candidates()}
        return TunerFnResult(tuner=AutoTuner(searches), fit_kwargs={})

    def train_and_export(self, fn_args, hparams: Dict, strategy=None) -> Dict:
        """Fits every family on the fit part, scores each on the validation part, refits and exports the best."""
        spec = features.spec_from_custom_config(fn_args.custom_config)
        task = spec.task_type
        splits = self.splits(fn_args)
        scores, seconds = {}, {}
        for family in candidates():
            model, facts = family.fit(fn_args, values_of(hparams, family.name), strategy, splits)
            labels, outputs = data.predictions(family.predictor(model), splits.validation(data.READ_BATCH))
            scores[family.name] = task.quality(labels, outputs)
            seconds[family.name] = facts.get("train_seconds")
            logging.info("auto: %s scores %s on %d held-out rows", family.name, scores[family.name], len(labels))
        key = task.headline.key
        chosen = None
        for name, score in scores.items():
            if chosen is None or better(task, score[key], scores[chosen][key]):
                chosen = name
        family = next(f for f in candidates() if f.name == chosen)
        model, facts = family.fit(fn_args, values_of(hparams, chosen), strategy, splits.whole_train())
        facts["auto"] = {"chosen": chosen, "metric": key, "metric_label": task.headline.label,
                         "higher_is_better": task.headline.higher_is_better,
                         "validation_share": splits.holdout, "validation_rows": len(labels),
                         "scores": scores, "train_seconds": seconds}
        family.export(model, fn_args, facts)
        return facts


FAMILY = Auto()


def train_and_export(fn_args, hparams: Dict, strategy=None) -> Dict:
    return FAMILY.train_and_export(fn_args, hparams, strategy)
