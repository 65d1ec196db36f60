"""Every differentiable op: its forward (NumPy) next to its backward (Tensor ops) and its rule.

Reading guide: ``forward`` computes the value from the arrays in ``x.data``; ``backward``
receives ``grad`` (dLoss/dOutput, a Tensor) and returns dLoss/dInput for each input, by the op's
local derivative, written with Tensor ops: so ``create_graph=True`` can differentiate it again.
``ctx.result`` is the op's output, for derivatives stated through it (exp, tanh, softmax ...).

Where BERT spends its time (erf, GELU, softmax, stacked matmul) ``forward`` calls one function of
``kernels``, named for the math: its plain NumPy reference, or a fast version of it (see there).

Broadcasting: when an input was broadcast (stretched) in forward, its gradient is summed
back over the stretched axes by ``unbroadcast``: one value fed many outputs, so it collects
all of their gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minigrad import kernels
from minigrad.autograd import Function, Variable
from minigrad.errors import ShapeError

# ----------------------------------------------------------------------------- helpers


def normalize_dims(dim: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """``dim`` as a sorted tuple of non-negative axes; None means every axis."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    rank = max(ndim, 1)
    out = []
    for d in dims:
        if not -rank <= d < rank:
            raise ShapeError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {d})")
        out.append(d % rank)
    return tuple(sorted(set(out))) if ndim else ()


def unbroadcast(grad: Variable, shape: tuple[int, ...]) -> Variable:
    """Sum ``grad`` over the axes that broadcasting added or stretched, giving ``shape``."""
    if grad.shape == shape:
        return grad
    return grad.sum(broadcast_axes(grad.shape, shape), keepdim=True).reshape(shape)


def broadcast_axes(grad_shape: tuple[int, ...], input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of the gradient summed to undo broadcasting an input of ``input_shape``."""
    lead = len(grad_shape) - len(input_shape)
    return tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(input_shape) if n == 1 and grad_shape[lead + i] != 1
    )


def scatter_add(grad: np.ndarray, shape: tuple[int, ...], index: tuple) -> np.ndarray:
    """Zeros of ``shape`` with ``grad`` added at ``index`` (repeated indices add up)."""
    out = np.zeros(shape, dtype=grad.dtype)
    kernels.add_at(out, index, grad)  # np.add.at(out, index, grad)
    return out


def _broadcast_error(name: str, a: Variable, b: Variable) -> ShapeError:
    sa, sb = a.shape, b.shape
    for i in range(1, max(len(sa), len(sb)) + 1):
        x = sa[-i] if i <= len(sa) else 1
        y = sb[-i] if i <= len(sb) else 1
        if x != y and 1 not in (x, y):
            dim = max(len(sa), len(sb)) - i
            return ShapeError(
                f"{name}: the size of tensor a ({x}) must match the size of tensor b ({y}) at "
                f"non-singleton dimension {dim}; shapes {sa} and {sb} do not broadcast"
            )
    return ShapeError(f"{name}: shapes {sa} and {sb} do not broadcast")


def broadcasting(name: str, fn: Any, a: Variable, b: Variable) -> np.ndarray:
    """``fn(a.data, b.data)`` with NumPy broadcasting; a shape mismatch names both shapes."""
    try:
        return fn(a.data, b.data)
    except ValueError:
        raise _broadcast_error(name, a, b) from None


# ----------------------------------------------------------------------------- arithmetic


class Add(Function):
    rule = "d(a+b)/da = 1, d(a+b)/db = 1"

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.data.shape, b.data.shape
        return broadcasting("add", np.add, a, b)

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad, ctx.shapes[0]), unbroadcast(grad, ctx.shapes[1])


class Sub(Function):
    rule = "d(a-b)/da = 1, d(a-b)/db = -1"

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.data.shape, b.data.shape
        return broadcasting("sub", np.subtract, a, b)

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad, ctx.shapes[0]), unbroadcast(-grad, ctx.shapes[1])


class Mul(Function):
    rule = "d(a*b)/da = b, d(a*b)/db = a"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return broadcasting("mul", np.multiply, a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        ga = unbroadcast(grad * b, a.shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(grad * a, b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    rule = "d(a/b)/da = 1/b, d(a/b)/db = -a/b^2"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return broadcasting("div", np.true_divide, a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        ga = unbroadcast(grad / b, a.shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(-grad * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class Pow(Function):
    """a ** b; d/da = b * a^(b-1) (0 where b = 0), d/db = a^b * a.log() (0 where a = 0 and b >= 0)."""

    rule = "d(a^b)/da = b a^(b-1), d(a^b)/db = a^b a.log()"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 ** -1 = inf, (-1) ** 0.5 = nan, quietly
            return broadcasting("pow", np.power, a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        # torch's special points: x ** 0 is constant (even at x = 0, where b a^(b-1) is 0 * inf),
        # and 0 ** b for b >= 0 does not move with b (where a^b log a is 0 * -inf)
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if ctx.needs_input_grad[0]:
                at_zero = np.broadcast_to(b.data == 0, grad.shape)
                ga = unbroadcast((grad * b * a ** (b - 1)).masked_fill(at_zero, 0), a.shape)
            if ctx.needs_input_grad[1]:
                at_zero = np.broadcast_to((a.data == 0) & (b.data >= 0), grad.shape)
                # grad outside the mask, as torch: a gradient of this gradient is NaN there (0 * log 0)
                gb = unbroadcast(grad * (ctx.result * a.log()).masked_fill(at_zero, 0), b.shape)
        return ga, gb


class Maximum(Function):
    """Elementwise max; on a tie each side gets half the gradient, and where either is NaN both
    get all of it (torch's rule: a side gets nothing only where it is the smaller)."""

    rule = "d max(a,b) = 1 to the larger input (half each on a tie)"

    @staticmethod
    def forward(ctx, a, b):
        out = broadcasting("maximum", np.maximum, a, b)
        tie = np.where(a.data == b.data, 0.5, 1.0)
        ctx.a_share = (tie * ~(a.data < b.data)).astype(out.dtype)
        ctx.b_share = (tie * ~(a.data > b.data)).astype(out.dtype)
        ctx.shapes = a.data.shape, b.data.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad * ctx.a_share, ctx.shapes[0]), unbroadcast(grad * ctx.b_share, ctx.shapes[1])


class Neg(Function):
    rule = "d(-u)/du = -1"

    @staticmethod
    def forward(ctx, x):
        return -x.data

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Clone(Function):
    rule = "d u/du = 1"

    @staticmethod
    def forward(ctx, x):
        return x.data.copy()

    @staticmethod
    def backward(ctx, grad):
        return grad


class Cast(Function):
    rule = "the gradient is cast back to the input's dtype"

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x.data.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(ctx.dtype), None


# ----------------------------------------------------------------------------- elementwise


class Exp(Function):
    rule = "d exp(u)/du = exp(u)"

    @staticmethod
    def forward(ctx, x):
        return np.exp(x.data)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.result


class Log(Function):
    rule = "d log(u)/du = 1/u"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x.data)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / x  # d log(x)/dx = 1/x


class Sqrt(Function):
    rule = "d sqrt(u)/du = 1/(2 sqrt(u))"

    @staticmethod
    def forward(ctx, x):
        return np.sqrt(x.data)

    @staticmethod
    def backward(ctx, grad):
        return grad / (2 * ctx.result)


class Abs(Function):
    rule = "d|u|/du = sign(u)"

    @staticmethod
    def forward(ctx, x):
        ctx.sign = np.nan_to_num(np.sign(x.data), nan=0.0)  # torch: no gradient through |NaN|
        return np.abs(x.data)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.sign  # d|x|/dx = sign(x), 0 at 0


class Sign(Function):
    rule = "d sign(u)/du = 0 (a step: flat on each side; torch's 0 at the step too)"

    @staticmethod
    def forward(ctx, x):
        return np.nan_to_num(np.sign(x.data), nan=0.0)  # torch: sign(NaN) = 0

    @staticmethod
    def backward(ctx, grad):
        return type(grad)(np.zeros_like(grad.data))  # zeros, even where grad is inf or NaN


class Reciprocal(Function):
    rule = "d(1/u)/du = -1/u^2"

    @staticmethod
    def forward(ctx, x):
        with np.errstate(divide="ignore"):  # 1/0 = inf, quietly
            return 1 / x.data

    @staticmethod
    def backward(ctx, grad):
        y = ctx.result
        return -grad * y * y  # -1/x^2 = -y^2: through y, finite where x is infinite


class Rsqrt(Function):
    rule = "d u^(-1/2)/du = -1/2 u^(-3/2)"

    @staticmethod
    def forward(ctx, x):
        with np.errstate(divide="ignore", invalid="ignore"):  # 1/sqrt(0) = inf; below 0 (-inf too) NaN
            return 1 / np.sqrt(x.data)

    @staticmethod
    def backward(ctx, grad):
        y = ctx.result
        return grad * -0.5 * y * y * y  # -1/2 x^(-3/2) = -1/2 y^3


class Tanh(Function):
    rule = "d tanh(u)/du = 1 - tanh(u)^2"

    @staticmethod
    def forward(ctx, x):
        return np.tanh(x.data)

    @staticmethod
    def backward(ctx, grad):
        y = ctx.result
        return grad * (1 - y * y)


class Sigmoid(Function):
    rule = "d s(u)/du = s(u) (1 - s(u))"

    @staticmethod
    def forward(ctx, x):
        data = x.data
        # exp of a non-positive number only, so no overflow for large |x|
        z = np.exp(-np.abs(data))
        return np.where(data >= 0, 1 / (1 + z), z / (1 + z)).astype(data.dtype, copy=False)

    @staticmethod
    def backward(ctx, grad):
        y = ctx.result
        return grad * y * (1 - y)


class Erf(Function):
    rule = "d erf(u)/du = 2/sqrt(pi) exp(-u^2)"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return kernels.erf(x.data)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (2 / np.sqrt(np.pi)) * (-(x * x)).exp()  # d erf(x)/dx = 2/sqrt(pi) e^(-x^2)


class Gelu(Function):
    """The exact GELU, x Phi(x), with Phi the standard normal's CDF (Hendrycks & Gimpel; BERT's
    activation). Its gradient is an op of its own, ``GeluBackward``, as in torch: one pass over the
    arrays instead of the dozen a composition of mul, add and erf takes, and still differentiable
    again."""

    rule = "d gelu(u)/du = Phi(u) + u phi(u)"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        out, ctx.kernel_backward = kernels.gelu(x.data)  # bound now: the same kernel's backward, its memo
        return out

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return GeluBackward.apply(grad, x, ctx.kernel_backward)


class GeluBackward(Function):
    """grad * gelu'(x) = grad * (Phi(x) + x phi(x)), phi the normal density, by the backward that
    Gelu's forward kernel gave (plain or fast, whatever the mode is now)."""

    rule = "d/dgrad = Phi(x) + x phi(x), d/dx = grad phi(x) (2 - x^2)"

    @staticmethod
    def forward(ctx, grad, x, kernel_backward):
        ctx.save_for_backward(grad, x)
        return kernel_backward(grad.data)

    @staticmethod
    def backward(ctx, gg):
        grad, x = ctx.saved_tensors
        pdf = (x * x * -0.5).exp() * (1 / np.sqrt(2 * np.pi))
        cdf = ((x * (1 / np.sqrt(2))).erf() + 1) * 0.5
        return gg * (cdf + x * pdf), gg * grad * pdf * (2 - x * x), None


class Sin(Function):
    rule = "d sin(u)/du = cos(u)"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.sin(x.data)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.cos()


class Cos(Function):
    rule = "d cos(u)/du = -sin(u)"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.cos(x.data)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return -grad * x.sin()


class Log1p(Function):
    """log(1 + u), exact for small u."""

    rule = "d log(1+u)/du = 1/(1+u)"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log1p(x.data)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (1 + x)


class Expm1(Function):
    """e^u - 1, exact for small u."""

    rule = "d(e^u - 1)/du = e^u"

    @staticmethod
    def forward(ctx, x):
        return np.expm1(x.data)

    @staticmethod
    def backward(ctx, grad):
        return grad * (ctx.result + 1)


class CumSum(Function):
    rule = "d cumsum(u)_j/du_i = 1 for i <= j: the gradient is summed from the end"

    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim = dim
        return np.cumsum(x.data, axis=dim)

    @staticmethod
    def backward(ctx, grad):
        d = ctx.dim
        return grad.flip(d).cumsum(d).flip(d), None


class Softplus(Function):
    """log(1 + e^x), computed without overflow; its derivative is sigmoid(x)."""

    rule = "d softplus(u)/du = sigmoid(u)"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.logaddexp(0, x.data).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.sigmoid()  # d softplus(x)/dx = sigmoid(x), its own derivative finite everywhere


class Relu(Function):
    rule = "d relu(u)/du = 1 where u > 0, else 0"

    @staticmethod
    def forward(ctx, x):
        ctx.mask = ~(x.data <= 0)  # x > 0, and NaN (torch passes the gradient through relu(NaN) = NaN)
        return np.maximum(x.data, 0)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.mask  # 1 where x > 0, else 0


class Elu(Function):
    """u for u > 0, alpha (e^u - 1) for u <= 0. NaN takes the u > 0 side's slope 1, and the
    slope's own derivative at 0 is the right side's 0 (torch's rules, both)."""

    rule = "d elu(u)/du = 1 for u > 0, alpha e^u for u <= 0"

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        negative = alpha * np.expm1(np.minimum(x.data, 0))  # e^u of u <= 0 only: no overflow
        return np.where(x.data <= 0, negative, x.data)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        below = x.where(x.data < 0, 0)  # u below 0, else the constant 0: e^below is flat from 0 up
        slope = (below.exp() * ctx.alpha).where(x.data <= 0, 1)
        return grad * slope, None


class Clamp(Function):
    rule = "d clamp(u)/du = 1 inside [min, max], else 0"

    @staticmethod
    def forward(ctx, x, lo, hi):
        data = x.data
        ctx.mask = np.ones(data.shape, dtype=bool)
        if lo is not None:
            ctx.mask &= data >= lo
        if hi is not None:
            ctx.mask &= data <= hi
        return np.clip(data, lo, hi)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.mask, None, None  # gradient passes where x was inside [lo, hi]


class ClampTensors(Function):
    """clamp(x, lo, hi) with tensor bounds (a missing one is -inf or inf). torch's rule for who gets
    the gradient: x where lo <= x <= hi, lo where x < lo < hi, hi where x > hi or lo > hi; where
    any of them is NaN, none of them."""

    rule = "d clamp(x, lo, hi) = 1 to whichever of x, lo, hi the answer is"

    @staticmethod
    def forward(ctx, x, lo, hi):
        x, lo, hi = x.data, lo.data, hi.data
        ctx.masks = (x >= lo) & (x <= hi), (x < lo) & (lo < hi), (x > hi) | (lo > hi)
        ctx.shapes = x.shape, lo.shape, hi.shape
        return np.minimum(np.maximum(x, lo), hi)

    @staticmethod
    def backward(ctx, grad):
        return tuple(unbroadcast(grad * mask, shape) for mask, shape in zip(ctx.masks, ctx.shapes))


class Where(Function):
    rule = "the gradient goes to the side the condition chose"

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.cond = np.asarray(cond.data, dtype=bool)
        ctx.shapes = a.data.shape, b.data.shape
        return np.where(ctx.cond, a.data, b.data)

    @staticmethod
    def backward(ctx, grad):
        cond = ctx.cond
        ga = unbroadcast(grad * cond, ctx.shapes[0]) if ctx.needs_input_grad[1] else None
        gb = unbroadcast(grad * ~cond, ctx.shapes[1]) if ctx.needs_input_grad[2] else None
        return None, ga, gb


# ----------------------------------------------------------------------------- reductions


class Sum(Function):
    rule = "d sum(u)/du_i = 1: the gradient is copied back to every summed element"

    @staticmethod
    def forward(ctx, x, dims=None, keepdim=False):
        """``dims=None``: every axis, giving a 0-d result."""
        ctx.shape, ctx.dims = x.data.shape, dims
        return x.data.sum(axis=dims, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad):
        # every input element contributed with weight 1: copy the gradient back out
        if ctx.dims is not None:
            grad = grad.reshape(tuple(1 if i in ctx.dims else n for i, n in enumerate(ctx.shape)))
        return Expand.apply(grad, ctx.shape), None, None


class MaxAll(Function):
    """max() or min() over all elements; ties share the gradient evenly (torch's rule)."""

    rule = "d max(u)/du_i = 1 at the maximum (shared on ties), else 0"

    @staticmethod
    def forward(ctx, x, is_min):
        value = x.data.min() if is_min else x.data.max()
        hits = x.data == value
        ctx.share = (hits / hits.sum()).astype(x.dtype)
        return np.asarray(value)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.share, None


class LogSumExp(Function):
    rule = "d logsumexp(u)/du = softmax(u)"

    @staticmethod
    def forward(ctx, x, dims, keepdim):
        m = np.max(x.data, axis=dims, keepdims=True, initial=-np.inf)  # -inf over nothing
        m = np.where(np.isfinite(m), m, 0)
        with np.errstate(divide="ignore"):  # log(0) = -inf: the logsumexp of nothing, or of -infs
            out_kept = m + np.log(np.sum(np.exp(x.data - m), axis=dims, keepdims=True))
        ctx.kept_shape = out_kept.shape
        ctx.save_for_backward(x)
        return out_kept if keepdim else np.squeeze(out_kept, axis=dims)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        kept = ctx.kept_shape
        return grad.reshape(kept) * (x - ctx.result.reshape(kept)).exp(), None, None  # softmax(x)


class Softmax(Function):
    rule = "d softmax: y * (g - sum(g * y))"

    @staticmethod
    def forward(ctx, x, dims):
        """``dims``: the one softmax axis, as a tuple (empty for a 0-d tensor)."""
        ctx.dims = dims
        return kernels.softmax(x.data, dims)

    @staticmethod
    def backward(ctx, grad):
        y = ctx.result
        # Jacobian-vector product of softmax: y * (g - sum(g * y))
        return y * (grad - (grad * y).sum(ctx.dims, keepdim=True)), None


class LogSoftmax(Function):
    rule = "d log_softmax: g - softmax(u) * sum(g)"

    @staticmethod
    def forward(ctx, x, dims):
        shifted = x.data - np.max(x.data, axis=dims, keepdims=True, initial=-np.inf)
        with np.errstate(divide="ignore"):  # an empty axis sums to 0
            out = shifted - np.log(np.sum(np.exp(shifted), axis=dims, keepdims=True))
        ctx.dims = dims
        return out

    @staticmethod
    def backward(ctx, grad):
        y = ctx.result
        return grad - y.exp() * grad.sum(ctx.dims, keepdim=True), None


class LayerNorm(Function):
    """(x - mean) / sqrt(var + eps) over the trailing ``dims`` (biased variance), times weight,
    plus bias. Backward is torch's formula, with g = grad * weight and xhat the normalized input,
    rebuilt from x with tensor ops so that the gradient is differentiable again."""

    rule = "dx = (g - mean(g) - xhat mean(g xhat)) / sqrt(var + eps), dw = sum(grad xhat), db = sum(grad)"

    @staticmethod
    def forward(ctx, x, weight, bias, dims, eps):
        ctx.dims, ctx.eps = dims, eps
        ctx.save_for_backward(x, weight)
        centered = x.data - x.data.mean(axis=dims, keepdims=True)
        out = centered / np.sqrt(np.mean(centered * centered, axis=dims, keepdims=True) + eps)  # xhat
        if weight is not None:
            out = out * weight.data
        if bias is not None:
            out = out + bias.data
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        dims, lead = ctx.dims, tuple(range(x.ndim - len(ctx.dims)))
        centered = x - x.mean(dims, keepdim=True)
        rstd = 1 / ((centered * centered).mean(dims, keepdim=True) + ctx.eps).sqrt()
        xhat = centered * rstd
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            g = grad if weight is None else grad * weight
            dx = (g - g.mean(dims, keepdim=True) - xhat * (g * xhat).mean(dims, keepdim=True)) * rstd
        if ctx.needs_input_grad[1]:
            dw = (grad * xhat).sum(lead) if lead else grad * xhat  # sum(()) would sum everything
        if ctx.needs_input_grad[2]:
            db = grad.sum(lead) if lead else grad
        return dx, dw, db, None, None


# ----------------------------------------------------------------------------- matmul


class Mm(Function):
    """2-D matrix product, ``torch.mm`` (and ``@`` on two matrices)."""

    rule = "d(A@B)/dA = G @ B^T, d(A@B)/dB = A^T @ G"

    @staticmethod
    def forward(ctx, a, b):
        x, y = a.data, b.data
        if x.ndim != 2 or y.ndim != 2:
            raise ShapeError(f"mm expects two 2-D tensors, got shapes {a.shape} and {b.shape}")
        ctx.save_for_backward(a, b)
        try:
            return x.dot(y)  # the matrix product of two matrices
        except ValueError:
            raise ShapeError(
                f"mat1 and mat2 shapes cannot be multiplied ({x.shape[0]}x{x.shape[1]} and {y.shape[0]}x{y.shape[1]})"
            ) from None

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        ga = grad.mm(b.t()) if ctx.needs_input_grad[0] else None  # dL/dA = dL/dC @ B^T
        gb = a.t().mm(grad) if ctx.needs_input_grad[1] else None  # dL/dB = A^T @ dL/dC
        return ga, gb


class Addmm(Function):
    """beta * input + alpha * (mat1 @ mat2), ``torch.addmm`` (``nn.Linear`` on a batch is
    ``addmm(bias, x, W^T)``, as in torch)."""

    rule = "d/dinput = beta G, d/dmat1 = alpha G @ mat2^T, d/dmat2 = alpha mat1^T @ G"

    @staticmethod
    def forward(ctx, input, mat1, mat2, beta, alpha):  # noqa: A002 - torch's names
        out = Mm.forward(ctx, mat1, mat2)  # checks the shapes and saves both
        ctx.shape, ctx.beta, ctx.alpha = input.shape, beta, alpha
        try:
            fits = beta == 0 or np.broadcast_shapes(input.shape, out.shape) == out.shape
        except ValueError:
            fits = False
        if not fits:
            raise ShapeError(f"addmm: input of shape {input.shape} does not broadcast to {out.shape}")
        if alpha != 1:
            out = alpha * out
        if beta != 0:  # beta = 0 ignores input, nan and inf included (torch's rule)
            out = out + (input.data if beta == 1 else beta * input.data)
        return out

    @staticmethod
    def backward(ctx, grad):
        mat1, mat2 = ctx.saved_tensors
        g_input = None
        if ctx.needs_input_grad[0]:
            g_input = unbroadcast(grad if ctx.beta == 1 else grad * ctx.beta, ctx.shape)
        grad = grad if ctx.alpha == 1 else grad * ctx.alpha
        g1 = grad.mm(mat2.t()) if ctx.needs_input_grad[1] else None
        g2 = mat1.t().mm(grad) if ctx.needs_input_grad[2] else None
        return g_input, g1, g2, None, None


class MatMul(Function):
    """Batched matrix product with NumPy's rules for 1-D operands and broadcast batch dims
    (two matrices go to ``Mm``)."""

    rule = "d(A@B)/dA = G @ B^T, d(A@B)/dB = A^T @ G"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        try:
            return kernels.matmul(a.data, b.data)
        except ValueError:
            raise ShapeError(
                f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied: the last dim of the first "
                "must equal the second-to-last (or only) dim of the second"
            ) from None

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        # view 1-D operands as matrices, as forward did: a (n,) -> (1, n); b (n,) -> (n, 1)
        a2 = a.reshape((1, *a.shape)) if len(a.shape) == 1 else a
        b2 = b.reshape((*b.shape, 1)) if len(b.shape) == 1 else b
        g2 = grad.reshape(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))
        ga = gb = None
        if ctx.needs_input_grad[0]:  # dL/dA = dL/dC @ B^T
            ga = unbroadcast(g2 @ b2.mT, a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:  # dL/dB = A^T @ dL/dC
            gb = unbroadcast(a2.mT @ g2, b2.shape).reshape(b.shape)
        return ga, gb


# ----------------------------------------------------------------------------- shapes


class Reshape(Function):
    rule = "reshape the gradient back to the input's shape"

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        try:
            return x.data.reshape(shape)
        except ValueError:
            raise ShapeError(
                f"shape {list(shape)} is invalid for input of size {x.data.size} (shape {x.shape})"
            ) from None

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape), None


class Transpose(Function):
    rule = "transpose the gradient back"

    @staticmethod
    def forward(ctx, x, dim0, dim1):
        ctx.dims = dim0, dim1
        return x.data.T if x.data.ndim == 2 and dim0 != dim1 else x.data.swapaxes(dim0, dim1)

    @staticmethod
    def backward(ctx, grad):
        return grad.transpose(*ctx.dims), None, None


class Permute(Function):
    rule = "permute the gradient back (inverse permutation)"

    @staticmethod
    def forward(ctx, x, dims):
        ctx.inverse = tuple(np.argsort(dims))
        return np.transpose(x.data, dims)

    @staticmethod
    def backward(ctx, grad):
        return grad.permute(*ctx.inverse), None


class Expand(Function):
    rule = "sum the gradient over the expanded axes"

    @staticmethod
    def forward(ctx, x, shape):
        """A read-only view, as torch's: every element of a stretched axis is one element of x."""
        ctx.shape = x.shape
        return kernels.expand(x.data, shape)  # np.broadcast_to(x.data, shape)

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad, ctx.shape), None


def normalize_index(index: Any) -> Any:
    """Turn Tensors inside an index into arrays and boolean masks into integer arrays."""
    parts = index if isinstance(index, tuple) else (index,)
    out = []
    for p in parts:
        if isinstance(p, Variable):
            p = p.data
        if isinstance(p, list):
            p = np.asarray(p)
        if isinstance(p, np.ndarray) and p.dtype == bool and p.ndim > 0:
            out.extend(np.nonzero(p))
        else:
            out.append(p)
    return tuple(out)


class Index(Function):
    """x[index]: ints, slices, None, ..., integer arrays and boolean masks."""

    rule = "scatter the gradient into zeros at the indexed places (adding repeats)"

    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.index = x.shape, index
        try:
            return x.data[index]
        except IndexError as e:
            raise ShapeError(f"index {index!r} is out of range for a tensor of shape {x.shape}: {e}") from None

    @staticmethod
    def backward(ctx, grad):
        return IndexAdd.apply(grad, ctx.shape, ctx.index), None


class IndexAdd(Function):
    """Scatter ``grad`` into zeros of ``shape`` at ``index``, adding where indices repeat (the
    backward of indexing; its own backward is indexing again)."""

    rule = "gather the gradient at the scattered places"

    @staticmethod
    def forward(ctx, grad, shape, index):
        ctx.index = index
        return scatter_add(grad.data, shape, index)

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.index], None, None


class IndexPut(Function):
    """Out-of-place ``x[index] = value``: the result of ``__setitem__`` on a graph tensor."""

    rule = "the overwritten places get no gradient; the value gets theirs"

    @staticmethod
    def forward(ctx, x, index, value):
        out = x.data.copy()
        out[index] = value.data
        ctx.index, ctx.value_shape = index, value.shape
        ctx.keep = np.ones(x.shape, dtype=bool)
        ctx.keep[index] = False
        return out

    @staticmethod
    def backward(ctx, grad):
        gx = grad * ctx.keep if ctx.needs_input_grad[0] else None
        gv = unbroadcast(grad[ctx.index], ctx.value_shape) if ctx.needs_input_grad[2] else None
        return gx, None, gv


class Einsum(Function):
    """``einsum`` on an explicit equation (``"ij,jk->ik"``: letters only, the output given;
    ``minigrad.einsum`` writes ``...`` and implicit outputs out so). The gradient of an operand is
    the einsum of the output's gradient with the other operands, back to that operand's letters;
    letters summed away inside it alone are broadcast back, and a letter it repeats (a diagonal,
    ``"ii->i"``) gets the gradient back on the diagonal through identity matrices."""

    rule = "d einsum/d operand_i = einsum(grad, the other operands -> subscripts of i)"

    @staticmethod
    def forward(ctx, equation, *operands):
        lhs, _, ctx.output_spec = equation.partition("->")
        ctx.inputs_spec = lhs.split(",")
        ctx.save_for_backward(*operands)
        return np.einsum(equation, *(t.data for t in operands))

    @staticmethod
    def backward(ctx, grad):
        operands = ctx.saved_tensors
        grads = [None]
        for i, spec in enumerate(ctx.inputs_spec):
            if not ctx.needs_input_grad[i + 1]:
                grads.append(None)
                continue
            others = [(s, t) for j, (s, t) in enumerate(zip(ctx.inputs_spec, operands)) if j != i]
            known = set(ctx.output_spec).union(*(s for s, _ in others))
            size = dict(zip(spec, operands[i].shape))
            letters = "".join(dict.fromkeys(spec))  # each letter once
            kept = "".join(c for c in letters if c in known)
            terms = [ctx.output_spec, *(s for s, _ in others)]
            g = Einsum.apply(",".join(terms) + "->" + kept, grad, *(t for _, t in others))
            g = g.reshape(tuple(size[c] if c in known else 1 for c in letters))
            g = g.expand(tuple(size[c] for c in letters))
            grads.append(g if letters == spec else _onto_diagonals(g, letters, spec, size))
        return tuple(grads)


def _onto_diagonals(g: Variable, letters: str, spec: str, size: dict[str, int]) -> Variable:
    """``g`` (indexed by ``letters``, each once) placed on the diagonals of ``spec``, which repeats
    some: each repeat gets a fresh letter tied to the first by an identity matrix."""
    fresh = iter(c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in spec)
    renamed, ties = "", []
    for c in spec:
        if c in renamed or c in (t[0] for t in ties):
            new = next(fresh)
            ties.append(c + new)
            renamed += new
        else:
            renamed += c
    eyes = [type(g)(np.eye(size[tie[0]], dtype=g.dtype)) for tie in ties]
    return Einsum.apply(",".join([letters, *ties]) + "->" + renamed, g, *eyes)


class Cat(Function):
    rule = "split the gradient into the pieces that were joined"

    @staticmethod
    def forward(ctx, dim, *tensors):
        ctx.dim = dim
        # torch (and so minigrad) skips 1-D empty tensors beside tensors of more dimensions
        ctx.skipped = [t.data.shape == (0,) and any(u.data.ndim > 1 for u in tensors) for t in tensors]
        ctx.sizes = [0 if skip else t.shape[dim] for t, skip in zip(tensors, ctx.skipped)]
        ctx.dtypes = [t.dtype for t in tensors]
        try:
            return np.concatenate([t.data for t, skip in zip(tensors, ctx.skipped) if not skip], axis=dim)
        except ValueError:
            raise ShapeError(
                f"cat: tensors must have the same shape except in dimension {dim}; got shapes "
                f"{[t.shape for t in tensors]}"
            ) from None

    @staticmethod
    def backward(ctx, grad):
        grads, start = [None], 0
        lead = (slice(None),) * ctx.dim
        for size, skipped, dtype in zip(ctx.sizes, ctx.skipped, ctx.dtypes):
            piece = grad.reshape(-1)[:0] if skipped else grad[lead + (slice(start, start + size),)]
            grads.append(piece if piece.dtype == dtype else piece.to(dtype))  # each input's own dtype
            start += size
        return tuple(grads)
