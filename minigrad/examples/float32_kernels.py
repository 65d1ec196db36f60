"""Custom torch Functions that compute in float32 inside, as fused and hand-written kernels do, and
how ``check_gradients`` judges them with its defaults: over many seeds, the correct ones must always
pass and the wrong ones (a gradient 1% too large, one column of a matmul's gradient 5% off) must be
caught. Each Function takes float64 tensors, computes in float32 (``x.float()``) and casts back.

    python -m minigrad.examples.float32_kernels [--seeds 20]    # the calibration table
    python -m minigrad.examples.float32_kernels --time          # one default check of Matmul32, timed

The backwards are built from torch ops on the saved inputs, so they are differentiable and the
second derivatives are checked too.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from minigrad.testing import CheckGradientsError, ForwardModeNotChecked, GradientMismatch, check_gradients


class Square32(torch.autograd.Function):
    """x ** 2, in float32."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x.float() ** 2).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return (2 * x.float() * grad.float()).to(grad.dtype)


class Tanh32(torch.autograd.Function):
    """tanh(x), in float32."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.tanh(x.float()).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return ((1 - torch.tanh(x.float()) ** 2) * grad.float()).to(grad.dtype)


class Matmul32(torch.autograd.Function):
    """a @ b, in float32."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return (a.float() @ b.float()).to(a.dtype)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        g = grad.float()
        return (g @ b.float().T).to(grad.dtype), (a.float().T @ g).to(grad.dtype)


class Square32OnePercent(Square32):
    """Bug: the gradient is 1% too large."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return (1.01 * 2 * x.float() * grad.float()).to(grad.dtype)


class Tanh32OnePercent(Tanh32):
    """Bug: the gradient is 1% too large."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return (1.01 * (1 - torch.tanh(x.float()) ** 2) * grad.float()).to(grad.dtype)


class Matmul32ColumnOff(Matmul32):
    """Bug: column 2 of a's gradient is 5% too large."""

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        g = grad.float()
        scale = torch.ones(a.shape[1])
        scale[2] = 1.05
        return (g @ b.float().T * scale).to(grad.dtype), (a.float().T @ g).to(grad.dtype)


class SquareBfloat16(Square32):
    """x ** 2, correct, in bfloat16: below the precision finite differences can check."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x.bfloat16() ** 2).to(x.dtype)


# name: (Function, input shapes, whether it is correct)
CASES = {
    "square": (Square32, [(3, 4)], True),
    "tanh": (Tanh32, [(3, 4)], True),
    "matmul 3x8 @ 8x5": (Matmul32, [(3, 8), (8, 5)], True),
    "square, gradient 1% too large": (Square32OnePercent, [(3, 4)], False),
    "tanh, gradient 1% too large": (Tanh32OnePercent, [(3, 4)], False),
    "matmul, one column 5% off": (Matmul32ColumnOff, [(3, 8), (8, 5)], False),
}


def verdict(function: type, shapes: list[tuple[int, ...]], seed: int) -> str:
    """'pass', 'caught' or 'refused' for one default check with hypothesis seed ``seed``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ForwardModeNotChecked)
            check_gradients(function.apply, *shapes, seed=seed)
    except GradientMismatch:
        return "caught"
    except CheckGradientsError:
        return "refused"
    return "pass"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="hypothesis seeds per Function (20)")
    parser.add_argument("--time", action="store_true", help="only time one default check of Matmul32")
    args = parser.parse_args()
    if args.time:
        start = time.perf_counter()
        assert verdict(Matmul32, [(3, 8), (8, 5)], seed=0) == "pass"
        print(f"one default check_gradients of Matmul32 (3x8 @ 8x5): {time.perf_counter() - start:.2f} s")
        return
    print(f"{'Function':34} {'correct':8} over {args.seeds} seeds")
    for name, (function, shapes, correct) in CASES.items():
        verdicts = [verdict(function, shapes, seed) for seed in range(args.seeds)]
        counts = ", ".join(f"{v} {verdicts.count(v)}" for v in ("pass", "caught", "refused") if v in verdicts)
        print(f"{name:34} {'yes' if correct else 'no':8} {counts}")
    print(f"{'square in bfloat16':34} {'yes':8} {verdict(SquareBfloat16, [(3, 4)], seed=0)}")


if __name__ == "__main__":
    main()
