"""Gradient utilities."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from minigrad.tensor import Tensor


def clip_grad_norm_(parameters: Iterable[Tensor], max_norm: float, norm_type: float = 2.0) -> Tensor:
    """Scale all gradients together so their joint norm is at most ``max_norm``; return the norm before."""
    grads = [p.grad.data for p in parameters if p.grad is not None]
    if not grads:
        return Tensor(np.zeros(()))
    if norm_type == float("inf"):
        total = max(float(np.abs(g).max()) for g in grads)
    else:
        total = float(sum((np.abs(g) ** norm_type).sum() for g in grads) ** (1.0 / norm_type))
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for g in grads:
            g *= scale
    return Tensor(np.asarray(total, dtype=grads[0].dtype))
