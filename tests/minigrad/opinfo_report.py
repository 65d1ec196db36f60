"""minigrad against torch's own test samples: every OpInfo (``op_db``) of an op minigrad has, run
with its ``sample_inputs`` and ``reference_inputs`` (float64, CPU) through both libraries.

Each sample ends one of five ways:

- match: the same values (shape, dtype, NaN where torch has NaN) and, for every input that
  requires grad, the same gradient of sum(output * u) for a fixed random u;
- refused: minigrad raised a ``MinigradError`` or ``NotImplementedError`` with a one-line message
  (a clear "not supported"; the report lists each message to read);
- mismatch: anything else: other values or gradients, or another exception (a bare TypeError,
  an IndexError from inside NumPy ...);
- quirk: a match but for places where torch has NaN and minigrad, on purpose, a number (QUIRKS
  says where and why);
- skipped: torch itself refused the sample, or the op draws random numbers (dropout: only its
  deterministic samples are compared).

``python tests/minigrad/opinfo_report.py`` prints the counts, per op and in all, and every mismatch
and refusal; ``--ops`` picks ops by name. ``tests/minigrad/test_torch_opinfo.py`` runs the same code.
torch's test helpers need the ``expecttest`` package (in the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import collections
import operator
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import minigrad as mg
from minigrad.errors import MinigradError
from minigrad.nn import functional as F  # noqa: N812 - torch's spelling
from minigrad.testing import _grad_seed


def method(name: str) -> Callable[..., Any]:
    """``t.name(*args, **kwargs)``: the Tensor method of that name."""
    return lambda t, *args, **kwargs: getattr(t, name)(*args, **kwargs)


# OpInfos whose op is the Tensor method of the name before the "."
ELEMENTWISE_METHODS = (
    "abs exp log sqrt tanh sigmoid erf sin cos log1p expm1 square rsqrt reciprocal sign masked_fill clamp tril "
    "triu clone"
).split()
REDUCTION_METHODS = (
    "sum mean var var.unbiased std std.unbiased prod amax amin logsumexp norm norm.fro norm.inf norm.nuc all any "
    "argmax argmin cumsum max.reduction_with_dim max.reduction_no_dim min.reduction_with_dim min.reduction_no_dim"
).split()
SHAPE_METHODS = (
    "reshape view flatten unflatten transpose permute movedim squeeze squeeze.multiple unsqueeze expand expand_as "
    "repeat tile repeat_interleave roll split split.list_args chunk unbind narrow flip gather index_select "
    "scatter_add sort argsort topk __getitem__"
).split()

# OpInfo name (".variant" where there is one) -> minigrad's callable taking torch's arguments
MAPPING: dict[str, Callable[..., Any]] = {
    # elementwise
    **{name: method(name) for name in ELEMENTWISE_METHODS},
    "neg": operator.neg,
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div.no_rounding_mode": operator.truediv,
    "true_divide": operator.truediv,
    "pow": operator.pow,
    # torch's t.__rop__(other) is other op t (torch's samples may pass a number as t)
    "__radd__": lambda t, other: other + t,
    "__rsub__": lambda t, other: other - t,
    "__rmul__": lambda t, other: other * t,
    "__rdiv__": lambda t, other: other / t,
    "__rpow__": lambda t, other: other**t,
    "__rmatmul__": lambda t, other: other @ t,
    "maximum": mg.maximum,
    "minimum": mg.minimum,
    "max.binary": mg.max,
    "min.binary": mg.min,
    "where": lambda t, condition, other: mg.where(condition, t, other),
    # activations
    "nn.functional.relu": F.relu,
    "nn.functional.gelu": F.gelu,
    "nn.functional.silu": F.silu,
    "nn.functional.softplus": F.softplus,
    "nn.functional.leaky_relu": F.leaky_relu,
    "nn.functional.elu": F.elu,
    "nn.functional.logsigmoid": F.logsigmoid,
    "nn.functional.dropout": F.dropout,
    "softmax": mg.softmax,
    "softmax.with_dtype": mg.softmax,
    "log_softmax": mg.log_softmax,
    "log_softmax.with_dtype": mg.log_softmax,
    # reductions and scans
    **{name: method(name.split(".")[0]) for name in REDUCTION_METHODS},
    # products
    "matmul": mg.matmul,
    "mm": mg.mm,
    "bmm": mg.bmm,
    "addmm": mg.addmm,
    "addmm.decomposed": mg.addmm,
    "baddbmm": mg.baddbmm,
    "outer": mg.outer,
    "dot": mg.dot,
    "einsum": lambda tensors, equation: mg.einsum(equation, tensors),
    "t": mg.t,
    "nn.functional.linear": F.linear,
    # shape, indexing and sorting
    **{name: method(name.split(".")[0]) for name in SHAPE_METHODS},
    "T": lambda t: t.T,
    "mT": lambda t: t.mT,
    "cat": mg.cat,
    "stack": mg.stack,
    "take_along_dim": mg.take_along_dim,
    # losses
    "nn.functional.cross_entropy": F.cross_entropy,
    "nn.functional.nll_loss": F.nll_loss,
    "nn.functional.mse_loss": F.mse_loss,
    "nn.functional.l1_loss": F.l1_loss,
    "nn.functional.smooth_l1_loss": F.smooth_l1_loss,
    "nn.functional.kl_div": F.kl_div,
    "nn.functional.binary_cross_entropy_with_logits": F.binary_cross_entropy_with_logits,
    # layers
    "nn.functional.layer_norm": F.layer_norm,
    "nn.functional.embedding": lambda weight, idx, **kwargs: F.embedding(idx, weight, **kwargs),
    "nn.functional.one_hot": F.one_hot,
    "nn.functional.scaled_dot_product_attention": F.scaled_dot_product_attention,
    "nn.functional.cosine_similarity": F.cosine_similarity,
    "nn.functional.normalize": F.normalize,
    "nn.functional.pad.constant": F.pad,
    "nn.functional.pad.reflect": F.pad,
    "nn.functional.pad.replicate": F.pad,
    "nn.functional.pad.replicate_negative": F.pad,
    "nn.functional.pad.circular": F.pad,
    "nn.functional.conv2d": F.conv2d,
    "nn.functional.max_pool2d": F.max_pool2d,
    "nn.functional.avg_pool2d": F.avg_pool2d,
}

# ops that draw random numbers: only their samples that draw none are compared
RANDOM = {"nn.functional.dropout", "nn.functional.scaled_dot_product_attention"}

# ops whose second derivative is compared too (on every sample, reference inputs included)
SECOND_ORDER = {
    "nn.functional.elu", "nn.functional.logsigmoid", "reciprocal", "pow", "rsqrt", "nn.functional.softplus",
    "nn.functional.silu", "nn.functional.gelu", "sigmoid", "tanh", "exp", "log", "sqrt", "log1p", "expm1",
    "square", "abs", "sign",
}  # fmt: skip

# where torch gives NaN and minigrad a number on purpose: these places are let go, and the sample
# counted as a "quirk", not a match
QUIRKS = {
    "nn.functional.elu": "torch's elu gradient at NaN is 1 in its scalar loop, NaN in its vectorised one (16 at a "
    "time); minigrad's is 1, the formula's",
}

_DTYPES = {torch.float64: mg.float64, torch.float32: mg.float32, torch.int64: mg.int64, torch.bool: mg.bool}


@dataclass
class Outcome:
    op: str
    kind: str  # "match", "quirk", "refused", "mismatch" or "skipped"
    detail: str = ""


def op_infos(names: Any = None) -> list:
    """torch's OpInfos that MAPPING names (all of them, or those in ``names``)."""
    from torch.testing._internal.common_methods_invocations import op_db

    found = [(full_name(op), op) for op in op_db]
    return [op for name, op in found if name in MAPPING and (names is None or name in names)]


def full_name(op: Any) -> str:
    return op.name + ("." + op.variant_test_name if op.variant_test_name else "")


def samples(op: Any) -> Iterator[Any]:
    """The op's sample inputs, then its reference inputs where it has its own (float64, CPU).
    Reference inputs are drawn without requires_grad (some of torch's generators refuse it, for
    their integer tensors): every floating tensor in them is made to require grad here."""
    yield from op.sample_inputs("cpu", torch.float64, requires_grad=True)
    if op.reference_inputs_func is not None:
        for sample in op.reference_inputs("cpu", torch.float64, requires_grad=False):
            yield sample.transform(
                lambda t: t.requires_grad_(t.is_floating_point()) if isinstance(t, torch.Tensor) else t
            )


def _leaves(value: Any, to_minigrad: bool) -> Any:
    """A fresh copy of a sample's arguments: each tensor a new leaf (requiring grad where the
    sample's does), as torch tensors or as minigrad ones; dtypes and sizes converted too."""
    if isinstance(value, torch.Tensor):
        array = value.detach().clone()
        if not to_minigrad:
            return array.requires_grad_(value.requires_grad)
        return mg.tensor(array.numpy(), requires_grad=value.requires_grad)
    if isinstance(value, torch.dtype) and to_minigrad:
        return _DTYPES[value]
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_leaves(v, to_minigrad) for v in value)
    if isinstance(value, dict):
        return {k: _leaves(v, to_minigrad) for k, v in value.items()}
    return value


def _tensors(value: Any) -> list:
    """Every tensor in a nested argument or output, in order."""
    if isinstance(value, (torch.Tensor, mg.Tensor)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _torch_objects(value: Any) -> str:
    """The type of a torch object left in converted arguments (a memory format ...), or ''."""
    if type(value).__module__.startswith("torch"):
        return type(value).__name__
    if isinstance(value, (list, tuple)):
        return next(filter(None, map(_torch_objects, value)), "")
    if isinstance(value, dict):
        return _torch_objects(list(value.values()))
    return ""


def _numpy(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return np.zeros(t.shape) if t._is_zerotensor() else t.detach().numpy()  # torch's lazy zero gradient
    return t.data


def _dtype_name(t: Any) -> str:
    return str(t.dtype).replace("torch.", "")


def _differentiable(outputs: list) -> list:
    return [o for o in outputs if o.requires_grad and np.dtype(_dtype_name(o)).kind == "f"]


def _first_grads(lib: Any, outputs: list, leaves: list, create_graph: bool = False) -> list:
    """d sum(output * u) / d leaf for each leaf (zeros where unused), u fixed per output shape."""
    outs = _differentiable(outputs)
    if not outs or not leaves:
        return [lib.zeros_like(t) for t in leaves]
    total = sum((o * lib.tensor(_grad_seed(tuple(o.shape)), dtype=o.dtype)).sum() for o in outs)
    found = lib.autograd.grad(total, leaves, retain_graph=True, create_graph=create_graph, allow_unused=True)
    return [lib.zeros_like(t) if g is None else g for g, t in zip(found, leaves)]


def _second_grads(lib: Any, outputs: list, leaves: list) -> list:
    """d <first gradients, v> / d leaf, v fixed per shape: the second derivative along u and v."""
    firsts = [g for g in _first_grads(lib, outputs, leaves, create_graph=True) if g.requires_grad]
    if not firsts:
        return [lib.zeros_like(t) for t in leaves]
    total = sum((g * lib.tensor(_grad_seed(tuple(g.shape)) + 0.5, dtype=g.dtype)).sum() for g in firsts)
    found = lib.autograd.grad(total, leaves, allow_unused=True)
    return [lib.zeros_like(t) if g is None else g for g, t in zip(found, leaves)]


def _compare(what: str, mine: list, theirs: list, excused: list | None = None) -> str:
    """'' when equal (values, shapes, dtypes; NaN where the other has NaN), else what differs.
    With ``excused`` (a list), places where torch has NaN and minigrad a number are let go, and
    noted in it: for the ops in QUIRKS."""
    if len(mine) != len(theirs):
        return f"{what}: {len(mine)} tensors, torch has {len(theirs)}"
    for i, (m, t) in enumerate(zip(mine, theirs)):
        a, b = _numpy(m), _numpy(t)
        if a.shape != b.shape:
            return f"{what} {i}: shape {a.shape}, torch's {b.shape}"
        if _dtype_name(m) != _dtype_name(t):
            return f"{what} {i}: dtype {_dtype_name(m)}, torch's {_dtype_name(t)}"
        bad = ~np.isclose(a, b, rtol=1e-6, atol=1e-8, equal_nan=True)
        if excused is not None and (bad & np.isnan(b)).any():
            excused.append(f"{what} {i}: {int((bad & np.isnan(b)).sum())} NaN of torch's let go")
            bad &= ~np.isnan(b)
        if bad.any():
            mine, torchs = a[bad].flat[0], b[bad].flat[0]
            return f"{what} {i}: {int(bad.sum())} of {a.size} differ, e.g. {mine!r} vs torch's {torchs!r}"
    return ""


def is_clear_refusal(error: BaseException) -> bool:
    """A minigrad error or NotImplementedError whose message is one line."""
    message = str(error).strip()
    return isinstance(error, (MinigradError, NotImplementedError)) and bool(message) and "\n" not in message


def describe(sample: Any) -> str:
    def short(v: Any) -> str:
        if isinstance(v, torch.Tensor):
            return f"tensor{tuple(v.shape)}:{_dtype_name(v)}"
        if isinstance(v, (list, tuple)) and any(isinstance(x, torch.Tensor) for x in v):
            return "[" + ", ".join(short(x) for x in v) + "]"
        return repr(v)

    parts = [short(sample.input), *map(short, sample.args), *(f"{k}={short(v)}" for k, v in sample.kwargs.items())]
    return "(" + ", ".join(parts) + ")"


def run_sample(name: str, op: Any, sample: Any, second_order: bool = False) -> Outcome:
    """Run one sample through torch and minigrad, and say how it went."""
    where = describe(sample)
    th_args = _leaves((sample.input, sample.args, sample.kwargs), to_minigrad=False)
    try:
        th_out = op(th_args[0], *th_args[1], **th_args[2])
    except Exception as e:  # torch refuses its own sample (e.g. a reference input out of its domain)
        return Outcome(name, "skipped", f"{where}: torch raised {type(e).__name__}")
    if th_out is NotImplemented:  # a reflected operator called on a number: torch answers nothing either
        return Outcome(name, "skipped", f"{where}: torch returned NotImplemented")
    if name in RANDOM and not _draws_nothing(sample):
        return Outcome(name, "skipped", f"{where}: random")
    mg_args = _leaves((sample.input, sample.args, sample.kwargs), to_minigrad=True)
    if not _tensors(mg_args):
        return Outcome(name, "skipped", f"{where}: no tensor in it (Python arithmetic)")
    torch_only = _torch_objects(mg_args)
    if torch_only:
        return Outcome(name, "skipped", f"{where}: a {torch_only} argument, which minigrad has no counterpart of")
    if getattr(MAPPING[name], "__module__", None) == "_operator" and sample.kwargs:
        return Outcome(name, "skipped", f"{where}: minigrad spells {name} as an operator, which takes no keywords")
    th_leaves = [t for t in _tensors(th_args) if t.requires_grad]
    mg_leaves = [t for t in _tensors(mg_args) if t.requires_grad]
    try:
        with np.errstate(all="ignore"):
            mg_out = MAPPING[name](mg_args[0], *mg_args[1], **mg_args[2])
            excused: list | None = [] if name in QUIRKS else None
            differs = _check(mg_out, th_out, mg_leaves, th_leaves, second_order, excused)
    except Exception as e:
        if is_clear_refusal(e):
            return Outcome(name, "refused", f"{where}: {type(e).__name__}: {e}")
        return Outcome(name, "mismatch", f"{where}: {type(e).__name__}: {e}".splitlines()[0])
    if differs:
        return Outcome(name, "mismatch", f"{where}: {differs}")
    if excused:
        return Outcome(name, "quirk", f"{where}: {'; '.join(excused)} ({QUIRKS[name]})")
    return Outcome(name, "match")


def _check(mg_out: Any, th_out: Any, mg_leaves: list, th_leaves: list, second_order: bool, excused: list | None) -> str:
    if not isinstance(th_out, (torch.Tensor, list, tuple)):  # a Python number (Tensor.item-like ops)
        return "" if mg_out == th_out else f"value {mg_out!r}, torch's {th_out!r}"
    mine, theirs = _tensors(mg_out), _tensors(th_out)
    differs = _compare("output", mine, theirs, excused)
    if differs:
        return differs
    for i, (m, t) in enumerate(zip(mine, theirs)):
        if m.requires_grad != t.requires_grad:
            return f"output {i}: requires_grad={m.requires_grad}, torch's {t.requires_grad}"
    try:
        th_grads = _first_grads(torch, theirs, th_leaves)
    except RuntimeError:  # torch has no derivative for this output (e.g. integer results)
        return ""
    differs = _compare("gradient of input", _first_grads(mg, mine, mg_leaves), th_grads, excused)
    if differs or not second_order:
        return differs
    return _compare("second derivative of input", _second_grads(mg, mine, mg_leaves),
                    _second_grads(torch, theirs, th_leaves), excused)  # fmt: skip


def _draws_nothing(sample: Any) -> bool:
    """A dropout sample with p = 0 or training off, an attention sample without dropout."""
    kwargs = sample.kwargs
    p = kwargs.get("p", kwargs.get("dropout_p", sample.args[0] if sample.args else 0.5))
    return p == 0 or kwargs.get("training", True) is False


def run(names: Any = None) -> list[Outcome]:
    outcomes = []
    for op in op_infos(names):
        name = full_name(op)
        torch.manual_seed(0)  # the samples' random values: the same each run
        for sample in samples(op):
            outcomes.append(run_sample(name, op, sample, second_order=name in SECOND_ORDER))
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    counts = collections.Counter(o.kind for o in outcomes)
    return {
        "ops": len({o.op for o in outcomes}),
        "samples": len(outcomes),
        **{k: counts[k] for k in ("match", "quirk", "refused", "mismatch", "skipped")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", nargs="*", help="OpInfo names (default: every op minigrad maps)")
    parser.add_argument("--refusals", action="store_true", help="list each refusal message too")
    args = parser.parse_args()
    start = time.perf_counter()
    outcomes = run(args.ops)
    seconds = time.perf_counter() - start
    per_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for o in outcomes:
        per_op[o.op][o.kind] += 1
    kinds = ("match", "quirk", "refused", "mismatch", "skipped")
    print(f"{'op':48}" + "".join(f"{k:>9}" for k in kinds))
    for name, c in sorted(per_op.items()):
        print(f"{name:48}" + "".join(f"{c[k]:9}" for k in kinds))
    for kind in ("mismatch", "quirk", "refused") if args.refusals else ("mismatch", "quirk"):
        shown = [o for o in outcomes if o.kind == kind]
        if shown:
            print(f"\n{kind}:")
            for o in shown:
                print(f"  {o.op}{o.detail}")
    print("\n" + ", ".join(f"{k} {v}" for k, v in summary(outcomes).items()) + f"; {seconds:.0f} s")


if __name__ == "__main__":
    main()
