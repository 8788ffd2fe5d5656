"""Accuracy, loss, per-class accuracy and the confusion matrix from predicted probabilities (NumPy only)."""

from __future__ import annotations

import numpy as np


def score_predictions(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Scores of `probs` (N x 10) against `labels` (N).

    Returns accuracy (fraction), loss (mean cross-entropy, nats), per_class_accuracy (10 fractions,
    None for a class with no examples) and confusion (10 x 10 counts, rows = true digit).
    """
    labels = labels.astype(np.int64)
    predicted = probs.argmax(axis=1)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = [
        (float(confusion[d, d] / confusion[d].sum()) if confusion[d].sum() else None) for d in range(10)
    ]
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        "loss": float(-np.log(picked).mean()) if len(labels) else 0.0,
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),
    }
