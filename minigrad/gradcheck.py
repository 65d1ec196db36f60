"""Check analytical gradients against central finite differences, in float64.

For f: R^n -> R^m the engine gives each row of the Jacobian J[i, :] = d out_i / d inputs by one
backward pass seeded with a one-hot gradient. Finite differences give each column:
J[:, j] ~ (f(x + eps e_j) - f(x - eps e_j)) / (2 eps). The two must agree elementwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np

from minigrad.autograd import grad, no_grad
from minigrad.errors import GradcheckError
from minigrad.tensor import Tensor, float64

T = TypeVar("T")


def _outputs(fn: Callable, inputs: Sequence[Tensor]) -> list[Tensor]:
    out = fn(*inputs)
    return [out] if isinstance(out, Tensor) else [o for o in out if isinstance(o, Tensor)]


def perturbed(
    f: Callable[[], T], array: np.ndarray, eps: float, elements: Iterable[int] | None = None
) -> Iterator[tuple[int, T, T]]:
    """For each element j of ``array`` (all, or the flat indices in ``elements``; changed in place,
    then restored): (j, f() with it raised by eps, f() with it lowered by eps), the two halves of
    a central difference."""
    for j in range(array.size) if elements is None else elements:
        orig = array.flat[j]
        array.flat[j] = orig + eps
        plus = f()
        array.flat[j] = orig - eps
        minus = f()
        array.flat[j] = orig
        yield j, plus, minus


def rounding_noise(values: Sequence[float]) -> float:
    """The standard deviation of the noise in f, from f at equally spaced points close together
    (after Moré and Wild's ECnoise, 2011). At a small spacing the k-th differences of a smooth f are
    near 0 and keep one sign, while noise of deviation sigma, independent from point to point, gives
    k-th differences that change sign, normal with variance sigma^2 (2k)!/(k!)^2. For each order
    k = 3..6 whose differences change sign, sigma is estimated from the lower quartile of their sizes
    (a kink among the points spoils only the k + 1 differences next to it, so several kinks leave
    the quartile alone). The median of these estimates is returned (0.0 where no order changes
    sign): from 31 points, within about a factor 3 of sigma."""
    differences = np.asarray(values, dtype=np.float64)
    estimates = []
    for k in range(1, 7):
        differences = np.diff(differences)
        if k >= 3 and differences.min() < 0 < differences.max():
            deviation = np.quantile(np.abs(differences), 0.25) / 0.3186  # |N(0, s)| has lower quartile 0.3186 s
            estimates.append(deviation * math.sqrt(math.factorial(k) ** 2 / math.factorial(2 * k)))
    return float(np.median(estimates)) if estimates else 0.0


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Tensor | Sequence[Tensor],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> bool:
    """True if ``fn``'s gradients match finite differences for every float input that requires
    grad; otherwise raise ``GradcheckError`` naming the worst element. Inputs are cast to float64."""
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    xs = [
        Tensor(t.data.astype(np.float64), requires_grad=t.requires_grad) if isinstance(t, Tensor) else t for t in inputs
    ]
    wrt = [i for i, t in enumerate(xs) if isinstance(t, Tensor) and t.requires_grad and t.dtype == float64]
    if not wrt:
        raise GradcheckError("gradcheck: no input requires grad; mark the inputs to check with requires_grad=True")

    outs = _outputs(fn, xs)
    sizes = [o.data.size for o in outs]
    total_out = sum(sizes)
    analytical = {i: np.zeros((total_out, xs[i].data.size)) for i in wrt}
    row = 0
    for k, out in enumerate(outs):
        for j in range(sizes[k]):
            seed = np.zeros(out.shape)
            seed.flat[j] = 1.0
            if not out.requires_grad:
                row += 1
                continue
            grads = grad(out, [xs[i] for i in wrt], Tensor(seed), retain_graph=True, allow_unused=True)
            for i, g in zip(wrt, grads):
                if g is not None:
                    analytical[i][row] = g.data.ravel()
            row += 1

    def values() -> np.ndarray:
        return np.concatenate([o.data.ravel() for o in _outputs(fn, xs)])

    worst = (0.0, None)
    with no_grad():
        for i in wrt:
            for j, plus, minus in perturbed(values, xs[i].data, eps):
                numerical = (plus - minus) / (2 * eps)
                a = analytical[i][:, j]
                excess = np.abs(a - numerical) - (atol + rtol * np.abs(numerical))
                if excess.size and excess.max() > worst[0]:
                    r = int(excess.argmax())
                    worst = (excess.max(), (i, j, r, a[r], numerical[r]))
    if worst[1] is not None:
        i, j, r, a, n = worst[1]
        index = np.unravel_index(j, xs[i].shape)
        raise GradcheckError(
            f"Jacobian mismatch for input {i} at element {tuple(int(v) for v in index)}, output "
            f"element {r}: analytical {a:.10g} vs numerical {n:.10g} (atol={atol}, rtol={rtol})"
        )
    return True
