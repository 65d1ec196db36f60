"""The fast path: every speed trick of minigrad, each beside the plain reference it must agree with.

``ops.py`` and ``optim.py`` say what each op and update computes; for the few computations where
BERT spends its time they call one function of this module, named for the math:

    kernels.erf(x)                       erf, elementwise
    kernels.gelu(x)                      x Phi(x), and its backward: grad -> grad * (Phi(x) + x phi(x))
    kernels.softmax(x, dims)             exp(x) / sum(exp(x)) over ``dims``
    kernels.matmul(x, y)                 np.matmul
    kernels.add_at(out, index, values)   np.add.at: out[index] += values, repeated places adding up
    kernels.expand(x, shape)             np.broadcast_to: x stretched to shape, read-only
    kernels.adam(p, grad, m, v, ...)     one Adam step, in place
    kernels.first_grad(grad, ...)        the array a leaf keeps as its first .grad (the engine's)

Each name is bound to ``plain_<name>``, the math in plain NumPy (exact functions by exact
means: GELU through scipy's erf), or to ``fast_<name>``, the same result by faster means: a
thread pool, cache-sized blocks, a polynomial fit of erfc, work done in place. ``use("plain")``
or ``MINIGRAD_KERNELS=plain`` (read at import) sends everything through the plain references,
and then no thread is ever started; ``tests/minigrad/test_kernels.py`` checks that each fast kernel
agrees with its plain reference, and to what tolerance.

Why one call per computation: an op reads the same in both modes (its rule, its backward, what
it saves), and the call's name says what comes back; the reader who wants the arithmetic finds
it here, the plain version first, then what the fast one does differently and why.

A forward and its backward never mix: a kernel whose gradient reuses what its forward computed
(GELU's Phi) returns that gradient as a function bound to its own memo, made by the same kernel
(``plain_gelu`` binds ``plain_gelu_backward``, ``fast_gelu`` binds ``fast_gelu_backward``). Switching
the mode between a forward and its backward changes nothing about that backward.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy import special

MODES = ("fast", "plain")
NAMES = ("erf", "gelu", "softmax", "matmul", "add_at", "expand", "adam", "first_grad")  # what ``use`` binds

# ----------------------------------------------------------------------------- the cores

BLOCK = 1 << 18  # elements a block of elementwise work holds: 1 MiB of float32, cache-sized


def in_parallel(work: Any, items: Sequence[Any]) -> None:
    """``work(item)`` for each item, spread over the CPU's cores: NumPy lets go of the interpreter
    inside each pass over an array, so threads run their passes side by side."""
    if len(items) > 1:
        list(_thread_pool().map(work, items))
    elif items:
        work(items[0])


def row_blocks(shape: tuple[int, ...]) -> list:
    """Slices of the first axis holding about ``BLOCK`` elements each (everything for a 0-d array):
    pieces of work for ``in_parallel``."""
    if not shape:
        return [...]
    rows = max(1, BLOCK // max(1, math.prod(shape[1:])))
    return [slice(i, i + rows) for i in range(0, shape[0], rows)]


@functools.cache
def _thread_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="minigrad")


if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's threads: it makes its own pool
    os.register_at_fork(after_in_child=_thread_pool.cache_clear)


def _blockwise(formula: Any, *arrays: np.ndarray) -> np.ndarray:
    """``formula`` (elementwise, NumPy) over same-shaped arrays, a block at a time, the blocks
    shared among the cores: a block stays in the cache through the dozen passes a formula like
    erfc's makes (on whole arrays of BERT's size each pass would go out to memory and back)."""
    flat = [a.reshape(-1) for a in arrays]
    out = np.empty(flat[0].size, np.result_type(*arrays))

    def run(start: int) -> None:
        out[start : start + BLOCK] = formula(*(f[start : start + BLOCK] for f in flat))

    in_parallel(run, range(0, out.size, BLOCK))
    return out.reshape(arrays[0].shape)


# ----------------------------------------------------------------------------- erf


def plain_erf(x: np.ndarray) -> np.ndarray:
    """erf, exactly (scipy.special)."""
    return special.erf(x)


# Abramowitz & Stegun 7.1.26: erfc(z) = t P(t) exp(-z^2) for z >= 0, t = 1 / (1 + p z), within
# 1.5e-7 of the exact value; P's coefficients a5 .. a1, highest power first.
_AS_P = 0.3275911
_AS_COEFFS = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)


def _normal_tail(x: np.ndarray) -> np.ndarray:
    """Phi(-|x|) = erfc(|x| / sqrt 2) / 2, the standard normal's mass beyond |x|. float32 by the
    fit above, a dozen NumPy passes (scipy's erfc is a scalar loop, several times slower); other
    dtypes by scipy."""
    if x.dtype != np.float32:
        return 0.5 * special.erfc(np.abs(x) * (1 / np.sqrt(2)))
    f32 = np.float32
    t = np.abs(x)
    t *= f32(_AS_P / np.sqrt(2))
    t += 1
    np.divide(1, t, out=t)
    tail = t * f32(_AS_COEFFS[0] / 2)  # each coefficient halved: the tail is erfc / 2
    for a in _AS_COEFFS[1:]:
        tail += f32(a / 2)
        tail *= t
    exponent = np.square(x)
    exponent *= f32(-0.5)  # -z^2 with z = |x| / sqrt 2
    tail *= np.exp(exponent, out=exponent)
    return tail


def fast_erf(x: np.ndarray) -> np.ndarray:
    """erf, elementwise: float32 as sign(x) (1 - erfc(|x|)) through the fit, others by scipy."""
    if x.dtype == np.float32:
        return _blockwise(lambda b: np.copysign(1 - 2 * _normal_tail(b * np.float32(np.sqrt(2))), b), x)
    return plain_erf(x)


# ----------------------------------------------------------------------------- GELU


def plain_gelu(x: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """gelu(x) = x Phi(x), with Phi the standard normal's CDF, exactly (scipy's ndtr:
    (1 + erf(x / sqrt 2)) / 2); and its backward, grad -> grad * gelu'(x), bound to this Phi(x)."""
    cdf = special.ndtr(x)
    with np.errstate(invalid="ignore"):  # -inf * 0 is nan, quietly (torch's gelu(-inf): nan too)
        return x * cdf, functools.partial(plain_gelu_backward, x=x, cdf=cdf)


def plain_gelu_backward(grad: np.ndarray, x: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """grad * gelu'(x) = grad * (Phi(x) + x phi(x)), phi the normal density; ``cdf`` is Phi(x)."""
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return grad * (cdf + x * pdf)


def fast_gelu(x: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """gelu(x) = relu(x) - |x| h, with h = Phi(-|x|) the normal tail (Phi(x) = 1 - h for x >= 0):
    no sign to fix, and half the fit's polynomial. Its backward is bound to h: erfc is the costly
    part, and the gradient needs it again."""
    tail = _blockwise(_normal_tail, x)
    with np.errstate(invalid="ignore"):  # inf * 0 is nan, quietly (torch's float32 gelu: nan too)
        out = _blockwise(lambda v, h: np.maximum(v, 0) - np.abs(v) * h, x, tail)
    return out, functools.partial(fast_gelu_backward, x=x, tail=tail)


def fast_gelu_backward(grad: np.ndarray, x: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """grad * (Phi(x) + x phi(x)) in one blockwise pass, from ``fast_gelu``'s tail Phi(-|x|)."""
    k = x.dtype.type(1 / np.sqrt(2 * np.pi))

    def formula(g: np.ndarray, v: np.ndarray, h: np.ndarray) -> np.ndarray:
        return g * (np.where(v >= 0, 1 - h, h) + v * k * np.exp(v * v * -0.5))

    return _blockwise(formula, grad, x, tail)


# ----------------------------------------------------------------------------- softmax


def plain_softmax(x: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """exp(x - max) / sum(exp(x - max)) over ``dims`` (the max taken out so that exp cannot overflow)."""
    e = np.exp(x - np.max(x, axis=dims, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=dims, keepdims=True)


def fast_softmax(x: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """The same passes in one array for the whole op, worked in place, rows on every core."""
    e = np.empty_like(x)

    def softmax(rows: Any) -> None:
        part, out = x[rows], e[rows]
        np.subtract(part, np.max(part, axis=dims, keepdims=True, initial=-np.inf), out=out)
        np.exp(out, out=out)
        out /= np.sum(out, axis=dims, keepdims=True)

    in_parallel(softmax, [...] if 0 in dims else row_blocks(x.shape))
    return e


# ----------------------------------------------------------------------------- matmul


def plain_matmul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The matrix product, with NumPy's rules for stacks and 1-D operands."""
    return np.matmul(x, y)


def fast_matmul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``np.matmul``, a stack of matrices split among the cores: NumPy multiplies a stack one
    matrix at a time, and BLAS keeps a small product (attention's 54 x 64 heads) on one core."""
    if x.ndim < 3 or x.ndim != y.ndim or x.shape[0] != y.shape[0] or x.shape[-1] != y.shape[-2]:
        return np.matmul(x, y)
    batch = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    out = np.empty((*batch, x.shape[-2], y.shape[-1]), np.result_type(x, y))
    in_parallel(lambda rows: np.matmul(x[rows], y[rows], out=out[rows]), row_blocks(out.shape))
    return out


# ----------------------------------------------------------------------------- adding at an index


def plain_add_at(out: np.ndarray, index: Any, values: np.ndarray) -> None:
    """``out[index] += values`` in place, where a place the index names twice gets both values
    (the gradient of indexing, of an embedding lookup)."""
    np.add.at(out, index, values)


def _rows_of(out: np.ndarray) -> bool:
    """Can ``out`` be written row by row through ``out.reshape(len(out), -1)`` (a view, not a copy)?"""
    return out.ndim > 0 and out.flags.c_contiguous


def fast_add_at(out: np.ndarray, index: Any, values: np.ndarray) -> None:
    """The same sum by quicker means where the index allows: a basic index (ints, slices) never
    names a place twice, so NumPy's ``+=`` does; rows picked by one integer array (an embedding
    lookup) are sorted so that each run of one row is summed by one ``np.add.reduceat``
    (``np.add.at`` adds the rows one by one)."""
    if all(isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis for p in index):
        out[index] += values
    elif len(index) == 1 and isinstance(index[0], np.ndarray) and index[0].dtype.kind in "iu" and _rows_of(out):
        rows = index[0].reshape(-1) % max(out.shape[0], 1)  # negative indices count from the end
        if rows.size == 0:
            return
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], values.reshape(rows.size, -1)[order]
        starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
        out.reshape(out.shape[0], -1)[rows[starts]] += np.add.reduceat(values, starts, axis=0)
    else:
        np.add.at(out, index, values)


# ----------------------------------------------------------------------------- Adam


def plain_adam(
    p: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, step: int, lr: float,
    betas: tuple[float, float], eps: float, weight_decay: float, decoupled: bool,
) -> None:  # fmt: skip
    """Step ``step`` of Adam on parameter ``p`` from its gradient and moments ``m`` and ``v``, all
    in place (Kingma & Ba, with torch's weight decay: added to the gradient, or with
    ``decoupled`` taken from the weights directly, as AdamW)."""
    beta1, beta2 = betas
    if weight_decay and decoupled:
        p *= 1 - lr * weight_decay
    elif weight_decay:
        grad = grad + weight_decay * p
    m[...] = beta1 * m + (1 - beta1) * grad
    v[...] = beta2 * v + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1**step)  # the moments without their bias towards 0, the start
    v_hat = v / (1 - beta2**step)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)


def fast_adam(
    p: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, step: int, lr: float,
    betas: tuple[float, float], eps: float, weight_decay: float, decoupled: bool,
) -> None:  # fmt: skip
    """The same step a few rows at a time, in the cache, on every core: the dozen passes of the
    update would otherwise each go over the whole parameter in memory (22M floats for BERT)."""
    arrays = (p, grad, m, v)

    def update(rows: Any) -> None:
        p, grad, m, v = (a[rows] for a in arrays)
        beta1, beta2 = betas
        if weight_decay and decoupled:
            p *= 1 - lr * weight_decay  # AdamW: decay the weights directly
        elif weight_decay:
            grad = grad + weight_decay * p
        m *= beta1
        m += (1 - beta1) * grad  # m = b1 m + (1 - b1) g
        v *= beta2
        v += (1 - beta2) * np.square(grad)  # v = b2 v + (1 - b2) g^2
        # p -= lr m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps), with sqrt(1 - b2^t) moved from the
        # denominator into the step size: one pass fewer
        root = np.sqrt(1 - beta2**step)
        denom = np.sqrt(v)
        denom += eps * root
        p -= (lr * root / (1 - beta1**step)) * (m / denom)

    in_parallel(update, row_blocks(p.shape))


# ----------------------------------------------------------------------------- expand


def plain_expand(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` stretched to ``shape`` (broadcasting's rules): a read-only view, as torch's ``expand``,
    in which every element of a stretched axis is one element of ``x``."""
    return np.broadcast_to(x, shape)


SMALL = 4096  # elements: below this a copy is made faster than NumPy's Python-level broadcast_to


def fast_expand(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The same values, read-only too; a small result is a copy, which NumPy makes faster than
    the view (``broadcast_to`` spends a few microseconds in Python: much of an RNN cell's step)."""
    if math.prod(shape) > SMALL:
        return plain_expand(x, shape)
    out = np.empty(shape, dtype=x.dtype)
    out[...] = x
    out.flags.writeable = False
    return out


# ----------------------------------------------------------------------------- a leaf's first .grad


def plain_first_grad(grad: np.ndarray, dtype: np.dtype, held: set[int]) -> np.ndarray:
    """The array a leaf keeps as its first ``.grad`` (the engine's last step): a copy of its
    gradient in the leaf's dtype, so no ``.grad`` shares memory with another, with the caller's
    seeds or with what a hook saw, and accumulating into one changes nothing else. (``held``, the
    ids of the arrays that others hold, is what the fast kernel needs.)"""
    return grad.astype(dtype)


def fast_first_grad(grad: np.ndarray, dtype: np.dtype, held: set[int]) -> np.ndarray:
    """The gradient itself where this backward made it for this leaf alone, else a copy: no copy
    of every parameter's gradient on every step (22.6M floats for BERT; torch's AccumulateGrad
    "steals" such a gradient the same way). Copied: an array in ``held`` (a seed the caller holds,
    an array an earlier leaf kept), a view into another array, a read-only one, another dtype. The
    kept array joins ``held``."""
    if grad.base is not None or not grad.flags.writeable or grad.dtype != dtype or id(grad) in held:
        grad = grad.astype(dtype)
    held.add(id(grad))
    return grad


# ----------------------------------------------------------------------------- the switch

mode = "fast"  # which kernels the names below are bound to


def use(new_mode: str) -> str:
    """Bind every kernel to its fast version (``"fast"``) or to its plain reference
    (``"plain"``); returns the mode before, so that a caller can switch back."""
    global mode, erf, gelu, softmax, matmul, add_at, expand, adam, first_grad
    if new_mode == "fast":
        erf, gelu, softmax, matmul, add_at = fast_erf, fast_gelu, fast_softmax, fast_matmul, fast_add_at
        expand, adam, first_grad = fast_expand, fast_adam, fast_first_grad
    elif new_mode == "plain":
        erf, gelu, softmax, matmul, add_at = plain_erf, plain_gelu, plain_softmax, plain_matmul, plain_add_at
        expand, adam, first_grad = plain_expand, plain_adam, plain_first_grad
    else:
        raise ValueError(f"minigrad kernels: the mode is one of {MODES}, got {new_mode!r}")
    previous, mode = mode, new_mode
    return previous


use(os.environ.get("MINIGRAD_KERNELS", "fast"))
