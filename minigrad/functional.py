"""Torch-style free functions (``minigrad.mm(a, b)``, ``minigrad.cat([...])``, ...): each is the
Tensor method of the same name, or an op that takes several tensors at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minigrad import ops
from minigrad.errors import ShapeError
from minigrad.tensor import Tensor, where


def mm(input: Tensor, mat2: Tensor) -> Tensor:  # noqa: A002 - torch's names
    return ops.Mm.apply(input, mat2)  # Tensor.mm, one call shorter: the RNN example's hot path


def matmul(input: Tensor, other: Tensor) -> Tensor:  # noqa: A002
    return input.matmul(other)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along an existing dimension."""
    if not tensors:
        raise ShapeError("cat expects a non-empty sequence of tensors")
    (dim,) = ops.normalize_dims(dim, tensors[0].ndim)
    return ops.Cat.apply(dim, *tensors)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join same-shaped tensors along a new dimension."""
    if not tensors:
        raise ShapeError("stack expects a non-empty sequence of tensors")
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ShapeError(f"stack expects each tensor to be equal size, but got shapes {sorted(shapes)}")
    return cat([t.unsqueeze(dim) for t in tensors], dim=dim % (tensors[0].ndim + 1))


def maximum(input: Tensor, other: Tensor) -> Tensor:  # noqa: A002
    return input.maximum(other)


def addmm(input: Tensor, mat1: Tensor, mat2: Tensor, *, beta: float = 1, alpha: float = 1) -> Tensor:  # noqa: A002
    """beta * input + alpha * (mat1 @ mat2)."""
    return beta * input + alpha * mat1.mm(mat2)


def baddbmm(input: Tensor, batch1: Tensor, batch2: Tensor, *, beta: float = 1, alpha: float = 1) -> Tensor:  # noqa: A002
    """beta * input + alpha * (batch1 @ batch2), batch by batch."""
    return beta * input + alpha * batch1.bmm(batch2)


def einsum(equation: str, *operands: Tensor) -> Tensor:
    """Sums of products over named indices, ``einsum("bij,bjk->bik", a, b)``, as torch.einsum
    (without ``...`` or a letter repeated within one operand)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return ops.Einsum.apply(equation, *operands)


def take_along_dim(input: Tensor, indices: Tensor, dim: int) -> Tensor:  # noqa: A002
    """``gather`` with ``indices`` broadcast against ``input`` outside ``dim``."""
    (d,) = ops.normalize_dims(dim, input.ndim)
    idx = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
    shape = np.broadcast_shapes(
        input.shape[:d] + (1,) + input.shape[d + 1 :], idx.shape[:d] + (1,) + idx.shape[d + 1 :]
    )
    source = input.expand(*shape[:d], input.shape[d], *shape[d + 1 :])
    return source.gather(d, Tensor(np.broadcast_to(idx, shape[:d] + (idx.shape[d],) + shape[d + 1 :]).copy()))


def _method(name: str) -> Any:
    def fn(input: Tensor, *args: Any, **kwargs: Any) -> Any:  # noqa: A002
        return getattr(input, name)(*args, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``minigrad.{name}(t, ...)`` is ``t.{name}(...)``."
    return fn


_METHODS = (
    "exp log sqrt abs tanh sigmoid relu softmax log_softmax logsumexp sum mean var max min "
    "argmax argmin gather clamp reshape transpose permute squeeze unsqueeze t flatten "
    "sin cos log1p expm1 square rsqrt reciprocal sign minimum masked_fill tril triu outer dot bmm std "
    "amax amin norm unflatten movedim narrow flip split chunk unbind tile index_select all any "
    "cumsum roll repeat_interleave sort argsort topk scatter_add"
).split()
globals().update({name: _method(name) for name in _METHODS})

__all__ = [
    "mm", "matmul", "cat", "stack", "maximum", "where", "addmm", "baddbmm", "einsum", "take_along_dim", *_METHODS,
]  # fmt: skip
