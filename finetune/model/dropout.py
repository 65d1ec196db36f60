"""Dropout with cheaper random masks on the CPU, the largest cost of a training step after the matmuls.

torch draws a CPU dropout mask with one Mersenne-Twister call per element (``bernoulli_``, about
6 ns an element): 16% of a full fine-tuning step of the default model and 46% of a head-only step
(docs/finetune/performance.md). ``keep_mask`` asks the same generator for 64 random bits per four
elements and keeps an element when its 16 bits clear a threshold: a Bernoulli(1 - p) mask, with p
rounded to a multiple of 1/65536, four times faster. ``use_fast_dropout`` puts it in a model's
dropout layers and, through a registered attention function, in its attention dropout. On a GPU
and in eval mode torch's own kernels run; masks come from the global torch generator, so seeding
and checkpointed RNG state cover them as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

ATTENTION = "finetune_sdpa"


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool mask of ``shape``, each element True with probability 1 - p (p rounded to 1/65536)."""
    n = shape.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(torch.iinfo(torch.int64).min, None)
    quarters = words.view(torch.int16)[:n]  # four uniform 16-bit integers per 64-bit word
    return (quarters >= round(p * 65536) - 32768).view(shape)


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of a CPU tensor: zero with probability p, scale the rest by 1 / (1 - p)."""
    if p == 0:
        return x
    if p == 1:
        return x * 0
    return x * keep_mask(x.shape, p) * (1 / (1 - p))


class FastDropout(nn.Dropout):
    """``nn.Dropout`` that draws its CPU masks with ``keep_mask``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu":
            return super().forward(x)
        return fast_dropout(x, self.p)


def attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except a training step on the CPU: softmax(q k^T * scale +
    mask), dropout with ``keep_mask``, times v (what SDPA's own math path computes)."""
    if not (module.training and dropout > 0 and query.device.type == "cpu"):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query * scale, key.transpose(2, 3))
    if attention_mask is not None:
        scores = (
            scores.masked_fill(~attention_mask, float("-inf"))
            if attention_mask.dtype == torch.bool
            else scores + attention_mask
        )
    probs = fast_dropout(torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype), dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Swap every ``nn.Dropout`` of ``model`` for ``FastDropout`` and its attention for ``attention``,
    in place (nothing saved changes: dropout has no weights, the attention choice is not saved)."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p).train(child.training))
    try:
        model.base_model.set_attn_implementation(ATTENTION)
    except ValueError:  # an architecture without SDPA support keeps its own attention
        pass
    return model
