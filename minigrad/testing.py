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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch  # imported with the module: inside the first example it would blow hypothesis's deadline
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad

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
        first = lib.autograd.grad((out * lib.tensor(_grad_seed(tuple(out.shape)))).sum(), inputs,
                                  create_graph=True, allow_unused=True)  # fmt: skip
        terms = [(g * lib.tensor(_grad_seed(tuple(g.shape)) + 0.5)).sum() for g in first
                 if g is not None and g.requires_grad]  # fmt: skip
        second = lib.autograd.grad(sum(terms), inputs, allow_unused=True) if terms else [None] * len(inputs)
        zero = [g is None or getattr(g, "_is_zerotensor", lambda: False)() for g in second]  # torch's ZeroTensor
        found.append(
            [np.zeros(a.shape) if z else np.asarray(g.detach().numpy()) for g, z, a in zip(second, zero, arrays_)]
        )
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
]
