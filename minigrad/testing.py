"""Property-based testing helpers: hypothesis strategies and a check against torch.

Write a property test in three lines::

    from hypothesis import given
    from minigrad import testing

    @given(testing.broadcastable_arrays(2))
    def test_mul(arrays):
        testing.assert_matches_torch(lambda lib, a, b: (a * b).tanh(), *arrays)

``fn`` receives the library (``minigrad`` or ``torch``) first, then tensors, so one function
body runs through both. ``compositions()`` draws whole random programs of several ops; when
one fails, hypothesis shrinks it and its repr is a runnable snippet for both libraries.

``check_gradients(MyFn.apply, (3, 4), (4,))`` turns the same machinery on your own code: it checks
a custom ``torch.autograd.Function`` (or a minigrad one) against finite differences over
hypothesis-drawn inputs, at the precision it measures fn to compute in (float64 or float32), checks
a torch Function's ``jvp`` (and, asked, its gradients under ``torch.func.vmap``), and raises
``GradientMismatch`` with a shrunk, runnable counterexample.
It needs hypothesis: ``pip install "minigrad-finetune[testing]"``.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch  # imported with the module: inside the first example it would blow hypothesis's deadline
from torch.autograd import forward_ad

try:
    import hypothesis
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as error:
    raise ImportError('minigrad.testing needs hypothesis: pip install "minigrad-finetune[testing]"') from error

import minigrad
from minigrad import pytest_plugin
from minigrad.gradcheck import perturbed, rounding_noise

# ----------------------------------------------------------------------------- strategies


class CheckGradientsError(ValueError):
    """check_gradients (or a strategy) was called in a way it cannot check; the message says what to change."""


def _is_shape(v: Any) -> bool:
    return isinstance(v, tuple) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v)


def _shape_or_strategy(name: str, shape: Any) -> Any:
    """``shape`` itself if it is a shape or a hypothesis strategy; else a one-line error naming ``name``."""
    if isinstance(shape, st.SearchStrategy) or _is_shape(shape):
        return shape
    what = f"a NumPy array of shape {shape.shape}" if isinstance(shape, np.ndarray) else repr(shape)
    raise CheckGradientsError(
        f"{name} is {what}: give a tuple of non-negative ints, such as (3, 4) or (), or a hypothesis strategy"
    )


def shapes(min_dims: int = 0, max_dims: int = 4, min_side: int = 1, max_side: int = 4) -> st.SearchStrategy:
    """Array shapes, e.g. (), (3,), (2, 1, 4)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(
    num_shapes: int = 2, min_dims: int = 0, max_dims: int = 4, min_side: int = 1, max_side: int = 4
) -> st.SearchStrategy:
    """Tuples of ``num_shapes`` shapes that broadcast together, e.g. ((2, 1, 3), (4, 1))."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    ).map(lambda b: b.input_shapes)


def shapes_broadcasting_to(shape: tuple[int, ...]) -> st.SearchStrategy:
    """Shapes that broadcast to ``shape`` (a trailing part of it, some sides 1), e.g. a bias's."""
    return st.integers(0, len(shape)).flatmap(
        lambda kept: st.tuples(*(st.sampled_from([1, n]) for n in shape[len(shape) - kept :]))
    )


def arrays(
    shape: tuple[int, ...] | st.SearchStrategy,
    dtype: Any = np.float64,
    min_value: float = -3.0,
    max_value: float = 3.0,
    away_from_zero: float = 0.0,
) -> st.SearchStrategy:
    """Float arrays with bounded elements (no NaN or inf); ``away_from_zero`` keeps |x| above it,
    for ops with a kink or pole at 0 (abs, division, log)."""
    elements = st.floats(min_value, max_value, allow_nan=False, allow_infinity=False, width=64)
    if away_from_zero:
        elements = elements.filter(lambda v: abs(v) >= away_from_zero)
    return hnp.arrays(np.dtype(dtype), _shape_or_strategy("shape", shape), elements=elements)


def broadcastable_arrays(num: int = 2, **kwargs: Any) -> st.SearchStrategy:
    """``num`` float64 arrays whose shapes broadcast together."""
    array_kwargs = {k: kwargs.pop(k) for k in ("min_value", "max_value", "away_from_zero") if k in kwargs}
    return broadcastable_shapes(num, **kwargs).flatmap(
        lambda shapes_: st.tuples(*(arrays(s, **array_kwargs) for s in shapes_))
    )


def tensors(shape: Any = None, requires_grad: bool = True, **kwargs: Any) -> st.SearchStrategy:
    """minigrad Tensors (float64) with bounded elements; ``shape`` is a shape or a strategy of shapes."""
    return arrays(shapes() if shape is None else _shape_or_strategy("shape", shape), **kwargs).map(
        lambda a: minigrad.tensor(a, requires_grad=requires_grad)
    )


# ----------------------------------------------------------------------------- torch check


def _grad_seed(shape: tuple[int, ...]) -> np.ndarray:
    """A fixed, shape-determined upstream gradient: tests every output element, not just their sum."""
    rng = np.random.default_rng(len(shape) * 1000 + int(np.prod(shape)))
    return rng.standard_normal(shape)


def _grad_arrays(grads: Sequence[Any], shapes_: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Gradients as NumPy arrays: zeros for None (an unused input) and for torch's ZeroTensor."""
    zero = [g is None or getattr(g, "_is_zerotensor", lambda: False)() for g in grads]
    return [np.zeros(shape) if z else np.asarray(g.detach().numpy()) for g, z, shape in zip(grads, zero, shapes_)]


def assert_matches_torch(
    fn: Callable[..., Any],
    *arrays_: np.ndarray,
    atol: float = 1e-8,
    rtol: float = 1e-6,
    grad: bool = True,
) -> None:
    """Run ``fn(lib, *tensors)`` with lib=minigrad and lib=torch on the same float64 arrays and
    assert equal values and (when ``grad``) equal gradients for every input."""
    mg_in = [minigrad.tensor(a.copy(), requires_grad=grad) for a in arrays_]
    th_in = [torch.tensor(a.copy(), requires_grad=grad) for a in arrays_]
    mg_out, th_out = fn(minigrad, *mg_in), fn(torch, *th_in)
    np.testing.assert_allclose(
        mg_out.data, th_out.detach().numpy(), atol=atol, rtol=rtol, err_msg="forward values differ from torch"
    )
    assert mg_out.shape == tuple(th_out.shape), f"shape {mg_out.shape} != torch's {tuple(th_out.shape)}"
    assert mg_out.dtype == np.dtype(str(th_out.dtype).replace("torch.", "")), "dtype differs from torch"
    if not grad:
        return
    seed = _grad_seed(mg_out.shape)
    mg_out.backward(minigrad.tensor(seed))
    th_out.backward(torch.tensor(seed))
    for i, (m, t) in enumerate(zip(mg_in, th_in)):
        expected = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        actual = np.zeros(m.shape) if m.grad is None else m.grad.data
        np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol, err_msg=f"gradient of input {i} differs")


def assert_second_derivative_matches_torch(
    fn: Callable[..., Any], *arrays_: np.ndarray, atol: float = 1e-8, rtol: float = 1e-6
) -> None:
    """The second derivative of ``fn(lib, *tensors)`` in both libraries: the gradient, with
    respect to every input, of <grad of <fn, u>, v> for fixed shape-determined u and v."""
    found = []
    for lib in (minigrad, torch):
        inputs = [lib.tensor(a.copy(), requires_grad=True) for a in arrays_]
        out = fn(lib, *inputs)
        first = lib.autograd.grad(
            (out * lib.tensor(_grad_seed(tuple(out.shape)))).sum(), inputs, create_graph=True, allow_unused=True
        )
        terms = [
            (g * lib.tensor(_grad_seed(tuple(g.shape)) + 0.5)).sum() for g in first if g is not None and g.requires_grad
        ]
        second = lib.autograd.grad(sum(terms), inputs, allow_unused=True) if terms else [None] * len(inputs)
        found.append(_grad_arrays(second, [a.shape for a in arrays_]))
    for i, (m, t) in enumerate(zip(*found)):
        np.testing.assert_allclose(m, t, atol=atol, rtol=rtol, err_msg=f"second derivative of input {i} differs")


# ----------------------------------------------------------------------------- compositions

# Each op is a method-call template valid in both libraries; domains are kept safe by the
# template itself (log of |x| + 1, ...), so any composition has finite values and gradients.
UNARY_TEMPLATES = {
    "tanh": "{0}.tanh()",
    "sigmoid": "{0}.sigmoid()",
    "exp": "{0}.tanh().exp()",
    "log": "({0}.abs() + 1).log()",
    "sqrt": "({0} * {0} + 1).sqrt()",
    "square": "{0} ** 2",
    "neg": "-{0}",
    "softmax": "{0}.softmax(-1)",
    "log_softmax": "{0}.log_softmax(-1)",
    "sum_last": "{0}.sum(-1, keepdim=True)",
    "mean_last": "{0}.mean(-1, keepdim=True)",
    "logsumexp": "{0}.logsumexp(-1, keepdim=True)",
    "clamp": "{0}.clamp(-1.5, 1.5)",
}
BINARY_TEMPLATES = {
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "div": "{0} / ({1} * {1} + 1)",
    "maximum": "{0}.maximum({1})",
}


@dataclass
class Composition:
    """A random straight-line program over inputs x0..xk; ``repr`` is a runnable snippet."""

    input_arrays: list[np.ndarray]
    steps: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)

    def lines(self) -> list[str]:
        names = [f"x{i}" for i in range(len(self.input_arrays))]
        out = []
        for k, (op, args) in enumerate(self.steps):
            template = UNARY_TEMPLATES.get(op) or BINARY_TEMPLATES[op]
            out.append(f"v{k} = " + template.format(*(names[a] for a in args)))
            names.append(f"v{k}")
        return out

    def __call__(self, lib: Any, *inputs: Any) -> Any:
        env = {f"x{i}": t for i, t in enumerate(inputs)}
        for line in self.lines():
            exec(line, {}, env)
        return env[f"v{len(self.steps) - 1}"] if self.steps else inputs[0]

    def __repr__(self) -> str:
        decl = [
            f"x{i} = lib.tensor({a.tolist()!r}, dtype=lib.float64, requires_grad=True)"
            for i, a in enumerate(self.input_arrays)
        ]
        body = "\n".join(
            [
                "for lib in (minigrad, torch):",
                *("    " + s for s in decl + self.lines()),
                f"    print(lib.__name__, v{len(self.steps) - 1})",
            ]
        )
        return "\nimport minigrad, torch\n" + body + "\n"


@st.composite
def compositions(draw: Callable, max_inputs: int = 3, max_steps: int = 6) -> Composition:
    """Random compositions of several ops over 1..max_inputs broadcastable float64 inputs."""
    n = draw(st.integers(1, max_inputs))
    input_shapes = draw(broadcastable_shapes(n, min_dims=1, max_dims=3))
    comp = Composition([draw(arrays(s, min_value=-2, max_value=2)) for s in input_shapes])
    n_steps = draw(st.integers(1, max_steps))
    for k in range(n_steps):
        available = n + k
        if draw(st.booleans()):
            op = draw(st.sampled_from(sorted(BINARY_TEMPLATES)))
            args = (draw(st.integers(0, available - 1)), draw(st.integers(0, available - 1)))
        else:
            op = draw(st.sampled_from(sorted(UNARY_TEMPLATES)))
            args = (draw(st.integers(0, available - 1)),)
        comp.steps.append((op, args))
    # make the result depend on the newest value, so every step is exercised
    comp.steps.append(("add", (n + n_steps - 1, n + n_steps - 1)))
    return comp


def assert_composition_matches_torch(comp: Composition, atol: float = 1e-8, rtol: float = 1e-6) -> None:
    assert_matches_torch(comp, *comp.input_arrays, atol=atol, rtol=rtol)


# ----------------------------------------------------------------------------- check_gradients


class GradientMismatch(AssertionError):  # noqa: N818 - a failed check, as AssertionError is
    """An analytic derivative (or, with ``reference=``, a value) that disagrees, at the
    shrunk inputs ``.inputs``; ``.repro`` is Python source that rebuilds them and fails again."""

    def __init__(self, message: str, inputs: list[Any], repro: str) -> None:
        super().__init__(f"{message}\n\nRe-run it with:\n\n{repro}")
        self.inputs, self.repro = inputs, repro


class ForwardModeNotChecked(UserWarning):
    """A torch Function without a ``jvp``: check_gradients checked its backward only."""


class _Misuse(BaseException):
    """Carries a CheckGradientsError out through hypothesis, which would shrink an Exception like a bug."""


def _library(name: str) -> Any:
    if name not in ("torch", "minigrad"):
        raise CheckGradientsError(f"library must be 'torch' or 'minigrad', not {name!r}")
    return torch if name == "torch" else minigrad


def _function_class(fn: Callable) -> type | None:
    """The Function class whose ``.apply`` fn is (a method bound to the class), or None."""
    owner = getattr(fn, "__self__", None)
    functions = (minigrad.Function, torch.autograd.Function)
    return owner if isinstance(owner, type) and issubclass(owner, functions) else None


def _check_library_of(fn: Callable, library: str) -> None:
    """A Function's ``.apply`` belongs to one library: say so before running it on the other's tensors."""
    if not callable(fn):
        raise CheckGradientsError(f"fn must be callable (a Function's .apply, or a function), not {fn!r}")
    owner = _function_class(fn)
    for name, base in (("minigrad", minigrad.Function), ("torch", torch.autograd.Function)):
        if owner is not None and issubclass(owner, base) and name != library:
            raise CheckGradientsError(f"{owner.__name__} is a {name} Function: pass library={name!r}")


def _values(lib: Any, drawn: Sequence[Any]) -> list[Any]:
    """The inputs as check_gradients holds them: float arrays (and float tensors that require
    grad) become float64 arrays to differentiate; anything else is passed to fn unchanged."""
    values = []
    for i, v in enumerate(drawn):
        if isinstance(v, lib.Tensor) and v.detach().numpy().dtype.kind == "f":
            if not v.requires_grad:
                raise CheckGradientsError(f"input {i} is a float tensor that does not require grad")
            v = v.detach().numpy()
        if isinstance(v, list) and v and all(isinstance(e, (float, list)) for e in v):
            raise CheckGradientsError(
                f"input {i} is a list, {v!r}: give a NumPy array (draw it with testing.arrays, or .map(np.array))"
            )
        values.append(np.array(v, dtype=np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
    if not any(_is_input(v) for v in values):
        shape = next((f"input {i} is {v!r}, a shape: " for i, v in enumerate(values) if _is_shape(v)), "")
        raise CheckGradientsError(
            f"no input to differentiate: {shape}give a shape, or a strategy of float arrays"
            + (" such as testing.arrays(testing.shapes())" if shape else "")
        )
    return values


def _is_input(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.dtype == np.float64


def _args(lib: Any, values: list[Any]) -> list[Any]:
    return [lib.tensor(v, requires_grad=_is_input(v)) if isinstance(v, np.ndarray) else v for v in values]


def _float_outputs(lib: Any, out: Any) -> list[Any]:
    """fn's float tensors (it may return one, or a tuple with integer ones such as indices)."""
    outs = [out] if isinstance(out, (torch.Tensor, minigrad.Tensor)) else out if isinstance(out, (tuple, list)) else []
    other = "torch" if lib is minigrad else "minigrad"
    if any(isinstance(o, (torch.Tensor, minigrad.Tensor)) and not isinstance(o, lib.Tensor) for o in outs):
        raise CheckGradientsError(f"fn returned a {other} tensor: pass library={other!r}")
    floats = [
        o
        for o in outs
        if isinstance(o, lib.Tensor) and (o.dtype.is_floating_point if lib is torch else o.dtype.kind == "f")
    ]
    if not floats:
        got = f"a tensor of {out.dtype}" if hasattr(out, "dtype") else type(out).__name__
        raise CheckGradientsError(f"fn must return a float {lib.__name__} tensor (or a tuple of them), not {got}")
    return floats


@functools.lru_cache(maxsize=256)
def _weights(lib: Any, shape: tuple[int, ...], offset: float) -> Any:
    """The fixed random upstream gradient ``_grad_seed(shape) + offset``, as a tensor made once."""
    return lib.tensor(_grad_seed(shape) + offset)


def _weighted(lib: Any, tensors: Sequence[Any], offset: float) -> list[Any]:
    """The terms w_k * t_k of sum_k <w_k, t_k>, for the fixed weights w_k (offset by k, or by ``offset``)."""
    return [t * _weights(lib, tuple(t.shape), offset if offset else k) for k, t in enumerate(tensors)]


def _total(lib: Any, terms: Sequence[Any]) -> Any:
    return sum((t.sum() for t in terms), lib.tensor(0.0))


class _Evaluation(NamedTuple):
    value: float  # S (or T)
    magnitude: float | None  # the sum of the sizes of the terms it sums (``probe`` only)
    parts: list[np.ndarray] | None  # what it weights: fn's float outputs, or dS/dx (``probe`` only)
    grads: list[np.ndarray] | None  # its gradient with respect to each float input


def _evaluate(lib: Any, fn: Callable, values: list[Any], order: int, grads: bool, probe: bool = False) -> _Evaluation:
    """The scalar S = sum_k <u_k, fn(x)_k> with fixed random u_k (order 1), or T = sum_i <v_i, dS/dx_i>
    (order 2), and, with ``grads``, its analytic gradient with respect to each float input: one
    backward pass, a vector-Jacobian product that involves every output element. With ``probe``,
    also the size of its terms and what it weights, which ``_precision`` measures fn's rounding by."""
    with lib.enable_grad() if grads or order == 2 else lib.no_grad():
        args = _args(lib, values)
        inputs = [a for a, v in zip(args, values) if _is_input(v)]
        parts = _float_outputs(lib, fn(*args))
        terms = _weighted(lib, parts, 0.0)
        s = _total(lib, terms)
        if grads and order == 1 and not s.requires_grad:
            raise CheckGradientsError("fn's output does not require grad: is it detached from the inputs?")
        if order == 2:
            parts = [g for g in lib.autograd.grad(s, inputs, create_graph=grads, allow_unused=True) if g is not None]
            terms = _weighted(lib, parts, 0.5)
            s = _total(lib, terms)
        found = None
        if grads:
            found = lib.autograd.grad(s, inputs, allow_unused=True) if s.requires_grad else [None] * len(inputs)
            found = _grad_arrays(found, [tuple(t.shape) for t in inputs])
        if not probe:
            return _Evaluation(s.item(), None, None, found)
        magnitude = sum(t.abs().sum().item() for t in terms)
        return _Evaluation(s.item(), magnitude, [p.detach().numpy() for p in parts], found)


GRADCHECK = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3}  # torch.autograd.gradcheck's step and tolerance: float64's
PROBE_SPACING, PROBE_POINTS = 1e-4, 31
FLOAT64_NOISE = 1e-12  # rounding noise relative to the size of S's terms: float64 rounds at 1.1e-16
NOISY = 1e-4  # above it a difference quotient cannot find a 1% error: float16 rounds at 4.9e-4, bfloat16 at 3.9e-3
NOISE_FACTOR = 20  # atol covers this many standard deviations of the noise in a difference quotient
STORAGE = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def _storage(parts: list[list[np.ndarray]]) -> str:
    """The narrowest float format in which every output element that changes from one probe point
    to the next is exactly representable: what a Function that computes in float32 (or float16,
    bfloat16) and casts back to float64 shows. "float64" where none changes."""
    stacked = [np.stack(p).reshape(len(p), -1) for p in zip(*parts)]
    changing = np.concatenate([s[:, np.ptp(s, axis=0) > 0].ravel() for s in stacked])
    for name, dtype in STORAGE.items():
        stored = torch.tensor(changing).to(dtype).double().numpy()  # rounded to ``dtype`` and back
        if changing.size and np.array_equal(stored, changing):
            return name
    return "float64"


@dataclass(frozen=True)
class Precision:
    """What fn was measured to compute in near one point, and the step and tolerance chosen for it."""

    storage: str  # the format its outputs (or, at order 2, gradients) are rounded to
    noise: float  # the standard deviation of S's rounding noise over the size of the terms S sums
    eps: float
    atol: float
    rtol: float

    def __str__(self) -> str:
        return (
            f"precision {self.storage}, relative rounding noise {self.noise:.1e}; "
            f"eps={self.eps:.3g}, atol={self.atol:.3g}, rtol={self.rtol:.3g}"
        )


def _precision(lib: Any, fn: Callable, values: list[Any], order: int, given: dict[str, float | None]) -> Precision:
    """Measure the rounding noise of S (or T) at ``PROBE_POINTS`` points spaced ``PROBE_SPACING``
    apart along a fixed +-1 direction through the inputs, and choose from it the step and the
    tolerance: at float64 noise a central difference at eps = 1e-6 (torch.autograd.gradcheck's);
    above it eps = (relative noise)^(1/3), which balances the noise in a difference quotient
    (noise / eps) against its truncation error (eps^2 f'''/6), and an atol that covers the noise.
    Outputs rounded to float16 or bfloat16 leave no useful tolerance: refused unless eps, atol and
    rtol are all given. (Noise above ``NOISY`` at a float32 or float64 point, from cancellation or
    randomness, sets the point aside: see check_gradients_at.)"""
    inputs = [v for v in values if _is_input(v)]
    originals = [v.copy() for v in inputs]
    directions = [np.where(_grad_seed(v.shape) < 0, -1.0, 1.0) for v in inputs]
    probe = []
    try:
        for step in range(-(PROBE_POINTS // 2), PROBE_POINTS // 2 + 1):
            for v, x, d in zip(inputs, originals, directions):
                v[...] = x + step * PROBE_SPACING * d
            probe.append(_evaluate(lib, fn, values, order, grads=False, probe=True))
    finally:
        for v, x in zip(inputs, originals):
            v[...] = x
    found = np.array([e.value for e in probe])
    if not np.all(np.isfinite(found)):  # at the edge of fn's domain: gradcheck's step and tolerance
        chosen = GRADCHECK | {k: v for k, v in given.items() if v is not None}
        return Precision("not measured (fn is not finite nearby)", np.nan, **chosen)
    storage, noise = _storage([e.parts for e in probe]), rounding_noise(found)
    relative = noise / max(e.magnitude for e in probe) if noise else 0.0
    if storage in ("float16", "bfloat16") and None in given.values():
        raise CheckGradientsError(
            f"fn's {'values' if order == 1 else 'gradients'} are rounded to {storage} (rounding noise {relative:.1e} "
            "relative): finite differences cannot check them to a useful tolerance; check fn computing in float32, "
            "or pass eps, atol and rtol yourself"
        )
    eps = given["eps"] or (
        GRADCHECK["eps"] if relative <= FLOAT64_NOISE else float(np.clip(np.cbrt(relative), GRADCHECK["eps"], 1e-2))
    )
    atol = given["atol"] or max(GRADCHECK["atol"], NOISE_FACTOR * noise / eps)
    return Precision(storage, relative, eps, atol, given["rtol"] or GRADCHECK["rtol"])


def _worst(actual: list[np.ndarray], expected: list[np.ndarray], atol: float, rtol: float) -> tuple | None:
    """(input, element, actual, expected) where |actual - expected| most exceeds atol + rtol |expected|
    (a NaN exceeds everything; NaN in ``expected`` marks an element set aside), or None."""
    worst = None
    for i, (a, e) in enumerate(zip(actual, expected)):
        excess = np.where(np.isnan(e), -np.inf, np.nan_to_num(np.abs(a - e) - atol - rtol * np.abs(e), nan=np.inf))
        if excess.size and excess.max() > 0 and (worst is None or excess.max() > worst[0]):
            j = np.unravel_index(int(excess.argmax()), a.shape)
            worst = (excess.max(), i, tuple(int(k) for k in j), a[j], e[j])
    return worst and worst[1:]


def _numeric(lib: Any, fn: Callable, values: list[Any], order: int, value: float, analytic: list[np.ndarray],
             precision: Precision) -> list[np.ndarray]:  # fmt: skip
    """Central differences of S (or T) for every float input element. Where one disagrees with
    the analytic derivative, S is also taken at the half-steps: Richardson extrapolation of the
    central differences over eps and eps / 2, (4 D(eps/2) - D(eps)) / 3, cancels their eps^2 error
    term. If the slopes over the four half-steps from x - eps to x + eps do not lie on a line (a
    second difference above a third of the tolerance), a kink (relu at 0, a tie in max) or a jump
    (relu's derivative at 0) lies within eps, the derivative there is not known well enough to
    judge, and the element is set aside (NaN). Elsewhere a kink changes the slope by less than the
    tolerance, and the differences stay within half of it of the true slope: no false alarm."""
    eps, numeric = precision.eps, []
    f = lambda: _evaluate(lib, fn, values, order, grads=False).value  # noqa: E731
    for v, a in zip(filter(_is_input, values), analytic):
        found = np.empty(v.shape)
        for j, plus, minus in perturbed(f, v, eps):
            found.flat[j] = central = (plus - minus) / (2 * eps)
            tolerance = precision.atol + precision.rtol * abs(central)
            if not abs(a.flat[j] - central) <= tolerance:
                ((_, half_plus, half_minus),) = perturbed(f, v, eps / 2, elements=[j])
                found.flat[j] = (4 * (half_plus - half_minus) / eps - central) / 3
                slopes = np.diff([minus, half_minus, value, half_plus, plus]) / (eps / 2)
                if not np.abs(np.diff(slopes, 2)).max() <= tolerance / 3:
                    found.flat[j] = np.nan
        numeric.append(found)
    return numeric


def _directional(fn: Callable, values: list[Any], position: int, tangent: np.ndarray, eps: float) -> float:
    """The derivative of S along ``tangent`` in input ``position``: Richardson extrapolation of the
    central differences over eps and eps / 2."""
    x = values[position].copy()
    central = []
    try:
        for h in (eps, eps / 2):
            ends = []
            for sign in (1, -1):
                values[position][...] = x + sign * h * tangent
                ends.append(_evaluate(torch, fn, values, 1, grads=False).value)
            central.append((ends[0] - ends[1]) / (2 * h))
    finally:
        values[position][...] = x
    return (4 * central[1] - central[0]) / 3


def _forward_mode(fn: Callable, values: list[Any], analytic: list[np.ndarray], precision: Precision) -> str | None:
    """For a torch Function with a ``jvp``: per input, <u, J v> from forward-mode AD (the jvp)
    against <J^T u, v> from the backward (already checked) and a difference of S along v, for
    fixed random u and v. Returns what is wrong, or None."""
    positions = [k for k, v in enumerate(values) if _is_input(v)]
    for position, gradient in zip(positions, analytic):
        tangent = _grad_seed(values[position].shape) + 0.25
        with forward_ad.dual_level(), torch.no_grad():
            args = _args(torch, values)
            args[position] = forward_ad.make_dual(args[position].detach(), torch.tensor(tangent))
            tangents = [forward_ad.unpack_dual(o).tangent for o in _float_outputs(torch, fn(*args))]
            jvp = _total(torch, _weighted(torch, [t if t is not None else torch.zeros(()) for t in tangents], 0)).item()
        backward = float(np.sum(gradient * tangent))
        numeric = _directional(fn, values, position, tangent, precision.eps)
        tolerance = float(np.sum(np.abs(tangent) * (precision.atol + precision.rtol * np.abs(gradient))))
        if not (abs(jvp - backward) <= tolerance and abs(jvp - numeric) <= tolerance):
            return (
                f"forward-mode derivative (jvp) of input {position} is wrong: <u, J v> for fixed random u, v is "
                f"{jvp:.10g} by the jvp, {backward:.10g} by the backward, {numeric:.10g} numeric ({precision}; "
                f"the tolerance sums atol + rtol |gradient| over v's elements: {tolerance:.3g})"
            )
    return None


def _batched(fn: Callable, values: list[Any], precision: Precision) -> str | None:
    """Per-sample values and gradients of S under torch.func.vmap, for a batch of three samples
    (the point and two others), against a Python loop over the samples. Returns what differs, or None."""
    positions = [k for k, v in enumerate(values) if _is_input(v)]
    samples = [values, *([v * a + b if _is_input(v) else v for v in values] for a, b in ((1.25, 0.1), (0.8, -0.05)))]
    loop = []
    for sample in samples:
        found = _evaluate(torch, fn, sample, 1, grads=True)
        loop.append([np.array(found.value), *found.grads])

    def scalar(*inputs: Any) -> Any:
        args = _args(torch, values)
        for position, t in zip(positions, inputs):
            args[position] = t
        return _total(torch, _weighted(torch, _float_outputs(torch, fn(*args)), 0.0))

    stacked = [torch.tensor(np.stack([s[k] for s in samples])) for k in positions]
    try:
        found = torch.func.vmap(torch.func.grad_and_value(scalar, argnums=tuple(range(len(positions)))))(*stacked)
    except RuntimeError as error:
        if "functorch transforms" not in str(error) and "vmap support" not in str(error):
            raise
        name = getattr(_function_class(fn), "__name__", "fn")
        raise CheckGradientsError(
            f"batched=True needs fn to run under torch.func.vmap: {name} must define forward without ctx, "
            "setup_context, and generate_vmap_rule = True or a vmap staticmethod (torch's docs: 'Extending "
            "torch.func with autograd.Function')"
        ) from None
    gradients, value = found
    batched = [value.numpy(), *(g.numpy() for g in gradients)]
    for b, expected in enumerate(loop):
        worst = _worst([per_sample[b] for per_sample in batched], expected, precision.atol, precision.rtol)
        if worst:
            k, element, mine, theirs = worst
            what = "value <u, fn(x)>" if k == 0 else f"gradient of input {positions[k - 1]} at element {element}"
            return (
                f"under torch.func.vmap, sample {b}'s {what} is {mine:.10g}, a Python loop gives {theirs:.10g} "
                f"(atol={precision.atol:.3g}, rtol={precision.rtol:.3g})"
            )
    return None


def _importable(obj: Any) -> tuple[str, str] | None:
    """(module, qualified name) under which ``obj`` can be imported again, or None (a lambda,
    a function defined inside another)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    found = sys.modules.get(module or "")
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return (module, qualname) if found is obj and found is not None else None


def _main_source(name: str) -> str | None:
    """The statements of the ``__main__`` script that define ``name``: its class or function, and
    the imports, definitions and assignments at the script's top level that it uses, in the
    script's order. None where the script's source cannot be read (python -c, a notebook)."""
    try:
        lines = inspect.getsource(sys.modules["__main__"]).splitlines()
        tree = ast.parse("\n".join(lines))
    except (OSError, TypeError, SyntaxError):
        return None
    defining: dict[str, ast.stmt] = {}
    for statement in tree.body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                defining[(alias.asname or alias.name).split(".")[0]] = statement
        elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defining[statement.name] = statement
        elif isinstance(statement, (ast.Assign, ast.AnnAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            defining.update((t.id, statement) for t in targets if isinstance(t, ast.Name))
    if name not in defining:
        return None
    needed, pending = set(), [name]
    while pending:
        statement = defining.get(pending.pop())
        if statement is not None and statement not in needed:
            needed.add(statement)
            pending.extend(n.id for n in ast.walk(statement) if isinstance(n, ast.Name))
    first_line = lambda s: min([s.lineno, *(d.lineno for d in getattr(s, "decorator_list", []))])  # noqa: E731
    return "\n\n".join("\n".join(lines[first_line(s) - 1 : s.end_lineno]) for s in tree.body if s in needed)


def _name_in_repro(fn: Callable, placeholder: str, lines: list[str]) -> str:
    """The expression for ``fn`` in a repro, adding its import (or, for a script's own Function,
    its source) to ``lines``."""
    owner = getattr(fn, "__self__", None)  # Function.apply is a method bound to the class
    target, attribute = (owner, f".{fn.__name__}") if isinstance(owner, type) else (fn, "")
    where = _importable(target)
    if where is None:
        lines.append(f"# {placeholder} = {fn!r}: it cannot be imported, so define {placeholder} before running this")
        return placeholder
    name = where[1].split(".")[0]
    if where[0] != "__main__":
        lines.append(f"from {where[0]} import {name}")
    elif (source := _main_source(name)) is not None:
        lines[:0] = [f"# {name} is defined in your script {sys.modules['__main__'].__file__}: its source is copied"]
        lines.extend(["", source, ""])
    else:
        lines[:0] = [f"# {name} is defined in __main__ (python -c or a notebook), whose source could not be read: "
                     f"run this where {name} is defined"]  # fmt: skip
        lines.append(f"from __main__ import {name}")
    return where[1] + attribute


def _literal(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"np.array({v.tolist()!r}, dtype=np.{v.dtype}).reshape({v.shape})"
    return repr(v)


def _repro(fn: Callable, values: list[Any], options: dict[str, Any]) -> str:
    lines = ["import numpy as np", "from minigrad.testing import check_gradients_at"]
    call = [_name_in_repro(fn, "fn", lines), *(_literal(v) for v in values)]
    for key, value in options.items():
        call.append(f"{key}={_name_in_repro(value, 'reference', lines) if key == 'reference' else repr(value)}")
    return "\n".join([*lines, "", "check_gradients_at(", *(f"    {c}," for c in call), ")", ""])


def _has_jvp(fn: Callable) -> bool | None:
    """Whether fn is a torch Function's apply that defines jvp (None: fn is no torch Function)."""
    owner = _function_class(fn)
    if owner is None or not issubclass(owner, torch.autograd.Function):
        return None
    return owner.jvp is not torch.autograd.Function.jvp


def check_gradients_at(
    fn: Callable[..., Any],
    *inputs: Any,
    library: str = "torch",
    second_order: bool = True,
    forward_mode: bool = True,
    batched: bool = False,
    reference: Callable[..., Any] | None = None,
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> int:
    """Check ``fn``'s derivatives at one point: float NumPy arrays among ``inputs`` become float64
    tensors that require grad, the rest is passed as is. Raises ``GradientMismatch``; returns how
    many first-derivative elements were compared (the others lay at a kink and were set aside)."""
    lib = _library(library)
    _check_library_of(fn, library)
    if reference is not None and not callable(reference):
        raise CheckGradientsError(f"reference must be callable (a second implementation of fn), not {reference!r}")
    if batched and library != "torch":
        raise CheckGradientsError("batched=True checks torch.func.vmap: pass library='torch' (minigrad has no vmap)")
    values = _values(lib, inputs)
    wrt = [k for k, v in enumerate(values) if _is_input(v)]
    given = {"eps": eps, "atol": atol, "rtol": rtol}
    options = {"library": library, "second_order": second_order, "forward_mode": forward_mode, "batched": batched}
    options.update({k: v for k, v in given.items() if v is not None})
    if reference is not None:
        options["reference"] = reference

    def mismatch(message: str) -> GradientMismatch:
        return GradientMismatch(message, values, _repro(fn, values, options))

    if reference is not None:
        ref_atol, ref_rtol = atol or GRADCHECK["atol"], rtol or GRADCHECK["rtol"]
        with lib.no_grad():
            outs = [[o.detach().numpy() for o in _float_outputs(lib, f(*_args(lib, values)))] for f in (fn, reference)]
        if [o.shape for o in outs[0]] != [o.shape for o in outs[1]]:
            raise mismatch(
                f"fn's output shapes {[o.shape for o in outs[0]]} are not the reference's {[o.shape for o in outs[1]]}"
            )
        grads = [_evaluate(lib, f, values, 1, grads=True).grads for f in (fn, reference)]
        for what, pair in (("output", outs), ("gradient", grads)):
            if found := _worst(*pair, ref_atol, ref_rtol):
                k, element, mine, theirs = found
                name = f"output {k}" if what == "output" else f"first derivative of input {wrt[k]}"
                raise mismatch(
                    f"fn and reference differ: {name} at element {element}: fn {mine:.10g}, "
                    f"reference {theirs:.10g} (atol={ref_atol}, rtol={ref_rtol})"
                )
    compared = 0
    for order in (1, 2) if second_order else (1,):
        value, _, _, analytic = _evaluate(lib, fn, values, order, grads=True)
        if not np.isfinite(value):
            raise mismatch("fn is not finite at these inputs (keep them in its domain with low/high or a strategy)")
        precision = _precision(lib, fn, values, order, given)
        if precision.noise > NOISY and None in given.values():
            break  # cancellation or randomness: a difference quotient cannot judge this point, set it aside
        numeric = _numeric(lib, fn, values, order, value, analytic, precision)
        if order == 1:
            compared = sum(int(np.sum(~np.isnan(n))) for n in numeric)
        found = _worst(analytic, numeric, precision.atol, precision.rtol)
        if found:
            i, element, a, n = found  # i counts the inputs that are differentiated
            of = "<u, fn(x)> for a fixed random u" if order == 1 else "<v, d<u, fn(x)>/dx> for fixed random u, v"
            raise mismatch(
                f"{['first', 'second'][order - 1]} derivative of input {wrt[i]} (shape {values[wrt[i]].shape}) is "
                f"wrong at element {element}: analytic {a:.10g}, numeric {n:.10g} (the gradient of {of}; {precision})"
            )
        if order == 1 and forward_mode and _has_jvp(fn) and (wrong := _forward_mode(fn, values, analytic, precision)):
            raise mismatch(wrong)
        if order == 1 and batched and (wrong := _batched(fn, values, precision)):
            raise mismatch(wrong)
    return compared


def _strategy(i: int, shape: Any, low: float, high: float) -> st.SearchStrategy:
    shape = _shape_or_strategy(f"shape {i}", shape)
    return shape if isinstance(shape, st.SearchStrategy) else arrays(shape, min_value=low, max_value=high)


def check_gradients(
    fn: Callable[..., Any],
    *shapes: tuple[int, ...] | st.SearchStrategy,
    low: float = -3.0,
    high: float = 3.0,
    second_order: bool = True,
    forward_mode: bool = True,
    batched: bool = False,
    max_examples: int | None = None,
    seed: int | None = None,
    library: str = "torch",
    reference: Callable[..., Any] | None = None,
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> None:
    """Check ``fn``'s first (and second) derivatives against central differences over
    ``max_examples`` inputs drawn by hypothesis: one float64 array in [low, high] per shape, or
    whatever a strategy given in place of a shape draws. Returns None, or raises
    ``GradientMismatch`` for shrunk inputs, with ``.inputs`` and a runnable ``.repro``.

    At each point the rounding noise of fn is measured, and the step ``eps`` and the tolerance
    ``atol + rtol |numeric|`` are chosen for the precision it shows (float64 or float32; below
    float32 it refuses unless all three are given). A torch Function's ``jvp`` is checked too
    (``forward_mode``), and with ``batched=True`` its per-sample gradients under torch.func.vmap.
    Elements within eps of a kink (one-sided differences disagree) are set aside. ``max_examples``
    (100) and ``seed`` (0) default to pytest's --gradients-max-examples and --gradients-seed.
    Hypothesis keeps no example database (``database=None``): a run depends only on the seed.
    """
    _library(library)
    _check_library_of(fn, library)
    if not shapes:
        raise CheckGradientsError(
            "give one shape (or strategy) per input of fn, e.g. check_gradients(fn, (3, 4), (4,))"
        )
    for name, number in (("low", low), ("high", high)):
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            raise CheckGradientsError(f"{name} must be a number, not {number!r}")
    if not low < high:
        raise CheckGradientsError(f"low must be below high, got low={low}, high={high}")
    max_examples = pytest_plugin.defaults["max_examples"] if max_examples is None else max_examples
    seed = pytest_plugin.defaults["seed"] if seed is None else seed
    if not (isinstance(max_examples, int) and not isinstance(max_examples, bool) and max_examples > 0):
        raise CheckGradientsError(f"max_examples must be a positive int, not {max_examples!r}")
    strategy = st.tuples(*(_strategy(i, s, low, high) for i, s in enumerate(shapes)))
    if forward_mode and _has_jvp(fn) is False:
        warnings.warn(
            f"{fn.__self__.__name__} defines no jvp: its forward mode is not checked (forward_mode=False: no warning)",
            ForwardModeNotChecked,
            stacklevel=2,
        )
    options = dict(library=library, second_order=second_order, forward_mode=forward_mode, batched=batched,
                   reference=reference, eps=eps, atol=atol, rtol=rtol)  # fmt: skip
    compared = []

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink],
        report_multiple_bugs=False,
        verbosity=hypothesis.Verbosity.quiet,
        suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
    )
    @hypothesis.given(strategy)
    def check(drawn: tuple) -> None:
        try:
            compared.append(check_gradients_at(fn, *drawn, **options))
        except CheckGradientsError as error:
            raise _Misuse(error) from None

    try:
        check()
    except _Misuse as misuse:
        raise misuse.args[0] from None
    if not sum(compared):
        raise CheckGradientsError(
            "no element was compared: every input was empty, or every element lay at a kink, or fn's rounding noise "
            f"was above {NOISY} of its values at every point (randomness, or cancellation)"
        )


__all__: Sequence[str] = [
    "shapes",
    "broadcastable_shapes",
    "arrays",
    "broadcastable_arrays",
    "tensors",
    "assert_matches_torch",
    "Composition",
    "compositions",
    "assert_composition_matches_torch",
    "check_gradients",
    "check_gradients_at",
    "GradientMismatch",
    "CheckGradientsError",
    "ForwardModeNotChecked",
]
