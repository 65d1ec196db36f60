"""The autograd engine: grad mode, the Function node, and reverse-mode backpropagation.

A forward pass records a graph as it runs (define-by-run): every differentiable op is a
``Function`` subclass, and each call makes one instance of it, the *node*, stored as the
result's ``grad_fn``. The node remembers its inputs and whatever its ``backward`` needs.

``backward`` then walks the nodes from the output to the leaves in reverse topological
order, so each node is visited once, after every consumer of its output has sent it a
gradient; gradients arriving along several paths are summed (the multivariate chain rule).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from minigrad.errors import BackwardError, InplaceError

if TYPE_CHECKING:
    from minigrad.tensor import Tensor

# ----------------------------------------------------------------------------- grad mode

_grad_enabled = True


def is_grad_enabled() -> bool:
    """True while operations are being recorded for backward."""
    return _grad_enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Turn graph recording on or off: a context manager, a decorator, or a plain call."""

    def __init__(self, mode: bool) -> None:
        global _grad_enabled
        self.prev = _grad_enabled
        self.mode = bool(mode)
        _grad_enabled = self.mode

    def __enter__(self) -> None:
        global _grad_enabled
        _grad_enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        global _grad_enabled
        _grad_enabled = self.prev


class _GradMode(contextlib.ContextDecorator):
    mode = True

    def __new__(cls, func: Callable | None = None) -> Any:
        self = super().__new__(cls)
        return self if func is None else self(func)  # both @no_grad and @no_grad() work

    def __enter__(self) -> None:
        global _grad_enabled
        self.prev = _grad_enabled
        _grad_enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        global _grad_enabled
        _grad_enabled = self.prev

    def __call__(self, func: Callable) -> Callable:  # a fresh instance per call: re-entrant
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with type(self)():
                return func(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Stop recording: results of ops inside have no grad_fn (how optimizers update weights)."""

    mode = False


class enable_grad(_GradMode):
    """Record again inside a ``no_grad`` block."""

    mode = True


# ----------------------------------------------------------------------------- Function

# True while backward runs on Tensors (create_graph=True); False while it runs on raw arrays.
_backward_on_tensors = True


class Function:
    """A differentiable op: ``forward`` computes the value, ``backward`` the local chain rule.

    Subclasses define two static methods, as in ``torch.autograd.Function``::

        forward(ctx, *args)       # Tensors in; returns a Tensor or a NumPy array
        backward(ctx, grad)       # grad of the output in; one gradient per forward arg

    ``forward`` works on the NumPy arrays under its tensors (``x.data``) with recording off.
    ``backward`` receives Tensors, so that with ``create_graph=True`` a gradient is itself a
    graph, differentiable again. The instance passed as ``ctx`` is the graph node: it becomes
    the output's ``grad_fn`` and keeps what ``save_for_backward`` stored.

    Speed: minigrad's own ops set ``array_backward = True``. Their backward formulas use only
    what NumPy arrays and Tensors share (operators, ``reshape``, indexing, ``mT`` and the
    helpers in ``minigrad.ops``), so an ordinary ``backward()`` runs them on raw arrays, with
    no Tensor or graph overhead; ``create_graph=True`` runs the very same formulas on Tensors.
    """

    array_backward = False
    # Class-level defaults keep making a node cheap: one is made per op call.
    inputs: tuple = ()
    needs_input_grad: tuple[bool, ...] = ()
    _saved: tuple = ()
    _versions: tuple = ()
    _freed = False
    _hooks: tuple | list = ()
    _retained = None

    @staticmethod
    def forward(ctx: Function, *args: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Function, grad: Tensor) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any) -> Tensor:
        """Run forward and, when grad mode is on and an input requires grad, record the node."""
        global _grad_enabled
        Tensor = _tensor.Tensor  # noqa: N806
        ctx = cls()
        record = False
        if _grad_enabled:
            for a in args:
                if isinstance(a, Tensor) and a._requires_grad:
                    record = True
                    break
            if record:
                ctx.inputs = args
                ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a._requires_grad for a in args)
            _grad_enabled = False  # forward itself is never recorded
            try:
                out = cls.forward(ctx, *args)
            finally:
                _grad_enabled = True
        else:
            out = cls.forward(ctx, *args)
        if not isinstance(out, Tensor):
            out = Tensor._wrap(out)
        if record:
            out._requires_grad = True
            out.grad_fn = ctx
        return out

    # -- what backward may use

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        """Keep tensors for backward; an in-place change to one of them is detected later."""
        self._saved = tensors
        self._versions = tuple(t._version if t is not None else 0 for t in tensors)

    @property
    def saved_tensors(self) -> tuple:
        """The saved tensors (their arrays, when backward runs on arrays)."""
        if self._freed:
            raise BackwardError(
                "Trying to backward through the graph a second time (or to read saved tensors "
                "after they were freed). Pass retain_graph=True to the first backward() call."
            )
        for i, (t, v) in enumerate(zip(self._saved, self._versions)):
            if t is not None and t._version != v:
                raise InplaceError(
                    f"one of the tensors needed for gradient computation has been modified by an "
                    f"in-place operation: saved tensor {i} of {self!r} with shape {t.shape} is at "
                    f"version {t._version}; expected version {v}. Use an out-of-place op instead."
                )
        if _backward_on_tensors or not self.array_backward:
            return self._saved
        return tuple(None if t is None else t.data for t in self._saved)

    @property
    def next_functions(self) -> tuple:
        """The nodes feeding this one (None for leaves and constants), as in torch."""
        return tuple(getattr(t, "grad_fn", None) for t in self.inputs)

    def _free(self) -> None:
        self._saved = ()
        self._freed = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__}Backward>"


# ----------------------------------------------------------------------------- the engine


def _topological_order(root: Function) -> list[Function]:
    """Nodes ordered so each comes after every node it depends on (iterative DFS, no recursion)."""
    order: list[Function] = []
    seen = {id(root)}
    stack = [(root, iter(root.inputs))]
    while stack:
        node, inputs = stack[-1]
        for t in inputs:
            fn = getattr(t, "grad_fn", None)
            if fn is not None and id(fn) not in seen:
                seen.add(id(fn))
                stack.append((fn, iter(fn.inputs)))
                break
        else:  # every input of node is placed: node goes after them
            stack.pop()
            order.append(node)
    return order


def _call_backward(node: Function, grad: Any, on_tensors: bool) -> tuple:
    """Run one node's backward with the number type it accepts; return array/Tensor gradients."""
    if on_tensors or node.array_backward:
        out = type(node).backward(node, grad)
        return out if isinstance(out, tuple) else (out,)
    wrap = _tensor.Tensor._wrap  # a user Function on the fast path: hand it Tensors
    out = type(node).backward(node, wrap(grad))
    out = out if isinstance(out, tuple) else (out,)
    return tuple(g.data if isinstance(g, _tensor.Tensor) else g for g in out)


def _run_hooks(hooks: list[Callable], grad: Any, on_tensors: bool) -> Any:
    """Hooks see and return Tensors, whatever number type backward is running on."""
    tensor = grad if on_tensors else _tensor.Tensor._wrap(grad)
    for hook in hooks:
        new = hook(tensor)
        if new is not None:
            tensor = new
    return tensor if on_tensors else tensor.data


def run_backward(
    outputs: Sequence[Tensor],
    grad_outputs: Sequence[Tensor],
    retain_graph: bool,
    create_graph: bool,
    inputs: Sequence[Tensor] | None = None,
) -> list[Tensor | None] | None:
    """Backpropagate ``grad_outputs`` from ``outputs``.

    With ``inputs=None`` gradients accumulate into the ``.grad`` of every leaf reached (what
    ``Tensor.backward`` does). Otherwise nothing is accumulated and the gradients of
    ``inputs`` are returned (what ``minigrad.grad`` does). Without ``create_graph`` the
    gradients flowing between nodes are plain NumPy arrays.
    """
    global _backward_on_tensors
    on_tensors = create_graph
    wrap = _tensor.Tensor._wrap
    capture = None if inputs is None else {id(t): None for t in inputs}
    node_grads: dict[int, Any] = {}  # id(node) -> gradient of the node's output, summed
    leaf_grads: dict[int, list] = {}  # id(leaf) -> [leaf, summed gradient]

    def send(t: Tensor, g: Any) -> None:
        if t.grad_fn is None:
            entry = leaf_grads.get(id(t))
            if entry is None:
                leaf_grads[id(t)] = [t, g]
            else:
                entry[1] = entry[1] + g
        else:
            key = id(t.grad_fn)
            node_grads[key] = node_grads[key] + g if key in node_grads else g

    if len(outputs) == 1:
        roots = [outputs[0].grad_fn]
    else:  # several outputs: one artificial root joins them
        roots = [_Join.make(outputs)]
    for out, g in zip(outputs, grad_outputs):
        if not out._requires_grad:
            raise BackwardError(
                "element 0 of tensors does not require grad and does not have a grad_fn: "
                "make a leaf with requires_grad=True before computing the output"
            )
        send(out, g if on_tensors else g.data)

    previous = _backward_on_tensors
    _backward_on_tensors = on_tensors
    try:
        with set_grad_enabled(create_graph):
            order = _topological_order(roots[0]) if roots[0] is not None else []
            for node in reversed(order):
                grad = node_grads.pop(id(node), None)
                if grad is None:
                    continue
                if node._hooks:
                    grad = _run_hooks(node._hooks, grad, on_tensors)
                if node._retained is not None and (owner := node._retained()) is not None:
                    owner.grad = grad if on_tensors else wrap(grad.copy())
                if capture is not None:
                    for t in inputs:
                        if t.grad_fn is node:
                            capture[id(t)] = grad
                input_grads = _call_backward(node, grad, on_tensors)
                for t, g, needed in zip(node.inputs, input_grads, node.needs_input_grad):
                    if needed and g is not None:
                        send(t, g)
                if not retain_graph:
                    node._free()

            for leaf, grad in leaf_grads.values():
                if leaf._hooks:
                    grad = _run_hooks(leaf._hooks, grad, on_tensors)
                if capture is not None:
                    if id(leaf) in capture:
                        capture[id(leaf)] = grad if on_tensors else wrap(grad)
                elif on_tensors:
                    leaf.grad = grad if leaf.grad is None else leaf.grad + grad
                elif leaf.grad is None:
                    leaf.grad = wrap(np.array(grad, dtype=leaf.dtype))  # a copy the leaf owns
                else:
                    leaf.grad.data += grad  # accumulate in place, as torch does
    finally:
        _backward_on_tensors = previous
    if capture is None:
        return None
    return [g if g is None or on_tensors or isinstance(g, _tensor.Tensor) else wrap(g)
            for g in (capture[id(t)] for t in inputs)]


class _Join(Function):
    """The root node when backward starts from several outputs at once."""

    array_backward = True

    @classmethod
    def make(cls, outputs: Sequence[Tensor]) -> Function:
        node = cls()
        node.inputs = tuple(outputs)
        node.needs_input_grad = (False,) * len(outputs)  # their gradients are seeded directly
        return node

    @staticmethod
    def backward(ctx: Function, grad: Any) -> tuple:
        return (None,) * len(ctx.inputs)


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Tensor | Sequence[Tensor | None] | None = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> tuple[Tensor | None, ...]:
    """Gradients of ``outputs`` with respect to ``inputs``, returned as a tuple (torch.autograd.grad).

    Unlike ``backward`` it leaves every ``.grad`` untouched. With ``create_graph=True`` the
    returned gradients are differentiable, which gives second and higher derivatives.
    """
    from minigrad.tensor import Tensor

    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs] * len(outputs)
    for t in inputs:
        if not t._requires_grad:
            raise BackwardError(f"an input of shape {t.shape} does not require grad")
    gouts = [_default_grad(o, g) for o, g in zip(outputs, grad_outputs)]
    if retain_graph is None:
        retain_graph = create_graph
    result = run_backward(outputs, gouts, retain_graph, create_graph, inputs=inputs)
    for i, g in enumerate(result):
        if g is None and not allow_unused:
            raise BackwardError(
                f"input {i} (shape {inputs[i].shape}) was not used to compute the outputs; "
                "pass allow_unused=True to get None for it"
            )
        if g is not None and not create_graph:
            result[i] = g.detach()
    return tuple(result)


def _default_grad(output: Tensor, grad_output: Tensor | None) -> Tensor:
    """The gradient seeding backward: 1 for a scalar; a non-scalar needs an explicit one."""
    from minigrad.errors import ShapeError
    from minigrad.tensor import ones_like

    if grad_output is None:
        if output.data.size != 1:
            raise BackwardError(
                f"grad can be implicitly created only for scalar outputs; this output has shape "
                f"{output.shape}: pass gradient=<a tensor of that shape>"
            )
        return ones_like(output)
    if grad_output.shape != output.shape:
        raise ShapeError(
            f"Mismatch in shape: gradient has shape {grad_output.shape} and output has shape "
            f"{output.shape}"
        )
    return grad_output


from minigrad import tensor as _tensor  # noqa: E402  (tensor.py imports this module first)
