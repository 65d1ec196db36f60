"""GLUE metrics, from scikit-learn and SciPy (the ``evaluate`` library would fetch metric code
from the Hub). All are fractions in [0, 1] (correlations in [-1, 1]), named as in results.json."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from finetune.data.tasks import GlueTask


def compute_metrics(task: GlueTask, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics from raw model outputs: accuracy and F1 of the positive class (MRPC,
    QQP), Matthews correlation (CoLA), Pearson and Spearman (STS-B), accuracy otherwise."""
    if task.is_regression:
        preds = logits.reshape(-1)
        return {"pearson": float(pearsonr(preds, labels)[0]), "spearman": float(spearmanr(preds, labels)[0])}
    preds = logits.argmax(-1)
    accuracy = float(accuracy_score(labels, preds))
    if task.metric == "accuracy_f1":
        return {"accuracy": accuracy, "f1": float(f1_score(labels, preds, zero_division=0.0))}
    if task.metric == "matthews":
        return {"matthews": float(matthews_corrcoef(labels, preds)), "accuracy": accuracy}
    return {"accuracy": accuracy}
