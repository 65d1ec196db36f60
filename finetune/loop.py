"""The training loop in plain PyTorch, written once for the native and the Accelerate runs.

It reads like its pseudo-code: batches -> forward -> loss -> backward -> (every k micro-batches)
clip, optimizer step, scheduler step -> log; evaluate after each epoch. What differs between
running alone and under Accelerate (moving batches, backward, gradient sync, gathering
predictions) sits behind the small ``Runtime`` interface; ``NativeRuntime`` is plain torch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, get_scheduler

from finetune.config import TrainConfig
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
        self._micro_step = 0

    def prepare(self, model: PreTrainedModel, optimizer: Any, scheduler: Any, *loaders: DataLoader) -> tuple:
        model.to(self.device)
        return (model, optimizer, scheduler, *loaders)

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

    def clip_and_step(self, params: list[torch.nn.Parameter], optimizer: Any, max_norm: float) -> None:
        if self.scaler:
            self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def gather_for_metrics(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


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


@torch.no_grad()
def evaluate(model: PreTrainedModel, loader: DataLoader, task: GlueTask, runtime: Any) -> dict[str, float] | None:
    """The task's metrics and mean loss over ``loader``; None for an unlabeled split."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
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
    metrics["loss"] = float(classification_loss(logits, labels, model.config))
    metrics["examples"] = len(labels)
    return metrics


@dataclass
class LoopResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    train_runtime_s: float = 0.0
    samples_seen: int = 0
    optimizer_steps: int = 0


def train_loop(
    model: PreTrainedModel,
    train_loader: DataLoader,
    eval_loader: DataLoader,
    task: GlueTask,
    cfg: TrainConfig,
    runtime: Any,
    log: Callable[[str], None] = print,
) -> LoopResult:
    """Fine-tune ``model`` for ``cfg.epochs`` epochs; evaluate on ``eval_loader`` after each."""
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum_steps)
    total_steps = math.ceil(steps_per_epoch * cfg.epochs)
    scheduler = get_scheduler(
        "linear", optimizer, num_warmup_steps=math.ceil(cfg.warmup_ratio * total_steps), num_training_steps=total_steps
    )
    model, optimizer, scheduler, train_loader, eval_loader = runtime.prepare(
        model, optimizer, scheduler, train_loader, eval_loader
    )
    params = [p for p in model.parameters() if p.requires_grad]
    result = LoopResult()
    window: list[torch.Tensor] = []
    model.train()
    start = time.perf_counter()
    progress = tqdm(total=total_steps, desc="training", disable=not (cfg.show_progress and runtime.is_main_process))
    for epoch in range(math.ceil(cfg.epochs)):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        for i, batch in enumerate(train_loader):
            batch = runtime.to_device(batch)
            with runtime.accumulate(model, last_in_epoch=i + 1 == len(train_loader)):
                loss = training_step(model, batch, runtime)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"the training loss became {float(loss)} at step {result.optimizer_steps + 1} "
                        f"(epoch {epoch + 1}, batch {i + 1}): lower --lr or check the data"
                    )
                window.append(loss)
                result.samples_seen += len(batch["labels"]) * runtime.world_size
                if runtime.sync_gradients:
                    runtime.clip_and_step(params, optimizer, cfg.max_grad_norm)
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    result.optimizer_steps += 1
                    progress.update(1)
            if runtime.sync_gradients and result.optimizer_steps % cfg.logging_steps == 0:
                loss = float(torch.stack(window).float().mean())
                window.clear()
                entry = {
                    "step": result.optimizer_steps,
                    "epoch": round(epoch + (i + 1) / len(train_loader), 4),
                    "loss": loss,
                    "learning_rate": scheduler.get_last_lr()[0],
                }
                result.history.append(entry)
                progress.set_postfix(loss=f"{loss:.4f}")
            if result.optimizer_steps >= total_steps:
                break
        metrics = evaluate(model, eval_loader, task, runtime)
        result.history.append({"step": result.optimizer_steps, "epoch": epoch + 1, "validation": metrics})
        if runtime.is_main_process:
            log(f"epoch {epoch + 1}: validation {_short(metrics)}")
        if result.optimizer_steps >= total_steps:
            break
    progress.close()
    result.train_runtime_s = time.perf_counter() - start
    return result


def _short(metrics: dict[str, float] | None) -> str:
    if metrics is None:
        return "(no labels)"
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "examples")
