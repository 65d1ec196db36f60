"""Parameter initialisation, in place (torch.nn.init's names), drawing from minigrad's generator."""

from __future__ import annotations

import math

from minigrad.autograd import no_grad
from minigrad.tensor import Tensor, generator


def _fans(t: Tensor) -> tuple[int, int]:
    if t.ndim < 2:
        raise ValueError(f"fan in/out need a tensor with >= 2 dims, got shape {t.shape}")
    receptive = int(t.data[0][0].size)
    return t.shape[1] * receptive, t.shape[0] * receptive


@no_grad()
def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    t.data[...] = generator().uniform(a, b, t.shape)
    return t


@no_grad()
def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    t.data[...] = generator().normal(mean, std, t.shape)
    return t


@no_grad()
def constant_(t: Tensor, value: float) -> Tensor:
    t.data[...] = value
    return t


def zeros_(t: Tensor) -> Tensor:
    return constant_(t, 0.0)


def ones_(t: Tensor) -> Tensor:
    return constant_(t, 1.0)


def xavier_uniform_(t: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = _fans(t)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)


def kaiming_uniform_(t: Tensor, a: float = 0.0) -> Tensor:
    """He initialisation for a leaky-ReLU slope ``a`` (torch's Linear uses a = sqrt(5))."""
    fan_in, _ = _fans(t)
    gain = math.sqrt(2.0 / (1 + a * a))
    bound = gain * math.sqrt(3.0 / fan_in)
    return uniform_(t, -bound, bound)
