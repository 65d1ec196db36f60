"""The training loop in plain PyTorch, written once for the native and the Accelerate runs.

It reads like its pseudo-code: batches -> forward -> loss -> backward -> (every k micro-batches)
clip, optimizer step, scheduler step -> log -> checkpoint; evaluate after each epoch. What
differs between running alone and under Accelerate (moving batches, backward, gradient sync,
gathering predictions, saving state) sits behind a small runtime interface:
``NativeRuntime`` is plain torch, ``finetune.distributed.AccelerateRuntime`` is Accelerate.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, get_scheduler

from finetune.checkpoint import load_checkpoint, save_checkpoint
from finetune.config import TrainConfig
from finetune.data import set_epoch
from finetune.interrupt import StopRequest, TrainingInterruptedError
from finetune.metrics import compute_metrics
from finetune.modeling import classification_loss
from finetune.tasks import GlueTask

# ----------------------------------------------------------------------------- devices


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu, unless a device is named."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA GPU")
    return torch.device(name)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype: on a GPU bf16 where supported, else fp16; none on the CPU."""
    if precision == "no" or device.type != "cuda":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- runtime


class NativeRuntime:
    """Plain PyTorch on one device: autocast on GPU, a GradScaler for fp16, accumulation by counting."""

    world_size = 1
    distributed_type = "NO"
    is_main_process = True

    def __init__(self, device: torch.device, precision: str, accumulation_steps: int) -> None:
        self.device = device
        self.dtype = autocast_dtype(device, precision)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self.accumulation_steps = accumulation_steps
        self.sync_gradients = True
        self._micro_step = 0
        self._objects: dict[str, Any] = {}

    def prepare(self, model: PreTrainedModel, optimizer: Any, *loaders: DataLoader) -> tuple:
        model.to(self.device)
        self._objects.update(model=model, optimizer=optimizer)
        return (model, optimizer, *loaders)

    def prepare_scheduler(self, scheduler: Any) -> Any:
        self._objects["scheduler"] = scheduler
        return scheduler

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in batch.items()}

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @contextlib.contextmanager
    def accumulate(self, model: PreTrainedModel, last_in_epoch: bool) -> Iterator[None]:
        self._micro_step += 1
        self.sync_gradients = last_in_epoch or self._micro_step % self.accumulation_steps == 0
        yield
        if self.sync_gradients:
            self._micro_step = 0

    def backward(self, loss: torch.Tensor) -> None:
        loss = loss / self.accumulation_steps  # so k micro-batches sum to one batch's mean gradient
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def clip_grad_norm(self, params: list[torch.nn.Parameter], max_norm: float) -> float | None:
        """Clip the gradients; return their norm before clipping (None under fp16 loss scaling,
        where an overflow is expected now and then and the scaler skips that step itself)."""
        if self.scaler:
            self.scaler.unscale_(self._objects["optimizer"])
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        return None if self.scaler else norm

    def optimizer_step(self, optimizer: Any) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def all_finite(self, loss: torch.Tensor) -> bool:
        return bool(torch.isfinite(loss))

    def any_process(self, flag: bool) -> bool:
        return flag

    def gather_for_metrics(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def skip_first_batches(self, loader: DataLoader, n: int) -> Any:
        """The loader's batches after the first ``n`` (they are collated, never run through the model)."""
        it = iter(loader)
        for _ in range(n):
            next(it)
        return it

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, directory: Path) -> None:
        state = {name: obj.state_dict() for name, obj in self._objects.items()}
        if self.scaler:
            state["scaler"] = self.scaler.state_dict()
        state["rng"] = rng_state()
        torch.save(state, directory / "state.pt")

    def load_state(self, directory: Path) -> None:
        state = torch.load(directory / "state.pt", weights_only=False)
        for name, obj in self._objects.items():
            obj.load_state_dict(state[name])
        if self.scaler:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])


# ----------------------------------------------------------------------------- pieces


def build_optimizer(model: PreTrainedModel, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and LayerNorm weights get no weight decay."""
    no_decay = {
        id(p)
        for module in model.modules()
        for name, p in module.named_parameters(recurse=False)
        if name == "bias" or isinstance(module, torch.nn.LayerNorm)
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) not in no_decay], "weight_decay": weight_decay},
        {"params": [p for p in trainable if id(p) in no_decay], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def training_step(model: PreTrainedModel, batch: dict[str, torch.Tensor], runtime: Any) -> torch.Tensor:
    """One micro-batch: forward, loss, backward. Returns the loss (detached)."""
    with runtime.autocast():
        loss = model(**batch).loss
    runtime.backward(loss)
    return loss.detach()


def log_line(message: str) -> None:
    """Print a line above the progress bar (never glued onto it), at once."""
    tqdm.write(message)
    sys.stdout.flush()


@torch.no_grad()
def evaluate(
    model: PreTrainedModel, loader: DataLoader, task: GlueTask, runtime: Any, progress: bool = False
) -> dict[str, float] | None:
    """The task's metrics and mean loss over ``loader`` (every example counted once, across
    processes too); None for an unlabeled split."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in tqdm(loader, desc="evaluating", leave=False, disable=not progress):
        batch = runtime.to_device(batch)
        with runtime.autocast():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        all_logits.append(runtime.gather_for_metrics(logits.float()).cpu())
        all_labels.append(runtime.gather_for_metrics(batch["labels"]).cpu())
    model.train()
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    if not task.is_regression and bool((labels < 0).all()):
        return None  # a test split without labels
    metrics = compute_metrics(task, logits.numpy(), labels.numpy())
    metrics["loss"] = float(classification_loss(logits, labels, getattr(model, "module", model).config))
    metrics["examples"] = len(labels)
    return metrics


class NonFiniteError(FloatingPointError):
    """The loss, the gradients or the weights stopped being finite numbers."""


def check_finite_weights(model: torch.nn.Module, step: int) -> None:
    """Refuse to save weights holding NaN or infinity."""
    bad = next((n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())), None)
    if bad is not None:
        raise NonFiniteError(f"step {step}: the weights are not finite ({bad}); nothing saved: lower --lr")


@dataclass
class LoopResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    train_runtime_s: float = 0.0
    samples_seen: int = 0
    optimizer_steps: int = 0
    batches_seen: int = 0  # micro-batches this process ran through the model
    resumed_from: str | None = None


def train_loop(
    model: PreTrainedModel,
    train_loader: DataLoader,
    eval_loader: DataLoader,
    task: GlueTask,
    cfg: TrainConfig,
    runtime: Any,
    output_dir: Path | None = None,
    resume_from: Path | None = None,
    stop: StopRequest | None = None,
) -> LoopResult:
    """Fine-tune ``model`` for ``cfg.epochs`` epochs; evaluate on ``eval_loader`` after each;
    with ``cfg.save_steps`` write a checkpoint every that many optimizer steps, and one when
    ``stop`` is raised by a signal (then raise TrainingInterruptedError)."""
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    model, optimizer, train_loader, eval_loader = runtime.prepare(model, optimizer, train_loader, eval_loader)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum_steps)
    total_steps = math.ceil(steps_per_epoch * cfg.epochs)
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    scheduler = runtime.prepare_scheduler(get_scheduler("linear", optimizer, warmup, total_steps))
    params = [p for p in model.parameters() if p.requires_grad]

    result, window, start_epoch, skip = LoopResult(), [], 0, 0
    if resume_from is not None:
        progress = load_checkpoint(runtime, resume_from)
        result.history, window = progress["history"], progress["window"]
        result.optimizer_steps, result.samples_seen = progress["optimizer_steps"], progress["samples_seen"]
        start_epoch, skip = progress["epoch"], progress["batch_in_epoch"]
        result.resumed_from = str(resume_from)
        if runtime.is_main_process:
            log_line(
                f"resumed from {resume_from}: epoch {start_epoch + 1}, {skip} batches in, step {result.optimizer_steps}"
            )

    def checkpoint(epoch: int, batches_done: int) -> Path:
        """Save everything needed to go on from here: after ``batches_done`` batches of ``epoch``."""
        check_finite_weights(model, result.optimizer_steps)
        progress = {
            "epoch": epoch, "batch_in_epoch": batches_done, "optimizer_steps": result.optimizer_steps,
            "samples_seen": result.samples_seen, "history": result.history, "window": window,
        }  # fmt: skip
        return save_checkpoint(
            runtime, output_dir, result.optimizer_steps, cfg.to_dict(), progress, cfg.save_total_limit
        )

    def stop_if_asked(epoch: int, batches_done: int) -> None:
        if stop is not None and runtime.any_process(stop.signum is not None):
            saved = checkpoint(epoch, batches_done) if output_dir is not None else None
            raise TrainingInterruptedError(stop.signum or signal.SIGTERM, result.optimizer_steps, saved)

    model.train()
    start = time.perf_counter()
    show = not cfg.disable_tqdm and runtime.is_main_process
    progress_bar = tqdm(total=total_steps, initial=result.optimizer_steps, desc="training", disable=not show)
    for epoch in range(start_epoch, math.ceil(cfg.epochs)):
        set_epoch(train_loader, epoch)
        first = skip if epoch == start_epoch else 0
        batches = runtime.skip_first_batches(train_loader, first) if first else train_loader
        for i, batch in enumerate(batches, start=first):
            batch = runtime.to_device(batch)
            step = result.optimizer_steps + 1
            with runtime.accumulate(model, last_in_epoch=i + 1 == len(train_loader)):
                loss = training_step(model, batch, runtime)
                if not runtime.all_finite(loss):
                    raise NonFiniteError(
                        f"step {step} (epoch {epoch + 1}, batch {i + 1}): the training loss is {float(loss)}; "
                        "stopped before the optimizer step, the last checkpoint is good: lower --lr"
                    )
                window.append(float(loss))
                result.samples_seen += len(batch["labels"]) * runtime.world_size
                result.batches_seen += 1
                if runtime.sync_gradients:
                    norm = runtime.clip_grad_norm(params, cfg.max_grad_norm)
                    if norm is not None and not math.isfinite(norm):
                        raise NonFiniteError(
                            f"step {step} (epoch {epoch + 1}, batch {i + 1}): the gradient norm is {norm}; "
                            "stopped before the optimizer step, the last checkpoint is good: lower --lr"
                        )
                    runtime.optimizer_step(optimizer)
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    result.optimizer_steps += 1
                    progress_bar.update(1)
            if not runtime.sync_gradients:
                continue
            if result.optimizer_steps % cfg.logging_steps == 0:
                entry = {
                    "step": result.optimizer_steps,
                    "epoch": round(epoch + (i + 1) / len(train_loader), 4),
                    "loss": sum(window) / len(window),
                    "learning_rate": scheduler.get_last_lr()[0],
                }
                window = []
                result.history.append(entry)
                progress_bar.set_postfix(loss=f"{entry['loss']:.4f}")
            if cfg.save_steps and result.optimizer_steps % cfg.save_steps == 0 and output_dir is not None:
                checkpoint(epoch, i + 1)
            stop_if_asked(epoch, i + 1)
            if result.optimizer_steps >= total_steps:
                break
        metrics = evaluate(model, eval_loader, task, runtime, progress=show)
        result.history.append({"step": result.optimizer_steps, "epoch": epoch + 1, "validation": metrics})
        if runtime.is_main_process:
            log_line(f"epoch {epoch + 1}: validation {format_metrics(metrics)}")
        if result.optimizer_steps >= total_steps:
            break
        stop_if_asked(epoch + 1, 0)
    progress_bar.close()
    result.train_runtime_s = time.perf_counter() - start
    return result


def format_metrics(metrics: dict[str, float] | None) -> str:
    """``accuracy=0.8113 f1=0.8702 loss=0.4329`` for the epoch's log line."""
    if metrics is None:
        return "(no labels)"
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "examples")
