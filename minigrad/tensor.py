"""The Tensor: a NumPy array plus what autograd needs (requires_grad, grad, grad_fn).

Methods are thin: each differentiable one calls a ``Function`` from ``minigrad.ops``, which
holds the forward and the backward side by side, or is built from other methods (``square`` is
``self * self``), its gradients (and second derivatives) then coming from the engine.

What is where, in order; each name is a heading in the file (``# -- arithmetic``):

    dtypes                      float32, int64, ...; how data becomes an array (torch's rules)
    class Tensor:
      what a tensor is          data, requires_grad, grad, grad_fn, _version; shape, dtype
      conversion                numpy(), item(), tolist(), to(), float(), double(), long()
      arithmetic                + - * / ** and their reflected and in-place forms, -x, @, matmul, maximum
      elementwise math          exp, log, tanh, relu, clamp, where, tril, ...
      reductions                sum, mean, var, max, norm, prod, ...; along a dim: softmax, sort
      shapes, views, indexing   reshape, permute, expand, t, [], gather, split, ...
      comparisons               == < & ~ and the rest: bool tensors, never part of the graph
      in-place changes          add_, mul_, fill_, []=: each bumps the version counter
      autograd                  backward, retain_grad, register_hook, detach, clone
    operand rules               binary: a scalar takes the tensor's dtype, int meets float in float
    creation                    tensor, from_numpy, zeros, ones, randn, rand, arange, *_like
    where, and helpers          the free function ``where``; what the methods above share
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minigrad import autograd, ops
from minigrad.autograd import Function, Variable
from minigrad.errors import DtypeError, InplaceError, ShapeError

# ----------------------------------------------------------------------------- dtypes

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
float16 = np.dtype(np.float16)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)
_default_float = float32


def _is_floating(dtype: np.dtype) -> bool:
    return dtype.kind == "f"


def _as_array(data: Any, dtype: np.dtype | None = None) -> np.ndarray:
    """Convert to an ndarray with torch's dtype rules: Python floats become float32, NumPy
    arrays keep their dtype, Python ints int64, bools bool."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.ndarray):
        arr = data
    elif dtype is not None:
        return np.array(data, dtype=np.dtype(dtype))
    else:
        arr = np.array(data)
        if arr.dtype == np.float64 and not isinstance(data, np.floating):
            arr = arr.astype(_default_float)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind not in "fb":
            raise DtypeError(f"cannot make a tensor from {type(data).__name__} of dtype {arr.dtype}")
    if dtype is not None:
        arr = arr.astype(np.dtype(dtype), copy=False)
    return arr


# ----------------------------------------------------------------------------- class Tensor


class Tensor(Variable):
    """An n-dimensional array that can record the operations applied to it.

    ``data`` is the NumPy array itself (torch's ``.data`` is a Tensor; here it is the raw
    array, which is what you reach for when you want to see the numbers).
    """

    # -- what a tensor is: an array, ``data``, and what autograd needs to know of it

    __array_priority__ = 1000  # numpy_array + tensor -> Tensor.__radd__
    # The autograd attributes (grad, grad_fn, _version, _hooks) default to the class's values
    # (see ``autograd.Variable``): a tensor made by an op only sets ``data``.
    _requires_grad = False

    def __init__(self, data: Any, requires_grad: bool = False, dtype: np.dtype | None = None) -> None:
        # an op's result is an array already, kept as it is; anything else follows torch's dtype rules
        self.data = data if type(data) is np.ndarray and dtype is None else _as_array(data, dtype)
        if requires_grad:
            self.requires_grad = True

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad or self.grad_fn is not None  # every op result in a graph does

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if self.grad_fn is not None and not value:
            raise InplaceError(
                "you can only change requires_grad of leaf tensors; use .detach() to get a tensor cut from the graph"
            )
        if value and not _is_floating(self.dtype):
            raise DtypeError(
                f"only tensors of floating point dtype can require gradients, got {self.dtype}: "
                "convert with .float() or .double() first"
            )
        self._requires_grad = bool(value)

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    def size(self, dim: int | None = None) -> tuple[int, ...] | int:
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(", precision=4)
        extras = []
        if self.dtype not in (float32, int64, bool_):
            extras.append(f"dtype=minigrad.{self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn={self.grad_fn!r}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body, *extras]) + ")"

    # -- conversion (new tensors come from the functions under "creation", after the class)

    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            raise InplaceError("Can't call numpy() on a tensor that requires grad. Use tensor.detach().numpy()")
        return self.data

    def item(self) -> Any:
        if self.data.size != 1:
            raise DtypeError(f"a Tensor with {self.data.size} elements cannot be converted to a Python scalar")
        return self.data.item()

    def tolist(self) -> Any:
        return self.data.tolist()

    def __bool__(self) -> bool:
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def to(self, dtype: np.dtype) -> Tensor:
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        if self.requires_grad and not _is_floating(dtype):
            return Tensor(self.data.astype(dtype))
        return ops.Cast.apply(self, dtype)

    def float(self) -> Tensor:
        return self.to(float32)

    def double(self) -> Tensor:
        return self.to(float64)

    def long(self) -> Tensor:
        return self.to(int64)

    # -- arithmetic. ``a + b`` calls ``a.__add__(b)``; ``2 + a`` calls ``a.__radd__(2)`` (the tensor on
    # the right); ``a += b`` calls ``a.__iadd__(b)``, which is ``a.add_(b)``: ``a`` changes in place and
    # its version counter goes up, so a backward that saved the old ``a`` raises instead of using the
    # new one, as in torch. ``a **= b`` has no in-place method: it makes a new tensor ``a ** b``.

    def __add__(self, other: Any) -> Tensor:
        return binary(ops.Add, self, other)

    def __radd__(self, other: Any) -> Tensor:
        return binary(ops.Add, other, self)

    def __iadd__(self, other: Any) -> Tensor:
        return self.add_(other)

    def __sub__(self, other: Any) -> Tensor:
        return binary(ops.Sub, self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return binary(ops.Sub, other, self)

    def __isub__(self, other: Any) -> Tensor:
        return self.sub_(other)

    def __mul__(self, other: Any) -> Tensor:
        return binary(ops.Mul, self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return binary(ops.Mul, other, self)

    def __imul__(self, other: Any) -> Tensor:
        return self.mul_(other)

    def __truediv__(self, other: Any) -> Tensor:
        return binary(ops.Div, _dividend(self, other), other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return binary(ops.Div, other, _dividend(self, other))

    def __itruediv__(self, other: Any) -> Tensor:
        return self.div_(other)

    def __pow__(self, other: Any) -> Tensor:
        return binary(ops.Pow, self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return binary(ops.Pow, other, self)

    def __neg__(self) -> Tensor:
        return ops.Neg.apply(self)

    def __matmul__(self, other: Tensor) -> Tensor:
        return self.matmul(other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return (other if isinstance(other, Tensor) else Tensor(other)).matmul(self)

    def matmul(self, other: Tensor) -> Tensor:
        """Matrix product; batches and broadcasts, and treats 1-D operands as NumPy does."""
        if self.data.ndim == 2 and other.data.ndim == 2:
            return ops.Mm.apply(self, other)
        return ops.MatMul.apply(self, other)

    def mm(self, other: Tensor) -> Tensor:
        """2-D matrix product (``matmul`` also batches and broadcasts)."""
        return ops.Mm.apply(self, other)

    def bmm(self, other: Tensor) -> Tensor:
        if self.ndim != 3 or other.ndim != 3 or self.shape[0] != other.shape[0]:
            raise ShapeError(f"bmm expects (b, n, m) and (b, m, p) tensors, got {self.shape} and {other.shape}")
        return self.matmul(other)

    def dot(self, other: Tensor) -> Tensor:
        if self.ndim != 1 or other.ndim != 1 or self.shape != other.shape:
            raise ShapeError(f"dot expects two 1-D tensors of one size, got {self.shape} and {other.shape}")
        return (self * other).sum()

    def outer(self, other: Tensor) -> Tensor:
        return self.reshape(-1, 1) * other.reshape(1, -1)

    def maximum(self, other: Any) -> Tensor:
        return binary(ops.Maximum, self, other)

    def minimum(self, other: Any) -> Tensor:
        return -(-self).maximum(-other)

    # -- elementwise math

    def exp(self) -> Tensor:
        return ops.Exp.apply(_floating(self))

    def log(self) -> Tensor:
        return ops.Log.apply(_floating(self))

    def sqrt(self) -> Tensor:
        return ops.Sqrt.apply(_floating(self))

    def rsqrt(self) -> Tensor:
        return ops.Rsqrt.apply(_floating(self))

    def abs(self) -> Tensor:
        return ops.Abs.apply(self)

    def sign(self) -> Tensor:
        """-1, 0 or 1 (0 for NaN); its gradient is 0, as torch's."""
        return ops.Sign.apply(self)

    def tanh(self) -> Tensor:
        return ops.Tanh.apply(_floating(self))

    def sigmoid(self) -> Tensor:
        return ops.Sigmoid.apply(_floating(self))

    def relu(self) -> Tensor:
        return ops.Relu.apply(self)

    def erf(self) -> Tensor:
        return ops.Erf.apply(_floating(self))

    def sin(self) -> Tensor:
        return ops.Sin.apply(_floating(self))

    def cos(self) -> Tensor:
        return ops.Cos.apply(_floating(self))

    def log1p(self) -> Tensor:
        return ops.Log1p.apply(_floating(self))

    def expm1(self) -> Tensor:
        return ops.Expm1.apply(_floating(self))

    def reciprocal(self) -> Tensor:
        return ops.Reciprocal.apply(_floating(self))

    def square(self) -> Tensor:
        return self * self

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002 - torch's names
        """Limit to [min, max]. Tensor bounds (cast to the input's dtype) broadcast with the input
        and get gradients where they are the answer (torch's rule: x keeps the gradient on a tie;
        where min > max the answer is max)."""
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        if isinstance(min, Tensor) or isinstance(max, Tensor):
            lo = _to_tensor(-np.inf if min is None else min, self.dtype)
            hi = _to_tensor(np.inf if max is None else max, self.dtype)
            dtype = np.result_type(self.dtype, *(b.dtype for b in (min, max) if isinstance(b, Tensor)))
            x, lo, hi = self.to(dtype), lo.to(dtype), hi.to(dtype)  # all three in the widest dtype
            try:
                np.broadcast_shapes(self.shape, lo.shape, hi.shape)
            except ValueError:
                raise ShapeError(
                    f"clamp: bounds of shapes {lo.shape} and {hi.shape} do not broadcast with the "
                    f"input's shape {self.shape}"
                ) from None
            return ops.ClampTensors.apply(x, lo, hi)
        return ops.Clamp.apply(self, min, max)

    def where(self, condition: Any, other: Any) -> Tensor:
        return where(condition, self, other)

    def masked_fill(self, mask: Any, value: Any) -> Tensor:
        return where(mask, value, self)

    def tril(self, diagonal: int = 0) -> Tensor:
        """The lower triangle of the last two dims (the rest 0)."""
        rows, cols = self.shape[-2:]
        return where(np.tri(rows, cols, diagonal, dtype=bool), self, 0)

    def triu(self, diagonal: int = 0) -> Tensor:
        rows, cols = self.shape[-2:]
        return where(~np.tri(rows, cols, diagonal - 1, dtype=bool), self, 0)

    # -- reductions, and ops along a dim

    def sum(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        dim = _all_if_empty(dim)
        if dim is None and not keepdim:
            return ops.Sum.apply(self)  # all of it: the shortest call
        return ops.Sum.apply(self, ops.normalize_dims(dim, self.ndim), keepdim)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        dims = ops.normalize_dims(_all_if_empty(dim), self.ndim)
        count = int(np.prod([self.shape[d] for d in dims]))
        return self.sum(dims, keepdim) / count

    def var(
        self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: int | None = None
    ) -> Tensor:
        """Variance with Bessel's correction by default (``correction=1``), as torch; ``var(False)``
        is ``var(unbiased=False)``, as in torch, not a dimension."""
        if isinstance(dim, bool):
            dim, unbiased = None, dim
        if correction is None:
            correction = 0 if unbiased is False else 1
        dims = ops.normalize_dims(_all_if_empty(dim), self.ndim)
        count = int(np.prod([self.shape[d] for d in dims]))
        centered = self - self.mean(dims, keepdim=True)
        return (centered * centered).sum(dims, keepdim) / max(count - correction, 0)

    def std(
        self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: int | None = None
    ) -> Tensor:
        return _sqrt_with_zero_gradient_at_zero(self.var(dim, unbiased, keepdim, correction=correction))

    def _extremum(self, dim: Any, keepdim: bool, is_min: bool) -> Any:
        if dim is None:
            return ops.MaxAll.apply(self, is_min)
        (d,) = ops.normalize_dims(dim, self.ndim) or (0,)
        indices = (
            (np.argmin if is_min else np.argmax)(self.data, axis=d, keepdims=True) if self.ndim else np.zeros((), int)
        )
        values = self.gather(d, Tensor(indices)) if self.ndim else self
        if not keepdim and self.ndim:
            values, indices = values.squeeze(d), np.squeeze(indices, d)
        return ReturnTypes(values, Tensor(indices.astype(np.int64)))

    def max(self, dim: int | Tensor | None = None, keepdim: bool = False) -> Any:
        """The largest element, or with ``dim`` a (values, indices) pair, as torch.max; given a
        tensor instead of a dim, the elementwise ``maximum``."""
        if isinstance(dim, Tensor):
            return self.maximum(dim)
        return self._extremum(dim, keepdim, is_min=False)

    def min(self, dim: int | Tensor | None = None, keepdim: bool = False) -> Any:
        if isinstance(dim, Tensor):
            return self.minimum(dim)
        return self._extremum(dim, keepdim, is_min=True)

    def _extreme_share(self, dim: Any, keepdim: bool, find: Callable) -> Tensor:
        """The max (or min) over ``dim`` as a weighted sum, the weights splitting the gradient
        evenly among tied extremes (torch's amax/amin rule)."""
        dims = ops.normalize_dims(_all_if_empty(dim), self.ndim)
        best = find(self.data, axis=dims, keepdims=True)
        hits = self.data == best
        share = hits / hits.sum(axis=dims, keepdims=True)
        return (self * Tensor(share.astype(self.dtype))).sum(dims, keepdim)

    def amax(self, dim: Any = (), keepdim: bool = False) -> Tensor:
        return self._extreme_share(dim, keepdim, np.max)

    def amin(self, dim: Any = (), keepdim: bool = False) -> Tensor:
        return self._extreme_share(dim, keepdim, np.min)

    def _arg(self, find: Callable, dim: int | None, keepdim: bool) -> Tensor:
        """Indices (int64, never in the graph) of np.argmax/np.argmin over ``dim`` or all elements."""
        if dim is None:
            return Tensor(np.asarray(find(self.data), dtype=np.int64))
        return Tensor(find(self.data, axis=dim, keepdims=keepdim).astype(np.int64))

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return self._arg(np.argmax, dim, keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return self._arg(np.argmin, dim, keepdim)

    def norm(self, p: float | str = "fro", dim: Any = None, keepdim: bool = False) -> Tensor:
        """The p-norm over ``dim`` (every dim by default): (sum |x|^p)^(1/p); "fro" is p = 2, p = 0
        counts the nonzero elements, p = +-inf is the largest or smallest |x|. At a zero vector the
        2-norm's gradient is 0, as torch's (not the 0/0 of sqrt's rule)."""
        if p == "fro":
            p = 2
        if isinstance(p, str):
            raise NotImplementedError(f"norm: p={p!r} is not supported (only numbers and 'fro')")
        if p == 2:
            return _sqrt_with_zero_gradient_at_zero((self * self).sum(dim, keepdim))
        if p == 1:
            return self.abs().sum(dim, keepdim)
        if p == 0:  # |x|^0 with 0^0 taken as 0: the count of nonzero elements, its gradient 0
            return where(self.data != 0, self.abs() ** 0, 0).sum(dim, keepdim)
        if p in (float("inf"), float("-inf")):
            return self.abs().amax(dim, keepdim) if p > 0 else self.abs().amin(dim, keepdim)
        # |x|^p, its gradient 0 where x = 0 (torch's rule; p |x|^(p-1) would be inf, or 0 * inf)
        zero = self.data == 0
        powers = where(zero, np.inf if p < 0 else 0.0, where(zero, 1, self.abs()) ** p)
        return powers.sum(dim, keepdim) ** (1 / p)

    def prod(self, dim: int | None = None, keepdim: bool = False, *, dtype: np.dtype | None = None) -> Tensor:
        """The product of the elements (along ``dim``), multiplied pairwise as a tree: log2(n)
        products of halves. Its gradients of every order are exact where elements are 0 (the
        shortcut d prod/dx = prod / x would divide by them) and need no rule of their own.
        ``dtype``: the input is cast to it first."""
        if dtype is not None:
            return self.to(dtype).prod(dim, keepdim)
        if self.ndim == 0:
            return self * 1
        d = None if dim is None else ops.normalize_dims(dim, self.ndim)[0]
        x = self.reshape(-1) if d is None else self.movedim(d, 0)
        if x.shape[0] == 0:  # the product of nothing is 1
            return self.sum(d, keepdim) * 0 + 1
        while x.shape[0] > 1:
            half = x.shape[0] // 2
            paired = x[:half] * x[half : 2 * half]
            x = ops.Cat.apply(0, paired, x[2 * half :]) if x.shape[0] % 2 else paired
        return x[0].unsqueeze(d) if keepdim and d is not None else x[0]

    def logsumexp(self, dim: Any, keepdim: bool = False) -> Tensor:
        return ops.LogSumExp.apply(self, ops.normalize_dims(dim, self.ndim), keepdim)

    def all(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        axis = None if dim is None else ops.normalize_dims(dim, self.ndim)
        return Tensor(np.asarray(self.data.all(axis=axis, keepdims=keepdim)))

    def any(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        axis = None if dim is None else ops.normalize_dims(dim, self.ndim)
        return Tensor(np.asarray(self.data.any(axis=axis, keepdims=keepdim)))

    def softmax(self, dim: int, dtype: np.dtype | None = None) -> Tensor:
        """``dtype``: the input is cast to it first (torch's rule)."""
        x = self if dtype is None else self.to(dtype)
        return ops.Softmax.apply(x, ops.normalize_dims(dim, x.ndim)[:1])

    def log_softmax(self, dim: int, dtype: np.dtype | None = None) -> Tensor:
        x = self if dtype is None else self.to(dtype)
        return ops.LogSoftmax.apply(x, ops.normalize_dims(dim, x.ndim)[:1])

    def cumsum(self, dim: int, *, dtype: np.dtype | None = None) -> Tensor:
        if dtype is not None:
            return self.to(dtype).cumsum(dim)
        if self.ndim == 0:
            return self * 1
        (d,) = ops.normalize_dims(dim, self.ndim)
        return ops.CumSum.apply(self, d)

    def sort(self, dim: int = -1, descending: bool = False, *, stable: bool = False) -> Any:
        """(values, indices) along ``dim``; the values carry the gradient back to where they came
        from. Always stable (equal elements keep their order), so ``stable`` changes nothing."""
        if self.ndim == 0:
            return ReturnTypes(self * 1, Tensor(np.zeros((), np.int64)))
        (d,) = ops.normalize_dims(dim, self.ndim)
        order = np.argsort(-self.data if descending else self.data, axis=d, kind="stable")
        indices = Tensor(order.astype(np.int64))
        return ReturnTypes(self.gather(d, indices), indices)

    def argsort(self, dim: int = -1, descending: bool = False, *, stable: bool = False) -> Tensor:
        return self.sort(dim, descending).indices

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:  # noqa: A002
        """The k largest (or smallest) along ``dim``, as (values, indices), largest first."""
        if self.ndim == 0:  # torch: a 0-d tensor is its own top k, for k 0 or 1
            if k not in (0, 1):
                raise ShapeError(f"topk: k ({k}) is too big for a 0-d tensor")
            return self.sort(dim)
        values, indices = self.sort(dim, descending=largest)
        (d,) = ops.normalize_dims(dim, self.ndim)
        return ReturnTypes(values.narrow(d, 0, k), indices.narrow(d, 0, k))

    # -- shapes, views, indexing

    def reshape(self, *shape: Any) -> Tensor:
        shape = _shape(shape)
        if shape == self.shape:
            return self
        return ops.Reshape.apply(self, shape)

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Merge dims ``start_dim`` .. ``end_dim`` into one."""
        if self.ndim == 0:
            return self.reshape(1)
        start, end = (ops.normalize_dims(d, self.ndim)[0] for d in (start_dim, end_dim))
        merged = int(np.prod(self.shape[start : end + 1]))  # not -1: an empty tensor could not infer it
        return self.reshape(*self.shape[:start], merged, *self.shape[end + 1 :]) if start <= end else self

    def unflatten(self, dim: int, sizes: Sequence[int]) -> Tensor:
        (d,) = ops.normalize_dims(dim, self.ndim)
        return self.reshape(*self.shape[:d], *sizes, *self.shape[d + 1 :])

    def squeeze(self, dim: Any = None) -> Tensor:
        dims = ops.normalize_dims(dim, self.ndim)
        return self.reshape(tuple(n for i, n in enumerate(self.shape) if not (i in dims and n == 1)))

    def unsqueeze(self, dim: int) -> Tensor:
        if not -self.ndim - 1 <= dim <= self.ndim:
            raise ShapeError(
                f"Dimension out of range (expected to be in range of [{-self.ndim - 1}, {self.ndim}], but got {dim})"
            )
        dim = dim % (self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def expand(self, *sizes: int) -> Tensor:
        sizes = _shape(sizes)
        lead = len(sizes) - self.ndim
        if lead < 0:
            raise ShapeError(
                f"expand: the number of sizes {len(sizes)} is less than the number of dims of shape {self.shape}"
            )
        target = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(sizes))
        for i, n in enumerate(self.shape):
            if n != 1 and n != target[i + lead]:
                raise ShapeError(
                    f"The expanded size of the tensor ({target[i + lead]}) must match the existing size "
                    f"({n}) at non-singleton dimension {i + lead}. Target sizes: {list(sizes)}. "
                    f"Tensor sizes: {list(self.shape)}"
                )
        return self if target == self.shape else ops.Expand.apply(self, target)

    def expand_as(self, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def permute(self, *dims: int) -> Tensor:
        dims = _shape(dims)
        if sorted(d % max(self.ndim, 1) for d in dims) != list(range(self.ndim)):
            raise ShapeError(
                f"permute: dims {dims} are not a permutation of the {self.ndim} dims of shape {self.shape}"
            )
        return ops.Permute.apply(self, tuple(d % self.ndim for d in dims))

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        if self.ndim == 0:  # dims 0 and -1 are allowed, and change nothing
            ops.normalize_dims((dim0, dim1), 0)
            return ops.Reshape.apply(self, ())
        d0, d1 = (ops.normalize_dims(d, self.ndim)[0] for d in (dim0, dim1))
        return ops.Transpose.apply(self, d0, d1)

    def t(self) -> Tensor:
        """Transpose of a matrix; 0-D and 1-D tensors come back as they are (torch's rule)."""
        ndim = self.data.ndim
        if ndim > 2:
            raise ShapeError(f"t() expects a tensor with <= 2 dimensions, but self is {ndim}D (shape {self.shape})")
        if ndim < 2:
            return self
        if not self.requires_grad:  # outside the graph: just NumPy's transposed view
            return Tensor(self.data.T)
        return ops.Transpose.apply(self, 0, 1)

    @property
    def T(self) -> Tensor:
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self) -> Tensor:
        return ops.Transpose.apply(self, self.ndim - 2, self.ndim - 1)

    def movedim(self, source: int | Sequence[int], destination: int | Sequence[int]) -> Tensor:
        """Move dim ``source`` to place ``destination`` (or each of several to its place), the
        other dims keeping their order in the places left."""
        src, dst = _dim_list(source, self.ndim), _dim_list(destination, self.ndim)
        if len(src) != len(dst) or len(set(src)) != len(src) or len(set(dst)) != len(dst):
            raise ShapeError(f"movedim: source {source} and destination {destination} must be as many distinct dims")
        if not self.ndim:
            return self
        order: list[int | None] = [None] * self.ndim
        for s, d in zip(src, dst):
            order[d] = s
        rest = iter(d for d in range(self.ndim) if d not in src)
        return self.permute(*(next(rest) if d is None else d for d in order))

    def flip(self, dims: Any) -> Tensor:
        flipped = set(ops.normalize_dims(dims, self.ndim))
        return self[tuple(slice(None, None, -1) if d in flipped else slice(None) for d in range(self.ndim))]

    def roll(self, shifts: Any, dims: Any = None) -> Tensor:
        """Shift elements along ``dims`` by ``shifts``, wrapping around; without ``dims``, the
        flattened tensor, shape kept."""
        if dims is None:
            return self.reshape(-1).roll(shifts, 0).reshape(self.shape)
        out = self
        for shift, dim in zip(np.atleast_1d(shifts), np.atleast_1d(dims)):
            (d,) = ops.normalize_dims(int(dim), self.ndim)
            n = self.shape[d]
            out = out.index_select(d, (np.arange(n) - int(shift)) % n) if n else out
        return out

    def repeat(self, *sizes: Any) -> Tensor:
        """Tile the tensor ``sizes[i]`` times along dim i (new leading dims for extra sizes), as torch.repeat."""
        sizes = _shape(sizes)
        if len(sizes) < self.ndim:
            raise ShapeError(f"repeat needs at least {self.ndim} sizes for a {self.ndim}-D tensor, got {len(sizes)}")
        shape = (1,) * (len(sizes) - self.ndim) + self.shape
        interleaved = self.reshape(*(n for side in shape for n in (1, side)))
        expanded = interleaved.expand(*(n for r, side in zip(sizes, shape) for n in (r, side)))
        return expanded.reshape(*(r * side for r, side in zip(sizes, shape)))

    def tile(self, dims: Sequence[int]) -> Tensor:
        dims = tuple(dims)
        return self.repeat(*((1,) * (self.ndim - len(dims)) + dims))

    def repeat_interleave(
        self, repeats: int | Tensor, dim: int | None = None, *, output_size: int | None = None
    ) -> Tensor:
        """Each element ``repeats`` times (or repeats[i] times for element i) along ``dim``; without
        ``dim``, of the flattened tensor. ``output_size``, torch's hint, must be the length made."""
        if dim is None:
            return self.reshape(-1).repeat_interleave(repeats, 0, output_size=output_size)
        (d,) = ops.normalize_dims(dim, self.ndim)
        counts = repeats.data if isinstance(repeats, Tensor) else repeats
        index = np.repeat(np.arange(self.shape[d]), counts)
        if output_size is not None and output_size != index.size:
            raise ShapeError(f"repeat_interleave: output_size={output_size}, but the repeats make {index.size}")
        return self.index_select(d, index)

    def __getitem__(self, index: Any) -> Tensor:
        return ops.Index.apply(self, ops.normalize_index(index))

    def narrow(self, dim: int, start: int | Tensor, length: int) -> Tensor:
        """``length`` elements along ``dim`` from ``start`` (a negative start counts from the end;
        a 0-d tensor start is read as its number)."""
        (d,) = ops.normalize_dims(dim, self.ndim)
        n = self.shape[d]
        start = int(start)
        if not -n <= start <= n or start % max(n, 1) + length > n or length < 0:
            raise ShapeError(f"narrow: start {start} and length {length} do not fit dim {d} of size {n}")
        start = start + n if start < 0 else start
        return self[(slice(None),) * d + (slice(start, start + length),)]

    def split(self, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
        """Pieces of ``split_size`` along ``dim`` (the last may be smaller), or of the given sizes."""
        (d,) = ops.normalize_dims(dim, self.ndim)
        n = self.shape[d]
        if isinstance(split_size_or_sections, (int, np.integer)):
            size = int(split_size_or_sections)
            sizes = [min(size, n - start) for start in range(0, n, size)] or [0]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ShapeError(f"split sizes {sizes} do not add up to the dim's size {n}")
        starts = np.cumsum([0, *sizes[:-1]])
        return tuple(self.narrow(d, int(s), k) for s, k in zip(starts, sizes))

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        (d,) = ops.normalize_dims(dim, self.ndim)
        return self.split(max(-(-self.shape[d] // chunks), 1), d)

    def unbind(self, dim: int = 0) -> tuple[Tensor, ...]:
        (d,) = ops.normalize_dims(dim, self.ndim)
        return tuple(self[(slice(None),) * d + (i,)] for i in range(self.shape[d]))

    def index_select(self, dim: int, index: Any) -> Tensor:
        if self.ndim == 0:  # the one element, at index 0
            return self.gather(dim, Tensor(np.asarray(index.data if isinstance(index, Tensor) else index).reshape(())))
        (d,) = ops.normalize_dims(dim, self.ndim)
        idx = np.asarray(index.data if isinstance(index, Tensor) else index, dtype=np.int64).reshape(-1)
        return self[(slice(None),) * d + (idx,)]

    def gather(self, dim: int, index: Tensor) -> Tensor:
        """out[i][j][k] = self[index[i][j][k]][j][k] for dim=0, and so on (torch.gather)."""
        idx = (index.data if isinstance(index, Tensor) else np.asarray(index)).astype(np.int64, copy=False)
        if idx.size == 0:  # nothing gathered: torch checks no more than that
            return self.reshape(-1)[idx]
        if self.ndim == 0 and idx.ndim <= 1:  # torch: a 0-d tensor gathers as a 1-element 1-D one
            ops.normalize_dims(dim, 0)
            return self.reshape(1)[idx]
        if idx.ndim != self.ndim:
            raise ShapeError(f"gather: index has {idx.ndim} dims but the tensor has {self.ndim} (shape {self.shape})")
        (dim,) = ops.normalize_dims(dim, self.ndim)
        grid = [np.arange(n).reshape([-1 if i == d else 1 for i in range(idx.ndim)]) for d, n in enumerate(idx.shape)]
        grid[dim] = idx
        return ops.Index.apply(self, tuple(grid))

    def scatter_add(self, dim: int, index: Any, src: Tensor) -> Tensor:
        """A copy of self with ``src[i][j]`` added at ``[index[i][j]][j]`` for dim 0 (and so on):
        repeated indices add up; src's gradient is gathered back from the same places."""
        if self.ndim == 0:  # the one element, at index 0
            return self + src.gather(dim, index)
        (d,) = ops.normalize_dims(dim, self.ndim)
        idx = np.asarray(index.data if isinstance(index, Tensor) else index, dtype=np.int64)
        grid = [np.arange(n).reshape([-1 if i == k else 1 for i in range(idx.ndim)]) for k, n in enumerate(idx.shape)]
        grid[d] = idx
        src = src[tuple(slice(n) for n in idx.shape)]
        return self + ops.IndexAdd.apply(src, self.shape, tuple(np.broadcast_arrays(*grid)))

    # -- comparisons (bool tensors, never part of the graph)

    def _compare(self, other: Any, op: Callable) -> Tensor:
        other = other.data if isinstance(other, Tensor) else other
        return Tensor(np.asarray(op(self.data, other)))

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, np.equal)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, np.not_equal)

    __hash__ = object.__hash__  # by identity (``==`` is elementwise), as in torch

    def __lt__(self, other: Any) -> Tensor:
        return self._compare(other, np.less)

    def __le__(self, other: Any) -> Tensor:
        return self._compare(other, np.less_equal)

    def __gt__(self, other: Any) -> Tensor:
        return self._compare(other, np.greater)

    def __ge__(self, other: Any) -> Tensor:
        return self._compare(other, np.greater_equal)

    def __invert__(self) -> Tensor:
        return Tensor(~self.data)

    def __and__(self, other: Any) -> Tensor:
        return self._compare(other, np.logical_and)

    def __or__(self, other: Any) -> Tensor:
        return self._compare(other, np.logical_or)

    # -- in-place changes: each bumps the version counter; ``x += y`` is ``x.add_(y)`` (``__iadd__``)

    def _records(self, other: Any = None) -> bool:
        """Must an in-place change of this tensor (by ``other``) join the graph? Yes when grad
        mode is on and this tensor or ``other`` requires grad; otherwise the array is just written."""
        return autograd.is_grad_enabled() and (self.requires_grad or getattr(other, "requires_grad", False))

    def _inplace(self, fn: Callable[..., Tensor], *args: Any) -> Tensor:
        """Record out-of-place ``fn(self, *args)`` and write the result into this tensor: the
        result's graph is grafted onto ``self`` (its old value is kept in a snapshot for
        backward). A leaf that requires grad may only be changed under ``no_grad()``."""
        if self.requires_grad and self.grad_fn is None:
            raise InplaceError(
                f"a leaf Tensor that requires grad (shape {self.shape}) is being used in an "
                "in-place operation: do it under minigrad.no_grad() (as optimizers do) or "
                "use the out-of-place op"
            )
        self._check_writable()
        snapshot = Tensor(self.data.copy())
        snapshot._requires_grad, snapshot.grad_fn = self._requires_grad, self.grad_fn
        result = fn(snapshot, *args)
        self.grad_fn, self._requires_grad = result.grad_fn, result.requires_grad
        self.data[...] = result.data
        self._version += 1
        return self

    def _check_writable(self) -> None:
        if not self.data.flags.writeable:
            raise InplaceError(
                "this tensor's memory is shared across elements (a view from expand()): clone() it "
                "before changing it in place"
            )

    def _update(self, ufunc: np.ufunc, other: Any, out_of_place: Callable[[Tensor, Any], Tensor]) -> Tensor:
        """``self = ufunc(self, other)`` in place. Outside the graph NumPy writes straight into
        this tensor's array (no temporaries: how optimizers and ``p -= lr * p.grad`` stay
        cheap); inside it, the out-of-place op is recorded and grafted on (``_inplace``)."""
        if self._records(other):
            return self._inplace(out_of_place, other)
        self._check_writable()
        value = other.data if isinstance(other, Tensor) else other
        try:
            ufunc(self.data, value, out=self.data, casting="same_kind")
        except TypeError:  # NumPy's UFuncTypeError: e.g. a float result into an integer tensor
            raise DtypeError(
                f"result type of {ufunc.__name__} can't be cast to this tensor's dtype {self.dtype} in place: "
                "use the out-of-place op"
            ) from None
        except ValueError:
            raise ShapeError(
                f"output with shape {self.shape} doesn't match the broadcast shape of the in-place "
                f"{ufunc.__name__} with shape {np.shape(value)}"
            ) from None
        self._version += 1
        return self

    def add_(self, other: Any, alpha: float = 1) -> Tensor:
        if alpha != 1:
            other = other * alpha
        return self._update(np.add, other, lambda t, o: t + o)

    def sub_(self, other: Any, alpha: float = 1) -> Tensor:
        if alpha != 1:
            other = other * alpha
        return self._update(np.subtract, other, lambda t, o: t - o)

    def mul_(self, other: Any) -> Tensor:
        return self._update(np.multiply, other, lambda t, o: t * o)

    def div_(self, other: Any) -> Tensor:
        return self._update(np.true_divide, other, lambda t, o: t / o)

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def fill_(self, value: Any) -> Tensor:
        if self._records():  # a value that requires grad joins only a graph this tensor is in
            return self._inplace(lambda t: t * 0 + value)
        self._check_writable()
        self.data[...] = value.data if isinstance(value, Tensor) else value
        self._version += 1
        return self

    def __setitem__(self, index: Any, value: Any) -> None:
        index = ops.normalize_index(index)
        if not self._records(value):
            self._check_writable()
            self.data[index] = value.data if isinstance(value, Tensor) else value
            self._version += 1
            return
        self._inplace(lambda t, v: ops.IndexPut.apply(t, index, v), _to_tensor(value, self.dtype))

    # -- autograd

    def backward(
        self, gradient: Tensor | None = None, retain_graph: bool | None = None, create_graph: bool = False
    ) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (see ``minigrad.autograd``)."""
        seed = autograd.default_grad(self, gradient)
        retain_graph = create_graph if retain_graph is None else retain_graph
        autograd.backward([self], [seed], retain_graph, create_graph)

    def retain_grad(self) -> None:
        """Keep ``.grad`` on a non-leaf tensor too (leaves always keep theirs)."""
        if self.grad_fn is not None:
            self.grad_fn.retained = weakref.ref(self)

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> _HookHandle:
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned tensor replaces it."""
        if not self.requires_grad:
            raise DtypeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is None:
            if not isinstance(self._hooks, list):
                self._hooks = []
            hooks = self._hooks
        else:
            if not isinstance(self.grad_fn.hooks, list):
                self.grad_fn.hooks = []
            hooks = self.grad_fn.hooks
        hooks.append(hook)
        return _HookHandle(hooks, hook)

    def detach(self) -> Tensor:
        """The same data (shared, not copied) cut from the graph."""
        return Tensor(self.data)

    def clone(self) -> Tensor:
        return ops.Clone.apply(self)


# ----------------------------------------------------------------------------- operand rules


def binary(cls: type[Function], a: Any, b: Any) -> Tensor:
    """Apply a two-operand op after torch's operand rules: a Python scalar takes the tensor's
    dtype, and an integer tensor meeting a float tensor is promoted to the float dtype."""
    if not isinstance(a, Tensor):
        a = _to_tensor(a, b.dtype)
    elif not isinstance(b, Tensor):
        b = _to_tensor(b, a.dtype)
    if a.data.dtype != b.data.dtype:
        fa, fb = _is_floating(a.dtype), _is_floating(b.dtype)
        if fa and not fb:
            b = Tensor(b.data.astype(a.dtype))
        elif fb and not fa:
            a = Tensor(a.data.astype(b.dtype))
    return cls.apply(a, b)


def _dividend(t: Tensor, other: Any) -> Tensor:
    """The tensor operand of a true division, in float when the other operand is an integer: two
    integer operands divide in float, as in torch (7 / 2 is 3.5)."""
    if not _is_floating(getattr(other, "dtype", np.dtype(type(other)))):
        return _floating(t)
    return t


def _floating(t: Tensor) -> Tensor:
    """torch's rule for a float-valued function (exp, sqrt, true division ...) of an integer or bool
    tensor: it is computed in the default float dtype (float32), not in NumPy's float64."""
    return t if _is_floating(t.dtype) else t.to(_default_float)


def _to_tensor(value: Any, like_dtype: np.dtype) -> Tensor:
    """Operand conversion: Python scalars take the other operand's dtype (torch's rule) unless a
    float meets an integer tensor, which gives the default float dtype."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (int, float, bool, np.number)):
        if isinstance(value, (float, np.floating)) and not _is_floating(like_dtype):
            return Tensor(np.asarray(value, dtype=_default_float))
        return Tensor(np.asarray(value, dtype=like_dtype))
    return Tensor(value)


# ----------------------------------------------------------------------------- creation

_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed minigrad's random number generator (``randn``, ``rand``, dropout, init)."""
    global _rng
    _rng = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    """The generator behind ``randn``/``rand``, for code that needs its own draws."""
    return _rng


def _shape(size: tuple) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(size)


def tensor(data: Any, dtype: np.dtype | None = None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (lists become float32/int64/bool, arrays keep their dtype)."""
    arr = _as_array(data, dtype)
    return Tensor(arr.copy() if arr is data else arr, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with ``array`` (its dtype kept)."""
    if not isinstance(array, np.ndarray):
        raise DtypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


def _factory(array: np.ndarray, dtype: np.dtype | None, requires_grad: bool) -> Tensor:
    return Tensor(array.astype(dtype or _default_float, copy=False), requires_grad=requires_grad)


def randn(*size: int, dtype: np.dtype | None = None, requires_grad: bool = False) -> Tensor:
    return _factory(_rng.standard_normal(_shape(size)), dtype, requires_grad)


def rand(*size: int, dtype: np.dtype | None = None, requires_grad: bool = False) -> Tensor:
    return _factory(_rng.random(_shape(size)), dtype, requires_grad)


def zeros(*size: int, dtype: np.dtype | None = None, requires_grad: bool = False) -> Tensor:
    return _factory(np.zeros(_shape(size)), dtype, requires_grad)


def ones(*size: int, dtype: np.dtype | None = None, requires_grad: bool = False) -> Tensor:
    return _factory(np.ones(_shape(size)), dtype, requires_grad)


def full(size: Sequence[int], fill_value: Any, dtype: np.dtype | None = None, requires_grad: bool = False) -> Tensor:
    return _factory(np.full(tuple(size), fill_value), dtype, requires_grad)


def arange(start: Any, end: Any = None, step: Any = 1, dtype: np.dtype | None = None) -> Tensor:
    """Like torch.arange: int64 for integer arguments, the default float dtype otherwise."""
    values = np.arange(start, end, step) if end is not None else np.arange(start)
    if dtype is None:
        dtype = int64 if values.dtype.kind in "iu" else _default_float
    return Tensor(values.astype(dtype))


def zeros_like(t: Tensor, dtype: np.dtype | None = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad)


def ones_like(t: Tensor, dtype: np.dtype | None = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad)


def randn_like(t: Tensor, dtype: np.dtype | None = None, requires_grad: bool = False) -> Tensor:
    return randn(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def rand_like(t: Tensor, dtype: np.dtype | None = None, requires_grad: bool = False) -> Tensor:
    return rand(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def full_like(t: Tensor, fill_value: Any, dtype: np.dtype | None = None, requires_grad: bool = False) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, requires_grad=requires_grad)


# ----------------------------------------------------------------------------- where, and helpers


def where(condition: Any, input: Any, other: Any) -> Tensor:  # noqa: A002 - torch's name
    """Elementwise ``input if condition else other``; gradients flow to the chosen side."""
    cond = condition if isinstance(condition, Tensor) else Tensor(np.asarray(condition, dtype=bool))
    a = input if isinstance(input, Tensor) or isinstance(other, Tensor) else Tensor(input)
    like = a.dtype if isinstance(a, Tensor) else other.dtype
    a, b = _to_tensor(a, like), _to_tensor(other, like)
    if a.dtype != b.dtype:
        common = np.result_type(a.dtype, b.dtype)
        a, b = a.to(common), b.to(common)
    return ops.Where.apply(cond, a, b)


class ReturnTypes(tuple):
    """``(values, indices)`` from ``max(dim)``/``min(dim)``, readable by name as in torch."""

    def __new__(cls, values: Tensor, indices: Tensor) -> ReturnTypes:
        return super().__new__(cls, (values, indices))

    @property
    def values(self) -> Tensor:
        return self[0]

    @property
    def indices(self) -> Tensor:
        return self[1]


class _HookHandle:
    """What ``register_hook`` returns: ``handle.remove()`` takes the hook away."""

    def __init__(self, hooks: list, hook: Callable) -> None:
        self.hooks, self.hook = hooks, hook

    def remove(self) -> None:
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


def _sqrt_with_zero_gradient_at_zero(t: Tensor) -> Tensor:
    """sqrt(t), whose gradient is 0 (not sqrt's 1/0) where t is 0: torch's rule for std and norm,
    where t = 0 means every element equal (or zero), a point of no change in any direction."""
    zero = t.data == 0
    return where(zero, 1, t).sqrt() * Tensor((~zero).astype(t.dtype))


def _dim_list(dims: int | Sequence[int], ndim: int) -> list[int]:
    """One dim or several, each made non-negative (order and repeats kept, unlike ``normalize_dims``)."""
    dims = [dims] if isinstance(dims, (int, np.integer)) else list(dims)
    return [(ops.normalize_dims(d, ndim) or (0,))[0] for d in dims]  # a 0-d tensor's only dim is 0 (or -1)


def _all_if_empty(dim: Any) -> Any:
    """torch reads ``dim=()`` (or ``[]``) in a reduction as every dimension."""
    if dim is not None and not isinstance(dim, (int, np.integer)) and len(dim) == 0:
        return None
    return dim
