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
hypothesis-drawn inputs and raises ``GradientMismatch`` with a shrunk, runnable counterexample.
It needs hypothesis: ``pip install "minigrad-finetune[testing]"``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch  # imported with the module: inside the first example it would blow hypothesis's deadline

try:
    import hypothesis
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as error:
    raise ImportError('minigrad.testing needs hypothesis: pip install "minigrad-finetune[testing]"') from error

import minigrad
from minigrad import pytest_plugin
from minigrad.gradcheck import perturbed

# ----------------------------------------------------------------------------- strategies


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
    return hnp.arrays(np.dtype(dtype), shape, elements=elements)


def broadcastable_arrays(num: int = 2, **kwargs: Any) -> st.SearchStrategy:
    """``num`` float64 arrays whose shapes broadcast together."""
    array_kwargs = {k: kwargs.pop(k) for k in ("min_value", "max_value", "away_from_zero") if k in kwargs}
    return broadcastable_shapes(num, **kwargs).flatmap(
        lambda shapes_: st.tuples(*(arrays(s, **array_kwargs) for s in shapes_))
    )


def tensors(shape: Any = None, requires_grad: bool = True, **kwargs: Any) -> st.SearchStrategy:
    """minigrad Tensors (float64) with bounded elements; ``shape`` is a shape or a strategy of shapes."""
    return arrays(shapes() if shape is None else shape, **kwargs).map(
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


class CheckGradientsError(ValueError):
    """check_gradients was called in a way it cannot check; the message says what to change."""


class _Misuse(BaseException):
    """Carries a CheckGradientsError out through hypothesis, which would shrink an Exception like a bug."""


def _library(name: str) -> Any:
    if name not in ("torch", "minigrad"):
        raise CheckGradientsError(f"library must be 'torch' or 'minigrad', not {name!r}")
    return torch if name == "torch" else minigrad


def _check_library_of(fn: Callable, library: str) -> None:
    """A Function's ``.apply`` belongs to one library: say so before running it on the other's tensors."""
    owner = getattr(fn, "__self__", None)
    for name, base in (("minigrad", minigrad.Function), ("torch", torch.autograd.Function)):
        if isinstance(owner, type) and issubclass(owner, base) and name != library:
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
        values.append(np.array(v, dtype=np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
    if not any(_is_input(v) for v in values):
        raise CheckGradientsError("no input to differentiate: give a shape or a strategy of float arrays")
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
    floats = [o for o in outs if isinstance(o, lib.Tensor) and o.detach().numpy().dtype.kind == "f"]
    if not floats:
        got = f"a tensor of {out.dtype}" if hasattr(out, "dtype") else type(out).__name__
        raise CheckGradientsError(f"fn must return a float {lib.__name__} tensor (or a tuple of them), not {got}")
    return floats


@functools.lru_cache(maxsize=256)
def _weights(lib: Any, shape: tuple[int, ...], offset: float) -> Any:
    """The fixed random upstream gradient ``_grad_seed(shape) + offset``, as a tensor made once."""
    return lib.tensor(_grad_seed(shape) + offset)


def _evaluate(lib: Any, fn: Callable, values: list[Any], order: int, grads: bool) -> tuple[float, list | None]:
    """The scalar S = sum_k <u_k, fn(x)_k> with fixed random u_k (order 1), or T = sum_i <v_i, dS/dx_i>
    (order 2), and, with ``grads``, its analytic gradient with respect to each float input: one
    backward pass, a vector-Jacobian product that involves every output element."""
    with lib.enable_grad() if grads or order == 2 else lib.no_grad():
        args = _args(lib, values)
        inputs = [a for a, v in zip(args, values) if _is_input(v)]
        outs = _float_outputs(lib, fn(*args))
        s = sum((o * _weights(lib, tuple(o.shape), k)).sum() for k, o in enumerate(outs))
        if grads and order == 1 and not s.requires_grad:
            raise CheckGradientsError("fn's output does not require grad: is it detached from the inputs?")
        if order == 2:
            first = lib.autograd.grad(s, inputs, create_graph=grads, allow_unused=True)
            terms = [(g * _weights(lib, tuple(g.shape), 0.5)).sum() for g in first if g is not None]
            s = sum(terms, lib.tensor(0.0))
        if not grads:
            return s.item(), None
        found = lib.autograd.grad(s, inputs, allow_unused=True) if s.requires_grad else [None] * len(inputs)
        return s.item(), _grad_arrays(found, [tuple(t.shape) for t in inputs])


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
             eps: float, atol: float, rtol: float) -> list[np.ndarray]:  # fmt: skip
    """Central differences of S (or T) for every float input element. Where one disagrees with
    the analytic derivative, the slopes over the four half-steps from x - eps to x + eps are
    compared too: if they disagree by more than the tolerance, a kink (relu at 0, a tie in max)
    or a jump (relu's derivative at 0) lies within eps, the derivative there is not known well
    enough to judge, and the element is set aside (NaN). Elsewhere the central difference is
    within half that disagreement of the true slope: a correct function raises no false alarm."""
    numeric = []
    f = lambda: _evaluate(lib, fn, values, order, grads=False)[0]  # noqa: E731
    for v, a in zip(filter(_is_input, values), analytic):
        found = np.empty(v.shape)
        for j, plus, minus in perturbed(f, v, eps):
            found.flat[j] = central = (plus - minus) / (2 * eps)
            tolerance = atol + rtol * abs(central)
            if not abs(a.flat[j] - central) <= tolerance:
                ((_, half_plus, half_minus),) = perturbed(f, v, eps / 2, elements=[j])
                slopes = np.diff([minus, half_minus, value, half_plus, plus]) / (eps / 2)
                if not np.ptp(slopes) <= tolerance:
                    found.flat[j] = np.nan
        numeric.append(found)
    return numeric


def _importable(obj: Any) -> tuple[str, str] | None:
    """(module, qualified name) under which ``obj`` can be imported again, or None (a lambda,
    a function defined inside another)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    found = sys.modules.get(module or "")
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return (module, qualname) if found is obj and found is not None else None


def _name_in_repro(fn: Callable, placeholder: str, lines: list[str]) -> str:
    """The expression for ``fn`` in a repro, adding its import to ``lines``."""
    owner = getattr(fn, "__self__", None)  # Function.apply is a method bound to the class
    target, attribute = (owner, f".{fn.__name__}") if isinstance(owner, type) else (fn, "")
    where = _importable(target)
    if where is None:
        lines.append(f"# {placeholder} = {fn!r}: it cannot be imported, so define {placeholder} before running this")
        return placeholder
    lines.append(f"from {where[0]} import {where[1].split('.')[0]}")
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


def check_gradients_at(
    fn: Callable[..., Any],
    *inputs: Any,
    library: str = "torch",
    second_order: bool = True,
    reference: Callable[..., Any] | None = None,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> int:
    """Check ``fn``'s derivatives at one point: float NumPy arrays among ``inputs`` become float64
    tensors that require grad, the rest is passed as is. Raises ``GradientMismatch``; returns how
    many first-derivative elements were compared (the others lay at a kink and were set aside)."""
    lib = _library(library)
    _check_library_of(fn, library)
    values = _values(lib, inputs)
    wrt = [k for k, v in enumerate(values) if _is_input(v)]
    options = {"library": library, "second_order": second_order, "eps": eps, "atol": atol, "rtol": rtol}
    if reference is not None:
        options["reference"] = reference

    def mismatch(message: str) -> GradientMismatch:
        return GradientMismatch(message, values, _repro(fn, values, options))

    tolerance = f"eps={eps}, atol={atol}, rtol={rtol}"
    if reference is not None:
        with lib.no_grad():
            outs = [[o.detach().numpy() for o in _float_outputs(lib, f(*_args(lib, values)))] for f in (fn, reference)]
        if [o.shape for o in outs[0]] != [o.shape for o in outs[1]]:
            raise mismatch(
                f"fn's output shapes {[o.shape for o in outs[0]]} are not the reference's {[o.shape for o in outs[1]]}"
            )
        grads = [_evaluate(lib, f, values, 1, grads=True)[1] for f in (fn, reference)]
        for what, found in (("output", _worst(*outs, atol, rtol)), ("gradient", _worst(*grads, atol, rtol))):
            if found:
                k, element, mine, theirs = found
                name = f"output {k}" if what == "output" else f"first derivative of input {wrt[k]}"
                raise mismatch(
                    f"fn and reference differ: {name} at element {element}: fn {mine:.10g}, "
                    f"reference {theirs:.10g} ({tolerance})"
                )
    compared = 0
    for order in (1, 2) if second_order else (1,):
        value, analytic = _evaluate(lib, fn, values, order, grads=True)
        if not np.isfinite(value):
            raise mismatch("fn is not finite at these inputs (keep them in its domain with low/high or a strategy)")
        numeric = _numeric(lib, fn, values, order, value, analytic, eps, atol, rtol)
        if order == 1:
            compared = sum(int(np.sum(~np.isnan(n))) for n in numeric)
        found = _worst(analytic, numeric, atol, rtol)
        if found:
            i, element, a, n = found  # i counts the inputs that are differentiated
            of = "<u, fn(x)> for a fixed random u" if order == 1 else "<v, d<u, fn(x)>/dx> for fixed random u, v"
            raise mismatch(
                f"{['first', 'second'][order - 1]} derivative of input {wrt[i]} (shape {values[wrt[i]].shape}) is "
                f"wrong at element {element}: analytic {a:.10g}, numeric {n:.10g} (the gradient of {of}; {tolerance})"
            )
    return compared


def _strategy(i: int, shape: Any, low: float, high: float) -> st.SearchStrategy:
    if isinstance(shape, st.SearchStrategy):
        return shape
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise CheckGradientsError(
            f"shape {i} is {shape!r}: give a tuple of non-negative ints, such as (3, 4) or (), or a hypothesis strategy"
        )
    return arrays(shape, min_value=low, max_value=high)


def check_gradients(
    fn: Callable[..., Any],
    *shapes: tuple[int, ...] | st.SearchStrategy,
    low: float = -3.0,
    high: float = 3.0,
    second_order: bool = True,
    max_examples: int | None = None,
    seed: int | None = None,
    library: str = "torch",
    reference: Callable[..., Any] | None = None,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> None:
    """Check ``fn``'s first (and second) derivatives against float64 central differences over
    ``max_examples`` inputs drawn by hypothesis: one float64 array in [low, high] per shape, or
    whatever a strategy given in place of a shape draws. Returns None, or raises
    ``GradientMismatch`` for shrunk inputs, with ``.inputs`` and a runnable ``.repro``.

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
    if not low < high:
        raise CheckGradientsError(f"low must be below high, got low={low}, high={high}")
    max_examples = pytest_plugin.defaults["max_examples"] if max_examples is None else max_examples
    seed = pytest_plugin.defaults["seed"] if seed is None else seed
    if not (isinstance(max_examples, int) and max_examples > 0):
        raise CheckGradientsError(f"max_examples must be a positive int, not {max_examples!r}")
    strategy = st.tuples(*(_strategy(i, s, low, high) for i, s in enumerate(shapes)))
    options = dict(library=library, second_order=second_order, reference=reference, eps=eps, atol=atol, rtol=rtol)
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
        raise CheckGradientsError("no element was compared: every input was empty or every element lay at a kink")


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
]
