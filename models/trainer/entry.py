"""The Trainer's and the Tuner's entry points (their `module_file`): the family `training.model` names.

`run_fn` and `tuner_fn` read the family from the `training:` section the
pipeline passes in custom_config, so a new family (one module in `families/`)
needs no change to the pipeline's wiring.
"""

from contract.config import TrainingConfig, section_from_dict
from models.trainer import families


def family_of(custom_config) -> families.ModelFamily:
    return families.get(section_from_dict(TrainingConfig, (custom_config or {}).get("training")).model)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point. The Tuner's best values arrive as KerasTuner's HyperParameters config."""
    hparams = (fn_args.hyperparameters or {}).get("values", {})
    family_of(fn_args.custom_config).run_fn(fn_args, hparams)


def tuner_fn(fn_args):
    """TFX Tuner entry point."""
    return family_of(fn_args.custom_config).tuner_fn(fn_args)
