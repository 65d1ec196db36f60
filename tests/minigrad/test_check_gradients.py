"""minigrad.testing.check_gradients: each buggy Function below is caught (with shrunk inputs that
really fail and a repro that fails again), its correct twin passes, kinks raise no false alarm,
misuse gets one clear line, and the pytest plugin's options work from the command line."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

import minigrad
from minigrad import pytest_plugin, testing
from minigrad.examples import float32_kernels
from minigrad.gradcheck import rounding_noise
from minigrad.testing import (
    CheckGradientsError,
    ForwardModeNotChecked,
    GradientMismatch,
    check_gradients,
    check_gradients_at,
)

pytest_plugins = ["pytester"]
# most Functions here define no jvp: the warning saying so is tested once, in test_a_function_without_jvp_is_said_once
pytestmark = pytest.mark.filterwarnings("ignore::minigrad.testing.ForwardModeNotChecked")
ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- buggy Functions and twins


class LeakyRelu(torch.autograd.Function):
    """max(x, 0.1 x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x > 0, x, 0.1 * x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, grad, 0.1 * grad)


class LeakyReluWrongNegativeSlope(LeakyRelu):
    """Region bug: the slope is wrong only for negative inputs."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, grad, 0.01 * grad)


class Softplus(torch.autograd.Function):
    """log(1 + e^x), whose derivative is sigmoid(x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


class SoftplusWrongAboveTwo(Softplus):
    """Region bug: a premature 'large x' shortcut, wrong only for x > 2 (sigmoid(2) = 0.88, not 1)."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.where(x > 2, torch.ones_like(x), torch.sigmoid(x))


class AddBias(torch.autograd.Function):
    """x + b, with b broadcast over the rows of x: b's gradient sums over the rows."""

    @staticmethod
    def forward(ctx, x, b):
        return x + b

    @staticmethod
    def backward(ctx, grad):
        return grad, grad.sum(0)


class AddBiasWrongAxis(AddBias):
    """Broadcast bug: reduces over the wrong axis (same shape when x is square, so torch cannot tell)."""

    @staticmethod
    def backward(ctx, grad):
        return grad, grad.sum(1)


class Cube(torch.autograd.Function):
    """x ** 3, twice differentiable: backward is built from differentiable ops on the saved input."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x**2


class CubeDetached(Cube):
    """Second-derivative bug: the first derivative is right, but detach cuts it from x."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x.detach() ** 2


class AbsDoubled(torch.autograd.Function):
    """|x| with a backward twice too big everywhere: a kink at 0 must not hide it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.abs()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * grad * x.sign()


class TanhOneOhOne(torch.autograd.Function):
    """tanh(1.01 x): forward and backward agree with each other, so only a reference sees it is not tanh."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.tanh(1.01 * x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 1.01 * (1 - torch.tanh(1.01 * x) ** 2)


class MgAbs(minigrad.Function):
    """|x| as a minigrad Function."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.abs(x.data)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * minigrad.where(x > 0, 1.0, -1.0)


class MgAbsNoNegativeSlope(MgAbs):
    """Region bug: forgets the slope of negative inputs."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0).double()


class MgSquare(minigrad.Function):
    """x ** 2 as a minigrad Function, twice differentiable."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.data**2

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 2 * x


class MgSquareThroughNumpy(MgSquare):
    """Second-derivative bug: backward goes through NumPy, so its result is a constant."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * minigrad.tensor(2 * x.data)


# name: (buggy fn, correct twin, shapes, options, what the message names)
BUGS = {
    "negative slope": (LeakyReluWrongNegativeSlope.apply, LeakyRelu.apply, [(3, 4)], {}, "first derivative"),
    "only above 2": (SoftplusWrongAboveTwo.apply, Softplus.apply, [(5,)], {}, "first derivative"),
    "wrong axis": (AddBiasWrongAxis.apply, AddBias.apply, [(4, 4), (4,)], {}, "first derivative of input 1"),
    "detached backward": (CubeDetached.apply, Cube.apply, [(3,)], {}, "second derivative"),
    "doubled at a kink": (AbsDoubled.apply, torch.abs, [(3, 4)], {}, "first derivative"),
    "reference": (TanhOneOhOne.apply, torch.tanh, [(3,)], {"reference": torch.tanh}, "fn and reference differ"),
    "minigrad negative slope": (
        MgAbsNoNegativeSlope.apply, MgAbs.apply, [(3, 4)], {"library": "minigrad"}, "first derivative"),
    "minigrad through numpy": (
        MgSquareThroughNumpy.apply, MgSquare.apply, [(2, 3)], {"library": "minigrad"}, "second derivative"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BUGS))
def test_bug_is_caught_with_inputs_that_really_fail(name):
    buggy, correct, shapes, options, named = BUGS[name]
    with pytest.raises(GradientMismatch, match=named) as caught:
        check_gradients(buggy, *shapes, **options)
    inputs = caught.value.inputs
    assert [x.shape for x in inputs] == shapes and all(x.dtype == np.float64 for x in inputs)
    with pytest.raises(GradientMismatch, match=named):
        check_gradients_at(buggy, *inputs, **options)
    reference = options.get("reference")
    check_gradients_at(correct, *inputs, **{**options, "reference": reference and correct})


@pytest.mark.parametrize("name", sorted(BUGS))
def test_correct_twin_passes(name):
    _, correct, shapes, options, _ = BUGS[name]
    assert check_gradients(correct, *shapes, **options) is None


def test_region_bugs_shrink_into_their_region():
    with pytest.raises(GradientMismatch) as negative:
        check_gradients(LeakyReluWrongNegativeSlope.apply, (3, 4))
    assert negative.value.inputs[0].min() < 0
    with pytest.raises(GradientMismatch) as above:
        check_gradients(SoftplusWrongAboveTwo.apply, (5,))
    assert above.value.inputs[0].max() > 2


def test_second_derivative_bug_is_invisible_to_first_order():
    check_gradients(CubeDetached.apply, (3,), second_order=False)
    check_gradients(MgSquareThroughNumpy.apply, (2, 3), second_order=False, library="minigrad")


def test_message_names_input_element_and_both_values():
    with pytest.raises(GradientMismatch) as caught:
        check_gradients(AddBiasWrongAxis.apply, (4, 4), (4,))
    first_line = str(caught.value).splitlines()[0]
    assert "input 1 (shape (4,)) is wrong at element (" in first_line
    assert "analytic" in first_line and "numeric" in first_line
    assert caught.value.repro in str(caught.value)  # pytest shows the repro too
    assert isinstance(caught.value, AssertionError)


def test_repro_fails_again_in_a_fresh_interpreter():
    with pytest.raises(GradientMismatch) as caught:
        check_gradients(SoftplusWrongAboveTwo.apply, (5,))
    repro = caught.value.repro
    assert "from test_check_gradients import SoftplusWrongAboveTwo" in repro
    with pytest.raises(GradientMismatch):
        exec(repro, {})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "minigrad"), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", repro], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0 and "GradientMismatch: first derivative of input 0" in done.stderr, done.stderr


SCRIPT = """
import torch

from minigrad.testing import GradientMismatch, check_gradients

SCALE = 3.0


def scaled(x):
    return SCALE * x


class Triple(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return scaled(x)

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad  # wrong: 3


if __name__ == "__main__":
    try:
        check_gradients(Triple.apply, (3,), forward_mode=False)
    except GradientMismatch as error:
        print(error.repro)
"""


def test_repro_of_a_scripts_function_carries_its_source_and_fails_again_in_another_folder(tmp_path):
    """The common case: the Function is defined in the user's own script, which is __main__ there
    and cannot be imported from elsewhere; the repro copies its source and what it uses."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "mine" / "script.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = lambda *args, cwd: subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,  # noqa: E731
                                            text=True, timeout=300)  # fmt: skip
    done = run("script.py", cwd=tmp_path / "mine")
    repro = done.stdout
    assert done.returncode == 0 and repro.startswith("# Triple is defined in your script "), done.stdout + done.stderr
    assert "from __main__" not in repro and "SCALE = 3.0" in repro and "def scaled" in repro
    assert "check_gradients(Triple.apply" not in repro  # the script's own run is left out
    (tmp_path / "elsewhere" / "repro.py").write_text(repro)
    again = run("repro.py", cwd=tmp_path / "elsewhere")
    assert again.returncode == 1 and "GradientMismatch: first derivative of input 0" in again.stderr, again.stderr


def test_repro_of_a_local_function_expects_fn_and_keeps_non_array_arguments():
    def buggy_power(x, n):
        return x**n if n < 2 else (x**n).detach() + x * 0  # no gradient from n = 2 on

    with pytest.raises(GradientMismatch) as caught:
        check_gradients(buggy_power, (2, 3), st.integers(0, 3), second_order=False)
    assert caught.value.inputs[1] == 2 and "cannot be imported, so define fn" in caught.value.repro
    with pytest.raises(GradientMismatch):
        exec(caught.value.repro, {"fn": buggy_power})


# ----------------------------------------------------------------------------- kinks, domains, strategies

KINKED = {
    "relu": (torch.relu, [(3, 4)], "torch"),
    "abs": (torch.abs, [(3, 4)], "torch"),
    "max": (lambda x: x.max(), [(5,)], "torch"),
    "maximum": (torch.maximum, [(3, 4), (4,)], "torch"),
    "clamp": (lambda x: x.clamp(-1, 1), [(6,)], "torch"),
    "minigrad relu": (lambda x: x.relu(), [(3, 4)], "minigrad"),
    "minigrad abs times max": (lambda x: x.abs() * x.max(), [(4,)], "minigrad"),
    "minigrad max over a dim, with its indices": (lambda x: x.max(1), [(3, 4)], "minigrad"),
}


@pytest.mark.parametrize("name", sorted(KINKED))
def test_correct_functions_with_kinks_pass(name):
    fn, shapes, library = KINKED[name]
    check_gradients(fn, *shapes, library=library)


def test_points_that_all_lie_at_a_kink_are_not_a_silent_pass():
    assert check_gradients_at(torch.relu, np.zeros(3)) == 0  # relu'(0) = 0 vs a central difference of 0.5
    with pytest.raises(CheckGradientsError, match="no element was compared"):
        check_gradients(torch.relu, st.just(np.zeros(3)))


def test_values_outside_the_domain_are_reported_and_a_strategy_keeps_inputs_inside():
    with pytest.raises(GradientMismatch, match="not finite"):
        check_gradients(torch.log, (3,))
    check_gradients(torch.log, testing.arrays((3,), min_value=0.1, max_value=3.0))
    check_gradients(torch.log, (3,), low=0.1, high=3.0)


def test_minigrad_tensors_from_a_strategy_are_inputs():
    check_gradients(lambda x: x.tanh(), testing.tensors((2, 3)), library="minigrad")


def test_deterministic_by_default():
    seen = [[], []]
    for run in seen:

        def fn(x, run=run):
            run.append(x.detach().numpy().copy())
            return x.sin()

        check_gradients(fn, (3,), max_examples=10)
    assert all(np.array_equal(a, b) for a, b in zip(*seen)) and len(seen[0]) == len(seen[1])


# ----------------------------------------------------------------------------- misuse


class TorchSquare(Cube):
    pass


MISUSE = {
    "shape not a tuple": (lambda: check_gradients(torch.sin, 3), "shape 0 is 3: give a tuple"),
    "negative side": (lambda: check_gradients(torch.sin, (3, -1)), "shape 0 is (3, -1)"),
    "list shape": (lambda: check_gradients(torch.sin, [3, 4]), "shape 0 is [3, 4]"),
    "float side": (lambda: check_gradients(torch.sin, (3.0, 4)), "shape 0 is (3.0, 4)"),
    "list of shapes": (lambda: check_gradients(torch.add, [(3,), (3,)]), "shape 0 is [(3,), (3,)]"),
    "array as shape": (lambda: check_gradients(torch.sin, np.ones((2, 3))), "shape 0 is a NumPy array of shape (2, 3)"),
    "strategy of shapes": (
        lambda: check_gradients(torch.sin, testing.shapes()),
        "input 0 is (), a shape: give a shape, or a strategy of float arrays such as testing.arrays(testing.shapes())",
    ),
    "strategy of lists": (
        lambda: check_gradients(torch.sin, st.lists(st.floats(0, 1), min_size=1)),
        "input 0 is a list, [0.0]: give a NumPy array",
    ),
    "negative side in arrays": (lambda: testing.arrays((3, -1)), "shape is (3, -1): give a tuple"),
    "list in tensors": (lambda: testing.tensors([3]), "shape is [3]: give a tuple"),
    "shape in place of fn": (lambda: check_gradients((3, 4), torch.sin), "fn must be callable"),
    "low not a number": (lambda: check_gradients(torch.sin, (3,), low="0"), "low must be a number, not '0'"),
    "reference not callable": (
        lambda: check_gradients(torch.sin, (3,), reference="torch.sin"),
        "reference must be callable",
    ),
    "bool max_examples": (lambda: check_gradients(torch.sin, (3,), max_examples=True), "max_examples must be"),
    "batched minigrad": (
        lambda: check_gradients(MgSquare.apply, (3,), library="minigrad", batched=True),
        "batched=True checks torch.func.vmap: pass library='torch'",
    ),
    "batched old-style Function": (
        lambda: check_gradients(LeakyRelu.apply, (3,), batched=True, forward_mode=False),
        "batched=True needs fn to run under torch.func.vmap: LeakyRelu must define forward without ctx",
    ),
    "no shapes": (lambda: check_gradients(torch.sin), "give one shape"),
    "low >= high": (lambda: check_gradients(torch.sin, (3,), low=1.0, high=1.0), "low must be below high"),
    "no examples": (lambda: check_gradients(torch.sin, (3,), max_examples=0), "max_examples must be"),
    "unknown library": (lambda: check_gradients(torch.sin, (3,), library="jax"), "library must be"),
    "returns None": (lambda: check_gradients(lambda x: None, (3,)), "fn must return a float torch tensor"),
    "returns integers": (lambda: check_gradients(lambda x: (x > 0).long(), (3, 4)), "not a tensor of torch.int64"),
    "detached output": (lambda: check_gradients(lambda x: x.detach() * 2, (3,)), "does not require grad"),
    "input without grad": (
        lambda: check_gradients(lambda x: x * 2, testing.tensors((3,), requires_grad=False), library="minigrad"),
        "input 0 is a float tensor that does not require grad",
    ),
    "no float input": (lambda: check_gradients(lambda n: n, st.integers()), "no input to differentiate"),
    "minigrad Function as torch": (lambda: check_gradients(MgAbs.apply, (3,)), "pass library='minigrad'"),
    "torch Function as minigrad": (
        lambda: check_gradients(TorchSquare.apply, (3,), library="minigrad"),
        "TorchSquare is a torch Function: pass library='torch'",
    ),
    "composite returning torch": (
        lambda: check_gradients(lambda x: torch.ones(3, requires_grad=True), (3,), library="minigrad"),
        "fn returned a torch tensor: pass library='torch'",
    ),
}


@pytest.mark.parametrize("name", sorted(MISUSE))
def test_misuse_gets_one_clear_line(name):
    call, message = MISUSE[name]
    with pytest.raises(CheckGradientsError, match=re.escape(message)) as caught:
        call()
    assert "\n" not in str(caught.value)
    error = caught.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)  # nothing chained


# ----------------------------------------------------------------------------- installing, the pytest plugin


def test_hypothesis_is_a_testing_extra_and_the_plugin_an_entry_point():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("hypothesis") for d in project["optional-dependencies"]["testing"])
    assert project["entry-points"]["pytest11"] == {"minigrad.pytest_plugin": "minigrad.pytest_plugin"}


INNER_TEST = """
import numpy as np, torch
from minigrad import pytest_plugin, testing

def test_options():
    seen = []
    def fn(x):
        if torch.is_grad_enabled():  # one call per example takes the gradient, the others differences
            seen.append(x.detach().numpy().copy())
        return x * 2
    testing.check_gradients(fn, (2,), second_order=False)
    print("defaults", pytest_plugin.defaults, "examples", len(seen), "inputs", float(np.sum(seen)))
"""


def _run_inner(pytester: pytest.Pytester, *args: str) -> str:
    pytester.makepyfile(test_inner=INNER_TEST)
    result = pytester.runpytest("-p", "minigrad.pytest_plugin", "-s", "-q", *args)
    result.assert_outcomes(passed=1)
    return next(line for line in result.outlines if line.startswith("defaults"))


def test_plugin_options_set_examples_and_seed(pytester):
    quick = _run_inner(pytester, "--gradients-max-examples", "7", "--gradients-seed", "3")
    assert "{'max_examples': 7, 'seed': 3} examples 7 " in quick
    assert _run_inner(pytester, "--gradients-max-examples", "7", "--gradients-seed", "3") == quick
    assert _run_inner(pytester, "--gradients-max-examples", "7", "--gradients-seed", "4") != quick
    assert "{'max_examples': 100, 'seed': 0} examples 100 " in _run_inner(pytester)
    assert pytest_plugin.defaults == {"max_examples": 100, "seed": 0}  # restored after the inner session


def test_entry_point_registers_the_plugin_once_even_with_p(tmp_path):
    """What an install does, imitated by a dist-info folder on the path: the options work from the
    command line, alone or with -p minigrad.pytest_plugin (the same name: not registered twice)."""
    dist = tmp_path / "site" / "minigrad_entry_point-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: minigrad-entry-point\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\nminigrad.pytest_plugin = minigrad.pytest_plugin\n")
    (tmp_path / "test_seen.py").write_text(
        "from minigrad import pytest_plugin\n\ndef test_seen():\n    assert pytest_plugin.defaults['seed'] == 5\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}
    for extra in ([], ["-p", "minigrad.pytest_plugin"]):
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--gradients-seed", "5",
                               *extra, "test_seen.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


def test_plugin_is_silent_without_hypothesis(tmp_path):
    (tmp_path / "test_plain.py").write_text(
        textwrap.dedent("""
            import pytest

            def test_plain():
                assert 1 + 1 == 2

            def test_minigrad_testing_says_what_to_install():
                with pytest.raises(ImportError, match=r"minigrad-finetune\\[testing\\]"):
                    import minigrad.testing
        """)
    )
    code = (
        "import sys; sys.modules['hypothesis'] = None; import pytest; "
        "sys.exit(pytest.main(['-p', 'minigrad.pytest_plugin', '--gradients-max-examples', '5', '-q', "
        "'-p', 'no:cacheprovider', 'test_plain.py']))"
    )
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout and "warning" not in done.stdout.lower()


# ----------------------------------------------------------------------------- float32 kernels, precision

F32_CASES = sorted(float32_kernels.CASES)


@pytest.mark.parametrize("name", F32_CASES)
def test_float32_kernels_pass_when_right_and_are_caught_when_wrong(name):
    function, shapes, correct = float32_kernels.CASES[name]
    if correct:
        check_gradients(function.apply, *shapes, forward_mode=False)
        return
    with pytest.raises(GradientMismatch, match="precision float32") as caught:
        check_gradients(function.apply, *shapes, forward_mode=False)
    assert re.search(r"eps=\S+, atol=\S+, rtol=0.001\)$", str(caught.value).splitlines()[0])


def test_float64_functions_keep_gradchecks_step_and_tolerance():
    with pytest.raises(GradientMismatch, match=r"precision float64, .*eps=1e-06, atol=1e-05, rtol=0.001\)"):
        check_gradients(LeakyReluWrongNegativeSlope.apply, (3, 4), forward_mode=False)


def test_bfloat16_is_refused_in_one_line_unless_the_tolerance_is_given():
    square = float32_kernels.SquareBfloat16.apply
    with pytest.raises(CheckGradientsError, match="values are rounded to bfloat16 .rounding noise") as caught:
        check_gradients(square, (3, 4), forward_mode=False)
    assert "\n" not in str(caught.value) and "pass eps, atol and rtol yourself" in str(caught.value)
    check_gradients(square, (3, 4), forward_mode=False, second_order=False, eps=0.05, atol=0.3, rtol=0.05)
    wrong = lambda x: square(x) * 1.3  # noqa: E731 - forward and backward agree, but not with each other's scale
    with pytest.raises(GradientMismatch):
        check_gradients(float32_kernels.SquareBfloat16.apply, (3, 4), forward_mode=False, second_order=False,
                        eps=0.05, atol=0.3, rtol=0.05, reference=wrong)  # fmt: skip


def test_a_random_function_is_set_aside_not_reported():
    with pytest.raises(CheckGradientsError, match=r"rounding noise was above 0.0001 of its values at every point"):
        check_gradients(lambda x: x * (1 + 0.01 * torch.rand_like(x)), (3,))


def test_rounding_noise_sees_noise_not_kinks_or_curvature():
    t = np.linspace(-1.5e-3, 1.5e-3, 31)
    for seed in range(20):
        noise = 1e-7 * np.random.default_rng(seed).standard_normal(31)
        assert 0.25e-7 < rounding_noise(np.exp(t) + noise) < 4e-7  # within a factor 4 of the truth
        assert 0.25e-7 < rounding_noise(np.abs(t - 2e-4) + noise) < 4e-7
    assert rounding_noise(t**3) < 1e-20 and rounding_noise(np.exp(t)) < 1e-15
    assert rounding_noise(np.abs(t - 2e-4)) < 1e-15  # a kink among the points


# ----------------------------------------------------------------------------- forward mode (jvp)


class SquareWithJvp(torch.autograd.Function):
    """x ** 2 with a forward-mode rule."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return x**2

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad

    @staticmethod
    def jvp(ctx, x_t):
        (x,) = ctx.saved_tensors
        return 2 * x * x_t


class SquareWrongJvp(SquareWithJvp):
    """Bug: the jvp has the wrong sign; the backward is right."""

    @staticmethod
    def jvp(ctx, x_t):
        (x,) = ctx.saved_tensors
        return -2 * x * x_t


def test_a_right_jvp_passes_and_a_wrong_one_is_caught(recwarn):
    check_gradients(SquareWithJvp.apply, (3, 4))
    with pytest.raises(GradientMismatch, match=r"forward-mode derivative \(jvp\) of input 0 is wrong") as caught:
        check_gradients(SquareWrongJvp.apply, (3, 4))
    with pytest.raises(GradientMismatch, match="forward-mode"):
        check_gradients_at(SquareWrongJvp.apply, *caught.value.inputs)
    check_gradients(SquareWrongJvp.apply, (3, 4), forward_mode=False)  # the option turns it off
    assert not [w for w in recwarn.list if w.category is ForwardModeNotChecked]


def test_a_function_without_jvp_is_said_once():
    with pytest.warns(ForwardModeNotChecked, match="LeakyRelu defines no jvp") as said:
        check_gradients(LeakyRelu.apply, (3, 4))
    assert len(said) == 1


# ----------------------------------------------------------------------------- batched (torch.func.vmap)


class ScaleRows(torch.autograd.Function):
    """x * w for a weight row w broadcast over x's rows: in torch.func's style, with a vmap rule generated."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w):
        return x * w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad * w, (grad * x).sum(0)


class ScaleRowsWrongVmap(ScaleRows):
    """Bug: a hand-written vmap rule that mixes the samples (w's batch reversed)."""

    generate_vmap_rule = False

    @staticmethod
    def vmap(info, in_dims, x, w):
        x = x.movedim(in_dims[0], 0) if in_dims[0] is not None else x.expand(info.batch_size, *x.shape)
        w = w.movedim(in_dims[1], 0) if in_dims[1] is not None else w.expand(info.batch_size, *w.shape)
        return ScaleRows.apply(x, w.flip(0)[:, None, :]), 0


def test_batched_per_sample_gradients_match_a_loop():
    check_gradients(ScaleRows.apply, (3, 4), (4,), batched=True, forward_mode=False)
    with pytest.raises(GradientMismatch, match="under torch.func.vmap, sample"):
        check_gradients(ScaleRowsWrongVmap.apply, (3, 4), (4,), batched=True, forward_mode=False)
    check_gradients(ScaleRowsWrongVmap.apply, (3, 4), (4,), forward_mode=False)  # not looked at unless asked


class LayerNorm32(torch.autograd.Function):
    """Layer norm over the last axis, in float32; its backward takes torch's own gradient of it, in float32."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.layer_norm(x.float(), x.shape[-1:]).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x32 = x.detach().float().requires_grad_()
            (found,) = torch.autograd.grad(torch.nn.functional.layer_norm(x32, x.shape[-1:]), x32, grad.float())
        return found.to(grad.dtype)


def test_a_float32_layer_norm_passes_though_nearly_constant_rows_cancel():
    """hypothesis draws rows of equal values, where float32's cancellation makes the values noisy:
    those points are set aside, the others checked."""
    check_gradients(LayerNorm32.apply, (2, 8), second_order=False, forward_mode=False)
