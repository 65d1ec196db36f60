"""The pieces every loop calls besides the training itself: what a loop hands back
(``LoopResult``), the optimizer, the schedule, the evaluation on validation, the evaluation
schedule and the best model's choice, the checks on weights, and the console lines.
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, get_scheduler

from finetune.analysis.evaluation import score
from finetune.config import RecipeSettings, ValidationSettings
from finetune.data.tasks import GlueTask
from finetune.errors import NonFiniteError
from finetune.loops.selection import ModelSelection
from finetune.model.modeling import layer_depths


@dataclass
class LoopResult:
    """What a loop hands back to ``finetune.train``."""

    model: PreTrainedModel | None = None  # the trained model, unwrapped
    history: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"  # the autocast dtype it trained and evaluated in: fp32, bf16 or fp16
    train_segments_s: list[float] = field(default_factory=list)  # seconds training: before each resume, then this
    samples_seen: int = 0
    optimizer_steps: int = 0
    batches_seen: int = 0  # micro-batches this process ran through the model
    resumed_from: str | None = None
    world_size: int = 1
    distributed_type: str = "NO"
    device: str = ""
    best: dict[str, Any] | None = None  # the best evaluation: step, epoch, metric, value
    stopped_early: bool = False

    @property
    def train_runtime_s(self) -> float:
        """The whole run's training time: the sum of its segments."""
        return sum(self.train_segments_s)


class SegmentClock:
    """Training time across resumes. A run stopped and resumed trains in segments: each checkpoint
    records the seconds of the segments so far (``train_segments_s``), and a run resumed from it
    starts with those (``earlier``) and adds its own. Time spent after the last checkpoint of a
    stopped segment is not counted: the resumed run does that work again, and its time counts there."""

    def __init__(self) -> None:
        self.earlier: list[float] = []
        self.started = time.perf_counter()

    def start(self) -> None:
        self.started = time.perf_counter()

    def segments(self) -> list[float]:
        """The earlier segments' seconds, then this one's so far."""
        return [*self.earlier, time.perf_counter() - self.started]


# ----------------------------------------------------------------------------- pieces the loops call


def build_optimizer(
    model: PreTrainedModel, lr: float, weight_decay: float, fused: bool = False, layer_lr_decay: float = 1.0
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and LayerNorm weights get no weight decay.
    ``layer_lr_decay`` < 1: a parameter k layers below the head learns at ``lr * layer_lr_decay**k``
    (the embeddings slowest). ``fused``: one kernel for the whole update (CPU and CUDA), several
    times faster than a loop of ops."""
    no_decay = {
        id(p)
        for module in model.modules()
        for name, p in module.named_parameters(recurse=False)
        if name == "bias" or isinstance(module, torch.nn.LayerNorm)
    }
    depths = layer_depths(model) if layer_lr_decay != 1 else {}
    top = max(depths.values(), default=0)
    groups: dict[tuple[bool, int], list[torch.nn.Parameter]] = defaultdict(list)
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[(id(p) in no_decay, depths.get(name, top))].append(p)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "weight_decay": 0.0 if exempt else weight_decay,
                "lr": lr * layer_lr_decay ** (top - depth),
            }
            for (exempt, depth), params in sorted(groups.items())
        ],
        lr=lr,
        fused=fused,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: RecipeSettings, batches_per_epoch: int) -> Any:
    """Linear warmup over ``recipe.warmup_ratio`` of the optimizer steps, then linear decay to 0."""
    total = total_steps(recipe, batches_per_epoch)
    return get_scheduler("linear", optimizer, math.ceil(recipe.warmup_ratio * total), total)


def total_steps(recipe: RecipeSettings, batches_per_epoch: int) -> int:
    return math.ceil(math.ceil(batches_per_epoch / recipe.grad_accum_steps) * recipe.epochs)


@torch.no_grad()
def evaluate(
    model: PreTrainedModel,
    loader: DataLoader,
    task: GlueTask,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    gather: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    progress: bool = False,
) -> dict[str, float] | None:
    """The task's metrics and mean loss over ``loader``; None for an unlabeled split. ``device``:
    where to move batches (None: they arrive there); ``dtype``: autocast, as in training;
    ``gather``: collects every process's share, each example once (Accelerate's ``gather_for_metrics``)."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in tqdm(loader, desc="evaluating", leave=False, disable=not progress):
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(batch["input_ids"].device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        all_logits.append(gather(logits.float()).cpu())
        all_labels.append(gather(batch["labels"]).cpu())
    model.train()
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    return score(task, logits.numpy(), labels.numpy(), getattr(model, "module", model).config)


def check_finite_weights(model: torch.nn.Module, step: int) -> None:
    """Refuse to save weights holding NaN or infinity."""
    bad = next((n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())), None)
    if bad is not None:
        raise NonFiniteError(f"step {step}: the weights are not finite ({bad}); nothing saved: lower --lr")


def is_evaluation_step(plan: ValidationSettings, step: int, total_steps: int, epoch_ended: bool) -> bool:
    """``--eval-strategy`` after optimizer step ``step``: each epoch's end (``epoch``), every
    ``--eval-steps`` (``steps``), and the last step in both; never (``no``). Every loop asks this."""
    if plan.eval_strategy == "no":
        return False
    if step >= total_steps:
        return True
    return step % plan.eval_steps == 0 if plan.eval_strategy == "steps" else epoch_ended


def judge_evaluation(
    selection: ModelSelection, model: PreTrainedModel, metrics: dict[str, float], step: int, epoch: float,
    by_steps: bool, more_steps: bool, show: bool = True,
) -> bool:  # fmt: skip
    """Rank one validation result (the best model so far, early stopping) and log it; True when
    training should stop early (no better evaluation in ``--early-stopping-patience`` of them)."""
    improved = selection.update(model, metrics, step, epoch)
    if show:
        where, mark = (
            (f"step {step}", f" (best {selection.metric} so far)" * improved) if by_steps else (f"epoch {epoch:g}", "")
        )
        log_line(f"{where}: validation {format_metrics(metrics)}{mark}")
    stop = selection.should_stop and more_steps
    if stop and show:
        log_line(
            f"early stopping at step {step}: validation {selection.metric} has not improved in "
            f"{selection.evaluations_without_improvement} evaluations"
        )
    return stop


def restore_best_model(
    selection: ModelSelection, model: PreTrainedModel, is_main: bool = True
) -> dict[str, Any] | None:
    """Put the best evaluation's weights into ``model`` if they were kept; return that evaluation."""
    if selection.weights is not None:
        selection.restore(model)
        if is_main:
            best = selection.best
            log_line(f"loaded the best model: step {best['step']}, validation {best['metric']} {best['value']:.4f}")
    return selection.best


def log_line(message: str) -> None:
    """Print a line above the progress bar (never glued onto it), at once."""
    tqdm.write(message)
    sys.stdout.flush()


def format_metrics(metrics: dict[str, float] | None) -> str:
    """``accuracy=0.8113 f1=0.8702 loss=0.4329`` for the epoch's log line."""
    if metrics is None:
        return "(no labels)"
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "examples")


def recipe_line(task: GlueTask, recipe: RecipeSettings, precision: str, device: str) -> str:
    return (
        f"{task.name}: lr {recipe.lr:g}, batch {recipe.batch_size} x {recipe.grad_accum_steps} accumulation, "
        f"{recipe.epochs:g} epochs, warmup {recipe.warmup_ratio:g}, precision {precision}, device {device}"
    )
