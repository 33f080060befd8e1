"""A labelled batch's quality: each model's task metrics on the labels the batch still carries.

The scoring handler adds two columns to a labelled batch's rows, `LABELS` (the label of each example, by the
feature spec's rule, as Transform computes it) and `OUTPUTS` (each model's primary output); the writers write
only the declared id and prediction columns, and `Quality` combines these two over the whole batch into the
task's metrics (`contract.tasks.Task.quality`: AUC and accuracy, accuracy and macro AUC, RMSE and MAE).
"""

from typing import Dict, List, Tuple

import apache_beam as beam
import numpy as np

from contract import tasks

LABELS, OUTPUTS = "__labels__", "__outputs__"


class Quality(beam.CombineFn):
    """Rows of scored batches -> {model: {metric: value, "examples": n}}."""

    def __init__(self, model_tasks: Dict[str, str]):
        super().__init__()
        self.model_tasks = dict(model_tasks)

    def create_accumulator(self) -> Dict[str, Tuple[List, List]]:
        return {name: ([], []) for name in self.model_tasks}

    def add_input(self, accumulator, columns):
        for name, (labels, outputs) in accumulator.items():
            labels.extend(columns[LABELS])
            outputs.extend(columns[OUTPUTS][name])
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for name, (labels, outputs) in accumulator.items():
                merged[name][0].extend(labels)
                merged[name][1].extend(outputs)
        return merged

    def extract_output(self, accumulator) -> Dict[str, Dict[str, float]]:
        result = {}
        for name, (labels, outputs) in accumulator.items():
            task = tasks.task(self.model_tasks[name])
            values = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
            values = values[:, 0] if values.shape[1] == 1 else values
            truth = np.asarray(labels)
            known = truth >= 0 if task.is_classification else np.isfinite(truth)  # -1: a value that is no class
            if not known.any():
                continue
            metrics = task.quality(truth[known], values[known])
            result[name] = dict({k: float(v) for k, v in metrics.items()}, examples=int(known.sum()))
        return result
