"""The autograd semantics, one test each: accumulation, retain_graph, no_grad, higher order,
hooks, in-place rules, dtypes and error messages."""

import contextlib
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given

import minigrad as mg
from minigrad import kernels, testing


@contextlib.contextmanager
def kernels_in(mode: str):
    before = kernels.use(mode)
    try:
        yield
    finally:
        kernels.use(before)


def test_rnn_cell_example_matches_torch():
    mg.manual_seed(0)
    W_h = mg.randn(20, 20, requires_grad=True)
    W_x = mg.randn(20, 10, requires_grad=True)
    x = mg.randn(1, 10)
    prev_h = mg.randn(1, 20)
    h2h = mg.mm(W_h, prev_h.t())
    i2h = mg.mm(W_x, x.t())
    next_h = (h2h + i2h).tanh()
    loss = next_h.sum()
    loss.backward()

    tW_h, tW_x = (torch.from_numpy(t.data.copy()).requires_grad_() for t in (W_h, W_x))
    tx, tprev = torch.from_numpy(x.data), torch.from_numpy(prev_h.data)
    tloss = (torch.mm(tW_h, tprev.t()) + torch.mm(tW_x, tx.t())).tanh().sum()
    tloss.backward()
    assert W_h.grad.dtype == mg.float32
    np.testing.assert_allclose(W_h.grad.data, tW_h.grad.numpy(), atol=1e-6)
    np.testing.assert_allclose(W_x.grad.data, tW_x.grad.numpy(), atol=1e-6)
    assert abs(loss.item() - tloss.item()) < 1e-4


def test_gradients_accumulate_across_backward_calls():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.data, [3 + 2, 3 + 4])
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.data, [3, 3])


@pytest.mark.parametrize("mode", kernels.MODES)
@given(comp=testing.compositions())
def test_leaf_grads_own_their_memory(mode, comp):
    """Whether a leaf's first .grad is a copy (plain) or the new gradient array itself (fast,
    kernels.first_grad), no .grad may share memory with another one or with the seed, else
    accumulating into one would change the other."""
    with kernels_in(mode):
        _check_leaf_grads_own_their_memory(comp)


def _check_leaf_grads_own_their_memory(comp):
    core = testing.Composition(comp.input_arrays, comp.steps[:-1])  # without the final v + v
    xs = [mg.tensor(a, requires_grad=True) for a in comp.input_arrays]
    out = core(mg, *xs)
    seed = mg.ones(*out.shape, dtype=out.dtype)
    out.backward(seed, retain_graph=True)
    grads = [x.grad.data for x in xs if x.grad is not None]
    for g in grads:
        assert not np.shares_memory(g, seed.data)
    for g, h in itertools.combinations(grads, 2):
        assert not np.shares_memory(g, h)
    first = [x.grad.data.copy() if x.grad is not None else None for x in xs]
    out.backward(seed)  # accumulates in place: each leaf's gradient exactly doubles
    for x, g in zip(xs, first):
        if g is not None:
            np.testing.assert_allclose(x.grad.data, 2 * g)


@given(testing.compositions())
def test_hooks_and_retain_grad_change_no_gradient(comp):
    """Hooks that return None and retain_grad on every intermediate leave the leaves' gradients
    as they are, bit for bit (and a gradient a hook saw is never kept by a leaf uncopied)."""

    def leaf_grads(hooked: bool) -> list:
        xs = [mg.tensor(a, requires_grad=True) for a in comp.input_arrays]
        out = comp(mg, *xs)
        made = _intermediates(out)
        if hooked:
            for t in made:
                t.register_hook(lambda g: None)  # returns None: the gradient passes unchanged
                t.retain_grad()
        out.sum().backward()
        if hooked:
            assert all(t.grad is not None for t in made)
        return [None if x.grad is None else x.grad.data for x in xs]

    for plain, full in zip(leaf_grads(False), leaf_grads(True)):
        assert (plain is None) == (full is None)
        if plain is not None:
            np.testing.assert_array_equal(plain, full)


@pytest.mark.parametrize("mode", kernels.MODES)
def test_a_leaf_never_keeps_an_array_someone_else_holds(mode):
    with kernels_in(mode):
        _check_a_leaf_never_keeps_an_array_someone_else_holds()


def _check_a_leaf_never_keeps_an_array_someone_else_holds():
    w = mg.randn(3, requires_grad=True)
    seed = mg.ones(3)
    w.backward(seed)  # the leaf is the output: its gradient is the caller's seed
    assert w.grad is not seed and not np.shares_memory(w.grad.data, seed.data)
    a, b = mg.randn(2, 3, requires_grad=True), mg.randn(3, 2, requires_grad=True)
    (a + b.t()).sum().backward()  # one gradient array reaches a as it is and b transposed
    assert not np.shares_memory(a.grad.data, b.grad.data)
    seen = []
    h = a + 0  # add passes h's gradient on to a as it is
    h.register_hook(seen.append)  # the hook keeps h's gradient
    a.grad = None
    (h * 3).sum().backward()
    assert not np.shares_memory(seen[0].data, a.grad.data)


def _intermediates(out):
    """Every tensor in out's graph that an op made (not the leaves), out included."""
    found, todo = {}, [out]
    while todo:
        t = todo.pop()
        if isinstance(t, mg.Tensor) and t.grad_fn is not None and id(t) not in found:
            found[id(t)] = t
            todo.extend(t.grad_fn.inputs)
    return list(found.values())


def test_pass_through_gradients_are_copied_for_each_leaf():
    a, b = mg.ones(3, requires_grad=True), mg.ones(3, requires_grad=True)
    seed = mg.tensor([1.0, 2.0, 3.0])
    (a + b).backward(seed)  # Add hands the same incoming array to both inputs
    a.grad += 1  # .grad itself does not require grad: a plain in-place add
    np.testing.assert_allclose(b.grad.data, [1, 2, 3])
    np.testing.assert_allclose(seed.data, [1, 2, 3])


def test_shared_subexpression_sums_paths():
    x = mg.tensor(2.0, requires_grad=True)
    y = x * x
    (y + y * x).backward()  # d/dx (x^2 + x^3) = 2x + 3x^2
    assert x.grad.item() == pytest.approx(4 + 12)


def test_non_scalar_backward_needs_gradient():
    y = mg.randn(3, requires_grad=True) * 2
    with pytest.raises(mg.BackwardError, match="only for scalar outputs.*shape \\(3,\\)"):
        y.backward()
    y.backward(mg.ones(3))
    with pytest.raises(mg.ShapeError, match="gradient has shape \\(2,\\).*output has shape \\(3,\\)"):
        (mg.randn(3, requires_grad=True) * 2).backward(mg.ones(2))


def test_second_backward_through_freed_graph_raises():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(mg.BackwardError, match="backward through the graph a second time.*retain_graph=True"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.data, [4, 8])


def test_backward_on_output_without_grad_raises():
    with pytest.raises(mg.BackwardError, match="does not require grad"):
        (mg.ones(2) * 2).sum().backward()


def test_no_grad_context_and_decorator():
    x = mg.ones(2, requires_grad=True)
    with mg.no_grad():
        y = x * 2
        with mg.enable_grad():
            z = x * 2
    assert y.grad_fn is None and not y.requires_grad
    assert z.requires_grad

    @mg.no_grad()
    def f(t):
        return t * 2

    @mg.no_grad
    def g(t):
        return t * 2

    assert f(x).grad_fn is None and g(x).grad_fn is None
    assert mg.is_grad_enabled()
    with mg.set_grad_enabled(False):
        assert (x * 2).grad_fn is None
    assert (x * 2).grad_fn is not None


def test_grad_fn_and_leaf_attributes():
    a = mg.randn(2, 2, requires_grad=True)
    b = a.tanh()
    assert a.is_leaf and a.grad_fn is None
    assert not b.is_leaf and repr(b.grad_fn) == "<TanhBackward>"
    assert b.grad_fn.next_functions == (None,)
    c = b.sum()
    assert c.grad_fn.next_functions[0] is b.grad_fn
    assert b.detach().grad_fn is None and not b.detach().requires_grad
    assert mg.ones(2).is_leaf


def test_second_derivative_with_create_graph():
    x = mg.tensor([0.5, -1.0, 2.0], dtype=mg.float64, requires_grad=True)
    y = (x**3).sum() + x.tanh().sum()
    (g,) = mg.grad(y, x, create_graph=True)
    (h,) = mg.grad(g.sum(), x)
    tx = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    ty = (tx**3).sum() + tx.tanh().sum()
    (tg,) = torch.autograd.grad(ty, tx, create_graph=True)
    (th,) = torch.autograd.grad(tg.sum(), tx)
    np.testing.assert_allclose(g.data, tg.detach().numpy())
    np.testing.assert_allclose(h.data, th.numpy())


def test_third_derivative_and_backward_create_graph():
    x = mg.tensor(0.7, dtype=mg.float64, requires_grad=True)
    y = x.sigmoid() * x.exp()
    y.backward(create_graph=True)
    first = x.grad
    assert first.grad_fn is not None
    (second,) = mg.grad(first, x, create_graph=True)
    (third,) = mg.grad(second, x)
    tx = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    ty = tx.sigmoid() * tx.exp()
    (t1,) = torch.autograd.grad(ty, tx, create_graph=True)
    (t2,) = torch.autograd.grad(t1, tx, create_graph=True)
    (t3,) = torch.autograd.grad(t2, tx)
    assert third.item() == pytest.approx(t3.item(), rel=1e-10)


def test_grad_returns_tuple_and_leaves_grad_untouched():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    w = mg.tensor([3.0, 4.0], requires_grad=True)
    out = mg.grad((x * w).sum(), [x, w])
    assert isinstance(out, tuple) and len(out) == 2
    np.testing.assert_allclose(out[0].data, [3, 4])
    assert x.grad is None and w.grad is None


def test_grad_allow_unused_and_grad_outputs():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    unused = mg.tensor([1.0], requires_grad=True)
    y = x * 2
    with pytest.raises(mg.BackwardError, match="allow_unused=True"):
        mg.grad(y, [x, unused], grad_outputs=mg.ones(2), retain_graph=True)
    gx, gu = mg.grad(y, [x, unused], grad_outputs=mg.tensor([1.0, 10.0]), allow_unused=True)
    np.testing.assert_allclose(gx.data, [2, 20])
    assert gu is None


def test_grad_wrt_intermediate_tensor():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    (gh,) = mg.grad((h * h).sum(), h)
    np.testing.assert_allclose(gh.data, [6, 12])


def test_retain_grad_and_hooks():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    seen = []
    h.register_hook(lambda g: seen.append(g.data.copy()))
    handle = x.register_hook(lambda g: g * 10)
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.data, [6, 12])
    np.testing.assert_allclose(seen[0], [6, 12])
    np.testing.assert_allclose(x.grad.data, [180, 360])  # hook multiplied by 10
    handle.remove()
    x.grad = None
    (x * 1).sum().backward()
    np.testing.assert_allclose(x.grad.data, [1, 1])


def test_observers_see_every_visit_in_order_with_the_gradients_sent():
    """autograd.observe: called once per visited node, in the engine's order (newest first), with
    the gradient that arrived and the gradients sent to each input; nothing outside the block."""
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    loss = (h * h + h).sum()
    seen = []
    with mg.autograd.observe(lambda node, grad, sent: seen.append((node, grad.data.copy(), sent))):
        loss.backward(retain_graph=True)
    assert [type(node).__name__ for node, _, _ in seen] == ["Sum", "Add", "Mul", "Mul"]
    assert [node for node, _, _ in seen] == sorted((node for node, _, _ in seen), key=lambda n: -n.order)
    (_, arrived, _), (_, _, sent_by_square), (mul_x, arrived_at_h, sent_to_x) = seen[0], seen[2], seen[3]
    np.testing.assert_allclose(arrived, 1.0)
    np.testing.assert_allclose(arrived_at_h, 2 * h.data + 1)  # both paths to h, summed before the visit
    np.testing.assert_allclose(sent_to_x[0].data, 3 * (2 * h.data + 1))
    assert mul_x is h.grad_fn and sent_to_x[1] is None  # the constant 3 needs no gradient
    assert len(sent_by_square) == 2
    count = len(seen)
    loss.backward()
    assert len(seen) == count


def test_freeing_drops_what_each_node_saved_unless_the_graph_is_retained():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    y = h.exp().sum()
    y.backward(retain_graph=True)
    assert h.grad_fn.saved is not None
    y.backward()
    assert h.grad_fn.saved is None and y.grad_fn.saved is None


def test_inplace_on_leaf_requiring_grad_is_refused_outside_no_grad():
    w = mg.ones(3, requires_grad=True)
    with pytest.raises(mg.InplaceError, match="leaf Tensor that requires grad.*no_grad"):
        w += 1
    with pytest.raises(mg.InplaceError):
        w[0] = 5.0
    with pytest.raises(mg.InplaceError):
        w.mul_(2)
    (w * 2).sum().backward()
    with mg.no_grad():  # an SGD step
        w -= 0.1 * w.grad
        w.grad.zero_()
    np.testing.assert_allclose(w.data, [0.8, 0.8, 0.8], rtol=1e-6)
    np.testing.assert_allclose(w.grad.data, [0, 0, 0])


def test_inplace_on_non_leaf_is_recorded():
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    y += x  # y = 3x
    y[0] = x[1] * x[1]  # y = [x1^2, 3x1, 3x2]
    y.mul_(2)
    y.sum().backward()
    tx = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    ty = tx * 2
    ty += tx
    ty[0] = tx[1] * tx[1]
    ty.mul_(2)
    ty.sum().backward()
    np.testing.assert_allclose(y.data, ty.detach().numpy())
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())


def test_modifying_a_saved_tensor_is_detected():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    z = y * y  # saves y
    y.add_(1)
    with pytest.raises(mg.InplaceError, match="modified by an in-place operation"):
        z.sum().backward()


def test_inplace_without_grad_writes_through():
    a = mg.zeros(2, 3)
    a[0] = 1.0
    a[:, 1] += mg.ones(2)
    a *= 2
    a.add_(1, alpha=0.5)
    np.testing.assert_allclose(a.data, [[2.5, 4.5, 2.5], [0.5, 2.5, 0.5]])


def test_inplace_outside_the_graph_updates_the_array_itself():
    w = mg.ones(2, 3, requires_grad=True)
    (w * w).sum().backward()
    array, version = w.data, w._version
    with mg.no_grad():
        w -= 0.5 * w.grad  # written straight into w's array: no temporary copy of w
        w.mul_(2)
    assert w.data is array and w._version == version + 2
    np.testing.assert_allclose(w.data, np.zeros((2, 3)))
    y = w * w  # saves w; a later in-place change is still caught
    with mg.no_grad():
        w.add_(1)
    with pytest.raises(mg.InplaceError, match="modified by an in-place operation"):
        y.sum().backward()


def test_optimizer_step_makes_a_saved_parameter_stale():
    w = mg.ones(3, requires_grad=True)
    opt = mg.optim.SGD([w], lr=0.1)
    (w * 2).sum().backward()
    y = w * w  # saves w
    opt.step()
    with pytest.raises(mg.InplaceError, match="modified by an in-place operation"):
        y.sum().backward()


def test_inplace_errors_name_the_problem():
    with pytest.raises(mg.DtypeError, match="can't be cast.*int64"):
        mg.arange(3).div_(2)  # torch refuses a float result in an integer tensor too
    with pytest.raises(mg.ShapeError, match=r"output with shape \(3,\).*\(2, 3\)"):
        mg.zeros(3).add_(mg.ones(2, 3))
    with pytest.raises(mg.InplaceError, match="clone"):
        mg.ones(3).expand(2, 3).add_(1)
    with pytest.raises(mg.InplaceError, match="clone"):
        mg.ones(3).expand(2, 3)[0] = 2.0
    with pytest.raises(mg.InplaceError, match="clone"):
        (mg.ones(3, requires_grad=True) * 1).expand(2, 3).mul_(2)
    a = mg.arange(3)
    a *= 2  # an integer result is fine
    assert a.tolist() == [0, 2, 4] and a.dtype == mg.int64


def test_dtypes_follow_torch():
    assert mg.tensor([1.0, 2.0]).dtype == mg.float32
    assert mg.tensor([1, 2]).dtype == mg.int64
    assert mg.tensor([True]).dtype == mg.bool
    assert mg.tensor(np.zeros(2)).dtype == mg.float64
    assert mg.from_numpy(np.zeros(2, dtype=np.float32)).dtype == mg.float32
    assert mg.randn(2).dtype == mg.float32 and mg.randn(2, dtype=mg.float64).dtype == mg.float64
    assert mg.arange(3).dtype == mg.int64 and mg.arange(0, 1, 0.5).dtype == mg.float32
    x = mg.ones(2)
    assert (x * 2).dtype == mg.float32 and (x * 2.5).dtype == mg.float32
    assert (x + mg.arange(2)).dtype == mg.float32
    assert (mg.arange(3) / 2).dtype == mg.float32
    assert (mg.arange(3) * 2.5).dtype == mg.float32
    assert (x.double() + x).dtype == mg.float64
    assert x.to(mg.float64).dtype == mg.float64 and x.double().float().dtype == mg.float32
    assert (x > 0).dtype == mg.bool
    assert mg.zeros_like(x).shape == (2,) and mg.ones_like(x, dtype=mg.float64).dtype == mg.float64


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(mg.DtypeError, match="floating point"):
        mg.arange(3).requires_grad_()
    with pytest.raises(mg.DtypeError, match="floating point"):
        mg.tensor([1, 2], requires_grad=True)


def test_cast_is_differentiable():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    x.double().sum().backward()
    assert x.grad.dtype == mg.float32
    np.testing.assert_allclose(x.grad.data, [1, 1])


def test_shape_errors_name_both_shapes():
    with pytest.raises(mg.ShapeError, match=r"\(2, 3\) and \(4,\)"):
        mg.ones(2, 3) + mg.ones(4)
    with pytest.raises(mg.ShapeError, match="1x10 and 20x10"):
        mg.mm(mg.ones(1, 10), mg.ones(20, 10))
    with pytest.raises(mg.ShapeError, match="2x3 and 2x3"):  # torch's words for 2-D operands
        mg.ones(2, 3) @ mg.ones(2, 3)
    with pytest.raises(mg.ShapeError, match=r"\(5, 2, 3\) and \(2, 3\)"):
        mg.ones(5, 2, 3) @ mg.ones(2, 3)
    with pytest.raises(mg.ShapeError, match="invalid for input of size 6"):
        mg.ones(2, 3).reshape(4)
    with pytest.raises(mg.ShapeError, match="Dimension out of range"):
        mg.ones(2, 3).sum(2)
    with pytest.raises(mg.ShapeError, match="expanded size"):
        mg.ones(3).expand(2, 4)


def test_errors_are_runtime_errors_like_torch():
    with pytest.raises(RuntimeError):
        mg.ones(2) + mg.ones(3)


def test_tensor_api_surface():
    mg.manual_seed(1)
    a = mg.randn(2, 3)
    mg.manual_seed(1)
    b = mg.randn(2, 3)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.dim() == 2 and a.shape == (2, 3) and a.numel() == 6
    assert isinstance(a.numpy(), np.ndarray) and a.tolist() == a.data.tolist()
    assert mg.tensor(3.5).item() == 3.5
    assert "requires_grad=True" in repr(mg.ones(2, requires_grad=True))
    assert "grad_fn=<MulBackward>" in repr(mg.ones(2, requires_grad=True) * 2)
    assert "dtype=minigrad.float64" in repr(mg.ones(2, dtype=mg.float64))
    assert a.argmax().item() == int(np.argmax(a.data))
    np.testing.assert_array_equal(a.argmax(1).data, np.argmax(a.data, 1))
    assert mg.rand(5).data.min() >= 0
    assert mg.arange(2, 8, 2).tolist() == [2, 4, 6]
    with pytest.raises(mg.InplaceError, match="detach"):
        mg.ones(2, requires_grad=True).numpy()
    with pytest.raises(mg.DtypeError, match="cannot be converted"):
        mg.ones(2).item()
