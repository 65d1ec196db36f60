"""torch's own OpInfo samples (``op_db``: ``sample_inputs`` and ``reference_inputs``, float64) through
every op minigrad has: torch's values and gradients, or a clear refusal (a minigrad error or
NotImplementedError, in one line), never another exception. The code is
``opinfo_report.py`` beside this file; the whole run (about 140 ops, 5,600 samples, a minute or two) is
opt-in (``--run-slow``), the ops issue 23 found wrong run by default. Then what a careless user
meets: a label outside [0, C), a damaged state-dict file."""

from __future__ import annotations

import numpy as np
import opinfo_report  # beside this file (pytest puts the test's folder on sys.path)
import pytest
import torch

import minigrad
from minigrad import testing
from minigrad.errors import CheckpointError, TargetError

F = minigrad.nn.functional

# the ops issue 23 found wrong (their second derivatives compared too where SECOND_ORDER says)
FOUND_WRONG = [
    "movedim", "sign", "norm", "nn.functional.normalize", "topk", "index_select", "scatter_add", "gather", "sort",
    "argsort", "einsum", "roll", "repeat_interleave", "narrow", "nn.functional.cross_entropy",
    "nn.functional.nll_loss", "nn.functional.conv2d", "nn.functional.pad.constant", "nn.functional.pad.reflect",
    "nn.functional.pad.replicate", "nn.functional.pad.replicate_negative", "nn.functional.pad.circular",
    "nn.functional.elu", "nn.functional.logsigmoid", "nn.functional.softplus", "reciprocal", "pow", "rsqrt",
    "max.binary", "clamp", "take_along_dim", "nn.functional.avg_pool2d", "softmax.with_dtype",
]  # fmt: skip


def _assert_clean(outcomes: list[opinfo_report.Outcome]) -> None:
    mismatches = [o.op + o.detail for o in outcomes if o.kind == "mismatch"]
    assert not mismatches, f"{len(mismatches)} samples differ from torch:\n" + "\n".join(mismatches[:20])


@pytest.fixture(scope="module")
def op_db_available() -> None:
    pytest.importorskip("expecttest", reason="torch's OpInfo helpers need expecttest (pip install -e '.[dev]')")


@pytest.mark.parametrize("name", FOUND_WRONG)
def test_torchs_samples_of_the_ops_found_wrong(op_db_available, name):
    assert name in opinfo_report.MAPPING
    outcomes = opinfo_report.run({name})
    assert outcomes, f"torch has no OpInfo {name!r}"
    _assert_clean(outcomes)


@pytest.mark.slow
def test_torchs_samples_of_every_op_minigrad_has(op_db_available, capsys):
    outcomes = opinfo_report.run()
    counts = opinfo_report.summary(outcomes)
    with capsys.disabled():
        print("\nOpInfo samples: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    assert counts["ops"] == len(opinfo_report.MAPPING)  # every name in MAPPING is one of torch's OpInfos
    _assert_clean(outcomes)


@pytest.mark.parametrize(
    "error",
    [
        minigrad.ShapeError("narrow: start 9 and length 2 do not fit dim 0 of size 5"),
        NotImplementedError("norm: p='nuc' is not supported"),
    ],
)
def test_a_clear_refusal_is_a_minigrad_error_or_not_implemented_in_one_line(error):
    assert opinfo_report.is_clear_refusal(error)
    assert not opinfo_report.is_clear_refusal(TypeError("'NoneType' object is not subscriptable"))
    assert not opinfo_report.is_clear_refusal(ValueError("too many values to unpack (expected 2)"))
    assert not opinfo_report.is_clear_refusal(minigrad.ShapeError("index (array([[1,\n 2]])) is out of range"))


# ----------------------------------------------------------------------------- the fixes, without op_db

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(("source", "destination"), [([0, 1, 2, 3], [3, 2, 1, 0]), ([0, -1], [-3, 0]), (1, -1)])
def test_movedim_moves_several_dims(source, destination):
    testing.assert_matches_torch(lambda lib, t: t.movedim(source, destination), RNG.standard_normal((4, 3, 2, 1)))


def test_sign_requires_grad_with_a_zero_gradient_and_is_0_at_nan():
    testing.assert_matches_torch(lambda lib, t: t.sign() * t, np.array([-2.0, 0.0, 3.0, np.nan]))


@pytest.mark.parametrize("p", [0, -np.inf, np.inf, "fro", 3, -1])
def test_norm_of_every_order(p):
    testing.assert_matches_torch(lambda lib, t: t.norm(p), np.array([[0.0, -2.0, 0.5], [3.0, 0.0, -1.0]]))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("amounts", [(1, 2), (2, 0, 1, 1), (-1, 2, 1, -1)])
def test_pad_modes_pick_from_the_input(mode, amounts):
    x = RNG.standard_normal((2, 3, 4))
    testing.assert_matches_torch(
        lambda lib, t: (F if lib is minigrad else torch.nn.functional).pad(t, amounts, mode), x
    )


@pytest.mark.parametrize("op", ["elu", "logsigmoid", "softplus", "reciprocal", "rsqrt", "pow"])
def test_second_derivatives_at_extreme_values(op):
    x = np.array([-np.inf, -1e300, -30.0, -1.0, -1e-300, 0.0, 1e-300, 0.5, 30.0, 1e300, np.inf, np.nan])
    fn = {
        "elu": lambda lib, t: (F if lib is minigrad else torch.nn.functional).elu(t, 0.8),
        "logsigmoid": lambda lib, t: (F if lib is minigrad else torch.nn.functional).logsigmoid(t),
        "softplus": lambda lib, t: (F if lib is minigrad else torch.nn.functional).softplus(t, 3, 0.2),
        "reciprocal": lambda lib, t: t.reciprocal(),
        "rsqrt": lambda lib, t: t.rsqrt(),
        "pow": lambda lib, t: t**2.5,
    }[op]
    testing.assert_matches_torch(fn, x)
    testing.assert_second_derivative_matches_torch(fn, x)


# ----------------------------------------------------------------------------- misuse


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("label", [-1, 3, 7])
def test_a_label_outside_the_classes_is_refused_naming_it(loss, label):
    logits = minigrad.randn(4, 3, requires_grad=True)
    target = minigrad.tensor([0, 2, label, 1])
    with pytest.raises(TargetError, match=rf"{loss}: target {label} is out of bounds: .* in \[0, 3\)"):
        getattr(F, loss)(logits, target)
    with pytest.raises(IndexError):  # torch raises an IndexError: code catching it keeps working
        getattr(F, loss)(logits, target)
    ignored = minigrad.tensor([0, 2, -100, 1])  # ignore_index is no label, whatever its value
    testing.assert_matches_torch(
        lambda lib, t: getattr(F if lib is minigrad else torch.nn.functional, loss)(t, lib.tensor(ignored.data)),
        logits.data.astype(np.float64),
    )


def test_binary_cross_entropy_with_logits_takes_any_target_as_torch_does():
    logits, target = RNG.standard_normal(5), np.array([-0.5, 0.0, 0.3, 1.0, 2.0])
    testing.assert_matches_torch(
        lambda lib, x, y: (F if lib is minigrad else torch.nn.functional).binary_cross_entropy_with_logits(x, y),
        logits,
        target,
    )


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_a_damaged_state_dict_file_is_refused_naming_it(tmp_path, damage):
    path = tmp_path / "weights.npz"
    minigrad.save({"w": minigrad.randn(50, 50)}, path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "text": b"not an archive"}[damage])
    with pytest.raises(CheckpointError, match=rf"{path} is not a state dict saved by minigrad.save"):
        minigrad.load(path)
