"""Pictures of the graph, the backward trace, user-written Functions, and the random-program
snippets hypothesis shrinks to."""

import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import find, settings

import minigrad as mg
from minigrad import testing, viz


def rnn_graph():
    mg.manual_seed(0)
    W_h, W_x = mg.randn(4, 4, requires_grad=True), mg.randn(4, 3, requires_grad=True)
    x, prev_h = mg.randn(1, 3), mg.randn(1, 4)
    loss = ((mg.mm(W_h, prev_h.t()) + mg.mm(W_x, x.t())).tanh() + mg.ones(4)).sum()
    return loss, {"W_h": W_h, "W_x": W_x}


def test_to_dot_shows_ops_leaves_and_constants():
    loss, names = rnn_graph()
    loss.backward()
    dot = viz.to_dot(loss, names)
    assert dot.startswith("digraph minigrad {") and dot.rstrip().endswith("}")
    for op in ("Sum", "Tanh", "Add", "Mm"):
        assert f'label="{op}\\n' in dot
    assert dot.count("fillcolor=palegreen") == 2 and "W_h\\nleaf, requires grad (4, 4)" in dot
    assert "grad: mean" in dot and dot.count("fillcolor=lightgrey") == 3  # prev_h.t(), x.t(), ones
    assert dot.count("->") == 11  # 10 edges between nodes + Sum -> output


def test_to_text_is_an_indented_tree():
    loss, names = rnn_graph()
    text = viz.to_text(loss, names)
    lines = text.splitlines()
    assert lines[0] == "Sum -> ()" and lines[1] == "└─ Add -> (4, 4)"
    assert any("├─ W_h leaf, requires grad (4, 4)" in line for line in lines)
    shared = mg.ones(2, requires_grad=True) * 2
    assert "(shown above)" in viz.to_text((shared + shared).sum())


def test_render_by_suffix(tmp_path):
    loss, names = rnn_graph()
    assert open(viz.render(loss, tmp_path / "g.dot", names)).read() == viz.to_dot(loss, names)
    assert open(viz.render(loss, tmp_path / "g.txt", names)).read() == viz.to_text(loss, names)
    with pytest.raises(ValueError, match="unknown graph format '.jpeg'"):
        viz.render(loss, tmp_path / "g.jpeg")


def test_render_svg_and_png_with_graphviz(tmp_path):
    if shutil.which("dot") is None:
        if os.environ.get("REQUIRE_GRAPHVIZ") == "1":
            pytest.fail("Graphviz's dot is required here (CI installs the graphviz package)")
        pytest.skip("Graphviz's dot is not installed (apt-get install graphviz)")
    loss, names = rnn_graph()
    svg = viz.render(loss, tmp_path / "g.svg", names)
    assert "<svg" in open(svg).read() and "Mm" in open(svg).read()
    png = viz.render(loss, tmp_path / "g.png", names)
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_missing_graphviz_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    loss, _ = rnn_graph()
    with pytest.raises(viz.GraphvizNotFoundError, match="install the graphviz package"):
        viz.render(loss, tmp_path / "g.svg")
    assert not list(tmp_path.iterdir())


def test_trace_narrates_backward_in_engine_order():
    loss, _ = rnn_graph()
    out = io.StringIO()
    with mg.trace(file=out):
        loss.backward()
    text = out.getvalue()
    steps = [line.split("]")[1].split(":")[0].strip() for line in text.splitlines() if line.startswith("[")]
    assert steps == ["SumBackward", "AddBackward", "TanhBackward", "AddBackward", "MmBackward", "MmBackward"]
    assert "rule: d tanh(u)/du = 1 - tanh(u)^2" in text
    assert "summed over axes (1,) to undo broadcasting" in text  # (4, 1) + (4,) broadcast to (4, 4)
    assert "incoming grad (4, 4), norm 4" in text
    assert "input 1 (constant (4,)): no gradient needed" in text
    after_the_block = io.StringIO()
    with mg.trace(file=after_the_block):
        pass
    rnn_graph()[0].backward()  # outside the block: not narrated
    assert after_the_block.getvalue() == ""


def test_rnn_cell_example_cli(tmp_path):
    env = {**os.environ}
    done = subprocess.run([sys.executable, "-m", "minigrad.examples.rnn_cell", "--trace", "--graph",
                           str(tmp_path / "rnn.dot")], capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "[1] SumBackward" in done.stdout and "max |minigrad - torch| for W_h.grad (20, 20)" in done.stdout
    diffs = [float(line.rsplit(":", 1)[1]) for line in done.stdout.splitlines() if "max |minigrad" in line]
    assert len(diffs) == 2 and max(diffs) < 1e-5
    assert (tmp_path / "rnn.dot").read_text().startswith("digraph")


class Cube(mg.Function):
    """A user-written op, torch style: forward on Tensors, backward with ctx.saved_tensors."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x)
        ctx.scale = scale
        return x * x * x * scale

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        assert ctx.needs_input_grad == (True, False)
        return grad * 3 * x * x * ctx.scale, None


def test_user_function_api_like_torch():
    x = mg.tensor([1.0, -2.0, 0.5], dtype=mg.float64, requires_grad=True)
    y = Cube.apply(x, 2.0)
    assert repr(y.grad_fn) == "<CubeBackward>" and y.grad_fn.next_functions == (None, None)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, 6 * x.data**2)
    assert mg.gradcheck(lambda t: Cube.apply(t, 0.5).tanh(), [x])
    (g,) = mg.grad(Cube.apply(x, 1.0).sum(), x, create_graph=True)  # differentiable again
    (h,) = mg.grad(g.sum(), x)
    np.testing.assert_allclose(h.data, 6 * x.data)


def test_user_function_detects_inplace_change_of_saved_tensor():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 1
    y = Cube.apply(h, 1.0)
    h.mul_(3)
    with pytest.raises(mg.InplaceError, match="modified by an in-place operation"):
        y.sum().backward()


def test_failing_composition_shrinks_to_a_runnable_snippet():
    """hypothesis shrinks a random program that trips a (deliberately planted) bug to a minimal
    one; its repr runs in both libraries."""

    def buggy(comp):
        return any(op == "softmax" for op, _ in comp.steps)

    minimal = find(testing.compositions(), buggy, settings=settings(max_examples=500, database=None))
    assert [op for op, _ in minimal.steps] == ["softmax", "add"]  # softmax, then the final add
    snippet = repr(minimal)
    assert "for lib in (minigrad, torch):" in snippet and "v0 = x0.softmax(-1)" in snippet
    namespace = {}
    exec(snippet, namespace)  # runs as printed
    testing.assert_composition_matches_torch(minimal)
    assert torch.is_tensor(namespace["v1"])


def test_every_operator_is_written_out_where_grep_finds_it():
    """``grep "def __add__" minigrad/tensor.py`` finds the operator, a one-line call of its op (they
    were once set on Tensor from a table, out of grep's reach)."""
    import inspect
    import re

    source = inspect.getsource(mg.Tensor)
    for name in ("add", "sub", "mul", "truediv", "pow"):
        for method in (f"__{name}__", f"__r{name}__") + ((f"__i{name}__",) if name != "pow" else ()):
            body = re.search(rf"    def {method}\(self, other: Any\) -> Tensor:\n        return (.*)\n", source)
            assert body, method
            assert getattr(mg.Tensor, method).__qualname__ == f"Tensor.{method}"
    x = mg.tensor([7, 2])
    assert (x / 2).tolist() == [3.5, 1.0] and (7 / x).tolist() == [1.0, 3.5]  # integers divide in float


def test_the_start_here_table_states_each_files_real_length():
    """docs/minigrad/engine.md's reading order gives each file's line count: the real one."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    page = (root / "docs" / "minigrad" / "engine.md").read_text()
    rows = re.findall(r"^\| \d \| `(minigrad/\w+\.py)` \| (\d+) \|", page, re.M)
    assert len(rows) >= 5
    for path, lines in rows:
        assert len((root / path).read_text().splitlines()) == int(lines), path
