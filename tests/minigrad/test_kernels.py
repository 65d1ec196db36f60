"""The fast path against the plain references: each fast kernel agrees with its plain version
(hypothesis-drawn inputs, the tolerance stated and why), the switch between them, and no thread
at all in plain mode."""

import contextlib
import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from minigrad import kernels, optim
from minigrad.nn import functional as F  # noqa: N812 - torch's spelling


@contextlib.contextmanager
def small_blocks(size: int = 64):
    """Blocks of ``size`` elements, so that hypothesis's small arrays span several blocks and the
    thread pool really splits the work."""
    before, kernels.BLOCK = kernels.BLOCK, size
    try:
        yield
    finally:
        kernels.BLOCK = before


def float32_arrays(min_dims: int = 1, max_dims: int = 3, bound: float = 10.0) -> st.SearchStrategy:
    return hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, max_side=40),
        elements=st.floats(-bound, bound, width=32),
    )


@given(float32_arrays(bound=12.0))
def test_fast_erf_agrees_with_the_exact_one(x):
    """Within 1e-6: Abramowitz & Stegun's fit is within 1.5e-7 of erfc, and the dozen float32
    passes that evaluate it round by up to 6e-8 each near 1 (measured: 6.1e-7 at most on a grid of
    4M points over [-12, 12])."""
    with small_blocks():
        fast = kernels.fast_erf(x)
    plain = kernels.plain_erf(x)
    assert fast.dtype == plain.dtype == np.float32 and fast.shape == x.shape
    np.testing.assert_allclose(fast, plain, atol=1e-6, rtol=0)


@given(float32_arrays(bound=12.0), st.floats(-3, 3, width=32))
def test_fast_gelu_and_its_gradient_agree_with_the_exact_ones(x, g):
    """gelu within 5e-7 (1 + |x|): the fit's error in the tail Phi(-|x|) is multiplied by |x|, and
    the float32 product rounds by half an ulp of x (measured: 9e-8 (1 + |x|) at most); the gradient
    within 1e-6 |grad| (the same fit's error in Phi(x), measured 3.3e-7)."""
    grad = np.full_like(x, g)
    with small_blocks():
        fast, fast_backward = kernels.fast_gelu(x)
        fast_grad = fast_backward(grad)
    plain, plain_backward = kernels.plain_gelu(x)
    assert fast.dtype == plain.dtype == np.float32
    assert np.all(np.abs(fast - plain) <= 5e-7 * (1 + np.abs(x)))
    np.testing.assert_allclose(fast_grad, plain_backward(grad), atol=1e-6 * abs(g), rtol=0)


@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=10), elements=st.floats(-12, 12)))
def test_fast_gelu_in_float64_is_exact_too(x):
    """Other dtypes than float32 take scipy's erfc in the fast kernel: the same function as the
    plain ndtr to a few float64 roundings."""
    with small_blocks():
        fast, fast_backward = kernels.fast_gelu(x)
        fast_grad = fast_backward(np.ones_like(x))
    plain, plain_backward = kernels.plain_gelu(x)
    np.testing.assert_allclose(fast, plain, atol=1e-14, rtol=1e-14)
    np.testing.assert_allclose(fast_grad, plain_backward(np.ones_like(x)), atol=1e-14)


@given(float32_arrays(min_dims=0, max_dims=4, bound=30.0), st.data())
def test_fast_softmax_is_the_plain_one_bit_for_bit(x, data):
    """Exactly equal: the same NumPy passes on each row, only done in place and by blocks of rows."""
    dims = (data.draw(st.integers(0, x.ndim - 1)),) if x.ndim else ()
    with small_blocks():
        fast = kernels.fast_softmax(x, dims)
    np.testing.assert_array_equal(fast, kernels.plain_softmax(x, dims))


@given(st.data())
def test_fast_matmul_is_numpys_bit_for_bit(data):
    """Exactly equal: each matrix of the stack is the same product, only computed on another core."""
    batch = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=6))
    n, k, m = (data.draw(st.integers(1, 12)) for _ in range(3))
    elements = st.floats(-4, 4, width=32)
    x = data.draw(hnp.arrays(np.float32, (*batch, n, k), elements=elements))
    y = data.draw(hnp.arrays(np.float32, (*batch, k, m), elements=elements))
    with small_blocks(16):
        fast = kernels.fast_matmul(x, y)
    np.testing.assert_array_equal(fast, kernels.plain_matmul(x, y))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_fast_adam_agrees_with_the_textbook_step(dtype, data):
    """Three steps from the same start end within a few roundings of each other: 4 ulps of the
    parameter (each step's subtraction from it rounds) plus 1e-6 (float32) or 1e-13 (float64) of
    the learning rate (the step itself). The fast update is the same algebra with sqrt(1 - b2^t)
    moved into the step size, computed in another order."""
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=30))
    decoupled, weight_decay = data.draw(st.booleans()), data.draw(st.sampled_from([0.0, 0.1]))
    elements = st.floats(-2, 2, width=32)
    start = data.draw(hnp.arrays(dtype, shape, elements=elements))
    grads = [data.draw(hnp.arrays(dtype, shape, elements=elements)) for _ in range(3)]
    lr, tol = 1e-2, {np.float32: 1e-6, np.float64: 1e-13}[dtype]
    ends = []
    for adam in (kernels.fast_adam, kernels.plain_adam):
        p, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
        for step, g in enumerate(grads, start=1):
            with small_blocks(8):
                adam(p, g, m, v, step, lr, (0.9, 0.999), 1e-8, weight_decay, decoupled)
        ends.append(p)
    np.testing.assert_allclose(ends[0], ends[1], atol=tol * lr, rtol=4 * np.finfo(dtype).eps)


@given(st.data())
def test_fast_add_at_is_numpys_add_at(data):
    """The sum at each place equals np.add.at's, for the three kinds of index the fast kernel tells
    apart: basic (ints and slices), rows by one integer array (repeated, negative), anything else
    (two integer arrays, as a boolean mask becomes; an ellipsis and an array). Equal up to the
    order of the float32 additions."""
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=8))
    start = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-4, 4, width=32)))
    rows = data.draw(hnp.arrays(np.int64, data.draw(st.integers(0, 12)), elements=st.integers(-shape[0], shape[0] - 1)))
    kind = data.draw(st.sampled_from(["basic", "rows", "other"]))
    if kind == "basic":
        index = (data.draw(st.integers(-shape[0], shape[0] - 1)), slice(None, None, 2))[: len(shape)]
    elif kind == "rows":
        index = (rows,)
    else:
        index = (rows, rows % shape[1]) if len(shape) >= 2 else (Ellipsis, rows)
    values = data.draw(hnp.arrays(np.float32, start[index].shape, elements=st.floats(-4, 4, width=32)))
    fast, plain = start.copy(), start.copy()
    kernels.fast_add_at(fast, index, values)
    kernels.plain_add_at(plain, index, values)
    np.testing.assert_allclose(fast, plain, atol=1e-5, rtol=1e-6)


@given(st.data())
def test_fast_expand_is_the_view_copied_and_read_only_too(data):
    """Small results are copies, large ones views (the fast kernel's threshold): both the view's values."""
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=5))
    target = np.broadcast_shapes(shape, data.draw(hnp.broadcastable_shapes(shape, min_dims=len(shape), max_side=70)))
    x = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-10, 10, width=32)))
    plain, fast = kernels.plain_expand(x, target), kernels.fast_expand(x, target)
    assert fast.shape == plain.shape and fast.dtype == plain.dtype
    np.testing.assert_array_equal(fast, plain)
    assert not fast.flags.writeable and not plain.flags.writeable  # in-place writes refused, as torch


@given(st.data())
def test_fast_first_grad_keeps_the_same_values_and_share_nothing(data):
    """A leaf's first .grad: the plain kernel copies every gradient; the fast one keeps the array
    itself where nothing else holds it. Equal values, and no kept array shares memory with a seed or
    with another kept array (one gradient array sent to two leaves, as Add does, is copied once)."""
    arrays = data.draw(st.lists(float32_arrays(min_dims=0, max_dims=2), min_size=1, max_size=4))
    seeds = arrays[: data.draw(st.integers(0, len(arrays)))]
    grads = arrays + [arrays[0], arrays[0].T, arrays[0].astype(np.float64)]  # repeated, a view, another dtype
    dtypes = [np.dtype(np.float32)] * len(grads)
    held_fast, held_plain = {id(s) for s in seeds}, {id(s) for s in seeds}
    fast = [kernels.fast_first_grad(g, d, held_fast) for g, d in zip(grads, dtypes)]
    plain = [kernels.plain_first_grad(g, d, held_plain) for g, d in zip(grads, dtypes)]
    for f, p, g in zip(fast, plain, grads):
        np.testing.assert_array_equal(f, p)
        assert f.dtype == p.dtype == np.float32 and not np.shares_memory(p, g)
    for f, h in itertools.combinations(fast, 2):
        assert not np.shares_memory(f, h)
    for f, seed in itertools.product(fast, seeds):
        assert not np.shares_memory(f, seed)
    fresh = np.ones(3, np.float32)
    assert kernels.fast_first_grad(fresh, dtypes[0], {id(s) for s in seeds}) is fresh  # nothing else holds it: kept


def test_use_switches_every_kernel_and_gives_back_the_mode_before():
    before = kernels.use("plain")
    try:
        assert kernels.mode == "plain"
        assert all(getattr(kernels, name) is getattr(kernels, f"plain_{name}") for name in kernels.NAMES)
        assert kernels.use("fast") == "plain"
        assert kernels.gelu is kernels.fast_gelu and kernels.matmul is kernels.fast_matmul
        with pytest.raises(ValueError, match="one of"):
            kernels.use("turbo")
        assert kernels.mode == "fast"
    finally:
        kernels.use(before)


def run_python(code: str, mode: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MINIGRAD_KERNELS"}
    if mode is not None:
        env["MINIGRAD_KERNELS"] = mode
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(("mode", "expected"), [(None, "fast"), ("fast", "fast"), ("plain", "plain")])
def test_the_environment_variable_is_read_at_import(mode, expected):
    done = run_python("from minigrad import kernels; print(kernels.mode, kernels.softmax.__name__)", mode)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [expected, f"{expected}_softmax"]


def test_a_wrong_mode_in_the_environment_stops_the_import():
    done = run_python("import minigrad", "fastest")
    assert done.returncode != 0 and "one of ('fast', 'plain'), got 'fastest'" in done.stderr


BERT_STEP = """
    import threading
    import numpy as np
    import minigrad as mg
    from minigrad import kernels, optim
    from minigrad.models.bert import from_pretrained
    from minigrad.nn import functional as F

    kernels.BLOCK = 256  # small blocks: the fast kernels would split even a tiny BERT's arrays
    model = from_pretrained({path!r})
    ids = np.random.default_rng(0).integers(1000, 2000, size=(4, 12))
    mask = np.ones_like(ids)
    threads = threading.active_count()
    loss = F.cross_entropy(model(ids, mask, np.zeros_like(ids)), mg.tensor([0, 1, 1, 0]))
    loss.backward()
    optim.AdamW(model.parameters(), lr=1e-3).step()
    print(threads, threading.active_count(), kernels._thread_pool.cache_info().currsize)
"""


@pytest.mark.parametrize("mode", ["plain", "fast"])
def test_plain_mode_starts_no_thread_in_a_bert_training_step(tiny_models, mode):
    """MINIGRAD_KERNELS=plain: a BERT forward, backward and AdamW step start no thread and never
    make the kernels' pool (the fast mode, for contrast, does both)."""
    done = run_python(BERT_STEP.format(path=tiny_models["bert"]), mode)
    assert done.returncode == 0, done.stderr
    before, after, pools = (int(n) for n in done.stdout.split())
    if mode == "plain":
        assert before == after == 1 and pools == 0
    else:
        assert after > before and pools == 1


def _gelu_in_a_child(queue):
    x = np.linspace(-4, 4, 3 * kernels.BLOCK, dtype=np.float32)
    queue.put(float(F.gelu(mg.tensor(x)).data.sum()))


def test_a_forked_child_runs_the_fast_kernels_with_threads_of_its_own():
    """The kernels' thread pool after a fork (DataLoader workers, multiprocessing): the child's copy
    of the pool has no threads, so it must make its own rather than wait forever."""
    import multiprocessing

    before = kernels.use("fast")
    try:
        x = np.linspace(-4, 4, 3 * kernels.BLOCK, dtype=np.float32)
        expected = float(F.gelu(mg.tensor(x)).data.sum())  # the parent's pool is running now
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_gelu_in_a_child, args=(queue,))
        child.start()
        assert queue.get(timeout=60) == pytest.approx(expected)
        child.join(timeout=60)
        assert child.exitcode == 0
    finally:
        kernels.use(before)


@pytest.mark.parametrize("make", [optim.Adam, optim.AdamW])
def test_adam_updates_large_parameters_block_by_block_as_torch(make):
    """Adam works a parameter of more than one block (kernels.BLOCK elements) in row blocks on
    several threads: the same result as torch, with a transposed (non-contiguous) gradient and a
    0-d one."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = [(3 * kernels.BLOCK // 1000 + 7, 1000), (), (5,)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    mine = [mg.tensor(a, requires_grad=True) for a in start]
    theirs = [torch.tensor(a, requires_grad=True) for a in start]
    opt, topt = (
        make(mine, lr=1e-2, weight_decay=0.1),
        getattr(torch.optim, make.__name__)(theirs, lr=1e-2, weight_decay=0.1),
    )
    for _ in range(3):
        for p, tp, shape in zip(mine, theirs, shapes):
            g = np.asarray(rng.standard_normal(shape[::-1]), np.float32).T  # a transposed view
            p.grad, tp.grad = mg.tensor(g), torch.tensor(g.copy())
            p.grad.data = g  # as the engine can leave it (the gradient of a weight used as W.t())
        opt.step()
        topt.step()
    for p, tp in zip(mine, theirs):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), atol=1e-6, rtol=0)


def test_only_the_kernels_module_uses_threads_and_nothing_imports_finetune():
    """minigrad stands alone (no finetune), and its speed lives in one module: no other file of
    the package starts threads, processes or fork hooks."""
    import re
    from pathlib import Path

    package = Path(mg.__file__).parent
    for path in package.rglob("*.py"):
        source = path.read_text()
        assert not re.search(r"^\s*(from|import) finetune", source, re.M), path
        if path.name != "kernels.py":
            assert not re.search(r"concurrent|threading|multiprocessing|register_at_fork", source), path


# ----------------------------------------------------------------------------- switching mid-graph


def _through(name: str, functional, x):
    """A graph through the kernel ``name``: minigrad's with ``F`` and a minigrad tensor, torch's with
    torch.nn.functional and a torch tensor."""
    if name == "erf":
        return x.erf()
    if name == "gelu":
        return functional.gelu(x)
    if name == "softmax":
        return x.reshape(3, 1, 4).softmax(-1)
    if name == "matmul":  # a stack of matrices: the fast kernel's own case
        return x.reshape(3, 1, 4) @ (x * x).reshape(3, 4, 1)
    if name == "add_at":  # an embedding lookup, rows repeated: its gradient adds them up
        return (x * x).reshape(6, 2)[[0, 3, 0, 5, 3, 0]]
    if name == "expand":  # a column stretched across 4, then weighted: its gradient sums the stretch
        return (x * x).reshape(12, 1).expand(12, 4) * x.reshape(12, 1)
    if name == "first_grad":  # the engine's last step: any graph (x + x sends one array twice)
        return (x + x) * x
    raise AssertionError(name)


@pytest.mark.parametrize("kernel", [name for name in kernels.NAMES if name != "adam"])
@pytest.mark.parametrize(("forward_mode", "backward_mode"), [("fast", "plain"), ("plain", "fast")])
def test_switching_the_mode_between_a_forward_and_its_backward_changes_no_gradient(kernel, forward_mode, backward_mode):
    """What a forward used (plain or fast), its backward uses too: the gradient (by .backward() and
    by minigrad.grad), and the gradient of the gradient, equal torch's when the mode changes after
    the forward (GELU's came out [-0.083, 0.485, 0.261] at [-1, 0.5, 1.5] when its backward was
    looked up at backward time)."""
    torch = pytest.importorskip("torch")
    start = np.array([-1.0, 0.5, 1.5, -2.0, 0.0, 3.0, -0.3, 0.7, 2.2, -1.7, 1.1, -0.1], np.float32)
    before = kernels.use(forward_mode)
    try:
        x, leaf = mg.tensor(start, requires_grad=True), mg.tensor(start, requires_grad=True)
        out, out_of_leaf = _through(kernel, F, x).reshape(-1), _through(kernel, F, leaf).reshape(-1)
        weights = mg.tensor(np.linspace(-1, 1, out.shape[0], dtype=np.float32))  # each output counts differently
        kernels.use(backward_mode)
        (out_of_leaf * weights).sum().backward()
        (g,) = mg.grad((out * weights).sum(), x, create_graph=True)
        (gg,) = mg.grad((g * g).sum(), x)
    finally:
        kernels.use(before)
    tx = torch.tensor(start, requires_grad=True)
    tout = _through(kernel, torch.nn.functional, tx).reshape(-1)
    (tg,) = torch.autograd.grad((tout * torch.tensor(weights.data)).sum(), tx, create_graph=True)
    (tgg,) = torch.autograd.grad((tg * tg).sum(), tx)
    np.testing.assert_allclose(leaf.grad.data, tg.detach().numpy(), atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(g.data, tg.detach().numpy(), atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(gg.data, tgg.numpy(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(("first", "then"), [("fast", "plain"), ("plain", "fast")])
def test_switching_the_mode_between_adam_steps_keeps_torchs_trajectory(first, then):
    """Adam's kernel, the one without a gradient: its state (the moments) is plain arrays that both
    modes read the same way, so steps taken in either mode continue each other as torch's do."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    start = rng.standard_normal((40, 30)).astype(np.float32)
    grads = [rng.standard_normal(start.shape).astype(np.float32) for _ in range(4)]
    p, tp = mg.tensor(start, requires_grad=True), torch.tensor(start, requires_grad=True)
    opt, topt = optim.AdamW([p], lr=1e-2, weight_decay=0.1), torch.optim.AdamW([tp], lr=1e-2, weight_decay=0.1)
    before = kernels.use(first)
    try:
        for step, g in enumerate(grads):
            if step == 2:
                kernels.use(then)
            p.grad, tp.grad = mg.tensor(g), torch.tensor(g)
            opt.step()
            topt.step()
    finally:
        kernels.use(before)
    np.testing.assert_allclose(p.data, tp.detach().numpy(), atol=1e-6, rtol=0)


def test_the_switch_tests_cover_every_kernel():
    """A kernel added to kernels.py without a mid-graph switch case above fails here."""
    assert set(kernels.NAMES) == {"erf", "gelu", "softmax", "matmul", "add_at", "expand", "adam", "first_grad"}
    for name in kernels.NAMES:
        assert getattr(kernels, name) in (getattr(kernels, f"fast_{name}"), getattr(kernels, f"plain_{name}"))
