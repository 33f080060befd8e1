"""Transform's output as training data: batches of (transformed features, label), and the label's scale.

Shared by every model family: all of them learn from the same Transform output, so
training and serving prepare features identically whatever the family. `Splits`
is what a family trains on and validates with: the Trainer's train and eval
splits, or (`auto`) the train split cut into a part to fit and a part held out
to choose the family, so that the Evaluator's eval split never takes part in a
choice it then judges.
"""

import hashlib
import json
import math
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
from tfx_bsl.public import tfxio

# Transformed training examples that give a regression label its mean and standard deviation.
LABEL_STATISTICS_EXAMPLES = 100_000
# A held-out part is every example whose position in the (unshuffled) train split falls in the first
# `share * HOLDOUT_BUCKETS` of each run of HOLDOUT_BUCKETS: the same examples every time, spread over the files.
HOLDOUT_BUCKETS = 100
# Examples a shuffled held-out part draws from at a time (TFXIO's own default buffer).
SHUFFLE_BUFFER = 10_000
# Examples per read of a one-pass dataset (decision forests read everything once; scoring).
READ_BATCH = 1024


def input_fn(file_pattern: List[str], data_accessor, tf_transform_output, spec, batch_size: int,
             shuffle: bool = True, repeat: bool = True, seed: Optional[int] = None) -> tf.data.Dataset:
    """Batches of (transformed features, label) from Transform's output, repeated forever unless told not to.

    `seed` fixes the shuffle order (`training.seed`), so two runs see the examples in the same order.
    """
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=spec.label_key, shuffle=shuffle,
                                       shuffle_seed=seed or None, num_epochs=None if repeat else 1),
        tf_transform_output.transformed_metadata.schema,
    )
    return dataset.repeat() if repeat else dataset


def statistics_of(dataset: tf.data.Dataset) -> Dict[str, float]:
    """Mean and standard deviation of the labels of (up to 100k examples of) a one-pass dataset."""
    total, count, squares = 0.0, 0, 0.0
    for _, labels in dataset:
        values = labels.numpy().astype(np.float64).reshape(-1)
        total, squares, count = total + values.sum(), squares + (values ** 2).sum(), count + len(values)
        if count >= LABEL_STATISTICS_EXAMPLES:
            break
    mean = total / max(count, 1)
    std = math.sqrt(max(squares / max(count, 1) - mean ** 2, 0.0))
    return {"mean": mean, "std": std or 1.0}


class Splits:
    """The examples a family fits on (`train`) and validates with (`validation`).

    `holdout` (a share in (0, 1)): both come from `train_files`, the validation part
    being `holdout` of it (`HOLDOUT_BUCKETS`); `validation_files` is then unused.
    """

    def __init__(self, train_files: List[str], validation_files: List[str], data_accessor, tf_transform_output,
                 spec, holdout: float = 0.0):
        self.train_files, self.validation_files = list(train_files), list(validation_files)
        self.data_accessor, self.tf_transform_output, self.spec = data_accessor, tf_transform_output, spec
        self.holdout = holdout

    @classmethod
    def of_trainer(cls, fn_args, holdout: float = 0.0) -> "Splits":
        import tensorflow_transform as tft

        spec = _spec(fn_args)
        return cls(fn_args.train_files, fn_args.eval_files, fn_args.data_accessor,
                   tft.TFTransformOutput(fn_args.transform_output), spec, holdout)

    @classmethod
    def of_tuner(cls, fn_args, holdout: float = 0.0) -> "Splits":
        import tensorflow_transform as tft

        spec = _spec(fn_args)
        return cls(fn_args.train_files, fn_args.eval_files, fn_args.data_accessor,
                   tft.TFTransformOutput(fn_args.transform_graph_path), spec, holdout)

    def whole_train(self) -> "Splits":
        """The same train files, all of them to fit on, validated on the validation files."""
        return Splits(self.train_files, self.validation_files, self.data_accessor, self.tf_transform_output,
                      self.spec)

    @property
    def key(self) -> str:
        """What identifies the examples fitted on (checkpoint directories of different parts must differ)."""
        return hashlib.sha256(json.dumps([self.train_files, self.holdout]).encode()).hexdigest()[:12]

    def _read(self, files: List[str], batch_size: int, shuffle: bool, repeat: bool, seed: Optional[int]):
        return input_fn(files, self.data_accessor, self.tf_transform_output, self.spec, batch_size,
                        shuffle=shuffle, repeat=repeat, seed=seed)

    def _part(self, validation: bool, batch_size: int, shuffle: bool, repeat: bool, seed: Optional[int]):
        """One part of the train files, cut by position in an unshuffled pass, then shuffled and batched."""
        cut = int(round(self.holdout * HOLDOUT_BUCKETS))
        examples = self._read(self.train_files, READ_BATCH, False, False, None).unbatch().enumerate()
        examples = examples.filter(lambda i, _: tf.equal(i % HOLDOUT_BUCKETS < cut, validation))
        examples = examples.map(lambda _, example: example)
        if shuffle:
            examples = examples.shuffle(SHUFFLE_BUFFER, seed=seed or None)
        if repeat:
            examples = examples.repeat()
        return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def train(self, batch_size: int, seed: Optional[int] = None, shuffle: bool = True,
              repeat: bool = True) -> tf.data.Dataset:
        if self.holdout:
            return self._part(False, batch_size, shuffle, repeat, seed)
        return self._read(self.train_files, batch_size, shuffle, repeat, seed)

    def validation(self, batch_size: int, repeat: bool = False) -> tf.data.Dataset:
        if self.holdout:
            return self._part(True, batch_size, False, repeat, None)
        return self._read(self.validation_files, batch_size, False, repeat, None)

    def label_statistics(self) -> Optional[Dict[str, float]]:
        """Mean and standard deviation of the label of the part fitted on, for a task whose head rescales its
        output (regression); None for the others. The regression head predicts a z-score and rescales it with
        these, so the network trains on unit-scale targets whatever the label's unit."""
        if self.spec.task_type.head_activation != "rescale":
            return None
        return statistics_of(self.train(READ_BATCH, shuffle=False, repeat=False))


def _spec(fn_args):
    from models import features

    return features.spec_from_custom_config(fn_args.custom_config)


def predictions(predict, dataset: tf.data.Dataset):
    """(labels, outputs) of `predict(features)` over a one-pass dataset, as numpy: [n] and [n] or [n, classes]."""
    labels, outputs = [], []
    for batch, label in dataset:
        labels.append(label.numpy().reshape(-1))
        outputs.append(np.asarray(predict(batch)))
    out = np.concatenate(outputs)
    return np.concatenate(labels), out.reshape(-1) if out.ndim == 1 or out.shape[1] == 1 else out
