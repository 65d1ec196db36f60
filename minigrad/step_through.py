"""A page you can step through: the graph, then forward and backward one node at a time.

    minigrad.viz.step_through(loss, "graph.html", names={"W_h": W_h})   # runs loss.backward()

writes one self-contained HTML file (no server, no network): the graph laid out by Graphviz's
``dot`` when it is installed, and controls (next, previous, play; the arrow keys) that walk the
forward phase in the order the ops ran and the backward phase in the engine's own visiting order.
Each backward step shows the op's rule, the gradient that arrives (and, where two paths meet, the
pieces it is the sum of), and what the op sends to each input. Every number is the engine's: the
page is filled from what ``autograd.observe`` reports during backward; its script only displays.

When backward runs inside code you don't want to change, record it and write the page after:

    with minigrad.viz.record_backward() as record:
        run_the_code_that_calls_backward()
    minigrad.viz.step_through(loss, "graph.html", record=record)
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from importlib import resources
from typing import Any

import numpy as np

from minigrad import autograd
from minigrad.tensor import Tensor
from minigrad.viz import _summed_axes, _walk, to_dot

WHOLE_UP_TO = 400  # a tensor with at most this many numbers is shown whole (a 20 x 20 matrix); larger: a summary


class BackwardRecord:
    """What backward did, as the engine reports it: the visited nodes in order, each with the
    gradient that arrived and the gradients it sent (copies, so later steps can't change them),
    and every leaf's ``.grad`` as it was before the first visit."""

    def __init__(self) -> None:
        self.visits: list[tuple[Any, np.ndarray, tuple[np.ndarray | None, ...]]] = []
        self.grads_before: dict[int, np.ndarray | None] = {}

    def __call__(self, node: Any, grad: Tensor, input_grads: tuple) -> None:
        if not self.visits:  # the first visit: backward has not touched any leaf yet
            for _, t in _walk(node):
                if t.grad_fn is None:
                    self.grads_before[id(t)] = None if t.grad is None else t.grad.data.copy()
        sent = tuple(None if g is None else np.array(g.data) for g in input_grads)
        self.visits.append((node, np.array(grad.data), sent))


@contextlib.contextmanager
def record_backward() -> Iterator[BackwardRecord]:
    """Record every backward that runs inside the block, for ``step_through(..., record=...)``."""
    record = BackwardRecord()
    with autograd.observe(record):
        yield record


def step_through(
    root: Tensor,
    path: str | os.PathLike,
    names: dict[str, Tensor] | None = None,
    record: BackwardRecord | None = None,
) -> str:
    """Write the step-through page of the graph under ``root`` to ``path`` and return the path.

    Without ``record`` it runs ``root.backward()`` (the leaves' ``.grad`` accumulate, as usual);
    with one, it shows the backward recorded there. ``names`` labels tensors, as in ``to_dot``."""
    if root.grad_fn is None:
        raise ValueError("step_through needs a graph's output: no op that requires grad made this tensor")
    if record is None:
        with record_backward() as record:
            root.backward()
    data = _page_data(root, names or {}, record)
    page = resources.files("minigrad").joinpath("step_through.html").read_text()
    page = page.replace("{{title}}", html.escape(_title(root, names or {})))
    page = page.replace("{{svg}}", _svg(root, names))
    page = page.replace("{{data}}", json.dumps(data, separators=(",", ":")).replace("<", "\\u003c"))  # no "</script>"
    path = os.fspath(path)
    with open(path, "w") as f:
        f.write(page)
    return path


def _title(root: Tensor, names: dict[str, Tensor]) -> str:
    """The page's title: the output's name, or its op."""
    for name, t in names.items():
        if t is root:
            return name
    return f"{type(root.grad_fn).__name__} -> {root.shape}"


def _svg(root: Tensor, names: dict[str, Tensor] | None) -> str:
    """The graph laid out by Graphviz (to_dot's picture, without the final gradients), or a note."""
    dot = shutil.which("dot")
    if dot is None:
        return '<p class="note">The picture of the graph needs Graphviz\'s dot program (apt-get install graphviz).</p>'
    svg = subprocess.run(
        [dot, "-Tsvg"], input=to_dot(root, names, grads=False), capture_output=True, text=True, check=True
    ).stdout
    return svg[svg.index("<svg") :]


def _number(x: Any) -> float | int | bool | str:
    """One number for the page, written as briefly as its dtype allows (float32 keeps its own
    shortest form, not float64's); JSON has no nan/inf, so those become strings."""
    if isinstance(x, np.floating):
        if not np.isfinite(x):
            return "NaN" if np.isnan(x) else "Infinity" if x > 0 else "-Infinity"  # the page's Number() reads these
        return float(str(x))
    return x.item()


def _array(a: np.ndarray) -> dict[str, Any]:
    """A tensor's numbers: all of them up to WHOLE_UP_TO, always a summary."""
    wide = a.astype(np.float64)
    finite = wide[np.isfinite(wide)]
    stats = (finite.mean(), finite.std(), finite.min(), finite.max(), np.linalg.norm(finite)) if finite.size else ()
    out: dict[str, Any] = {"shape": list(a.shape), "dtype": str(a.dtype)}
    out["summary"] = dict(zip(("mean", "std", "min", "max", "norm"), (float(f"{s:.6g}") for s in stats)))
    if a.size <= WHOLE_UP_TO:
        out["values"] = [_number(x) for x in a.ravel()]
    return out


def _page_data(root: Tensor, names: dict[str, Tensor], record: BackwardRecord) -> dict[str, Any]:
    """Everything the page shows. Tensors are keyed as to_dot keys their boxes: a leaf or a
    constant by itself, an op's result by its node."""
    label_of = {id(t): n for n, t in names.items()}
    tensors: dict[str, dict[str, Any]] = {}
    tensor_of: dict[str, Tensor] = {}

    def key(t: Tensor) -> str:
        k = f"n{id(t if t.grad_fn is None else t.grad_fn)}"
        if k not in tensors:  # a result is first met as its forward step's output: "Mm #1" is step 1's
            kind = "result" if t.grad_fn is not None else "leaf" if t.requires_grad else "constant"
            label = label_of.get(id(t)) or (f"{type(t.grad_fn).__name__} #{len(forward) + 1}" if t.grad_fn else kind)
            tensors[k], tensor_of[k] = {"label": label, "kind": kind, "value": _array(t.data)}, t
        return k

    output_of = {id(root.grad_fn): root}  # node -> its result
    for _, t in _walk(root.grad_fn):
        if t.grad_fn is not None:
            output_of[id(t.grad_fn)] = t
    forward: list[dict[str, Any]] = []
    node_key = {}
    for t in sorted(output_of.values(), key=lambda t: t.grad_fn.order):  # the order the ops ran in
        node = t.grad_fn
        node_key[id(node)] = key(t)
        inputs = [key(a) if isinstance(a, Tensor) else {"literal": repr(a)[:60]} for a in node.inputs]
        forward.append({"node": node_key[id(node)], "op": type(node).__name__, "rule": node.rule, "inputs": inputs})

    visits = [v for v in record.visits if id(v[0]) in node_key]
    if not visits or visits[0][0] is not root.grad_fn or len({id(v[0]) for v in visits}) < len(visits):
        raise ValueError("the record must hold exactly one backward from this output: record root.backward() once")
    pieces: dict[str, list[dict[str, Any]]] = {}  # what reached each node or leaf so far, and from where
    backward = []
    for node, grad, sent in visits:
        here = node_key[id(node)]
        step = {"node": here, "grad": _array(grad), "pieces": pieces.pop(here, []), "sent": []}
        for t, g, needed in zip(node.inputs, sent, node.needs_input_grad):
            if not isinstance(t, Tensor):
                continue
            target: dict[str, Any] = {"to": key(t)}
            if needed and g is not None:
                axes = _summed_axes(t.shape, grad.shape)
                target.update(grad=_array(g), summed_axes=list(axes))
                pieces.setdefault(target["to"], []).append({"from": here, "grad": target["grad"]})
            step["sent"].append(target)
        backward.append(step)

    leaves = []
    for k, arrived in pieces.items():  # every node has been visited: what is left went to leaves
        leaf, before = tensor_of[k], record.grads_before.get(id(tensor_of[k]))
        leaves.append({
            "tensor": k,
            "pieces": arrived,  # more than one: .grad holds their sum
            "before": None if before is None else _array(before),
            "grad": None if leaf.grad is None else _array(leaf.grad.data),  # minigrad.grad leaves .grad alone
        })  # fmt: skip
    return {"tensors": tensors, "forward": forward, "backward": backward, "leaves": leaves}
