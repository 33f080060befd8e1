"""The `dnn` family: a wide-and-deep Keras (tf_keras) network over the one-hot and z-scored feature vector.

Every feature becomes part of one dense float vector (`models/features.py`); the
network's `core` (hidden layers plus a wide linear path) maps it to the task's
head. A text block enters the deep path as a pooled embedding: a bias-free dense
layer on its TF-IDF (or 0/1) block is the weighted mean of one learnt vector per
n-gram, the pooled embedding of the text, in one fully connected op TFLite
quantizes to int8; the wide path reads the block itself (a linear bag of words). The
head is a sigmoid (binary cross-entropy), a softmax over the classes (sparse
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
    # `embedding_dim`: the width of each text block's pooled embedding (read only when the spec has text).
    default_hparams = {"hidden_units": 64, "num_layers": 2, "learning_rate": 0.003, "dropout": 0.1, "l2": 0.01,
                       "embedding_dim": 16}

    def search_space(self, spec: Optional[FeaturesConfig] = None) -> kt.HyperParameters:
        hp = kt.HyperParameters()
        if spec is not None and spec.text:
            hp.Choice("embedding_dim", [8, 16, 32], default=self.default_hparams["embedding_dim"])
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
        x = deep_inputs(vector, spec, int(hparams["embedding_dim"]), regularizer)
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


FAMILY = Dnn()


def train_and_export(fn_args, hparams: Dict, strategy=None) -> Dict:
    """`train_function` of a separate training process (mirrored on CPU, the local parameter-server cluster)."""
    return FAMILY.train_and_export(fn_args, hparams, strategy)
