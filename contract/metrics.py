"""Quality metrics on numpy arrays: what the edge gate, the metric trigger and the device tools compute.

numpy only, so the TensorFlow-free device runtime can use them. The definitions
follow TFMA's where both exist: AUC by Mann-Whitney with ties counted half (TFMA's
AUC with many thresholds converges to it), the macro AUC as the mean one-vs-rest
AUC over the classes present.
"""

import numpy as np


def auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN without both classes."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if not positives or not negatives:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = np.asarray(scores)[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def macro_auc(labels, scores) -> float:
    """One-vs-rest AUC averaged over the classes present in `labels` (as TFMA's macro average does)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    values = [auc(labels == k, scores[:, k]) for k in range(scores.shape[1])]
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


def rmse(labels, predictions) -> float:
    error = np.asarray(predictions, np.float64) - np.asarray(labels, np.float64)
    return float(np.sqrt(np.mean(error ** 2)))
