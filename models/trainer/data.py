"""Transform's output as training data: batches of (transformed features, label), and the label's scale.

Shared by every model family: all of them learn from the same Transform output, so
training and serving prepare features identically whatever the family.
"""

import math
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
from tfx_bsl.public import tfxio

# Transformed training examples that give a regression label its mean and standard deviation.
LABEL_STATISTICS_EXAMPLES = 100_000


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


def label_statistics(file_pattern: List[str], data_accessor, tf_transform_output, spec) -> Optional[Dict[str, float]]:
    """Mean and standard deviation of the label over (up to 100k of) the training examples, for a task whose
    head rescales its output (regression); None for the others.

    The regression head predicts a z-score and rescales it with these, so the
    network trains on unit-scale targets whatever the label's unit.
    """
    if spec.task_type.head_activation != "rescale":
        return None
    total, count, squares = 0.0, 0, 0.0
    for _, labels in input_fn(file_pattern, data_accessor, tf_transform_output, spec, 1024, shuffle=False,
                              repeat=False):
        values = labels.numpy().astype(np.float64).reshape(-1)
        total, squares, count = total + values.sum(), squares + (values ** 2).sum(), count + len(values)
        if count >= LABEL_STATISTICS_EXAMPLES:
            break
    mean = total / max(count, 1)
    std = math.sqrt(max(squares / max(count, 1) - mean ** 2, 0.0))
    return {"mean": mean, "std": std or 1.0}
