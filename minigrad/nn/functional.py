"""Losses and layers as functions, composed from minigrad's differentiable ops (so their
gradients come from the engine, not from hand-written formulas)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minigrad import ops
from minigrad.errors import ShapeError
from minigrad.tensor import Tensor, generator


def _reduce(loss: Tensor, reduction: str, count: Any = None) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / (count if count is not None else max(loss.numel(), 1))
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def cross_entropy(
    input: Tensor,  # noqa: A002 - torch's names
    target: Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy of logits ``input`` (N, C) against class indices ``target`` (N,), as torch's:
    targets equal to ``ignore_index`` count for nothing; ``label_smoothing`` mixes the one-hot
    target with the uniform distribution."""
    if input.ndim != 2 or target.ndim != 1 or input.shape[0] != target.shape[0]:
        raise ShapeError(f"cross_entropy expects input (N, C) and target (N,), got {input.shape} and {target.shape}")
    labels = np.asarray(target.data, dtype=np.int64)
    keep = labels != ignore_index
    log_probs = input.log_softmax(-1)
    picked = log_probs.gather(1, Tensor(np.where(keep, labels, 0)[:, None])).squeeze(1)
    loss = -picked
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * log_probs.mean(-1)
    loss = loss * Tensor(keep.astype(input.dtype))
    return _reduce(loss, reduction, count=int(keep.sum()))


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    diff = input - target
    return _reduce(diff * diff, reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """-(t log s(x) + (1 - t) log(1 - s(x))) written as softplus(x) - t x, stable for any x."""
    return _reduce(ops.Softplus.apply(input) - target * input, reduction)


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:  # noqa: A002
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity in eval;
    p = 1 zeros everything, as torch)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0
    keep = generator().random(input.shape) >= p
    return input * Tensor((keep / (1 - p)).astype(input.dtype))


def gelu(input: Tensor) -> Tensor:  # noqa: A002
    """The exact GELU, x * Phi(x) = x/2 (1 + erf(x / sqrt 2)), as torch and BERT use it."""
    return input * 0.5 * (1 + (input * (1 / math.sqrt(2))).erf())


def relu(input: Tensor) -> Tensor:  # noqa: A002
    return input.relu()


def layer_norm(
    input: Tensor,  # noqa: A002
    normalized_shape: tuple[int, ...],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize over the last ``len(normalized_shape)`` dims (biased variance), then scale and shift."""
    normalized_shape = tuple(normalized_shape)
    if input.shape[-len(normalized_shape) :] != normalized_shape:
        raise ShapeError(f"layer_norm: input shape {input.shape} does not end with {normalized_shape}")
    dims = tuple(range(input.ndim - len(normalized_shape), input.ndim))
    mean = input.mean(dims, keepdim=True)
    centered = input - mean
    var = (centered * centered).mean(dims, keepdim=True)
    out = centered / (var + eps).sqrt()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002
    out = input @ weight.mT
    return out + bias if bias is not None else out
