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
import heapq
import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from minigrad.errors import BackwardError, InplaceError, ShapeError

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

# One clock orders everything: each recorded node takes the next tick (its ``_sequence_nr``:
# a node's inputs always tick before it), and so does each in-place change of a tensor.
_clock = itertools.count(1)
_last_inplace = 0  # the tick of the latest in-place change anywhere

# Set by ``minigrad.trace()``: called as tracer(node, grad, input_grads) for each node visited.
_tracer: Callable | None = None

# True while backward runs on Tensors (create_graph=True); False while it runs on raw arrays.
_backward_on_tensors = True

_new = object.__new__
_NEEDS_ONE = (True,)
# The type checks on every op call use this name, not ``np.ndarray``: Python 3.11 cannot cache
# a lookup in NumPy's module (it defines a module __getattr__), and each one costs ~20 ns.
_ndarray = np.ndarray


def bump_version(t: Tensor) -> None:
    """Record an in-place change of ``t``: its version goes up, and it notes the clock's tick."""
    global _last_inplace
    _last_inplace = t._changed_at = next(_clock)
    t._version += 1


class Function:
    """A differentiable op: ``forward`` computes the value, ``backward`` the local chain rule.

    Subclasses define two static methods, as in ``torch.autograd.Function``::

        forward(ctx, *args)       # Tensors in; returns a Tensor or a NumPy array
        backward(ctx, grad)       # grad of the output in; one gradient per forward arg

    ``forward`` works on the NumPy arrays under its tensors (``x.data``) with recording off.
    ``backward`` receives Tensors, so that with ``create_graph=True`` a gradient is itself a
    graph, differentiable again. The instance passed as ``ctx`` is the graph node: it becomes
    the output's ``grad_fn`` and keeps what ``save_for_backward`` stored.

    Speed: minigrad's own ops set ``on_arrays = True``: their forward touches only arrays
    (so nothing needs switching off), and their backward formulas use only what NumPy arrays
    and Tensors share (operators, ``reshape``, indexing, ``mT`` and the helpers in
    ``minigrad.ops``), so an ordinary ``backward()`` runs them on raw arrays, with no Tensor
    or graph overhead; ``create_graph=True`` runs the very same formulas on Tensors.
    """

    on_arrays = False
    # How many leading arguments are Tensors, where an op knows (the rest are settings such
    # as dims or shapes): ``apply`` then looks only at those, and ``needs_input_grad`` has one
    # entry per Tensor operand. None: every argument is looked at, as torch does.
    arity: int | None = None
    # Class-level defaults keep making a node cheap: one is made per op call.
    inputs: tuple = ()
    needs_input_grad: tuple[bool, ...] = ()
    _saved: tuple | None = ()  # None once backward has freed them
    _hooks: tuple | list = ()
    _retained = None
    # A plain node needs only its backward formula run on arrays: a built-in op (``Op`` sets
    # this) with no hooks and no retain_grad. Anything else takes the engine's full visit.
    # It could be derived (on_arrays, _hooks, _retained), but one attribute read per node
    # instead of three saves ~0.25 µs on the RNN example; register_hook and retain_grad clear
    # it (and it stays cleared after a hook's removal: the full visit is then merely slower).
    _plain = False
    _sequence_nr = 0  # creation order: a node's inputs were always made before it

    @staticmethod
    def forward(ctx: Function, *args: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Function, grad: Tensor) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any) -> Tensor:
        """Run forward and, when grad mode is on and an input requires grad, record the node.

        This runs for every op call, so it is written for speed (small ops are where an
        engine's own overhead shows): no helper calls on the way."""
        global _grad_enabled
        ctx = _new(cls)
        if cls.on_arrays or not _grad_enabled:
            n = len(args)  # the usual counts spelled out: a call with *args costs more than this
            if n == 1:
                out = cls.forward(ctx, args[0])
            elif n == 2:
                out = cls.forward(ctx, args[0], args[1])
            else:
                out = cls.forward(ctx, *args)
        else:  # a user's forward may use Tensor ops: they must not be recorded
            _grad_enabled = False
            try:
                out = cls.forward(ctx, *args)
            finally:
                _grad_enabled = True
        if not isinstance(out, Tensor):  # an array (or a NumPy scalar): Tensor._wrap, inlined
            data, out = out, _new(Tensor)
            out.data = data if type(data) is _ndarray else np.asarray(data)
        if not _grad_enabled:
            return out
        arity = cls.arity
        if arity == 1:
            if not args[0]._requires_grad:
                return out
            needs = _NEEDS_ONE
        else:
            if arity == 2:
                needs = (args[0]._requires_grad, args[1]._requires_grad)
            elif arity is None:
                needs = tuple([isinstance(a, Tensor) and a._requires_grad for a in args])
            else:
                needs = tuple([a._requires_grad for a in args[:arity]])
            if True not in needs:
                return out
        # record: the node joins the graph as the output's grad_fn
        ctx.inputs = args
        ctx.needs_input_grad = needs
        ctx._sequence_nr = next(_clock)  # forward saved its tensors just before this tick
        out._requires_grad = True
        out.grad_fn = ctx
        return out

    # -- what backward may use

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        """Keep tensors for backward; an in-place change to one of them is detected later."""
        self._saved = tensors  # checked against the clock: see _check_saved

    @property
    def saved_tensors(self) -> tuple:
        """The saved tensors (their arrays, when backward runs on arrays)."""
        saved = self._saved
        if saved is None or _last_inplace > self._sequence_nr:  # freed, or something changed
            self._check_saved()
        if _backward_on_tensors or not self.on_arrays:
            return saved
        if len(saved) == 1:  # the usual counts, spelled out: this runs once per node
            return (saved[0].data,)
        if len(saved) == 2:
            return saved[0].data, saved[1].data
        return tuple([t.data for t in saved])  # minigrad's own ops save only Tensors

    def _check_saved(self) -> None:
        """Raise if backward already freed the saved tensors or one was changed in place since."""
        if self._saved is None:
            raise BackwardError(
                "Trying to backward through the graph a second time (or to read saved tensors "
                "after they were freed). Pass retain_graph=True to the first backward() call."
            )
        for i, t in enumerate(self._saved):
            if t is not None and t._changed_at > self._sequence_nr:
                raise InplaceError(
                    f"one of the tensors needed for gradient computation has been modified by an "
                    f"in-place operation: saved tensor {i} of {self!r} with shape {t.shape} was changed "
                    f"after it was saved (it is now at version {t._version}). Use an out-of-place op instead."
                )

    @property
    def next_functions(self) -> tuple:
        """The nodes feeding this one (None for leaves and constants), as in torch."""
        return tuple(getattr(t, "grad_fn", None) for t in self.inputs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}Backward>"


# ----------------------------------------------------------------------------- the engine


def _call_user_backward(node: Function, grad: Any) -> tuple:
    """A user-written Function on the array path: hand its backward Tensors, take back arrays."""
    out = node.backward(node, _wrap(grad))
    out = out if isinstance(out, tuple) else (out,)
    return tuple(g.data if isinstance(g, Tensor) else g for g in out)


def _run_hooks(hooks: list[Callable], grad: Any, on_tensors: bool) -> Any:
    """Hooks see and return Tensors, whatever number type backward is running on."""
    tensor = grad if on_tensors else _wrap(grad)
    for hook in hooks:
        new = hook(tensor)
        if new is not None:
            tensor = new
    return tensor if on_tensors else tensor.data


def _visit(node: Function, grad: Any, on_tensors: bool, grads: dict, inputs: Sequence[Tensor] | None) -> Any:
    """One node's visit, all of it: its hooks, ``retain_grad``, capturing the gradient of a
    non-leaf that ``minigrad.grad`` asked for, its backward (a user's Function on the array
    path gets Tensors and gives back arrays), and the tracer of ``minigrad.trace``. The engine
    comes here unless the node is plain (see ``Function._plain``)."""
    if node._hooks:
        grad = _run_hooks(node._hooks, grad, on_tensors)
    if node._retained is not None and (owner := node._retained()) is not None:
        owner.grad = grad if on_tensors else _wrap(np.array(grad))
    if inputs is not None:
        for t in inputs:
            if t.grad_fn is node:
                grads[t] = grad
    if on_tensors or node.on_arrays:
        input_grads = node.backward(node, grad)
    else:
        input_grads = _call_user_backward(node, grad)
    if type(input_grads) is not tuple:
        input_grads = (input_grads,)
    if _tracer is not None:
        _tracer(node, grad, input_grads)
    return input_grads


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
    global _backward_on_tensors, _grad_enabled
    on_tensors = create_graph
    # grads[node] is the gradient of a node's output, grads[leaf] a leaf's, each summed
    # over every path that reaches it (the multivariate chain rule).
    grads: dict[Any, Any] = {}
    heap = []
    for out, g in zip(outputs, grad_outputs):
        if not out._requires_grad:
            raise BackwardError(
                "element 0 of tensors does not require grad and does not have a grad_fn: "
                "make a leaf with requires_grad=True before computing the output"
            )
        key = out if out.grad_fn is None else out.grad_fn
        if key not in grads and key is out.grad_fn:
            heap.append((-key._sequence_nr, key))
        g = g if on_tensors else g.data
        grads[key] = grads[key] + g if key in grads else g
    # Leaves whose gradient is an array nobody else holds: it becomes their .grad as it is.
    owned: set[Tensor] = set()
    # Visit nodes newest first (a max-heap on creation order, as torch's engine does): every
    # consumer of a node's output was created after it, so by the time a node is popped all
    # the gradient it will ever receive has arrived.
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    slow = on_tensors or inputs is not None or _tracer is not None  # every node goes through _visit

    previous = _backward_on_tensors, _grad_enabled
    _backward_on_tensors = _grad_enabled = on_tensors
    try:
        while heap:
            node = pop(heap)[1]
            grad = grads.pop(node)
            if slow or not node._plain:
                input_grads = _visit(node, grad, on_tensors, grads, inputs)
            else:  # the usual case: a built-in formula on arrays, nothing else to do
                input_grads = node.backward(node, grad)
                if type(input_grads) is not tuple:
                    input_grads = (input_grads,)
            for t, g, needed in zip(node.inputs, input_grads, node.needs_input_grad):
                if needed and g is not None:
                    fn = t.grad_fn
                    if fn is None:  # a leaf: its gradient waits in grads until the end
                        prev = grads.get(t)
                        if prev is not None:
                            grads[t] = prev + g
                            owned.add(t)
                        else:
                            grads[t] = g
                            # Built-in formulas make new arrays, or pass the incoming one (or a
                            # view of it) along; only a new array is safe to keep without a copy
                            # (torch's AccumulateGrad "steals" such a gradient too).
                            if node.on_arrays and g is not grad and not on_tensors and g.base is None:
                                owned.add(t)
                        continue
                    prev = grads.get(fn)
                    if prev is None:  # the node's first gradient: schedule it
                        grads[fn] = g
                        push(heap, (-fn._sequence_nr, fn))
                    else:
                        grads[fn] = prev + g
            if not retain_graph:  # free what the node saved: its arrays can go now
                node._saved = None

        if inputs is not None:
            return [_captured(grads.get(t), t, on_tensors) for t in inputs]
        for leaf, grad in grads.items():  # every node's entry is gone: what is left are leaves
            if leaf._hooks:
                grad = _run_hooks(leaf._hooks, grad, on_tensors)
                owned.discard(leaf)  # a hook may hand back an array someone else holds
            if on_tensors:
                leaf.grad = grad if leaf.grad is None else leaf.grad + grad
            elif leaf.grad is not None:
                leaf.grad.data += grad  # accumulate in place, as torch does
            elif leaf in owned and grad.dtype is leaf.data.dtype:
                leaf.grad = _wrap(grad)
            else:
                leaf.grad = _wrap(np.array(grad, dtype=leaf.data.dtype))  # a copy the leaf owns
        return None
    finally:
        _backward_on_tensors, _grad_enabled = previous


def _captured(grad: Any, t: Tensor, on_tensors: bool) -> Tensor | None:
    """What ``grad()`` returns for one input: a Tensor (after the input's own hooks) or None."""
    if grad is None:
        return None
    if t.grad_fn is None and t._hooks:
        grad = _run_hooks(t._hooks, grad, on_tensors)
    return grad if on_tensors else _wrap(np.asarray(grad))


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
    if grad_output is None:
        if output.data.size != 1:
            raise BackwardError(
                f"grad can be implicitly created only for scalar outputs; this output has shape "
                f"{output.shape}: pass gradient=<a tensor of that shape>"
            )
        one = np.array(1, dtype=output.data.dtype)  # d(loss)/d(loss) = 1
        return _wrap(one if output.data.ndim == 0 else one.reshape(output.data.shape))
    if grad_output.shape != output.shape:
        raise ShapeError(
            f"Mismatch in shape: gradient has shape {grad_output.shape} and output has shape {output.shape}"
        )
    return grad_output


def _bind_tensor(cls: type) -> None:
    """Called by ``minigrad.tensor`` once its class exists (it imports this module first, so
    the engine cannot import the class itself): the hot paths then find it as a global."""
    global Tensor, _wrap
    Tensor, _wrap = cls, cls._wrap
