"""The RNN-cell example from PyTorch's autograd introduction, run with minigrad.

The five lines in ``rnn_cell`` are the tutorial's, with ``torch`` renamed ``mg``. The same
numbers then go through torch, and the largest gradient differences are printed.

    python -m minigrad.examples.rnn_cell [--seed 0] [--graph rnn.svg] [--trace] [--step-through rnn.html]

``--graph`` writes a picture of the graph (.svg/.png need Graphviz's ``dot``; .dot and .txt
always work); ``--trace`` prints what backward does at every node; ``--step-through`` writes a
page that walks forward and backward one node at a time (docs/minigrad/step-through.md).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import numpy as np

import minigrad as mg


def rnn_cell(seed: int) -> dict[str, mg.Tensor]:
    mg.manual_seed(seed)
    # fmt: off
    W_h = mg.randn(20, 20, requires_grad=True); W_x = mg.randn(20, 10, requires_grad=True)  # noqa: E702
    x = mg.randn(1, 10); prev_h = mg.randn(1, 20)  # noqa: E702
    h2h = mg.mm(W_h, prev_h.t()); i2h = mg.mm(W_x, x.t())  # noqa: E702
    next_h = (h2h + i2h).tanh(); loss = next_h.sum(); loss.backward()  # noqa: E702
    # fmt: on
    return {"W_h": W_h, "W_x": W_x, "x": x, "prev_h": prev_h, "loss": loss}


def torch_gradients(values: dict[str, mg.Tensor]) -> dict[str, np.ndarray]:
    """The same computation in torch, from the same numbers."""
    import torch

    W_h = torch.tensor(values["W_h"].data, requires_grad=True)
    W_x = torch.tensor(values["W_x"].data, requires_grad=True)
    x, prev_h = torch.tensor(values["x"].data), torch.tensor(values["prev_h"].data)
    next_h = (torch.mm(W_h, prev_h.t()) + torch.mm(W_x, x.t())).tanh()
    next_h.sum().backward()
    return {"W_h": W_h.grad.numpy(), "W_x": W_x.grad.numpy()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed for minigrad.manual_seed")
    parser.add_argument("--graph", metavar="PATH", help="write the graph (.svg, .png, .dot or .txt)")
    parser.add_argument("--trace", action="store_true", help="narrate backward node by node")
    parser.add_argument("--step-through", metavar="PATH", help="write a page to step through (.html)")
    args = parser.parse_args(argv)

    # trace narrates, and record_backward records, the backward() inside rnn_cell
    with (
        mg.trace() if args.trace else contextlib.nullcontext(),
        mg.viz.record_backward() if args.step_through else contextlib.nullcontext() as record,
    ):
        values = rnn_cell(args.seed)
    reference = torch_gradients(values)
    print(f"loss = {values['loss'].item():.6f}")
    for name in ("W_h", "W_x"):
        diff = np.abs(values[name].grad.data - reference[name]).max()
        print(f"max |minigrad - torch| for {name}.grad {values[name].grad.shape}: {diff:.3e}")
    names = {k: values[k] for k in ("W_h", "W_x", "x", "prev_h", "loss")}
    if args.step_through:
        page = mg.viz.step_through(values["loss"], args.step_through, names=names, record=record)
        print(f"step-through page written to {page}")
    if args.graph:
        try:
            print(f"graph written to {mg.viz.render(values['loss'], args.graph, names=names)}")
        except mg.viz.GraphvizNotFoundError as e:
            print(f"rnn_cell: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
