"""Where a run computes: the device (``--device``), the autocast dtype (``--mixed-precision``), and
how results.json names the device. The three loops and the evaluation of a saved run ask here."""

from __future__ import annotations

import os

import torch


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu, unless a device is named (``TrainConfig.validate`` has checked
    that a named one exists)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``--mixed-precision``: ``auto`` takes bf16 where the hardware computes
    in it (a GPU that has it, a CPU with AVX512-BF16 or AMX), fp16 on older GPUs, none elsewhere;
    ``bf16``, ``fp16`` and ``no`` force it (``TrainConfig.validate`` refuses fp16 without a GPU).
    Weights and optimizer state stay float32 either way."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU multiplies bf16 in hardware (elsewhere bf16 is emulated, slower than fp32)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def describe_device(device: torch.device) -> str:
    """The device as results.json records it."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
