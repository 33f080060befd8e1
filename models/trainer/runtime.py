"""What every training process shares, whatever the model family: Keras's autograph rule, the seed, the record
of the hyper-parameters that trained the model.

Imported by the families and the entry points; TFX loads this directory as the
Trainer's and Tuner's module wheel (every file here is fingerprinted).
"""

import json
import os
from typing import Dict

import tensorflow as tf
import tf_keras as keras

# What the Trainer records beside its TensorBoard logs: the hyper-parameters it trained with (read by lineage).
HPARAMS_FILE = "hyperparameters.json"


def skip_autograph_for_tf_keras() -> None:
    """Tells autograph not to rewrite tf_keras's own code, as it never rewrote Keras 2 under its old name.

    Autograph converts every Python function a `tf.function` calls unless its
    module is on a do-not-convert list. TF 2.16's list has `keras` (Keras 2's
    package name up to TF 2.15) but not `tf_keras`, where Keras 2 lives now, so
    the first `fit` of each process AST-converted some 1,700 Keras internals:
    measured 30.5 s for the first training step of this model in a fresh
    process, 2.6 s with this rule. Only Keras's own modules are skipped: the
    function given to `tf.function` (Keras's `train_function`, our signatures) is
    still converted, so its `tf.range` loops stay graph loops. There is no
    public API for the list; the rule is the one TF applies to `keras`.
    """
    from tensorflow.python.autograph.core import config as autograph_config

    if not any(rule.matches("tf_keras") for rule in autograph_config.CONVERSION_RULES
               if isinstance(rule, autograph_config.DoNotConvert)):
        autograph_config.CONVERSION_RULES = ((autograph_config.DoNotConvert("tf_keras"),)
                                             + tuple(autograph_config.CONVERSION_RULES))


skip_autograph_for_tf_keras()


def set_seed(seed: int) -> None:
    """`training.seed` for Python, NumPy and TensorFlow; 0 leaves them unseeded (each run draws its own)."""
    if seed:
        keras.utils.set_random_seed(seed)


def write_hyperparameters(model_run_dir: str, used: Dict) -> None:
    """Kept with the run so lineage can show exactly what trained this model."""
    tf.io.gfile.makedirs(model_run_dir)
    with tf.io.gfile.GFile(os.path.join(model_run_dir, HPARAMS_FILE), "w") as f:
        f.write(json.dumps(used, sort_keys=True))
