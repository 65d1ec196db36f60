"""Every differentiable op: values, gradients and second derivatives equal torch's in float64,
over hypothesis-drawn shapes including broadcasting."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import minigrad
from minigrad import testing

# name -> (function of (lib, *tensors), number of broadcastable operands, array kwargs)
ELEMENTWISE = {
    "add": (lambda lib, a, b: a + b, 2, {}),
    "sub": (lambda lib, a, b: a - b, 2, {}),
    "mul": (lambda lib, a, b: a * b, 2, {}),
    "div": (lambda lib, a, b: a / b, 2, {"away_from_zero": 0.5}),
    "pow": (lambda lib, a, b: a.abs() ** b, 2, {"away_from_zero": 0.5}),
    "maximum": (lambda lib, a, b: lib.maximum(a, b), 2, {}),
    "where": (lambda lib, a, b: lib.where(a > 0, a, b), 2, {}),
    "scalar_left": (lambda lib, a: 2.0 - 3.0 / a + 0.5 * a, 1, {"away_from_zero": 0.5}),
    "pow_scalar": (lambda lib, a: a**3 + 2**a, 1, {}),
    "neg": (lambda lib, a: -a, 1, {}),
    "exp": (lambda lib, a: a.exp(), 1, {}),
    "log": (lambda lib, a: a.abs().log(), 1, {"away_from_zero": 0.1}),
    "sqrt": (lambda lib, a: a.abs().sqrt(), 1, {"away_from_zero": 0.1}),
    "abs": (lambda lib, a: a.abs(), 1, {"away_from_zero": 0.01}),
    "tanh": (lambda lib, a: a.tanh(), 1, {}),
    "sigmoid": (lambda lib, a: a.sigmoid(), 1, {"min_value": -40, "max_value": 40}),
    "relu": (lambda lib, a: a.relu(), 1, {"away_from_zero": 0.01}),
    "clamp": (lambda lib, a: a.clamp(-1, 1.5), 1, {}),
    "clamp_min": (lambda lib, a: a.clamp(min=0.5), 1, {}),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@given(data=st.data())
def test_elementwise_matches_torch(name, data):
    fn, arity, kwargs = ELEMENTWISE[name]
    arrays = data.draw(testing.broadcastable_arrays(arity, **kwargs))
    testing.assert_matches_torch(fn, *arrays)
    testing.assert_second_derivative_matches_torch(fn, *arrays)


def _dims(draw, ndim):
    """None, one dim (maybe negative) or a tuple of distinct dims."""
    if ndim == 0:
        return None
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    picked = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(d - ndim if draw(st.booleans()) else d for d in picked)


@pytest.mark.parametrize("op", ["sum", "mean", "var", "logsumexp"])
@given(data=st.data())
def test_reductions_match_torch(op, data):
    x = data.draw(testing.arrays(testing.shapes(min_dims=1, max_side=4)))
    dim = _dims(data.draw, x.ndim)
    keepdim = data.draw(st.booleans())
    if op == "logsumexp" and dim is None:
        dim = tuple(range(x.ndim))
    if op == "var":
        count = x.size if dim is None else np.prod([x.shape[d] for d in np.atleast_1d(dim)])
        if count < 2:
            return  # torch gives nan/inf for the variance of one element
        if dim is None:
            testing.assert_matches_torch(lambda lib, a: a.var(), x)
            return
    fn = (lambda lib, a: getattr(a, op)()) if dim is None else (lambda lib, a: getattr(a, op)(dim, keepdim=keepdim))
    testing.assert_matches_torch(fn, x)
    testing.assert_second_derivative_matches_torch(fn, x, atol=1e-7)


@pytest.mark.parametrize("op", ["max", "min"])
@given(data=st.data())
def test_max_min_match_torch(op, data):
    x = data.draw(
        testing.arrays(testing.shapes(min_dims=1), min_value=-100, max_value=100).filter(
            lambda a: len(np.unique(a)) == a.size
        )
    )  # ties: torch's with-dim choice is unspecified
    testing.assert_matches_torch(lambda lib, a: getattr(a, op)(), x)
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    keepdim = data.draw(st.booleans())
    testing.assert_matches_torch(lambda lib, a: getattr(a, op)(dim, keepdim=keepdim).values, x)
    m, t = getattr(minigrad.tensor(x), op)(dim, keepdim), getattr(torch.tensor(x), op)(dim, keepdim)
    np.testing.assert_array_equal(m.indices.data, t.indices.numpy())


def test_max_ties_share_gradient_like_torch():
    x = np.array([1.0, 3.0, 3.0, 2.0])
    testing.assert_matches_torch(lambda lib, a: a.max() * 2, x)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax_family_matches_torch(op, data):
    x = data.draw(testing.arrays(testing.shapes(min_dims=1), min_value=-20, max_value=20))
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    testing.assert_matches_torch(lambda lib, a: getattr(a, op)(dim), x)
    testing.assert_second_derivative_matches_torch(lambda lib, a: getattr(a, op)(dim), x, atol=1e-7)


@st.composite
def matmul_operands(draw):
    """Operands for matmul, 1-D to 4-D, with broadcast batch dimensions."""
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    batch_a, batch_b = draw(testing.broadcastable_shapes(2, max_dims=2))
    a_shape = (k,) if draw(st.booleans()) and not batch_a else (*batch_a, n, k)
    b_shape = (k,) if draw(st.booleans()) and not batch_b else (*batch_b, k, m)
    return draw(testing.arrays(a_shape)), draw(testing.arrays(b_shape))


@given(matmul_operands())
def test_matmul_matches_torch(operands):
    testing.assert_matches_torch(lambda lib, a, b: a @ b, *operands)
    testing.assert_matches_torch(lambda lib, a, b: lib.matmul(a, b), *operands)
    testing.assert_second_derivative_matches_torch(lambda lib, a, b: (a @ b) * (a @ b), *operands)


@given(data=st.data())
def test_mm_and_t_match_torch(data):
    n, k, m = (data.draw(st.integers(1, 5)) for _ in range(3))
    a, b = data.draw(testing.arrays((n, k))), data.draw(testing.arrays((m, k)))
    testing.assert_matches_torch(lambda lib, a, b: lib.mm(a, b.t()), a, b)


@given(data=st.data())
def test_shape_ops_match_torch(data):
    x = data.draw(testing.arrays(testing.shapes(min_dims=2, max_dims=4)))
    nd = x.ndim
    d0, d1 = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
    perm = data.draw(st.permutations(range(nd)))
    testing.assert_matches_torch(lambda lib, a: a.transpose(d0, d1) * 2, x)
    testing.assert_matches_torch(lambda lib, a: a.permute(*perm) * 2, x)
    testing.assert_matches_torch(lambda lib, a: a.reshape(-1) * 2, x)
    testing.assert_matches_torch(lambda lib, a: a.view(x.shape[0], -1) * 2, x)
    testing.assert_matches_torch(lambda lib, a: a.unsqueeze(d0).squeeze() * 2, x)
    testing.assert_matches_torch(lambda lib, a: a.unsqueeze(0).expand(3, *x.shape) * 2, x)
    testing.assert_matches_torch(lambda lib, a: a.mT * 2, x)


@given(data=st.data())
def test_expand_of_singletons_matches_torch(data):
    shape = data.draw(testing.shapes(min_dims=1, max_dims=3, max_side=1))
    target = tuple(data.draw(st.integers(1, 3)) for _ in shape)
    x = data.draw(testing.arrays(shape))
    testing.assert_matches_torch(lambda lib, a: a.expand(*target) * 1.5, x)


@given(data=st.data())
def test_indexing_matches_torch(data):
    x = data.draw(testing.arrays(testing.shapes(min_dims=2, max_dims=3, min_side=2)))
    n0 = x.shape[0]
    i = data.draw(st.integers(-n0, n0 - 1))
    rows = data.draw(st.lists(st.integers(0, n0 - 1), min_size=1, max_size=5))  # repeats allowed
    start, stop = sorted(data.draw(st.tuples(st.integers(0, n0), st.integers(0, n0))))
    step = data.draw(st.integers(1, 2))
    idx_rows = np.array(rows)
    testing.assert_matches_torch(lambda lib, a: a[i], x)
    testing.assert_matches_torch(lambda lib, a: a[start:stop:step, ..., None], x)
    testing.assert_matches_torch(lambda lib, a: a[lib.tensor(idx_rows)], x)
    testing.assert_matches_torch(lambda lib, a: a[lib.tensor(idx_rows), 1:], x)
    testing.assert_matches_torch(lambda lib, a: a[a > 0], x)
    testing.assert_matches_torch(lambda lib, a: a[..., 0].sum() * a[:, None, 0], x)


@given(data=st.data())
def test_cat_and_stack_match_torch(data):
    shape = data.draw(testing.shapes(min_dims=1, max_dims=3))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    arrays = [
        data.draw(testing.arrays(shape[: dim % len(shape)] + (s,) + shape[dim % len(shape) + 1 :])) for s in sizes
    ]
    testing.assert_matches_torch(lambda lib, *ts: lib.cat(ts, dim=dim) * 2, *arrays)
    same = [data.draw(testing.arrays(shape)) for _ in sizes]
    testing.assert_matches_torch(lambda lib, *ts: lib.stack(ts, dim=dim) * 2, *same)


@given(data=st.data())
def test_gather_matches_torch(data):
    x = data.draw(testing.arrays(testing.shapes(min_dims=1, max_dims=3)))
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    idx_shape = tuple(data.draw(st.integers(1, 4)) if d == dim % x.ndim else n for d, n in enumerate(x.shape))
    index = data.draw(testing.hnp.arrays(np.int64, idx_shape, elements=st.integers(0, x.shape[dim] - 1)))
    testing.assert_matches_torch(lambda lib, a: a.gather(dim, lib.tensor(index)), x)


@given(testing.compositions())
def test_random_compositions_match_torch(comp):
    testing.assert_composition_matches_torch(comp)


@pytest.mark.parametrize(
    "fn, arity, kwargs",
    [ELEMENTWISE[n] for n in ("div", "pow", "maximum", "log", "tanh", "sigmoid")],
)
@given(data=st.data())
def test_gradcheck_elementwise(fn, arity, kwargs, data):
    arrays = data.draw(testing.broadcastable_arrays(arity, max_dims=3, **kwargs))
    if "maximum" in repr(fn) or fn is ELEMENTWISE["maximum"][0]:
        arrays = tuple(a + 0.01 * i for i, a in enumerate(arrays))
    inputs = [minigrad.tensor(a, requires_grad=True) for a in arrays]
    assert minigrad.gradcheck(lambda *ts: fn(minigrad, *ts), inputs)


@given(testing.arrays(testing.shapes(min_dims=1, max_dims=3)))
def test_gradcheck_reductions_and_softmax(x):
    t = minigrad.tensor(x, requires_grad=True)
    assert minigrad.gradcheck(lambda a: a.softmax(-1) * a.logsumexp(-1, keepdim=True), [t])
    assert minigrad.gradcheck(lambda a: a.log_softmax(0).mean(0) + a.sum(), [t])


@given(matmul_operands())
def test_gradcheck_matmul(operands):
    inputs = [minigrad.tensor(a, requires_grad=True) for a in operands]
    assert minigrad.gradcheck(lambda a, b: (a @ b).tanh(), inputs)
