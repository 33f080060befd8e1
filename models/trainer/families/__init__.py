"""Model families: what a family provides to the Tuner, the Trainer, the signatures and the edge export.

`training.model` names a family; each is one module of this package that defines
`FAMILY`, an instance of a `ModelFamily` subclass, and is found by that name
(no list to edit). The pipeline's wiring is the same for every family: the Tuner
calls `tuner_fn`, the Trainer `run_fn`; both learn from the same Transform output
(`models/trainer/data.py`) and export through the same signatures
(`models/trainer/export.py`), so serving, batch scoring, TFMA, warm-up, lineage
and reports never ask which family made a model. A family also exports the
`edge` signature the edge export converts to int8 TFLite.

Every family trains through the same three steps, which `auto` composes: `fit`
(on a `data.Splits`), `predictor` (the fitted model's task output on a batch of
transformed features) and `export`.
"""

import importlib
import pkgutil
from typing import Dict, List

from contract.config import STRATEGIES, TASKS

ATTRIBUTE = "FAMILY"  # what a family module defines


class ModelFamily:
    """One model family. Subclasses set `name` and `train_function` and implement `tuner_fn`, `fit`, `predictor`
    and `export`."""

    name: str = ""
    # training.strategy values the family trains under; others are refused before any component runs.
    strategies = STRATEGIES
    tasks = TASKS
    # "module:function" that a separate training process imports (mirrored on CPU, the local parameter-server
    # cluster): the family's train_and_export(fn_args, hparams, strategy).
    train_function: str = ""

    def problems(self, config) -> List[str]:
        """Settings this family cannot run with, one line each naming the setting (empty: none)."""
        return self.task_problems(config) + self.strategy_problems(config)

    def task_problems(self, config) -> List[str]:
        if config.features.task not in self.tasks:
            return [f"training.model {self.name} does not train task {config.features.task}; "
                    f"it trains {', '.join(self.tasks)}"]
        return []

    def strategy_problems(self, config) -> List[str]:
        if config.training.strategy not in self.strategies:
            return [f"training.strategy {config.training.strategy} is not available with training.model "
                    f"{self.name}; use one of {', '.join(self.strategies)}"]
        return []

    def data_problems(self, config, train_rows: int) -> List[str]:
        """What this family cannot learn from a train split of `train_rows` rows (checked before any component)."""
        return []

    def tuner_fn(self, fn_args, splits=None):
        """The Tuner's `tuner_fn` for this family: a TunerFnResult searching its hyper-parameters on `splits`
        (`data.Splits`; default: the train split, validated on the eval split)."""
        raise NotImplementedError

    def fit(self, fn_args, hparams: Dict, strategy=None, splits=None):
        """Trains on `splits` (default: the Trainer's train split); returns (model, training facts)."""
        raise NotImplementedError

    def predictor(self, model):
        """A function of a batch of transformed features -> the task's output (numpy), for scoring a fit."""
        return lambda batch: model(batch, training=False).numpy()

    def export(self, model, fn_args, facts: Dict) -> None:
        """Writes the SavedModel (shared signatures, `edge`, family record) to `fn_args.serving_model_dir`."""
        raise NotImplementedError

    def train_and_export(self, fn_args, hparams: Dict, strategy=None) -> Dict:
        """`fit`, then `export`; returns the facts `training.json` records."""
        model, facts = self.fit(fn_args, hparams, strategy)
        self.export(model, fn_args, facts)
        return facts

    def run_fn(self, fn_args, hparams: Dict) -> None:
        """The Trainer's `run_fn`: trains under `training.strategy` and exports the SavedModel."""
        from training import strategies

        module, _, function = self.train_function.partition(":")
        strategies.run(fn_args, hparams, getattr(importlib.import_module(module), function), self.train_function)


def _discover() -> Dict[str, ModelFamily]:
    found = {}
    for module in pkgutil.iter_modules(__path__):
        family = getattr(importlib.import_module(f"{__name__}.{module.name}"), ATTRIBUTE, None)
        if isinstance(family, ModelFamily):
            found[family.name] = family
    return found


_FAMILIES: Dict[str, ModelFamily] = {}


def names() -> List[str]:
    if not _FAMILIES:
        _FAMILIES.update(_discover())
    return sorted(_FAMILIES)


def candidates() -> List[ModelFamily]:
    """The families `auto` chooses among: every family but itself."""
    names()
    return [_FAMILIES[name] for name in sorted(_FAMILIES) if name != "auto"]


def get(name: str) -> ModelFamily:
    """The family `training.model` names; a ValueError naming the known ones otherwise."""
    if name not in names():
        raise ValueError(f"training.model: {name!r} is not a model family; one of {', '.join(names())}")
    return _FAMILIES[name]
