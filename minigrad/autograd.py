"""The autograd engine: grad mode, the Function node, and reverse-mode backpropagation.

A forward pass records a graph as it runs (define-by-run): every differentiable op is a
``Function`` subclass, and each call makes one instance of it, the *node*, stored as the
result's ``grad_fn``. The node remembers its inputs and whatever its ``backward`` needs.

``backward`` then visits the nodes from the output towards the leaves, each once, after every
consumer of its output has sent it a gradient; gradients arriving along several paths are
summed (the multivariate chain rule), and the leaves keep theirs in ``.grad``.

The engine never imports the Tensor class: it works on anything that subclasses ``Variable``.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from minigrad import kernels
from minigrad.errors import BackwardError, InplaceError, ShapeError

# ----------------------------------------------------------------------------- grad mode

_grad_enabled = True


def is_grad_enabled() -> bool:
    """True while operations are being recorded for backward."""
    return _grad_enabled


class no_grad:
    """Stop recording inside ``with no_grad():`` or a function decorated ``@no_grad()``: results
    of ops have no grad_fn (how optimizers update weights)."""

    mode = False

    def __new__(cls, func: Callable | None = None) -> Any:
        self = super().__new__(cls)
        return self if func is None else self(func)  # both @no_grad and @no_grad() work

    def __enter__(self) -> None:
        global _grad_enabled
        self.prev, _grad_enabled = _grad_enabled, self.mode

    def __exit__(self, *exc: object) -> None:
        global _grad_enabled
        _grad_enabled = self.prev

    def __call__(self, func: Callable) -> Callable:
        @functools.wraps(func)
        def with_mode(*args: Any, **kwargs: Any) -> Any:
            with set_grad_enabled(self.mode):
                return func(*args, **kwargs)

        return with_mode


class enable_grad(no_grad):
    """Record again inside a ``no_grad`` block."""

    mode = True


class set_grad_enabled(no_grad):
    """Recording on or off: a plain call takes effect at once; ``with`` restores the mode after."""

    def __new__(cls, mode: bool) -> set_grad_enabled:
        return object.__new__(cls)

    def __init__(self, mode: bool) -> None:
        global _grad_enabled
        self.prev, self.mode = _grad_enabled, bool(mode)
        _grad_enabled = self.mode

    def __enter__(self) -> None:  # __init__ has already switched
        pass


# ----------------------------------------------------------------------------- the graph's parts


class Variable:
    """What the engine needs of a tensor (``minigrad.Tensor`` is one): its array ``data``,
    ``requires_grad`` (true of a result with a ``grad_fn`` too), ``grad``, ``grad_fn`` (the node
    that made it; None for a leaf), a
    ``_version`` that every in-place change bumps, and ``_hooks`` on its gradient."""

    data: Any
    requires_grad = False
    grad: Variable | None = None
    grad_fn: Function | None = None
    _version = 0
    _hooks: tuple | list = ()


_creation_order = itertools.count(1)


class Function:
    """A differentiable op, as in ``torch.autograd.Function``: subclasses define

        forward(ctx, *args)   # Variables (and settings) in; an array or a Variable out
        backward(ctx, grad)   # dLoss/dOutput in; dLoss/dInput for each forward arg

    ``forward`` runs with recording off; an array it returns becomes a Variable of its inputs'
    type. ``backward`` works on Variables: recording is off too, unless ``create_graph=True``
    asked for a gradient that is itself differentiable. ``ctx`` is the node itself: it keeps
    what ``save_for_backward`` stored, and ``ctx.result`` is the op's output.
    """

    rule = ""  # the local derivative in words, shown by minigrad.trace
    # Class-level defaults, filled in by ``apply`` when the call is recorded
    inputs: tuple = ()
    needs_input_grad: tuple[bool, ...] = ()
    saved: tuple | None = ()  # None once backward has freed it
    saved_versions: tuple[int, ...] = ()
    hooks: tuple | list = ()  # register_hook on a non-leaf tensor lands here
    retained: weakref.ref | None = None  # the tensor whose retain_grad() asked for its gradient
    order = 0  # when it was recorded: a node's inputs were always recorded before it

    @staticmethod
    def forward(ctx: Function, *args: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Function, grad: Variable) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any) -> Variable:
        """Run forward; when recording and an input requires grad, the node joins the graph."""
        global _grad_enabled
        ctx = cls()
        recording, _grad_enabled = _grad_enabled, False  # what forward does is not recorded
        try:
            out = cls.forward(ctx, *args)
        finally:
            _grad_enabled = recording
        if not isinstance(out, Variable):  # an array: it becomes a tensor like the inputs
            out = _tensor_type(args)(out)
        if recording:
            needs = tuple([isinstance(a, Variable) and a.requires_grad for a in args])
            if True in needs:
                ctx.inputs, ctx.needs_input_grad, ctx.order = args, needs, next(_creation_order)
                ctx.saved_versions = tuple([0 if t is None else t._version for t in ctx.saved])
                ctx.result_ref, ctx.result_version = weakref.ref(out), out._version
                out.grad_fn = ctx  # which also makes it require grad
        return out

    def save_for_backward(self, *tensors: Variable | None) -> None:
        """Keep tensors for backward (``apply`` notes their versions: a later in-place change is caught)."""
        self.saved = tensors

    @property
    def saved_tensors(self) -> tuple:
        """What ``save_for_backward`` kept, after checking that none of it has changed since."""
        if self.saved is None:
            raise BackwardError(
                "Trying to backward through the graph a second time (or to read saved tensors "
                "after they were freed). Pass retain_graph=True to the first backward() call."
            )
        for i, (t, version) in enumerate(zip(self.saved, self.saved_versions)):
            if t is not None and t._version != version:
                raise _changed_error(f"saved tensor {i} of {self!r}", t)
        return self.saved

    @property
    def result(self) -> Variable:
        """The op's output (torch's derivative formulas call it ``result``), e.g. exp's own value."""
        out = self.result_ref()
        if out._version != self.result_version:
            raise _changed_error(f"the output of {self!r}", out)
        return out

    @property
    def next_functions(self) -> tuple:
        """The nodes feeding this one (None for leaves and constants), as in torch."""
        return tuple(getattr(t, "grad_fn", None) for t in self.inputs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}Backward>"


def _tensor_type(args: tuple) -> type:
    """The class of the first tensor among an op's arguments (minigrad.Tensor, for minigrad's ops)."""
    for a in args:
        if isinstance(a, Variable):
            return type(a)
    raise TypeError("an op needs at least one tensor argument")


def _changed_error(what: str, t: Variable) -> InplaceError:
    return InplaceError(
        f"one of the tensors needed for gradient computation has been modified by an in-place "
        f"operation: {what} with shape {t.data.shape} was changed after it was saved (it is now "
        f"at version {t._version}). Use an out-of-place op instead."
    )


# ----------------------------------------------------------------------------- the engine


def backward(
    outputs: Sequence[Variable],
    grad_outputs: Sequence[Variable],
    retain_graph: bool = False,
    create_graph: bool = False,
    inputs: Sequence[Variable] | None = None,
) -> list[Variable | None] | None:
    """Backpropagate ``grad_outputs`` from ``outputs``: the idea in the loop below, each extension
    (marked EXTENSION) a named function after it.

    With ``inputs=None`` gradients accumulate into the ``.grad`` of every leaf reached (what
    ``Tensor.backward`` does); otherwise the gradients of ``inputs`` are returned and no
    ``.grad`` changes (what ``minigrad.grad`` does).
    """
    grads: dict[Any, Variable] = {}  # node or leaf -> its gradient, summed over the paths so far
    queue: list[tuple[int, Function]] = []  # nodes waiting for their visit, newest first

    def send(t: Variable, g: Variable) -> None:
        """Add ``g`` to the gradient of ``t``: its node's, or its own if ``t`` is a leaf."""
        key = t if t.grad_fn is None else t.grad_fn  # a leaf keeps its own; an op's result, its node's
        if key in grads:
            grads[key] = grads[key] + g  # a second path: the multivariate chain rule sums them
        else:
            grads[key] = g
            if key is not t:  # a node's first gradient: schedule its visit
                heapq.heappush(queue, (-key.order, key))

    for out, g in zip(outputs, grad_outputs):
        _check_differentiable(out)
        send(out, g)
    wanted = {} if inputs is None else {_key(t): None for t in inputs}  # what minigrad.grad asks for
    with set_grad_enabled(create_graph):
        # Newest first: every consumer of a node's output was recorded after the node, so when
        # the node comes up, all the gradient it will ever receive has arrived.
        while queue:
            node = heapq.heappop(queue)[1]
            grad = grads.pop(node)
            if node.hooks or node.retained or wanted:
                grad = _arrive(node, grad, create_graph, wanted)  # EXTENSION: hooks, retain_grad, grad()
            input_grads = node.backward(node, grad)  # the rule: dLoss/dInput for each input
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if _observers:
                _notify_observers(node, grad, input_grads)  # EXTENSION: minigrad.trace
            for t, g, needed in zip(node.inputs, input_grads, node.needs_input_grad):
                if needed and g is not None:
                    send(t, g)
            if not retain_graph:
                node.saved = None  # EXTENSION: free what the node saved (a second backward then raises)
        # Every node has been visited: what is left in ``grads`` are the leaves' gradients.
        for leaf, g in grads.items():
            grads[leaf] = _run_hooks(leaf._hooks, g)  # EXTENSION: hooks on leaves
        if inputs is not None:
            wanted.update((leaf, g) for leaf, g in grads.items() if leaf in wanted)
            return [wanted[_key(t)] for t in inputs]
        _accumulate_into_leaves(grads, grad_outputs, create_graph)
    return None


# ----------------------------------------------------------------------------- the extensions


def _key(t: Variable) -> Any:
    """Where the engine keeps the gradient of ``t``: at its node, or at ``t`` itself for a leaf."""
    return t if t.grad_fn is None else t.grad_fn


def _check_differentiable(out: Variable) -> None:
    if not out.requires_grad:
        raise BackwardError(
            "element 0 of tensors does not require grad and does not have a grad_fn: "
            "make a leaf with requires_grad=True before computing the output"
        )


def _arrive(node: Function, grad: Variable, create_graph: bool, wanted: dict) -> Variable:
    """A node's complete gradient, before its rule runs: its hooks see it (and may replace it),
    ``retain_grad()`` keeps a copy in the tensor's ``.grad``, ``minigrad.grad`` takes it if asked."""
    grad = _run_hooks(node.hooks, grad)
    owner = node.retained and node.retained()
    if owner is not None:
        owner.grad = grad if create_graph else type(grad)(grad.data.copy())
    if node in wanted:
        wanted[node] = grad
    return grad


def _run_hooks(hooks: Sequence[Callable], grad: Variable) -> Variable:
    """Each hook sees the gradient; one that returns a tensor replaces it. A hook may keep what it
    saw, so after any hook the engine goes on with a clone: nothing it writes into later is the
    hook's."""
    if not hooks:
        return grad
    for hook in hooks:
        new = hook(grad)
        if new is not None:
            grad = new
    return grad.clone()


_observers: list[Callable] = []


@contextlib.contextmanager
def observe(callback: Callable[[Function, Variable, tuple], None]) -> Iterator[None]:
    """Inside the block, backward calls ``callback(node, grad, input_grads)`` at every node it
    visits, in the order it visits them (``minigrad.trace`` narrates backward with it)."""
    _observers.append(callback)
    try:
        yield
    finally:
        _observers.remove(callback)


def _notify_observers(node: Function, grad: Variable, input_grads: tuple) -> None:
    for observer in _observers:
        observer(node, grad, input_grads)


def _accumulate_into_leaves(grads: dict[Variable, Variable], seeds: Sequence[Variable], create_graph: bool) -> None:
    """Each leaf's gradient into its ``.grad``: added in place to one it has (as torch does), else
    kept as its first. Which array a first ``.grad`` is (a copy, or the gradient itself where
    nothing else holds it) is ``kernels.first_grad``'s business."""
    held = {id(s.data) for s in seeds}  # arrays the caller holds: no .grad may be one of them
    for leaf, grad in grads.items():
        if create_graph:  # a differentiable gradient: added as a tensor, never in place
            leaf.grad = grad if leaf.grad is None else leaf.grad + grad
        elif leaf.grad is None:
            array = kernels.first_grad(grad.data, leaf.data.dtype, held)
            leaf.grad = grad if array is grad.data else type(grad)(array)
        else:
            leaf.grad.data += grad.data


def grad(
    outputs: Variable | Sequence[Variable],
    inputs: Variable | Sequence[Variable],
    grad_outputs: Variable | Sequence[Variable | None] | None = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> tuple[Variable | None, ...]:
    """Gradients of ``outputs`` with respect to ``inputs``, returned as a tuple (torch.autograd.grad).

    Unlike ``backward`` it leaves every ``.grad`` untouched. With ``create_graph=True`` the
    returned gradients are differentiable, which gives second and higher derivatives.
    """
    outputs = [outputs] if isinstance(outputs, Variable) else list(outputs)
    inputs = [inputs] if isinstance(inputs, Variable) else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Variable):
        grad_outputs = [grad_outputs] * len(outputs)
    for t in inputs:
        if not t.requires_grad:
            raise BackwardError(f"an input of shape {t.data.shape} does not require grad")
    seeds = [default_grad(o, g) for o, g in zip(outputs, grad_outputs)]
    retain_graph = create_graph if retain_graph is None else retain_graph
    result = backward(outputs, seeds, retain_graph, create_graph, inputs=inputs)
    for i, g in enumerate(result):
        if g is None and not allow_unused:
            raise BackwardError(
                f"input {i} (shape {inputs[i].data.shape}) was not used to compute the outputs; "
                "pass allow_unused=True to get None for it"
            )
    return tuple(result)


def default_grad(output: Variable, grad_output: Variable | None) -> Variable:
    """The gradient that seeds backward: d(output)/d(output) = 1 for a scalar; any other output
    needs one given explicitly."""
    data = output.data
    if grad_output is None:
        if data.size != 1:
            raise BackwardError(
                f"grad can be implicitly created only for scalar outputs; this output has shape "
                f"{data.shape}: pass gradient=<a tensor of that shape>"
            )
        return type(output)(np.ones(data.shape, data.dtype))
    if grad_output.data.shape != data.shape:
        raise ShapeError(
            f"Mismatch in shape: gradient has shape {grad_output.data.shape} and output has shape {data.shape}"
        )
    return grad_output
