"""The Trainer's and the Tuner's entry points (their `module_file`): the family `training.model` names.

`run_fn` and `tuner_fn` read the family from the `training:` section the
pipeline passes in custom_config, so a new family (one module in `families/`)
needs no change to the pipeline's wiring. The Evaluator uses this module file too,
for `custom_eval_shared_model`.
"""

import functools

from contract.config import TrainingConfig, section_from_dict
from models.trainer import custom_ops, families


def family_of(custom_config) -> families.ModelFamily:
    return families.get(section_from_dict(TrainingConfig, (custom_config or {}).get("training")).model)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point. The Tuner's best values arrive as KerasTuner's HyperParameters config."""
    hparams = (fn_args.hyperparameters or {}).get("values", {})
    family_of(fn_args.custom_config).run_fn(fn_args, hparams)


def tuner_fn(fn_args):
    """TFX Tuner entry point."""
    return family_of(fn_args.custom_config).tuner_fn(fn_args)


def custom_eval_shared_model(eval_saved_model_path, model_name, eval_config, **kwargs):
    """The Evaluator's model (TFMA), loaded with the ops it needs (a decision forest's) in every process.

    TFMA loads the candidate and the baseline, whatever family each is, in Beam workers that may be other
    processes: their loader registers the model's ops before loading it (`custom_ops`).
    """
    import tensorflow_model_analysis as tfma

    custom_ops.register_for(eval_saved_model_path)
    shared = tfma.default_eval_shared_model(eval_saved_model_path=eval_saved_model_path, model_name=model_name,
                                            eval_config=eval_config, **kwargs)
    loader = shared.model_loader
    return shared._replace(model_loader=tfma.types.ModelLoader(
        construct_fn=functools.partial(_construct_with_ops, eval_saved_model_path, loader.construct_fn),
        tags=loader.tags))


def _construct_with_ops(saved_model_dir: str, construct_fn):
    custom_ops.register_for(saved_model_dir)
    return construct_fn()
