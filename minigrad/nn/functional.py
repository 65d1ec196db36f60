"""Losses and layers as functions, composed from minigrad's differentiable ops (so their
gradients come from the engine, not from hand-written formulas)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from minigrad import ops
from minigrad.errors import ShapeError, TargetError
from minigrad.functional import cat
from minigrad.tensor import Tensor, generator, where


def _reduce(loss: Tensor, reduction: str, count: Any = None) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / (count if count is not None else max(loss.numel(), 1))
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def cross_entropy(
    input: Tensor,  # noqa: A002 - torch's names
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy of logits ``input`` (N, C) against class indices ``target`` (N,) or class
    probabilities (N, C), as torch's: ``weight`` (C,) weighs each class (the mean divides by the
    targets' total weight), targets equal to ``ignore_index`` count for nothing,
    ``label_smoothing`` mixes the target with the uniform distribution. Also one sample, input
    (C,), and more dims, input (N, C, d1, ...) against target (N, d1, ...) or (N, C, d1, ...):
    each place is a sample of its own."""
    rows, target, shape = _class_rows("cross_entropy", input, target, probabilities=target.dtype.kind == "f")
    log_probs = rows.log_softmax(-1)
    classes = rows.shape[1]
    if target.dtype.kind == "f":  # probabilities
        probs = target * (1 - label_smoothing) + label_smoothing / classes
        weighted = log_probs if weight is None else log_probs * weight
        return _reduce(-(probs * weighted).sum(-1).reshape(shape), reduction, count=rows.shape[0])
    keep, safe = _labels("cross_entropy", target, classes, ignore_index)
    w = Tensor(np.ones(classes, dtype=input.dtype)) if weight is None else weight
    w_target = w.gather(0, safe) * Tensor(keep.astype(input.dtype))
    loss = -log_probs.gather(1, safe.unsqueeze(1)).squeeze(1) * w_target
    if label_smoothing:
        smooth = -(log_probs * w).sum(-1) / classes * Tensor(keep.astype(input.dtype))
        loss = (1 - label_smoothing) * loss + label_smoothing * smooth
    return _reduce(loss.reshape(shape), reduction, count=w_target.sum())


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100,  # noqa: A002
             reduction: str = "mean") -> Tensor:  # fmt: skip
    """Negative log-likelihood of log-probabilities ``input`` (N, C) at class indices ``target``
    (N,); as cross_entropy, also (C,) against () and (N, C, d1, ...) against (N, d1, ...)."""
    rows, target, shape = _class_rows("nll_loss", input, target, probabilities=False)
    keep, safe = _labels("nll_loss", target, rows.shape[1], ignore_index)
    w = Tensor(np.ones(rows.shape[1], dtype=input.dtype)) if weight is None else weight
    w_target = w.gather(0, safe) * Tensor(keep.astype(input.dtype))
    loss = -rows.gather(1, safe.unsqueeze(1)).squeeze(1) * w_target
    return _reduce(loss.reshape(shape), reduction, count=w_target.sum())


def _class_rows(name: str, input: Tensor, target: Tensor, probabilities: bool) -> tuple[Tensor, Tensor, tuple]:  # noqa: A002
    """The scores as rows (samples, C), the class dim last: (C,) is one sample, (N, C, d1, ...)
    N d1 ... samples; the target the same way (probabilities as rows, indices flat); and the shape
    of the unreduced loss, () or (N, d1, ...)."""
    loss_shape = input.shape[:1] + input.shape[2:] if input.ndim > 1 else ()
    wanted = input.shape if probabilities else loss_shape
    if input.ndim == 0 or target.shape != wanted:
        kind = "probabilities" if probabilities else "class indices"
        raise ShapeError(
            f"{name}: input {input.shape} (C,), (N, C) or (N, C, d1, ...) needs a target of shape "
            f"{wanted} ({kind}), got {target.shape}"
        )
    classes = input.shape[1] if input.ndim > 1 else input.shape[0]

    def as_rows(t: Tensor) -> Tensor:
        return t.reshape(1, classes) if t.ndim == 1 else t.movedim(1, -1).reshape(-1, classes)

    return as_rows(input), as_rows(target) if probabilities else target.reshape(-1), loss_shape


def _labels(name: str, target: Tensor, classes: int, ignore_index: int) -> tuple[np.ndarray, Tensor]:
    """Which targets count (not ``ignore_index``), and the targets with the ignored ones set to 0;
    a counted target outside [0, classes) is refused, naming it (torch's IndexError)."""
    labels = np.asarray(target.data, dtype=np.int64)
    keep = labels != ignore_index
    bad = labels[keep & ((labels < 0) | (labels >= classes))]
    if bad.size:
        raise TargetError(
            f"{name}: target {bad[0]} is out of bounds: class indices must be in [0, {classes}) "
            f"(or ignore_index={ignore_index})"
        )
    return keep, Tensor(np.where(keep, labels, 0))


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    return _reduce((input - target).abs(), reduction)


def smooth_l1_loss(input: Tensor, target: Tensor, reduction: str = "mean", beta: float = 1.0) -> Tensor:  # noqa: A002
    """0.5 d^2 / beta where |d| < beta, else |d| - beta / 2 (Huber's loss, scaled)."""
    diff = (input - target).abs()
    if beta == 0:
        return _reduce(diff, reduction)
    return _reduce(where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta), reduction)


def kl_div(input: Tensor, target: Tensor, reduction: str = "mean", log_target: bool = False) -> Tensor:  # noqa: A002
    """KL(target || exp(input)) pointwise, input being log-probabilities: target (log target - input),
    0 where target is 0. ``batchmean`` divides the sum by the batch size (the KL divergence)."""
    if log_target:
        pointwise = target.exp() * (target - input)
    else:
        positive = target.data > 0
        log_t = where(positive, target, 1).log()
        pointwise = where(positive, target * (log_t - input), 0 * input)
    if reduction == "batchmean":
        return pointwise.sum() / (input.shape[0] if input.ndim else 1)
    return _reduce(pointwise, reduction)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """sum(x1 x2) / max(|x1| |x2|, eps), along ``dim``, after broadcasting the two."""
    shape = np.broadcast_shapes(x1.shape, x2.shape)
    x1, x2 = x1.expand(*shape), x2.expand(*shape)
    dot = (x1 * x2).sum(dim)
    norms = ((x1 * x1).sum(dim) * (x2 * x2).sum(dim)).clamp(min=eps * eps).sqrt()
    return dot / norms


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:  # noqa: A002
    """input / max(||input||_p, eps) along ``dim``."""
    return input / input.norm(p, dim, keepdim=True).clamp(min=eps)


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:  # noqa: A002
    """Rows of ``weight`` at the integer ``input``; the ``padding_idx`` row gets no gradient."""
    idx = np.asarray(input.data if isinstance(input, Tensor) else input, dtype=np.int64)
    rows = weight[idx]
    if padding_idx is None:
        return rows
    return where((idx == padding_idx)[..., None], rows.detach(), rows)


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 (..., num_classes) with a 1 at each index (num_classes -1: the largest index + 1)."""
    idx = np.asarray(tensor.data, dtype=np.int64)
    n = int(idx.max()) + 1 if num_classes == -1 else num_classes
    return Tensor((idx[..., None] == np.arange(n)).astype(np.int64))


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Any = None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None) -> Tensor:  # fmt: skip
    """softmax(q k^T * scale + mask) v, as torch's: a bool mask keeps where True, a float mask is
    added; ``is_causal`` keeps each query to the keys at or before it; ``dropout_p`` drops
    attention weights (in training: pass 0 in eval, as torch)."""
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query.matmul(key.transpose(-2, -1)) * scale
    if is_causal:
        scores = scores.masked_fill(~np.tri(query.shape[-2], key.shape[-2], dtype=bool), float("-inf"))
    if attn_mask is not None:
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else np.asarray(attn_mask)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == bool else scores + attn_mask
    return dropout(scores.softmax(-1), dropout_p).matmul(value)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    diff = input - target
    return _reduce(diff * diff, reduction)


def binary_cross_entropy_with_logits(
    input: Tensor,  # noqa: A002
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """-(w (p t log s(x) + (1 - t) log(1 - s(x)))) written as (1 - t) x + (1 + (p - 1) t) softplus(-x),
    stable for any x; ``pos_weight`` p weighs the positive class, ``weight`` w each element."""
    if pos_weight is None:
        loss = ops.Softplus.apply(input) - target * input
    else:
        loss = (1 - target) * input + (1 + (pos_weight - 1) * target) * ops.Softplus.apply(-input)
    return _reduce(loss if weight is None else loss * weight, reduction)


def silu(input: Tensor) -> Tensor:  # noqa: A002
    return input * input.sigmoid()


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:  # noqa: A002
    """log(1 + e^(beta x)) / beta, and x itself where beta x > threshold (as torch)."""
    return where(input * beta > threshold, input, ops.Softplus.apply(input * beta) / beta)


def leaky_relu(input: Tensor, negative_slope: float = 0.01) -> Tensor:  # noqa: A002
    return where(input > 0, input, input * negative_slope)


def elu(input: Tensor, alpha: float = 1.0) -> Tensor:  # noqa: A002
    return ops.Elu.apply(input, alpha)


def logsigmoid(input: Tensor) -> Tensor:  # noqa: A002
    return -ops.Softplus.apply(-input)


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:  # noqa: A002
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity in eval;
    p = 1 zeros everything, as torch)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0
    draw_dtype = input.dtype if input.dtype in (np.float32, np.float64) else np.float64
    keep = generator().random(input.shape, dtype=draw_dtype) >= p
    return input * Tensor(np.multiply(keep, 1 / (1 - p), dtype=input.dtype))


def gelu(input: Tensor, approximate: str = "none") -> Tensor:  # noqa: A002
    """The exact GELU, x * Phi(x) = x/2 (1 + erf(x / sqrt 2)), as torch and BERT use it; with
    ``approximate="tanh"`` GPT-2's x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if approximate == "tanh":
        return input * 0.5 * (1 + (math.sqrt(2 / math.pi) * (input + 0.044715 * input * input * input)).tanh())
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return ops.Gelu.apply(input)


def relu(input: Tensor) -> Tensor:  # noqa: A002
    return input.relu()


def layer_norm(
    input: Tensor,  # noqa: A002
    normalized_shape: tuple[int, ...],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize over the last ``len(normalized_shape)`` dims (biased variance), then scale and shift."""
    normalized_shape = tuple(normalized_shape)
    if input.shape[-len(normalized_shape) :] != normalized_shape:
        raise ShapeError(f"layer_norm: input shape {input.shape} does not end with {normalized_shape}")
    dims = tuple(range(input.ndim - len(normalized_shape), input.ndim))
    return ops.LayerNorm.apply(input, weight, bias, dims, eps)


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:  # noqa: A002
    """Pad with ``value`` (mode "constant"), or with the input's own elements: "reflect" mirrors
    it about its edge elements, "replicate" repeats the edge elements, "circular" wraps around.
    ``pad`` is (left, right) for the last dim, then (top, bottom) for the one before, and so on,
    as torch's; a negative amount crops."""
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ShapeError(f"pad: {len(pad)} amounts for a {input.ndim}-D tensor (two per padded dim, from the last)")
    if mode in ("reflect", "replicate", "circular"):
        return _pad_from_input(input, pad, mode)
    if mode != "constant":
        raise NotImplementedError(f"pad: mode={mode!r} is not supported (constant, reflect, replicate, circular)")
    value = 0.0 if value is None else value
    out = input
    for i in range(len(pad) // 2):
        d, (before, after) = input.ndim - 1 - i, pad[2 * i : 2 * i + 2]
        n = out.shape[d]
        out = out.narrow(d, max(-before, 0), n - max(-before, 0) - max(-after, 0))
        sides = []
        for amount in (max(before, 0), max(after, 0)):
            shape = list(out.shape)
            shape[d] = amount
            sides.append(Tensor(np.full(shape, value, dtype=out.dtype)))
        out = cat([sides[0], out, sides[1]], d)
    return out


def _pad_from_input(input: Tensor, pad: Sequence[int], mode: str) -> Tensor:  # noqa: A002
    """Pad by picking, for each place j of the padded dim (-before <= j < n + after; a negative
    amount crops), an element of the input: j itself inside, and outside the mirror image
    (reflect), the nearest edge (replicate) or j mod n (circular). Picking is indexing, so the
    gradient adds back up."""
    out = input
    for i in range(len(pad) // 2):
        d, (before, after) = input.ndim - 1 - i, pad[2 * i : 2 * i + 2]
        if mode == "circular":  # torch crops by the negative amounts first, then wraps around what is left
            cut = max(-before, 0), max(-after, 0)
            out = out.narrow(d, cut[0], out.shape[d] - sum(cut))
            before, after = max(before, 0), max(after, 0)
        n = out.shape[d]
        limit = {"reflect": n - 1, "replicate": np.inf if n else 0, "circular": n}[mode]
        if max(before, after) > limit:
            raise ShapeError(f"pad: mode={mode!r} pads dim {d} of size {n} by at most {limit}, got {before, after}")
        places = np.arange(-before, n + after)
        if mode == "reflect":
            places = np.where(places < 0, -places, np.where(places >= n, 2 * (n - 1) - places, places))
        else:
            places = np.clip(places, 0, n - 1) if mode == "replicate" else places % max(n, 1)
        out = out.index_select(d, places)
    return out


def _windows(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]) -> Tensor:
    """Every kernel-sized window of an (N, C, H, W) tensor: (N, C, H_out, W_out, kh, kw), by
    indexing (so the gradient of each window flows back to its pixels, overlaps adding up)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    h_out = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    w_out = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    if h_out <= 0 or w_out <= 0:
        raise ShapeError(f"the kernel {kernel} (dilation {dilation}) is larger than the input's {x.shape[2:]}")
    rows = (np.arange(h_out) * sh)[:, None] + np.arange(kh) * dh  # (h_out, kh)
    cols = (np.arange(w_out) * sw)[:, None] + np.arange(kw) * dw  # (w_out, kw)
    patches = x[:, :, rows[:, :, None, None], cols[None, None, :, :]]  # (N, C, h_out, kh, w_out, kw)
    return patches.permute(0, 1, 2, 4, 3, 5)


def _pair(v: Any) -> tuple[int, int]:
    """One number for both spatial dims, or (height, width); a 1-tuple counts as one number."""
    v = (v,) if isinstance(v, int) else tuple(v)
    return (v[0], v[0]) if len(v) == 1 else v


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,  # noqa: A002
           dilation: Any = 1, groups: int = 1) -> Tensor:  # fmt: skip
    """2-D cross-correlation of (N, C, H, W) with weight (O, C / groups, kh, kw): each window,
    flattened, times the flattened kernels (im2col), so the gradients come from indexing and
    matmul. With ``groups`` the channels split into that many groups, each with its own O / groups
    kernels: one batched matmul over the groups."""
    if input.ndim == 3:  # one unbatched image (C, H, W)
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0)
    n, c = input.shape[:2]
    out_channels, group_channels = weight.shape[:2]
    if c % groups or out_channels % groups or group_channels * groups != c:
        raise ShapeError(
            f"conv2d: weight {weight.shape} with groups={groups} expects {group_channels * groups} input channels "
            f"(and out channels divisible by groups); the input {input.shape} has {c}"
        )
    if padding == "same":  # as much as the kernel overhangs, the odd one out on the right (torch's)
        overhang = [d * (k - 1) for d, k in zip(_pair(dilation), weight.shape[2:])]
        amounts = (overhang[1] // 2, overhang[1] - overhang[1] // 2, overhang[0] // 2, overhang[0] - overhang[0] // 2)
    else:
        ph, pw = _pair(0 if padding == "valid" else padding)
        amounts = (pw, pw, ph, ph)
    x = pad(input, amounts) if any(amounts) else input
    windows = _windows(x, tuple(weight.shape[2:]), _pair(stride), _pair(dilation))  # (N, C, Ho, Wo, kh, kw)
    h_out, w_out, kh, kw = windows.shape[2:]
    columns = (
        windows.reshape(n, groups, group_channels, h_out, w_out, kh, kw)
        .permute(0, 1, 3, 4, 2, 5, 6)
        .reshape(n, groups, h_out * w_out, group_channels * kh * kw)
    )
    kernels = weight.reshape(groups, out_channels // groups, -1)
    out = (columns @ kernels.mT).permute(0, 1, 3, 2).reshape(n, out_channels, h_out, w_out)
    return out if bias is None else out + bias.reshape(-1, 1, 1)


def _pool_padding(
    size: tuple[int, int], kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool
) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding of a pooling: ``padding`` on each side, and with
    ``ceil_mode`` more on the right and bottom for a last, partial window, as long as that window
    starts inside the input or the left padding (torch's rule)."""
    amounts = []
    for n, k, s, p, d in zip(size, _pair(kernel), _pair(stride), _pair(padding), _pair(dilation)):
        span, reach = n + 2 * p - d * (k - 1) - 1, 0
        if ceil_mode and span >= 0:
            windows = -(-span // s) + 1
            if (windows - 1) * s >= n + p:
                windows -= 1
            reach = max((windows - 1) * s - span, 0)
        amounts.append((p, p + reach))
    (top, bottom), (left, right) = amounts
    return left, right, top, bottom


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,  # noqa: A002
               ceil_mode: bool = False, return_indices: bool = False) -> Any:  # fmt: skip
    """The largest value of each window (padding counts as -inf); its gradient goes to that element.
    ``return_indices``: also where each maximum is, as an index into the flattened H x W input."""
    if input.ndim == 3:  # one unbatched image (C, H, W)
        out = max_pool2d(input.unsqueeze(0), kernel_size, stride, padding, dilation, ceil_mode, return_indices)
        return tuple(t.squeeze(0) for t in out) if return_indices else out.squeeze(0)
    stride = stride or kernel_size
    amounts = _pool_padding(input.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    x = pad(input, amounts, value=float("-inf"))
    windows = _windows(x, _pair(kernel_size), _pair(stride), _pair(dilation))
    values, picked = windows.reshape(*windows.shape[:4], -1).max(-1)
    if not return_indices:
        return values
    h, w = input.shape[2:]
    places = Tensor(np.arange(h * w).reshape(1, 1, h, w))  # each pixel's flat index, padding -1
    place_windows = _windows(pad(places, amounts, value=-1), _pair(kernel_size), _pair(stride), _pair(dilation))
    flat = place_windows.data.reshape(*place_windows.shape[:4], -1)
    return values, Tensor(np.take_along_axis(flat, picked.data[..., None], -1)[..., 0])


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,  # noqa: A002
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:  # fmt: skip
    """The mean of each window: its sum over the number of its places in the padded input
    (``count_include_pad``) or in the input only, or over ``divisor_override``. The extra
    places ``ceil_mode`` adds count for nothing."""
    if input.ndim == 3:  # one unbatched image (C, H, W)
        return avg_pool2d(
            input.unsqueeze(0), kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        ).squeeze(0)
    kernel, stride = _pair(kernel_size), _pair(stride or kernel_size)
    amounts = _pool_padding(input.shape[2:], kernel, stride, padding, 1, ceil_mode)
    windows = _windows(pad(input, amounts), kernel, stride, (1, 1))
    sums = windows.reshape(*windows.shape[:4], -1).sum(-1)
    if divisor_override:
        return sums / divisor_override
    (ph, pw), (h, w), (left, right, top, bottom) = _pair(padding), input.shape[2:], amounts
    counted = np.zeros((1, 1, top + h + bottom, left + w + right), input.dtype)  # 1 where a place counts
    if count_include_pad:
        counted[..., : h + 2 * ph, : w + 2 * pw] = 1
    else:
        counted[..., top : top + h, left : left + w] = 1
    counts = _windows(Tensor(counted), kernel, stride, (1, 1)).data.sum((-2, -1))
    return sums / Tensor(counts)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002
    """x W^T + b, as torch's ``addmm(b, x, W^T)``. A batch of sequences (b, n, in) is multiplied as
    one (b n, in) matrix: one BLAS call, and the weight's gradient is one (in, b n) @ (b n, out)
    product, not b of them summed."""
    rows = input.reshape(-1, input.shape[-1]) if input.ndim > 2 else input
    if rows.ndim != 2:  # a single vector
        out = rows @ weight.mT
        return out + bias if bias is not None else out
    out = rows.mm(weight.t()) if bias is None else ops.Addmm.apply(bias, rows, weight.t(), 1, 1)
    return out.reshape(*input.shape[:-1], weight.shape[0]) if input.ndim > 2 else out
