"""The `dnn` family: a wide-and-deep Keras (tf_keras) network over the one-hot and z-scored feature vector.

Every feature becomes part of one dense float vector (`models/features.py`); the
network's `core` (hidden layers plus a wide linear path) maps it to the task's
head: a sigmoid (binary cross-entropy), a softmax over the classes (sparse
categorical cross-entropy) or a linear output rescaled to the label's mean and
standard deviation (mean squared error), as `contract.tasks` says. Training,
tuning and export are the Keras families' (`keras_family.py`); the core on the
dense vector is what the `edge` signature exports for TFLite. The `gbdt` family's
edge student is this core too.
"""

from typing import Dict, Optional

import keras_tuner as kt
import tensorflow as tf
import tf_keras as keras

from contract.config import FeaturesConfig
from models import features
from models.trainer.families.keras_family import KerasFamily, head


class Dnn(KerasFamily):
    name = "dnn"
    train_function = "models.trainer.families.dnn:train_and_export"
    # Used when the Tuner is off; the Tuner searches around them.
    default_hparams = {"hidden_units": 64, "num_layers": 2, "learning_rate": 0.003, "dropout": 0.1, "l2": 0.01}

    def search_space(self) -> kt.HyperParameters:
        hp = kt.HyperParameters()
        hp.Choice("hidden_units", [32, 64, 128], default=self.default_hparams["hidden_units"])
        hp.Int("num_layers", 1, 3, default=self.default_hparams["num_layers"])
        hp.Choice("learning_rate", [0.001, 0.003, 0.01], default=self.default_hparams["learning_rate"])
        hp.Choice("dropout", [0.0, 0.1, 0.2], default=self.default_hparams["dropout"])
        hp.Choice("l2", [0.001, 0.003, 0.01], default=self.default_hparams["l2"])
        return hp

    def build_core(self, input_size: int, hparams: Dict, spec: FeaturesConfig,
                   label_stats: Optional[Dict[str, float]] = None) -> keras.Model:
        """The dense network over the feature vector; the part the edge export reuses."""
        hparams = self.hparams_with_defaults(hparams)
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
        width = features.output_size(spec)
        wide = keras.layers.Dense(width, kernel_regularizer=regularizer, name="wide")(vector)
        deep = keras.layers.Dense(width, name="deep")(x)
        logit = keras.layers.Add(name="logit")([wide, deep])
        return keras.Model(vector, head(spec, logit, label_stats), name="core")


FAMILY = Dnn()


def train_and_export(fn_args, hparams: Dict, strategy=None) -> Dict:
    """`train_function` of a separate training process (mirrored on CPU, the local parameter-server cluster)."""
    return FAMILY.train_and_export(fn_args, hparams, strategy)
