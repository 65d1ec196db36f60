"""Torch-style free functions (``minigrad.mm(a, b)``, ``minigrad.cat([...])``, ...): each is the
Tensor method of the same name, or an op that takes several tensors at once."""

from __future__ import annotations

import builtins
import string
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
    (dim,) = ops.normalize_dims(
        dim, builtins.max(t.ndim for t in tensors)
    )  # 1-D empty tensors beside others do not count
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
    """beta * input + alpha * (mat1 @ mat2), in one op (``input`` broadcasts to the product's shape)."""
    return ops.Addmm.apply(input, mat1, mat2, beta, alpha)


def baddbmm(input: Tensor, batch1: Tensor, batch2: Tensor, *, beta: float = 1, alpha: float = 1) -> Tensor:  # noqa: A002
    """beta * input + alpha * (batch1 @ batch2), batch by batch."""
    return beta * input + alpha * batch1.bmm(batch2)


def einsum(equation: str | Tensor, *operands: Any) -> Tensor:
    """Sums of products over named indices, ``einsum("bij,bjk->bik", a, b)``, as torch.einsum:
    ``...`` for leading dims (broadcast between operands), an implicit output (the letters seen
    once, in order), a letter repeated within one operand for its diagonal. The operands may come
    as one list, ``einsum("ij,jk", [a, b])``, and the indices as torch's sublists,
    ``einsum(a, [0, 1], b, [1, 2], [0, 2])``."""
    if isinstance(equation, Tensor):
        equation, operands = _sublist_equation((equation, *operands))
    elif not isinstance(equation, str):
        raise ShapeError(
            f"einsum: the first argument is the equation (a str) or a tensor (torch's sublist form), got "
            f"{type(equation).__name__}: call einsum('ij,jk->ik', a, b) or einsum('ij,jk->ik', [a, b])"
        )
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    equation, operands = _explicit_einsum(equation, operands)
    return ops.Einsum.apply(equation, *operands)


def _sublist_equation(args: tuple) -> tuple[str, tuple[Tensor, ...]]:
    """torch's sublist form, ``(a, [0, 1], b, [1, 2], [0, 2])``, as ``("ab,bc->ac", (a, b))``: index
    i is the i-th of a-z then A-Z, ``...`` is ``...``; a last sublist without a tensor is the output."""

    def subscript(sublist: Any) -> str:
        if not isinstance(sublist, (list, tuple)) or not builtins.all(
            i is Ellipsis or (isinstance(i, int) and 0 <= i < 52) for i in sublist
        ):
            raise ShapeError(f"einsum: {sublist!r} is not a sublist (a list of indices in [0, 52), or ...)")
        return "".join("..." if i is Ellipsis else string.ascii_letters[i] for i in sublist)

    pairs, output = (args[:-1], args[-1]) if len(args) % 2 else (args, None)
    operands = pairs[0::2]
    for t in operands:
        if not isinstance(t, Tensor):
            raise ShapeError(f"einsum: in the sublist form each sublist follows a tensor, got {type(t).__name__}")
    equation = ",".join(subscript(s) for s in pairs[1::2])
    return (equation if output is None else f"{equation}->{subscript(output)}"), operands


def _explicit_einsum(equation: str, operands: Sequence[Tensor]) -> tuple[str, list[Tensor]]:
    """The equation with ``...`` written out in fresh capital letters and the output made explicit,
    and the operands with ``...`` dims of size 1 expanded to their partners' sizes."""
    lhs, arrow, out = equation.replace(" ", "").partition("->")
    specs = lhs.split(",")
    if len(specs) != len(operands):
        raise ShapeError(f"einsum {equation!r}: {len(specs)} subscripts for {len(operands)} operands")
    letters = [s.replace("...", "") for s in specs]
    for s, rest, t in zip(specs, letters, operands):
        if (rest and not rest.isalpha()) or len(rest) > t.ndim or ("..." not in s and len(rest) != t.ndim):
            raise ShapeError(f"einsum {equation!r}: subscript {s!r} does not fit an operand of shape {t.shape}")
    spans = [t.ndim - len(rest) if "..." in s else 0 for s, rest, t in zip(specs, letters, operands)]
    ellipsis = "".join([c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in equation][: builtins.max(spans)])
    specs = [s.replace("...", ellipsis[len(ellipsis) - n :]) for s, n in zip(specs, spans)]
    if arrow:
        out = out.replace("...", ellipsis)
    else:  # numpy's and torch's implicit output: the ... dims, then the letters seen once, sorted
        joined = "".join(letters)
        out = ellipsis + "".join(sorted(c for c in set(joined) if joined.count(c) == 1))
    size: dict[str, int] = {}
    for spec, t in zip(specs, operands):
        for c, n in zip(spec, t.shape):
            seen = size.setdefault(c, n)
            if seen != n and (c not in ellipsis or 1 not in (seen, n)):  # only ... dims broadcast
                raise ShapeError(f"einsum {equation!r}: letter {c!r} has sizes {seen} and {n} in different places")
            size[c] = n if seen == 1 else seen
    operands = [t.expand(tuple(size[c] for c in spec)) for spec, t in zip(specs, operands)]  # ... dims broadcast
    return ",".join(specs) + "->" + out, operands


def take_along_dim(input: Tensor, indices: Tensor, dim: int | None = None) -> Tensor:  # noqa: A002
    """``gather`` with ``indices`` broadcast against ``input`` outside ``dim``; without ``dim``, of
    the flattened input at the flattened indices."""
    if dim is None:
        return take_along_dim(input.reshape(-1), indices.reshape(-1), 0)
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
