"""The ops real models use (a BERT, a GPT-2, a classifier's losses): value, gradient and second
derivative equal torch's in float64, over hypothesis-drawn shapes (0-d, empty and broadcast
shapes where the op takes them)."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad
from minigrad import testing


def F(lib):
    return minigrad.nn.functional if lib is minigrad else torch.nn.functional


def check(fn, *arrays, second=True, atol=1e-8, rtol=1e-6):
    testing.assert_matches_torch(fn, *arrays, atol=atol, rtol=rtol)
    if second:
        testing.assert_second_derivative_matches_torch(fn, *arrays, atol=atol, rtol=rtol)


EDGE = testing.shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)

# name -> (fn, array kwargs)
UNARY = {
    "sin": (lambda lib, x: x.sin(), {}),
    "cos": (lambda lib, x: x.cos(), {}),
    "log1p": (lambda lib, x: x.log1p(), {"min_value": -0.9}),
    "expm1": (lambda lib, x: x.expm1(), {}),
    "square": (lambda lib, x: x.square(), {}),
    "rsqrt": (lambda lib, x: x.abs().rsqrt(), {"away_from_zero": 0.2}),
    "reciprocal": (lambda lib, x: x.reciprocal(), {"away_from_zero": 0.2}),
    "sign": (lambda lib, x: x.sign() * x, {}),
    "silu": (lambda lib, x: F(lib).silu(x), {}),
    "softplus": (lambda lib, x: F(lib).softplus(x, beta=2.0, threshold=3.14159), {}),
    "leaky_relu": (lambda lib, x: F(lib).leaky_relu(x, 0.1), {"away_from_zero": 0.01}),
    "elu": (lambda lib, x: F(lib).elu(x, 0.7), {"away_from_zero": 0.01}),
    "gelu": (lambda lib, x: F(lib).gelu(x), {}),
    "gelu_tanh": (lambda lib, x: F(lib).gelu(x, approximate="tanh"), {}),
    "logsigmoid": (lambda lib, x: F(lib).logsigmoid(x), {}),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_elementwise(name, data):
    fn, kwargs = UNARY[name]
    check(fn, data.draw(testing.arrays(EDGE, **kwargs)))


@given(pair=testing.broadcastable_arrays(2, min_side=0))
def test_minimum_broadcasts(pair):
    check(lambda lib, a, b: lib.minimum(a, b), *pair)


@given(x=testing.arrays(EDGE))
def test_masked_fill_tril_triu(x):
    check(lambda lib, t: t.masked_fill(t > 0.5, -2.0), x)
    if x.ndim >= 2:
        check(lambda lib, t: t.tril(-1) + t.triu(1) * 2 + t.tril() * 3, x)


@given(data=st.data())
def test_products(data):
    n, m, p, b = (data.draw(st.integers(0, 3)) for _ in range(4))
    v, w = data.draw(testing.arrays((n,))), data.draw(testing.arrays((m,)))
    check(lambda lib, x, y: x.outer(y), v, w)
    check(lambda lib, x, y: x.dot(y * 2), v, v)
    a, c = data.draw(testing.arrays((b, n, m))), data.draw(testing.arrays((b, m, p)))
    check(lambda lib, x, y: x.bmm(y), a, c)
    bias = data.draw(testing.arrays(testing.shapes_broadcasting_to((b, n, p))))
    check(lambda lib, i, x, y: lib.baddbmm(i, x, y, beta=0.5, alpha=2.0), bias, a, c)
    a2, c2 = data.draw(testing.arrays((n, m))), data.draw(testing.arrays((m, p)))
    bias2 = data.draw(testing.arrays(testing.shapes_broadcasting_to((n, p))))
    check(lambda lib, i, x, y: lib.addmm(i, x, y, beta=-1.0, alpha=3.0), bias2, a2, c2)


TIES = st.sampled_from([-1.0, 0.0, 0.5, 2.0])


@given(data=st.data(), op=st.sampled_from(["amax", "amin"]), keepdim=st.booleans())
def test_amax_amin_share_ties(data, op, keepdim):
    x = data.draw(hnp.arrays(np.float64, testing.shapes(0, 3, 1, 3), elements=TIES))
    dims = data.draw(st.sampled_from([(), 0, -1, (0, -1)][: 3 + (x.ndim > 1)])) if x.ndim else ()
    check(lambda lib, t: getattr(t, op)(dims, keepdim), x)


@given(data=st.data(), keepdim=st.booleans())
def test_prod_is_exact_at_zeros(data, keepdim):
    """Zeros (one, or several) along the product: where prod / x would divide by zero."""
    x = data.draw(hnp.arrays(np.float64, EDGE, elements=st.sampled_from([-2.0, -0.5, 0.0, 0.0, 1.5, 3.0])))
    dim = data.draw(st.one_of(st.none(), st.integers(-x.ndim, x.ndim - 1) if x.ndim else st.none()))
    check(lambda lib, t: t.prod() if dim is None else t.prod(dim, keepdim=keepdim), x)


@given(x=testing.arrays(testing.shapes(1, 3, 2, 4)), keepdim=st.booleans(), unbiased=st.booleans())
def test_std(x, keepdim, unbiased):
    gaps, size = np.ptp(x, axis=-1), np.abs(x).max(axis=-1, initial=0)
    # values a few ulps apart (or a variance in the subnormals) keep a few bits once the mean, rounded
    # by an ulp, is taken out: noise (torch's std of [-3, -3 - 4e-16] has the gradient [0.24, 0], the exact one
    # is [0.12, -0.12])
    assume(((gaps == 0) | ((gaps > 1e-100) & (gaps > 1e-12 * size))).all())
    spread = gaps.min() > 1e-3  # the second derivative blows up as the values meet
    check(lambda lib, t: t.std(-1, unbiased=unbiased, keepdim=keepdim), x, rtol=1e-5, second=spread)


@given(x=testing.arrays(testing.shapes(1, 3), away_from_zero=0.1), p=st.sampled_from([1, 2, 3, float("inf")]))
def test_norm(x, p):
    check(lambda lib, t: t.norm(p, dim=-1), x, second=p != float("inf"))
    check(lambda lib, t: t.norm(p), x, second=p != float("inf"))


def test_norm_of_zeros_has_gradient_zero():
    testing.assert_matches_torch(lambda lib, t: t.norm(), np.zeros(3))


@given(x=testing.arrays(testing.shapes(0, 3)))
def test_all_and_any_over_a_dim(x):
    for dims in [()] if x.ndim == 0 else [(), (0,), (-1,)]:
        for op in ("all", "any"):
            got = getattr(minigrad.tensor(x > 0), op)(*dims)
            want = getattr(torch.tensor(x > 0), op)(*dims)
            np.testing.assert_array_equal(got.data, want.numpy())


@given(data=st.data())
def test_shape_ops(data):
    x = data.draw(testing.arrays(testing.shapes(1, 3, 0, 4)))
    d = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[d]
    check(lambda lib, t: t.flip(d) * 2, x)
    check(lambda lib, t: t.flatten(0, d) * 3, x)
    check(lambda lib, t: t.movedim(d, 0) * 2, x)
    start = data.draw(st.integers(0, n))
    check(lambda lib, t: t.narrow(d, start, n - start) * 2, x)
    if n:
        size = data.draw(st.integers(1, n))
        check(lambda lib, t: lib.cat([p * (i + 1) for i, p in enumerate(t.split(size, d))], d), x)
        chunks = data.draw(st.integers(1, 4))
        check(lambda lib, t: lib.cat([p * (i + 1) for i, p in enumerate(t.chunk(chunks, d))], d), x)
        check(lambda lib, t: lib.stack([p * (i + 1) for i, p in enumerate(t.unbind(d))]), x)
        index = data.draw(hnp.arrays(np.int64, (data.draw(st.integers(0, 4)),), elements=st.integers(0, n - 1)))
        check(lambda lib, t: t.index_select(d, lib.tensor(index)) * 2, x)
    check(lambda lib, t: t.unflatten(d, (1, n)) * 2, x)
    reps = data.draw(st.lists(st.integers(0, 3), min_size=x.ndim, max_size=x.ndim + 1))
    check(lambda lib, t: t.repeat(*reps) * 2, x)
    check(lambda lib, t: t.tile(reps[:1]) * 2, x)


@given(data=st.data())
def test_take_along_dim_broadcasts_indices(data):
    x = data.draw(testing.arrays((3, 4)))
    idx = data.draw(hnp.arrays(np.int64, data.draw(st.sampled_from([(3, 2), (1, 2)])), elements=st.integers(0, 3)))
    check(lambda lib, t: lib.take_along_dim(t, lib.tensor(idx), 1) * 2, x)


# ----------------------------------------------------------------------------- nn.functional


@settings(deadline=None)
@given(data=st.data(), mask_kind=st.sampled_from(["none", "bool", "float", "causal"]))
def test_scaled_dot_product_attention(data, mask_kind):
    b, h, lq, lk, e = (data.draw(st.integers(1, 3)) for _ in range(5))
    q, k, v = (data.draw(testing.arrays(s)) for s in ((b, h, lq, e), (b, h, lk, e), (b, h, lk, e)))
    keep = data.draw(hnp.arrays(bool, (b, 1, lq, lk), elements=st.booleans()))
    keep[..., 0] = True  # every query sees a key
    mask = {"none": None, "bool": keep, "float": np.where(keep, 0.0, -1e9)}.get(mask_kind)
    causal = mask_kind == "causal" and lq <= lk

    def fn(lib, a, c, w):
        m = None if mask is None else lib.tensor(mask)
        return F(lib).scaled_dot_product_attention(a, c, w, attn_mask=m, is_causal=causal, scale=0.7)

    check(fn, q, k, v, rtol=1e-5, second=False)  # torch's CPU attention kernels have no second derivative


@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]), weighted=st.booleans())
def test_class_losses(data, reduction, weighted):
    n, c = data.draw(st.integers(1, 4)), data.draw(st.integers(2, 4))
    x = data.draw(testing.arrays((n, c)))
    labels = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    labels[-1] = -100 if n > 1 else labels[-1]  # one ignored target
    w = data.draw(testing.arrays((c,), min_value=0.1, max_value=2.0))
    probs = data.draw(testing.arrays((n, c), min_value=0.0, max_value=1.0)) + 0.01
    probs = probs / probs.sum(1, keepdims=True)

    def kw(lib):  # class weights are constants (torch does not differentiate them)
        return {"weight": lib.tensor(w) if weighted else None, "reduction": reduction}

    check(lambda lib, t: F(lib).cross_entropy(t, lib.tensor(labels), **kw(lib)), x)
    check(lambda lib, t: F(lib).cross_entropy(t, lib.tensor(labels), label_smoothing=0.2, **kw(lib)), x)
    check(lambda lib, t, pr: F(lib).cross_entropy(t, pr, **kw(lib)), x, probs)
    check(lambda lib, t: F(lib).nll_loss(t.log_softmax(1), lib.tensor(labels), **kw(lib)), x)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")  # torch's, about kl_div's mean
@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_regression_and_distribution_losses(data, reduction):
    shape = data.draw(testing.shapes(1, 3))
    x, y = data.draw(testing.arrays(shape)), data.draw(testing.arrays(shape))
    check(lambda lib, a, b: F(lib).l1_loss(a, b, reduction=reduction), x, y + 0.01 * np.sign(x - y + 1e-3))
    check(lambda lib, a, b: F(lib).smooth_l1_loss(a, b, reduction=reduction, beta=0.7), x, y)
    target = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.2, 0.5, 1.0])))
    # (the target is data: at target 0 torch's gradient for it is NaN, the -inf of d(t log t)/dt)
    check(lambda lib, a: F(lib).kl_div(a.log_softmax(-1), lib.tensor(target), reduction=reduction), x)
    check(lambda lib, a, t: F(lib).kl_div(a, t.log_softmax(-1), reduction="batchmean", log_target=True), x, y)
    pos = data.draw(testing.arrays(shape[-1:], min_value=0.5, max_value=3.0))
    weight = data.draw(testing.arrays(shape, min_value=0.0, max_value=2.0))
    t01 = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.3, 1.0])))

    def bce(lib, a):  # weights are constants (torch does not differentiate them)
        w, p = lib.tensor(weight), lib.tensor(pos)
        return F(lib).binary_cross_entropy_with_logits(a, lib.tensor(t01), weight=w, pos_weight=p, reduction=reduction)

    check(bce, x)


@given(pair=testing.broadcastable_arrays(2, min_dims=1, away_from_zero=0.1))
def test_cosine_similarity_and_normalize(pair):
    a, b = pair
    check(lambda lib, x, y: F(lib).cosine_similarity(x, y, dim=-1), a, b, rtol=1e-5)
    check(lambda lib, x: F(lib).normalize(x, dim=-1), a, rtol=1e-5)


@given(data=st.data(), padding=st.sampled_from([None, 0, 2]))
def test_embedding_and_one_hot(data, padding):
    weight = data.draw(testing.arrays((4, 3)))
    idx = data.draw(hnp.arrays(np.int64, testing.shapes(0, 2, 0, 3), elements=st.integers(0, 3)))
    check(lambda lib, w: F(lib).embedding(lib.tensor(idx), w, padding_idx=padding) * 2, weight)
    got = minigrad.nn.functional.one_hot(minigrad.tensor(idx), 5)
    np.testing.assert_array_equal(got.data, torch.nn.functional.one_hot(torch.tensor(idx), 5).numpy())
    assert got.dtype == np.int64


# ----------------------------------------------------------------------------- scans, sorting, scatter, pad, conv


@given(data=st.data())
def test_cumsum_roll_repeat_interleave(data):
    x = data.draw(testing.arrays(testing.shapes(1, 3, 0, 4)))
    d = data.draw(st.integers(-x.ndim, x.ndim - 1))
    check(lambda lib, t: t.cumsum(d) * 2, x)
    shift = data.draw(st.integers(-5, 5))
    check(lambda lib, t: t.roll(shift, d) * 2, x)
    check(lambda lib, t: t.repeat_interleave(2, d) * 2, x)


@given(data=st.data(), descending=st.booleans())
def test_sort_argsort_topk(data, descending):
    x = data.draw(hnp.arrays(np.float64, testing.shapes(1, 3, 1, 4), elements=st.floats(-3, 3), unique=True))
    d = data.draw(st.integers(-x.ndim, x.ndim - 1))
    check(lambda lib, t: t.sort(d, descending=descending).values * 2, x)
    np.testing.assert_array_equal(
        minigrad.tensor(x).argsort(d, descending=descending).data,
        torch.tensor(x).argsort(d, descending=descending).numpy(),
    )
    k = data.draw(st.integers(0, x.shape[d]))
    check(lambda lib, t: t.topk(k, d, largest=not descending).values * 2, x)


@given(data=st.data())
def test_scatter_add(data):
    x = data.draw(testing.arrays(testing.shapes(1, 3, 1, 3)))
    d = data.draw(st.integers(0, x.ndim - 1))
    index_shape = tuple(data.draw(st.integers(0, n)) for n in x.shape)
    index = data.draw(hnp.arrays(np.int64, index_shape, elements=st.integers(0, x.shape[d] - 1)))
    src = data.draw(testing.arrays(index_shape))  # (a larger src works in minigrad; torch's backward refuses it)
    check(lambda lib, t, s: t.scatter_add(d, lib.tensor(index), s), x, src)


@given(
    x=testing.arrays(testing.shapes(1, 3, 1, 4)),
    amounts=st.lists(st.integers(-1, 2), min_size=2, max_size=4),
    value=st.sampled_from([0.0, -1.5]),
)
def test_pad_constant(x, amounts, value):
    amounts = amounts[: 2 * x.ndim]
    amounts = amounts[: len(amounts) // 2 * 2]
    shape = list(x.shape)
    for i in range(len(amounts) // 2):
        shape[-1 - i] += amounts[2 * i] + amounts[2 * i + 1]
    if min(shape, default=1) < 0:
        return
    check(lambda lib, t: F(lib).pad(t, amounts, value=value) * 2, x)


@settings(deadline=None)
@given(data=st.data())
def test_conv2d_and_pools(data):
    groups = data.draw(st.integers(1, 2))
    n, c, o = data.draw(st.integers(1, 2)), groups * data.draw(st.integers(1, 2)), groups * data.draw(st.integers(1, 2))
    h, w = data.draw(st.integers(3, 5)), data.draw(st.integers(3, 5))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    stride, padding, dilation = data.draw(st.integers(1, 2)), data.draw(st.integers(0, 1)), data.draw(st.integers(1, 2))
    if (h + 2 * padding - dilation * (kh - 1) - 1) < 0 or (w + 2 * padding - dilation * (kw - 1) - 1) < 0:
        return
    x = data.draw(testing.arrays((n, c, h, w)))
    weight, bias = data.draw(testing.arrays((o, c // groups, kh, kw))), data.draw(testing.arrays((o,)))

    def conv(lib, t, k, b):
        return F(lib).conv2d(t, k, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    check(conv, x, weight, bias)
    k = data.draw(st.integers(1, 3))
    pool_pad = data.draw(st.integers(0, k // 2))
    unique = data.draw(hnp.arrays(np.float64, (n, c, h, w), elements=st.floats(-3, 3), unique=True))
    check(lambda lib, t: F(lib).max_pool2d(t, k, stride=stride, padding=pool_pad), unique)
    check(lambda lib, t: F(lib).avg_pool2d(t, k, stride=stride, padding=pool_pad), x)


EINSUMS = {  # equation -> operand shapes, in letters (sizes drawn per letter)
    "ij,jk->ik": ("ij", "jk"), "bij,bjk->bik": ("bij", "bjk"), "bhqd,bhkd->bhqk": ("bhqd", "bhkd"),
    "ij->i": ("ij",), "ij,j->": ("ij", "j"), "i,j->ij": ("i", "j"), "ijk->kj": ("ijk",), "ij,kj": ("ij", "kj"),
    "ii->i": ("ii",), "ii->": ("ii",), "ii": ("ii",), "bii,bi->b": ("bii", "bi"), "iji->j": ("iji",),
}  # fmt: skip


@given(data=st.data(), equation=st.sampled_from(sorted(EINSUMS)))
def test_einsum(data, equation):
    sizes = {c: data.draw(st.integers(0, 3)) for c in "bhijkqd"}
    arrays = [data.draw(testing.arrays(tuple(sizes[c] for c in spec))) for spec in EINSUMS[equation]]
    check(lambda lib, *t: lib.einsum(equation, *t) * lib.einsum(equation, *t), *arrays)


@given(data=st.data(), equation=st.sampled_from(["...ij,...jk->...ik", "...ij,...jk", "i...,...->...", "...ii->..."]))
def test_einsum_ellipsis_broadcasts(data, equation):
    batch = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    i, j, k = (data.draw(st.integers(1, 3)) for _ in range(3))
    first, second = {
        "...ij,...jk->...ik": ((i, j), (j, k)),
        "...ij,...jk": ((i, j), (j, k)),
        "i...,...->...": ((i,), ()),
        "...ii->...": ((i, i), None),
    }[equation]
    leading = equation[0] == "i"  # the operand's own letter comes before its ... dims
    a = data.draw(testing.arrays(first + batch.input_shapes[0] if leading else batch.input_shapes[0] + first))
    if second is None:
        check(lambda lib, x: lib.einsum(equation, x) * 2, a)
        return
    b = data.draw(testing.arrays(batch.input_shapes[1] + second))
    check(lambda lib, x, y: lib.einsum(equation, x, y) * lib.einsum(equation, x, y), a, b)


def test_conv2d_refuses_channels_that_do_not_fit_the_groups():
    with pytest.raises(minigrad.ShapeError, match="expects 4 input channels"):
        minigrad.nn.functional.conv2d(minigrad.zeros(1, 3, 4, 4), minigrad.zeros(2, 2, 1, 1), groups=2)


def test_einsum_refuses_what_does_not_fit():
    with pytest.raises(minigrad.ShapeError, match="2 subscripts for 1 operands"):
        minigrad.einsum("ij,jk->ik", minigrad.zeros(2, 2))
    with pytest.raises(minigrad.ShapeError, match="letter 'j' has sizes 2 and 3"):
        minigrad.einsum("ij,jk->ik", minigrad.zeros(2, 2), minigrad.zeros(3, 2))
    with pytest.raises(minigrad.ShapeError, match="does not fit an operand of shape"):
        minigrad.einsum("ijk->i", minigrad.zeros(2, 2))
    with pytest.raises(minigrad.ShapeError, match="the first argument is the equation .* got list"):
        minigrad.einsum([minigrad.zeros(2, 2), minigrad.zeros(2, 2)])  # the operands without the equation
    with pytest.raises(minigrad.ShapeError, match="is not a sublist"):
        minigrad.einsum(minigrad.zeros(2, 2), ["i", "j"])


@pytest.mark.parametrize(
    "sublists",
    [([0, 1], [1, 2], [0, 2]), ([0, 1], [1, 2]), ([Ellipsis, 1], [1, 2], [Ellipsis, 2]), ([0, 0], [0, 2], [2])],
)
def test_einsum_takes_torchs_sublist_form(sublists):
    """``einsum(a, [0, 1], b, [1, 2], [0, 2])``: indices as numbers, the output sublist optional."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 2)), rng.standard_normal((2, 3))

    def run(lib, x, y):
        args = [x, sublists[0], y, sublists[1], *sublists[2:]]
        return lib.einsum(*args) * 2

    check(run, a, b, second=False)


def test_float32_erf_is_as_exact_as_torchs():
    """float32 erf comes from a rational fit (not scipy): within a few float32 steps of the exact
    value everywhere, like torch's, and right at the specials."""
    x = np.concatenate([np.linspace(-8, 8, 400_001), [0.0, -0.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    exact = torch.erf(torch.tensor(x, dtype=torch.float64)).numpy()
    mine = minigrad.tensor(x).erf().data
    assert mine.dtype == np.float32
    np.testing.assert_allclose(mine, exact, atol=6e-7, rtol=0)
    assert np.abs(torch.erf(torch.tensor(x)).numpy() - exact)[:-1].max() < 6e-7  # torch's own is as close


@given(data=st.data())
def test_layer_norm_with_weight_and_bias(data):
    x = data.draw(testing.arrays(testing.shapes(1, 3, 2, 4)))
    last = data.draw(st.integers(1, min(2, x.ndim)))
    shape = x.shape[-last:]
    weight, bias = data.draw(testing.arrays(shape)), data.draw(testing.arrays(shape))
    spread = np.ptp(x.reshape(-1, int(np.prod(shape))), axis=-1).min() > 1e-2  # var near 0: 1/sqrt blows up

    def layer_norm(lib, t, w, b):
        return F(lib).layer_norm(t, shape, w, b, eps=1e-5)

    check(layer_norm, x, weight, bias, second=spread, rtol=1e-5, atol=1e-7)
