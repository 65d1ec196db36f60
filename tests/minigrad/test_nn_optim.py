"""minigrad.nn and minigrad.optim against torch, in float64."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
from minigrad import nn, optim, testing
from minigrad.nn import functional as F  # noqa: N812 - torch's spelling


def _copy_params(mg_module, torch_module):
    with torch.no_grad():
        for (name, p), (tname, tp) in zip(mg_module.named_parameters(), torch_module.named_parameters()):
            assert name == tname
            tp.copy_(torch.from_numpy(p.data))


@pytest.mark.parametrize(
    "make, opt_args",
    [
        (optim.SGD, dict(lr=0.1)),
        (optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
        (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
        (optim.SGD, dict(lr=0.05, momentum=0.5, dampening=0.3)),
        (optim.Adam, dict(lr=1e-2)),
        (optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)),
        (optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    ],
)
def test_100_optimizer_steps_equal_torch(make, opt_args):
    rng = np.random.default_rng(0)
    shapes = [(4, 3), (3,)]
    start = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(100)]
    mine = [mg.tensor(a, requires_grad=True) for a in start]
    theirs = [torch.tensor(a, requires_grad=True) for a in start]
    groups = [{"params": [mine[0]]}, {"params": [mine[1]], "lr": opt_args["lr"] / 2}]
    torch_groups = [{"params": [theirs[0]]}, {"params": [theirs[1]], "lr": opt_args["lr"] / 2}]
    opt = make(groups, **opt_args)
    topt = getattr(torch.optim, make.__name__)(torch_groups, **opt_args)
    for step in grads:
        for p, tp, g in zip(mine, theirs, step):
            p.grad, tp.grad = mg.tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
    for p, tp in zip(mine, theirs):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), atol=1e-6, rtol=0)


def test_linear_warmup_schedule_matches_transformers_rule():
    p = mg.tensor([1.0], requires_grad=True)
    opt = optim.SGD([p], lr=1.0)
    sched = optim.LinearWarmupSchedule(opt, warmup_steps=2, total_steps=6)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(6):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs == pytest.approx([0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0])


def test_mlp_forward_backward_equals_torch():
    mg.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7, dtype=mg.float64), nn.GELU(), nn.LayerNorm(7, dtype=mg.float64),
                          nn.Linear(7, 3, dtype=mg.float64), nn.Tanh())  # fmt: skip
    tmodel = torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.LayerNorm(7), torch.nn.Linear(7, 3), torch.nn.Tanh()
    ).double()
    _copy_params(model, tmodel)
    x = np.random.default_rng(1).standard_normal((4, 5))
    target = np.array([0, 2, 1, 2])
    loss = F.cross_entropy(model(mg.tensor(x)), mg.tensor(target), label_smoothing=0.1)
    tloss = torch.nn.functional.cross_entropy(tmodel(torch.tensor(x)), torch.tensor(target), label_smoothing=0.1)
    loss.backward()
    tloss.backward()
    assert loss.item() == pytest.approx(tloss.item(), abs=1e-10)
    for (name, p), tp in zip(model.named_parameters(), tmodel.parameters()):
        np.testing.assert_allclose(p.grad.data, tp.grad.numpy(), atol=1e-10, err_msg=name)


@given(testing.arrays((5, 4), min_value=-4, max_value=4), st.lists(st.integers(-1, 3), min_size=5, max_size=5))
def test_cross_entropy_ignore_index_matches_torch(logits, target):
    if all(t == -1 for t in target):
        target[0] = 0
    t = np.array(target)
    for reduction in ("mean", "sum", "none"):
        testing.assert_matches_torch(
            lambda lib, x, r=reduction: (F if lib is mg else torch.nn.functional).cross_entropy(
                x, lib.tensor(t), ignore_index=-1, reduction=r, label_smoothing=0.2
            ),
            logits,
        )


@given(testing.arrays((3, 4), min_value=-30, max_value=30), testing.arrays((3, 4), min_value=0, max_value=1))
def test_bce_with_logits_and_mse_match_torch(x, target):
    testing.assert_matches_torch(
        lambda lib, a, b: (F if lib is mg else torch.nn.functional).binary_cross_entropy_with_logits(a, b), x, target
    )
    testing.assert_matches_torch(lambda lib, a, b: (F if lib is mg else torch.nn.functional).mse_loss(a, b), x, target)


@given(testing.arrays(testing.shapes(min_dims=1, max_dims=3)))
def test_gelu_and_layer_norm_match_torch(x):
    testing.assert_matches_torch(lambda lib, a: (F if lib is mg else torch.nn.functional).gelu(a), x)
    shape = x.shape[-1:]
    if x.shape[-1] > 1:
        testing.assert_matches_torch(
            lambda lib, a: (F if lib is mg else torch.nn.functional).layer_norm(a, shape), x, atol=1e-7
        )


def test_gradcheck_of_the_new_ops():
    x = mg.tensor(np.linspace(-2, 2, 7), requires_grad=True)
    assert mg.gradcheck(lambda a: F.gelu(a) + a.erf(), [x])
    assert mg.gradcheck(lambda a: F.binary_cross_entropy_with_logits(a, mg.ones_like(a) * 0.3), [x])


def test_module_bookkeeping_and_state_dict_file(tmp_path):
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2), nn.Dropout(0.5))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "1.weight", "1.bias"]
    assert model.training and not model.eval()[2].training
    x = mg.randn(3, 4)
    assert np.array_equal(model[2](x).data, x.data)  # dropout is the identity in eval mode
    model.train()
    out = model[2](mg.ones(1000))
    assert set(np.unique(out.data)) <= {0.0, 2.0} and 300 < (out.data == 0).sum() < 700
    model[1](model[0](mg.tensor([1, 2]))).sum().backward()
    assert model[0].weight.grad.data[1].any() and not model[0].weight.grad.data[3].any()
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    path = tmp_path / "model.npz"
    mg.save(model.state_dict(), path)
    other = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2), nn.Dropout(0.5))
    other.load_state_dict(mg.load(path))
    assert all(np.array_equal(a.data, b.data) for a, b in zip(model.parameters(), other.parameters()))
    with pytest.raises(KeyError, match="missing keys"):
        other.load_state_dict({})
    with pytest.raises(mg.ShapeError, match="1.bias"):
        other.load_state_dict({**model.state_dict(), "1.bias": np.zeros(3)})


def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((3, 3)) * 5, rng.standard_normal(4)]
    mine = [mg.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    for p, tp, a in zip(mine, theirs, arrays):
        p.grad, tp.grad = mg.tensor(a * 2), torch.tensor(a * 2)
    norm = nn.utils.clip_grad_norm_(mine, 1.0)
    tnorm = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert norm.item() == pytest.approx(tnorm.item())
    for p, tp in zip(mine, theirs):
        np.testing.assert_allclose(p.grad.data, tp.grad.numpy(), rtol=1e-6)


def test_train_mlp_example_matches_torch_step_for_step():
    pytest.importorskip("sklearn", reason="scikit-learn (dev extra) ships the digits dataset")
    from minigrad.examples.train_mlp import train_both

    out = train_both(steps=300, batch=64, lr=1e-2, dtype="float64")
    diffs = [abs(a - b) for a, b in zip(out["minigrad"], out["torch"])]
    assert len(diffs) == 300 and max(diffs) < 1e-4
    assert out["minigrad"][-1] < out["minigrad"][0] / 10
    assert out["accuracy"] > 0.95
