"""What the native loop and the Accelerate loop share besides the training itself: the pieces they
call (optimizer, schedule, evaluation) and ``Progress``, the bookkeeping of where training stands.

``Progress`` hands out the epochs and batches still to do (skipping those a resumed run has
seen), checks each loss and gradient norm before the optimizer step, logs the mean loss, says when
an evaluation is due and records it (the best model, early stopping: ``finetune/selection.py``),
writes checkpoints (every ``--save-steps``, and when SIGTERM or Ctrl-C asks to stop), and restores
all of it from a checkpoint. The loops call it at a few points, so each reads like the course's loop.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import skip_first_batches
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, get_scheduler

from finetune.checkpoint import load_progress, save_checkpoint
from finetune.config import TrainConfig
from finetune.data import set_epoch
from finetune.errors import NonFiniteError
from finetune.evaluation import score
from finetune.interrupt import StopRequest, TrainingInterruptedError
from finetune.modeling import layer_depths
from finetune.selection import ModelSelection
from finetune.tasks import GlueTask
from finetune.tracking import Tracker, eval_scalars


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


# ----------------------------------------------------------------------------- pieces both loops call


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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, batches_per_epoch: int) -> Any:
    """Linear warmup over ``cfg.warmup_ratio`` of the optimizer steps, then linear decay to 0."""
    total = total_steps(cfg, batches_per_epoch)
    return get_scheduler("linear", optimizer, math.ceil(cfg.warmup_ratio * total), total)


def total_steps(cfg: TrainConfig, batches_per_epoch: int) -> int:
    return math.ceil(math.ceil(batches_per_epoch / cfg.grad_accum_steps) * cfg.epochs)


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


def is_evaluation_step(cfg: TrainConfig, step: int, total_steps: int, epoch_ended: bool) -> bool:
    """``--eval-strategy`` after optimizer step ``step``: each epoch's end (``epoch``), every
    ``--eval-steps`` (``steps``), and the last step in both; never (``no``). Every loop asks this."""
    if cfg.eval_strategy == "no":
        return False
    if step >= total_steps:
        return True
    return step % cfg.eval_steps == 0 if cfg.eval_strategy == "steps" else epoch_ended


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


def recipe_line(cfg: TrainConfig, precision: str, device: str) -> str:
    return (
        f"{cfg.task}: lr {cfg.lr:g}, batch {cfg.batch_size} x {cfg.grad_accum_steps} accumulation, "
        f"{cfg.epochs:g} epochs, warmup {cfg.warmup_ratio:g}, precision {precision}, device {device}"
    )


# ----------------------------------------------------------------------------- the bookkeeping


class Progress:
    """Where training stands, and everything done at its step boundaries."""

    def __init__(
        self,
        cfg: TrainConfig,
        batches_per_epoch: int,
        output_dir: Path | None,
        stop: StopRequest | None,
        save_state: Callable[[Path], None],
        *,
        world_size: int = 1,
        is_main: bool = True,
        any_process: Callable[[bool], bool] = lambda flag: flag,
        wait_for_everyone: Callable[[], None] = lambda: None,
    ) -> None:
        self.cfg, self.batches_per_epoch, self.output_dir, self.stop = cfg, batches_per_epoch, output_dir, stop
        self.save_state, self.world_size, self.is_main = save_state, world_size, is_main
        self.any_process, self.wait_for_everyone = any_process, wait_for_everyone
        self.total_steps = total_steps(cfg, batches_per_epoch)
        self.result = LoopResult(world_size=world_size)
        self.window: list[float] = []  # losses since the last log line
        self.epoch = self.batch = self.start_epoch = self.skip = 0
        self.show = not cfg.disable_tqdm and is_main
        self.bar: Any = None
        self.clock = SegmentClock()
        self.selection = ModelSelection(cfg.best_metric(), cfg.load_best_model_at_end, cfg.early_stopping_patience)
        self.tracker = Tracker(cfg.report_to, output_dir, cfg.to_dict(), is_main)

    def resume(self, path: Path, load_state: Callable[[Path], None]) -> None:
        """Restore the states (``load_state``) and the position saved in checkpoint ``path``."""
        load_state(path)
        saved = load_progress(path)
        self.selection.load(path, saved.get("selection"))
        self.result.history, self.window = saved["history"], saved["window"]
        self.result.optimizer_steps, self.result.samples_seen = saved["optimizer_steps"], saved["samples_seen"]
        self.start_epoch, self.skip = saved["epoch"], saved["batch_in_epoch"]
        self.clock.earlier = saved.get("train_segments_s", [])  # none in checkpoints written before it was kept
        self.result.resumed_from = str(path)
        if self.is_main:
            log_line(
                f"resumed from {path}: epoch {self.start_epoch + 1}, {self.skip} batches in, step "
                f"{self.result.optimizer_steps}"
            )

    @property
    def finished(self) -> bool:
        return self.result.optimizer_steps >= self.total_steps or self.result.stopped_early

    def epochs(self) -> Iterator[int]:
        """The epochs still to run (until the last optimizer step)."""
        self.clock.start()
        self.bar = tqdm(
            total=self.total_steps, initial=self.result.optimizer_steps, desc="training", disable=not self.show
        )
        for epoch in range(self.start_epoch, math.ceil(self.cfg.epochs)):
            self.epoch = epoch
            yield epoch
            if self.finished:
                break
        self.bar.close()
        self.tracker.finish()
        self.result.train_segments_s = self.clock.segments()

    def load_best_model(self, model: PreTrainedModel) -> None:
        """With ``--load-best-model-at-end``: the best evaluation's weights back into ``model``."""
        self.result.best = restore_best_model(self.selection, model, self.is_main)

    def batches(self, loader: DataLoader) -> Iterator[tuple[int, Any]]:
        """(index, batch) of this epoch's batches not yet trained on; the sampler's order is
        (seed, epoch)'s, so a resumed run sees what the uninterrupted one saw. Accelerate's
        ``skip_first_batches`` skips the seen ones without collating them: the same batches, and
        the loader's generator drawn from as often (tests/finetune/test_library_parts.py)."""
        set_epoch(loader, self.epoch)
        first = self.skip if self.epoch == self.start_epoch else 0
        for i, batch in enumerate(skip_first_batches(loader, first) if first else loader, start=first):
            self.batch = i
            yield i, batch
            if self.finished:
                return

    def ends_accumulation(self) -> bool:
        """True at the micro-batch after which the optimizer steps (every k, and the epoch's last)."""
        i = self.batch + 1
        return i % self.cfg.grad_accum_steps == 0 or i == self.batches_per_epoch

    def record_loss(self, loss: torch.Tensor, examples: int) -> None:
        """Check one micro-batch's loss (on every process) before its backward, and keep it for the log."""
        if self.any_process(not bool(torch.isfinite(loss))):
            self._fail(f"the training loss is {float(loss)}")
        self.window.append(float(loss))
        self.result.samples_seen += examples * self.world_size
        self.result.batches_seen += 1

    def check_grad_norm(self, norm: torch.Tensor | float | None) -> None:
        """Stop before the optimizer step if the gradient norm is not finite (None: fp16 loss
        scaling is on, whose scaler skips an overflowing step by itself)."""
        if norm is not None and not math.isfinite(float(norm)):
            self._fail(f"the gradient norm is {float(norm)}")

    def _fail(self, what: str) -> None:
        raise NonFiniteError(
            f"step {self.result.optimizer_steps + 1} (epoch {self.epoch + 1}, batch {self.batch + 1}): {what}; "
            "stopped before the optimizer step, the last checkpoint is good: lower --lr"
        )

    def step_done(self, model: PreTrainedModel, learning_rate: float) -> None:
        """After an optimizer step: the progress bar, the log, a checkpoint when due, a stop when asked."""
        result = self.result
        result.optimizer_steps += 1
        self.bar.update(1)
        if result.optimizer_steps % self.cfg.logging_steps == 0:
            entry = {
                "step": result.optimizer_steps,
                "epoch": round(self.epoch + (self.batch + 1) / self.batches_per_epoch, 4),
                "loss": sum(self.window) / len(self.window),
                "learning_rate": learning_rate,
            }
            self.window = []
            result.history.append(entry)
            self.tracker.log({"train/loss": entry["loss"], "train/learning_rate": learning_rate}, entry["step"])
            self.bar.set_postfix(loss=f"{entry['loss']:.4f}")
        if not self.evaluation_due():  # else after the evaluation, so that a checkpoint includes it
            self._checkpoint_or_stop(model)

    def evaluation_due(self) -> bool:
        """True right after the optimizer step that ends an epoch (``--eval-strategy epoch``) or
        completes ``--eval-steps`` steps (``steps``), and after the last step (unless ``no``)."""
        if not self.ends_accumulation():
            return False
        epoch_ended = self.batch + 1 == self.batches_per_epoch
        return is_evaluation_step(self.cfg, self.result.optimizer_steps, self.total_steps, epoch_ended)

    def evaluated(self, model: PreTrainedModel, metrics: dict[str, float]) -> None:
        """After an evaluation: the history, the log line, the best model, early stopping, then
        the step's checkpoint or stop."""
        steps = self.result.optimizer_steps
        epoch = round(self.epoch + (self.batch + 1) / self.batches_per_epoch, 4)
        self.result.history.append({"step": steps, "epoch": epoch, "validation": metrics})
        self.tracker.log(eval_scalars(metrics), steps)
        by_steps, more_steps = self.cfg.eval_strategy == "steps", steps < self.total_steps
        if judge_evaluation(self.selection, model, metrics, steps, epoch, by_steps, more_steps, self.is_main):
            self.result.stopped_early = True
        if not self.finished:
            self._checkpoint_or_stop(model)

    def _checkpoint_or_stop(self, model: PreTrainedModel) -> None:
        if self.cfg.save_steps and self.result.optimizer_steps % self.cfg.save_steps == 0:
            self.checkpoint(model, self.epoch, self.batch + 1)
        self._stop_if_asked(model, self.epoch, self.batch + 1)

    def checkpoint(self, model: PreTrainedModel, epoch: int, batches_done: int) -> Path | None:
        """Save everything needed to go on from here: after ``batches_done`` batches of ``epoch``."""
        if self.output_dir is None:
            return None
        check_finite_weights(model, self.result.optimizer_steps)
        position = {
            "epoch": epoch, "batch_in_epoch": batches_done, "optimizer_steps": self.result.optimizer_steps,
            "samples_seen": self.result.samples_seen, "history": self.result.history, "window": self.window,
            "selection": self.selection.state(), "train_segments_s": self.clock.segments(),
        }  # fmt: skip

        def save_state(folder: Path) -> None:
            self.save_state(folder)
            if self.is_main:
                self.selection.save(folder)

        return save_checkpoint(
            self.output_dir, self.result.optimizer_steps, self.cfg.to_dict(), position, self.cfg.save_total_limit,
            save_state, self.is_main, self.wait_for_everyone,
        )  # fmt: skip

    def _stop_if_asked(self, model: PreTrainedModel, epoch: int, batches_done: int) -> None:
        if self.stop is not None and self.any_process(self.stop.signum is not None):
            saved = self.checkpoint(model, epoch, batches_done)
            raise TrainingInterruptedError(self.stop.signum or signal.SIGTERM, self.result.optimizer_steps, saved)
