"""Exact where torch is, at the edges torch's own sample inputs reach: 0-d and empty tensors,
``dim=()``, a bool read as ``unbiased``, tensor bounds for clamp, and the special points of pow,
abs, relu and maximum (zeros, ties, NaN). Each class of input is drawn, not one example."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad
from minigrad import testing

# shapes with 0-d and zero-size sides
EDGE_SHAPES = testing.shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)
# values where the derivative rules have their special points
SPECIAL = st.sampled_from([np.nan, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])


def special_arrays(shape):
    return hnp.arrays(np.float64, shape, elements=SPECIAL)


@given(data=st.data(), op=st.sampled_from(["softmax", "log_softmax", "logsumexp"]))
def test_softmax_family_on_0d_and_empty_tensors(data, op):
    x = data.draw(testing.arrays(EDGE_SHAPES))
    dim = data.draw(st.integers(-max(x.ndim, 1), max(x.ndim, 1) - 1))
    fn = {
        "softmax": lambda lib, t: t.softmax(dim),
        "log_softmax": lambda lib, t: t.log_softmax(dim),
        "logsumexp": lambda lib, t: lib.logsumexp(t, dim),  # -inf over an empty axis
    }[op]
    testing.assert_matches_torch(fn, x)


@given(x=testing.arrays(EDGE_SHAPES), op=st.sampled_from(["sum", "mean"]), empty=st.sampled_from([(), []]),
       keepdim=st.booleans())  # fmt: skip
def test_an_empty_dim_list_reduces_every_dimension(x, op, empty, keepdim):
    if op == "mean" and x.size == 0:
        return  # the mean of nothing is nan in both, with a warning in NumPy
    testing.assert_matches_torch(lambda lib, t: getattr(t, op)(dim=empty, keepdim=keepdim), x)


@given(x=testing.arrays(testing.shapes(min_dims=0, max_dims=3)), unbiased=st.booleans())
def test_a_bool_given_to_var_is_unbiased_not_a_dim(x, unbiased):
    if x.size <= 1:
        return  # a single element's unbiased variance is nan (0 / 0) in both
    testing.assert_matches_torch(lambda lib, t: t.var(unbiased), x)


@given(data=st.data())
def test_gather_with_empty_and_0d_indices(data):
    x = data.draw(testing.arrays(EDGE_SHAPES))
    dim = data.draw(st.integers(-max(x.ndim, 1), max(x.ndim, 1) - 1))
    d = dim % max(x.ndim, 1)
    sides = [data.draw(st.integers(0, 3)) for _ in range(x.ndim)]
    if x.ndim:
        sides = [min(s, n) if i != d else s for i, (s, n) in enumerate(zip(sides, x.shape))]
    if x.ndim and x.shape[d] == 0:
        sides[d] = 0  # nothing to point at
    high = x.shape[d] - 1 if x.ndim else 0
    index = data.draw(hnp.arrays(np.int64, tuple(sides), elements=st.integers(0, max(high, 0))))
    out_m = minigrad.tensor(x, requires_grad=True).gather(dim, minigrad.tensor(index))
    t = torch.tensor(x, requires_grad=True)
    out_t = torch.gather(t, dim, torch.tensor(index))
    np.testing.assert_array_equal(out_m.data, out_t.detach().numpy())
    testing.assert_matches_torch(lambda lib, a: lib.gather(a, dim, lib.tensor(index)), x)


@pytest.mark.parametrize(("dim0", "dim1"), [(0, 0), (0, -1), (-1, -1)])
def test_transpose_of_a_0d_tensor(dim0, dim1):
    testing.assert_matches_torch(lambda lib, t: t.transpose(dim0, dim1) * 3, np.array(2.5))


@given(x=testing.arrays(testing.shapes(min_dims=2, max_dims=3, min_side=0)), where=st.integers(0, 2))
def test_cat_skips_a_1d_empty_tensor_beside_bigger_ones(x, where):
    empty = np.zeros(0)

    def fn(lib, a, e):
        parts = [a, a * 2]
        parts.insert(where, e)
        return lib.cat(parts, 0)

    testing.assert_matches_torch(fn, x, empty)


@given(data=st.data())
def test_pow_at_zero_bases_and_zero_exponents(data):
    a, b = data.draw(testing.broadcastable_shapes(2, max_dims=2).flatmap(lambda s: st.tuples(*map(special_arrays, s))))
    testing.assert_matches_torch(lambda lib, x, y: x**y, a, b)


@given(data=st.data(), op=st.sampled_from(["abs", "relu", "maximum", "clamp"]))
def test_kinks_ties_and_nan(data, op):
    shapes = data.draw(testing.broadcastable_shapes(3, max_dims=2))
    if op == "clamp":  # torch's clamp keeps the input's shape: its bounds must broadcast to it
        shapes = (np.broadcast_shapes(*shapes), *shapes[1:])
    a, b, c = (data.draw(special_arrays(s)) for s in shapes)
    fn = {
        "abs": lambda lib, x, y, z: x.abs(),
        "relu": lambda lib, x, y, z: x.relu(),
        "maximum": lambda lib, x, y, z: lib.maximum(x, y),
        "clamp": lambda lib, x, y, z: x.clamp(y, z),  # tensor bounds, ties, min > max, NaN
    }[op]
    testing.assert_matches_torch(fn, a, b, c)


@given(data=st.data(), side=st.sampled_from(["min", "max"]))
def test_clamp_with_one_tensor_bound(data, side):
    x = data.draw(testing.arrays(testing.shapes(0, 3)))
    bound = data.draw(testing.arrays(testing.shapes_broadcasting_to(x.shape)))
    testing.assert_matches_torch(lambda lib, t, b: t.clamp(**{side: b}), x, bound)


def test_clamp_bounds_that_do_not_fit_the_input_are_refused():
    with pytest.raises(minigrad.ShapeError, match=r"bounds of shapes \(3,\) and \(\) do not broadcast"):
        minigrad.zeros(2).clamp(min=minigrad.zeros(3))


def test_rmatmul_keeps_both_gradients():
    a, b = np.random.default_rng(0).standard_normal((2, 3, 4)), np.random.default_rng(1).standard_normal((3, 3))
    testing.assert_matches_torch(lambda lib, x, y: x.__rmatmul__(y), a, b)


@pytest.mark.parametrize("training", [True, False])
def test_dropout_with_p_one(training):
    x = minigrad.randn(3, 4, requires_grad=True)
    out = minigrad.nn.functional.dropout(x, 1.0, training=training)
    np.testing.assert_array_equal(out.data, np.zeros((3, 4)) if training else x.data)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.zeros((3, 4)) if training else np.ones((3, 4)))
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        minigrad.nn.functional.dropout(x, 1.5)


def test_mixed_dtype_cat_gives_each_input_a_gradient_of_its_own_dtype_under_create_graph():
    rng = np.random.default_rng(0)
    a32, b64 = rng.standard_normal(3).astype(np.float32), rng.standard_normal(2)
    grads = {}
    for lib in (minigrad, torch):
        a = lib.tensor(a32, requires_grad=True)
        b = lib.tensor(b64, requires_grad=True)
        y = lib.cat([a, b])
        ga, gb = (minigrad.autograd.grad if lib is minigrad else torch.autograd.grad)(
            (y**3).sum(), [a, b], create_graph=True
        )
        assert str(ga.dtype).endswith("float32") and str(gb.dtype).endswith("float64")
        (gga,) = (minigrad.autograd.grad if lib is minigrad else torch.autograd.grad)(ga.sum(), [a])
        grads[lib] = (np.asarray(ga.detach().numpy()), np.asarray(gga.numpy()))
    for mine, theirs in zip(grads[minigrad], grads[torch]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6)


@pytest.mark.parametrize(
    "name", ["exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "erf", "sin", "cos", "log1p", "expm1", "reciprocal"]
)
def test_a_float_function_of_an_integer_tensor_is_float32_as_torch(name):
    ours, theirs = getattr(minigrad.tensor([1, 2, 3]), name)(), getattr(torch.tensor([1, 2, 3]), name)()
    assert ours.dtype == np.float32 and theirs.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


@pytest.mark.parametrize("division", [lambda t: 1 / t, lambda t: t / 2, lambda t: 7 / t, lambda t: t / t])
def test_true_division_of_integers_is_float32_as_torch(division):
    ours, theirs = division(minigrad.tensor([1, 2, 4])), division(torch.tensor([1, 2, 4]))
    assert ours.dtype == np.float32 and theirs.dtype == torch.float32
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
