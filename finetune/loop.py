"""The training loop in plain PyTorch, read top to bottom like the Hugging Face course's loop:
for each batch: forward, loss, backward; every k micro-batches: clip, optimizer step, scheduler
step, and evaluate when due (after each epoch by default); at the end, the best model if asked.
``finetune/distributed.py`` is the same loop under Accelerate. ``Progress`` (``finetune/run.py``)
keeps the books: checks, log, evaluations, checkpoints, stopping, resuming.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from finetune.config import TrainConfig
from finetune.data import RunData
from finetune.interrupt import StopRequest
from finetune.run import LoopResult, Progress, build_optimizer, build_scheduler, evaluate, log_line, recipe_line
from finetune.tasks import GlueTask


def train_native(
    model: PreTrainedModel,
    data: RunData,
    task: GlueTask,
    cfg: TrainConfig,
    output_dir: Path | None = None,
    resume_from: Path | None = None,
    stop: StopRequest | None = None,
) -> LoopResult:
    """Fine-tune ``model`` on one device; evaluate on validation after each epoch (or as
    ``--eval-strategy`` says). (``finetune.train`` measures the saved model on every split.)"""
    device = pick_device(cfg.device)
    dtype = autocast_dtype(device, cfg.mixed_precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16 only: scale the loss
    model.to(device)
    train_loader, eval_loader = data.loader("train"), data.loader("validation")
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, device.type in ("cpu", "cuda"), cfg.layer_lr_decay)
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    params = [p for p in model.parameters() if p.requires_grad]
    states = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}

    progress = Progress(cfg, len(train_loader), output_dir, stop, lambda folder: save_state(folder, states))
    if resume_from is not None:
        progress.resume(resume_from, lambda folder: load_state(folder, states))
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    log_line(recipe_line(cfg, precision, describe(device)))
    progress.result.device, progress.result.precision = describe(device), precision
    model.train()
    for _epoch in progress.epochs():
        for _, batch in progress.batches(train_loader):
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = model(**batch).loss
            progress.record_loss(loss.detach(), len(batch["labels"]))
            scaler.scale(loss / cfg.grad_accum_steps).backward()  # k micro-batches sum to one batch's mean
            if progress.ends_accumulation():
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                progress.check_grad_norm(None if scaler.is_enabled() else norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                progress.step_done(model, scheduler.get_last_lr()[0])
                if progress.evaluation_due():  # each epoch's end, or every --eval-steps
                    progress.evaluated(model, evaluate(model, eval_loader, task, device, dtype, progress=progress.show))
    progress.load_best_model(model)
    progress.result.model = model
    return progress.result


# ----------------------------------------------------------------------------- device and state


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


def describe(device: torch.device) -> str:
    """The device as results.json records it."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def save_state(folder: Path, states: dict[str, Any]) -> None:
    """Model, optimizer, scheduler, loss scaler and every RNG state, in ``folder/state.pt``: only
    tensors, numbers, strings and containers, so that ``torch.load(weights_only=True)`` reads it
    and loading it can run no code (NumPy's RNG state goes in as a list of numbers)."""
    state = {name: obj.state_dict() for name, obj in states.items()}
    numpy_rng = np.random.get_state(legacy=False)
    numpy_rng["state"]["key"] = numpy_rng["state"]["key"].tolist()
    state["rng"] = {"python": random.getstate(), "numpy": numpy_rng, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, folder / "state.pt")


def load_state(folder: Path, states: dict[str, Any]) -> None:
    state = torch.load(folder / "state.pt", weights_only=True)  # tensors and plain data only: no code runs
    for name, obj in states.items():
        obj.load_state_dict(state[name])
    random.setstate(state["rng"]["python"])
    numpy_rng = state["rng"]["numpy"]
    numpy_rng["state"]["key"] = np.array(numpy_rng["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_rng)
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
