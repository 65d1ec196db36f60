"""Keeping the best model, not only the last, and stopping when validation stops improving.

The Trainer's ``load_best_model_at_end``, ``metric_for_best_model`` and ``EarlyStoppingCallback``,
with their meaning, for all three loops: after each evaluation ``update`` compares the metric with
the best so far (higher is better, except for ``loss``), keeps a copy of the weights when it
improved, and counts the evaluations since the last improvement; ``should_stop`` says when that
count reaches the patience. The copy lives in memory (on the CPU) and goes into each checkpoint as
``best_model.safetensors``, so a resumed run still ends with the best model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

BEST_WEIGHTS_FILE = "best_model.safetensors"


class ModelSelection:
    """The best evaluation so far and, when asked for, its weights."""

    def __init__(self, metric: str, keep_weights: bool = False, patience: int | None = None) -> None:
        self.metric, self.keep_weights, self.patience = metric, keep_weights, patience
        self.greater_is_better = metric != "loss"
        self.best: dict[str, Any] | None = None  # {"step", "epoch", "metric", "value"}
        self.evaluations_without_improvement = 0
        self.weights: dict[str, torch.Tensor] | None = None

    def update(self, model: torch.nn.Module, metrics: dict[str, float], step: int, epoch: float) -> bool:
        """Record one evaluation; True when it is the best so far."""
        value = metrics[self.metric]
        best = self.best["value"] if self.best else None
        improved = best is None or (value > best if self.greater_is_better else value < best)
        if improved:
            self.best = {"step": step, "epoch": epoch, "metric": self.metric, "value": value}
            self.evaluations_without_improvement = 0
            if self.keep_weights:
                self.weights = {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}
        else:
            self.evaluations_without_improvement += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.evaluations_without_improvement >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        """Put the best weights back into ``model`` (no-op when none were kept)."""
        if self.weights is not None:
            unwrap(model).load_state_dict(self.weights)

    def state(self) -> dict[str, Any]:
        """What a checkpoint records besides the weights."""
        return {"best": self.best, "evaluations_without_improvement": self.evaluations_without_improvement}

    def save(self, folder: Path) -> None:
        if self.weights is not None:
            # tied weights (the word embeddings and a decoder) are one tensor: save each name its own copy
            save_file({k: v.contiguous().clone() for k, v in self.weights.items()}, str(folder / BEST_WEIGHTS_FILE))

    def load(self, folder: Path, state: dict[str, Any] | None) -> None:
        """Back to what a checkpoint saved (``state`` from its ``progress.json``)."""
        state = state or {}
        self.best = state.get("best")
        self.evaluations_without_improvement = state.get("evaluations_without_improvement", 0)
        weights = folder / BEST_WEIGHTS_FILE
        self.weights = load_file(str(weights)) if self.keep_weights and weights.is_file() else None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)
