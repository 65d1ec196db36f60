"""The training loop in plain PyTorch, read top to bottom like the Hugging Face course's loop:
for each batch: forward, loss, backward; every k micro-batches: clip, optimizer step, scheduler
step, and evaluate when due (after each epoch by default); at the end, the best model if asked.
``accelerated.py`` beside it is the same loop under Accelerate. ``Progress`` (``progress.py``) keeps
the books: checks, log, evaluations, checkpoints, stopping, resuming.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from finetune.config import LoopSettings
from finetune.data.glue import RunData
from finetune.data.tasks import GlueTask
from finetune.loops.common import (
    LoopResult,
    build_optimizer,
    build_scheduler,
    evaluate,
    log_line,
    recipe_line,
)
from finetune.loops.progress import Progress
from finetune.model.devices import autocast_dtype, describe_device, pick_device
from finetune.run.interrupt import StopRequest


def train_native(
    model: PreTrainedModel,
    data: RunData,
    task: GlueTask,
    settings: LoopSettings,
    output_dir: Path | None = None,
    resume_from: Path | None = None,
    stop: StopRequest | None = None,
) -> LoopResult:
    """Fine-tune ``model`` on one device; evaluate on validation after each epoch (or as
    ``--eval-strategy`` says). (``finetune.train`` measures the saved model on every split.)"""
    recipe, hardware = settings.recipe, settings.hardware
    device = pick_device(hardware.device)
    dtype = autocast_dtype(device, hardware.mixed_precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16 only: scale the loss
    model.to(device)
    train_loader, eval_loader = data.loader("train"), data.loader("validation")
    fused = device.type in ("cpu", "cuda")  # one kernel for the whole AdamW update
    optimizer = build_optimizer(model, recipe.lr, recipe.weight_decay, fused, recipe.layer_lr_decay)
    scheduler = build_scheduler(optimizer, recipe, len(train_loader))
    params = [p for p in model.parameters() if p.requires_grad]
    states = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}

    progress = Progress(settings, len(train_loader), output_dir, stop, lambda folder: save_state(folder, states))
    if resume_from is not None:
        progress.resume(resume_from, lambda folder: load_state(folder, states))
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    log_line(recipe_line(task, recipe, precision, describe_device(device)))
    progress.result.device, progress.result.precision = describe_device(device), precision
    model.train()
    for _epoch in progress.epochs():
        for _, batch in progress.batches(train_loader):
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = model(**batch).loss
            progress.record_loss(loss.detach(), len(batch["labels"]))
            scaler.scale(loss / recipe.grad_accum_steps).backward()  # k micro-batches sum to one batch's mean
            if progress.ends_accumulation():
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
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


# ----------------------------------------------------------------------------- state


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
