"""The `linear` family: a regularized linear model on Transform's output — logistic regression (binary),
softmax regression (multiclass), linear regression (regression).

The core is one Dense layer from the dense feature vector (numeric z-scores and
one-hot blocks) to the task's head, with an elastic-net penalty (`l1` + `l2`) on
its weights: ridge when `l1` is 0. It trains, tunes and exports exactly as the
`dnn` family does (`keras_family.py`), so it runs under every training strategy
and its `edge` signature converts to int8 TFLite the same way. On small tabular
data it is the model a platform must not lose to; `auto` weighs it against the
others on held-out data.
"""

from typing import Dict, Optional

import keras_tuner as kt
import tensorflow as tf
import tf_keras as keras

from contract.config import FeaturesConfig
from models import features
from models.trainer.families.keras_family import KerasFamily, head


class Linear(KerasFamily):
    name = "linear"
    train_function = "models.trainer.families.linear:train_and_export"
    # Penalties per example of the mean loss (Keras adds them to it); a stronger l2 than the dnn's wide path
    # as this is all the model there is.
    default_hparams = {"learning_rate": 0.01, "l1": 0.0, "l2": 0.001}

    def search_space(self, spec: Optional[FeaturesConfig] = None) -> kt.HyperParameters:
        hp = kt.HyperParameters()
        hp.Choice("learning_rate", [0.003, 0.01, 0.03], default=self.default_hparams["learning_rate"])
        hp.Choice("l1", [0.0, 1e-5, 1e-4], default=self.default_hparams["l1"])
        hp.Choice("l2", [1e-4, 1e-3, 1e-2], default=self.default_hparams["l2"])
        return hp

    def build_core(self, input_size: int, hparams: Dict, spec: FeaturesConfig,
                   label_stats: Optional[Dict[str, float]] = None) -> keras.Model:
        hparams = self.hparams_with_defaults(hparams)
        vector = keras.Input(shape=(input_size,), name="feature_vector", dtype=tf.float32)
        penalty = keras.regularizers.L1L2(l1=float(hparams["l1"]), l2=float(hparams["l2"]))
        logit = keras.layers.Dense(features.output_size(spec), kernel_regularizer=penalty, name="logit")(vector)
        return keras.Model(vector, head(spec, logit, label_stats), name="core")


FAMILY = Linear()


def train_and_export(fn_args, hparams: Dict, strategy=None) -> Dict:
    """`train_function` of a separate training process (mirrored on CPU, the local parameter-server cluster)."""
    return FAMILY.train_and_export(fn_args, hparams, strategy)
