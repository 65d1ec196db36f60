"""Pictures of the graph: Graphviz DOT (rendered to SVG/PNG when ``dot`` is installed) and a
plain-text tree, and ``trace()``, which narrates backward node by node.

    dot = minigrad.viz.to_dot(loss, names={"W_h": W_h, "W_x": W_x})
    minigrad.viz.render(loss, "rnn.svg", names=...)     # .dot/.txt always; .svg/.png need `dot`
    print(minigrad.viz.to_text(loss))
    with minigrad.trace():
        loss.backward()
    minigrad.viz.step_through(loss, "rnn.html", names=...)  # a page to step through (step_through.py)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any, TextIO

import numpy as np

from minigrad import autograd, ops
from minigrad.errors import MinigradError
from minigrad.tensor import Tensor


class GraphvizNotFoundError(MinigradError):
    """Rendering SVG/PNG needs Graphviz's ``dot`` program."""


def _summary(array: np.ndarray) -> str:
    if array.size == 1:
        return f"{array.item():.4g}"
    return f"mean {array.mean():.3g}, std {array.std():.3g}"


def _tensor_label(t: Tensor, name: str | None, grads: bool = True) -> str:
    kind = "result" if t.grad_fn is not None else "leaf, requires grad" if t.requires_grad else "constant"
    lines = [name or kind, f"{kind} {t.shape} {t.dtype}", f"value: {_summary(t.data)}"]
    if grads and t.grad is not None:
        lines.append(f"grad: {_summary(t.grad.data)}")
    return "\\n".join(lines)


def _walk(top: Any) -> Iterator[tuple[Any, Any]]:
    """(node, input) pairs of the graph under the node ``top`` (None: no graph), each node once;
    inputs are the node's Tensor arguments (a graph node, a leaf or a constant)."""
    seen: set[int] = set()
    stack = [top] if top is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for t in node.inputs:
            if isinstance(t, Tensor):
                yield node, t
                if t.grad_fn is not None:
                    stack.append(t.grad_fn)


def to_dot(root: Tensor, names: dict[str, Tensor] | None = None, grads: bool = True) -> str:
    """The graph that produced ``root`` in Graphviz DOT: ops as boxes (name, output shape), leaves
    that require grad as green ellipses, constants grey, the output highlighted; ``grads=False``
    leaves the leaves' gradients out of their labels."""
    label_of = {id(t): n for n, t in (names or {}).items()}
    lines = ["digraph minigrad {", "  rankdir=BT;", '  node [fontname="Helvetica", fontsize=10];']
    declared: set[int] = set()

    def declare(obj: Any, shape: tuple[int, ...] = ()) -> str:
        """A box for an op node (labelled with its output's shape) or an ellipse for a tensor."""
        key = f"n{id(obj)}"
        if id(obj) in declared:
            return key
        declared.add(id(obj))
        if isinstance(obj, Tensor):
            color = "palegreen" if obj.requires_grad else "lightgrey"
            label = _tensor_label(obj, label_of.get(id(obj)), grads)
            lines.append(f'  {key} [shape=ellipse, style=filled, fillcolor={color}, label="{label}"];')
        else:
            lines.append(f'  {key} [shape=box, style=rounded, label="{type(obj).__name__}\\n{shape}"];')
        return key

    out_key = f"out{id(root)}"
    label = _tensor_label(root, label_of.get(id(root)) or "output", grads)
    lines.append(f'  {out_key} [shape=doubleoctagon, style=filled, fillcolor=gold, label="{label}"];')
    if root.grad_fn is not None:
        lines.append(f"  {declare(root.grad_fn, root.shape)} -> {out_key};")
    for node, t in _walk(root.grad_fn):
        source = declare(t.grad_fn, t.shape) if t.grad_fn is not None else declare(t)
        lines.append(f"  {source} -> {declare(node)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_text(root: Tensor, names: dict[str, Tensor] | None = None) -> str:
    """The graph as an indented tree, output at the top; a node met twice is shown once."""
    label_of = {id(t): n for n, t in (names or {}).items()}
    out: list[str] = []
    seen: set[int] = set()

    def describe(t: Tensor) -> str:
        if t.grad_fn is not None:
            return f"{type(t.grad_fn).__name__} -> {t.shape}"
        kind = "leaf, requires grad" if t.requires_grad else "constant"
        name = label_of.get(id(t), "")
        grad = f", grad {_summary(t.grad.data)}" if t.grad is not None else ""
        return f"{name + ' ' if name else ''}{kind} {t.shape}: {_summary(t.data)}{grad}".strip()

    def visit(t: Tensor, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        repeat = t.grad_fn is not None and id(t.grad_fn) in seen
        out.append(prefix + branch + describe(t) + (" (shown above)" if repeat else ""))
        if t.grad_fn is None or repeat:
            return
        seen.add(id(t.grad_fn))
        children = [a for a in t.grad_fn.inputs if isinstance(a, Tensor)]
        for i, child in enumerate(children):
            visit(child, prefix + ("" if top else ("   " if last else "│  ")), i == len(children) - 1, False)

    visit(root, "", True, True)
    return "\n".join(out) + "\n"


def render(root: Tensor, path: str | os.PathLike, names: dict[str, Tensor] | None = None) -> str:
    """Write the graph to ``path`` in the format its suffix names: .dot and .txt always, .svg and
    .png through Graphviz's ``dot``. Returns the path written."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".txt":
        text = to_text(root, names)
    elif suffix in (".dot", ".gv"):
        text = to_dot(root, names)
    elif suffix in (".svg", ".png", ".pdf"):
        dot = shutil.which("dot")
        if dot is None:
            raise GraphvizNotFoundError(
                f"rendering {suffix} needs Graphviz's dot program: install the graphviz package "
                "(apt-get install graphviz, brew install graphviz), or write .dot or .txt instead"
            )
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=suffix)
        os.close(fd)
        try:
            subprocess.run([dot, f"-T{suffix[1:]}", "-o", tmp], input=to_dot(root, names), text=True, check=True)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path
    else:
        raise ValueError(f"unknown graph format {suffix!r}: use .dot, .txt, .svg or .png")
    with open(path, "w") as f:
        f.write(text)
    return path


# ----------------------------------------------------------------------------- trace


def _norm(g: Tensor) -> float:
    return float(np.linalg.norm(g.data.astype(np.float64)))


def _summed_axes(shape: tuple[int, ...], target: tuple[int, ...]) -> tuple[int, ...]:
    """The axes over which the gradient of an input of ``shape``, stretched to ``target`` by
    broadcasting, is summed back to its shape; () when it was not stretched."""
    try:
        stretched = shape != target and np.broadcast_shapes(shape, target) == target
    except ValueError:
        return ()
    return ops.broadcast_axes(target, shape) if stretched else ()


@contextlib.contextmanager
def trace(file: TextIO | None = None) -> Iterator[None]:
    """Print each node backward visits, in the engine's order: the op, the incoming gradient's
    shape and norm, the local derivative rule, what flows to each input, and the axes summed to
    undo broadcasting."""
    stream = file or sys.stdout
    step = [0]

    def tracer(node: Any, grad: Any, input_grads: tuple) -> None:
        step[0] += 1
        shape = grad.shape
        print(f"[{step[0]}] {type(node).__name__}Backward: incoming grad {shape}, norm {_norm(grad):.4g}", file=stream)
        if getattr(node, "rule", ""):
            print(f"    rule: {node.rule}", file=stream)
        for i, (t, g, needed) in enumerate(zip(node.inputs, input_grads, node.needs_input_grad)):
            if not isinstance(t, Tensor):
                continue
            target = (
                f"{type(t.grad_fn).__name__}Backward"
                if t.grad_fn is not None
                else ("leaf" if t.requires_grad else "constant")
            )
            if not needed or g is None:
                print(f"    input {i} ({target} {t.shape}): no gradient needed", file=stream)
                continue
            axes = _summed_axes(t.shape, shape)
            note = f"; summed over axes {axes} to undo broadcasting" if axes else ""
            print(f"    -> input {i} ({target} {t.shape}): grad norm {_norm(g):.4g}{note}", file=stream)

    with autograd.observe(tracer):
        yield


# ----------------------------------------------------------------------------- step-through page

from minigrad.step_through import record_backward, step_through  # noqa: E402, F401 - it draws with to_dot above
