"""GLUE metrics computed locally (the ``evaluate`` library fetches metric code from the Hub).

All are fractions in [0, 1] (correlations in [-1, 1]), named as in results.json.
"""

from __future__ import annotations

import numpy as np

from finetune.tasks import GlueTask


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((preds == labels).mean())


def f1(preds: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class (label 1), GLUE's F1 for MRPC and QQP."""
    tp = float(((preds == 1) & (labels == 1)).sum())
    predicted, actual = float((preds == 1).sum()), float((labels == 1).sum())
    return 0.0 if tp == 0 else 2 * tp / (predicted + actual)


def matthews(preds: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation coefficient (binary), CoLA's metric; 0 when undefined."""
    tp = float(((preds == 1) & (labels == 1)).sum())
    tn = float(((preds == 0) & (labels == 0)).sum())
    fp = float(((preds == 1) & (labels == 0)).sum())
    fn = float(((preds == 0) & (labels == 1)).sum())
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else float((tp * tn - fp * fn) / denom)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return 0.0 if denom == 0 else float((x * y).sum() / denom)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged, as Spearman's coefficient needs."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(_ranks(x), _ranks(y))


def compute_metrics(task: GlueTask, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics from raw model outputs."""
    if task.is_regression:
        preds = logits.reshape(-1)
        return {"pearson": pearson(preds, labels), "spearman": spearman(preds, labels)}
    preds = logits.argmax(-1)
    if task.metric == "accuracy_f1":
        return {"accuracy": accuracy(preds, labels), "f1": f1(preds, labels)}
    if task.metric == "matthews":
        return {"matthews": matthews(preds, labels), "accuracy": accuracy(preds, labels)}
    return {"accuracy": accuracy(preds, labels)}
