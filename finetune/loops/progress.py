"""``Progress``: the bookkeeping of where training stands, shared by the native and Accelerate loops.

It hands out the epochs and batches still to do (skipping those a resumed run has seen), checks
each loss and gradient norm before the optimizer step, logs the mean loss, says when an evaluation
is due and records it (the best model, early stopping: ``finetune/loops/selection.py``), writes
checkpoints (every ``--save-steps``, and when SIGTERM or Ctrl-C asks to stop), and restores all of
it from a checkpoint. The loops call it at a few points, so each reads like the course's loop.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import skip_first_batches
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from finetune.config import LoopSettings
from finetune.data.glue import set_epoch
from finetune.errors import NonFiniteError
from finetune.loops.common import (
    LoopResult,
    SegmentClock,
    check_finite_weights,
    is_evaluation_step,
    judge_evaluation,
    log_line,
    restore_best_model,
    total_steps,
)
from finetune.loops.selection import ModelSelection
from finetune.loops.tracking import Tracker, eval_scalars
from finetune.run.checkpoint import load_progress, save_checkpoint
from finetune.run.interrupt import StopRequest, TrainingInterruptedError


class Progress:
    """Where training stands, and everything done at its step boundaries."""

    def __init__(
        self,
        settings: LoopSettings,
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
        self.settings, self.batches_per_epoch = settings, batches_per_epoch
        self.output_dir, self.stop = output_dir, stop
        self.save_state, self.world_size, self.is_main = save_state, world_size, is_main
        self.any_process, self.wait_for_everyone = any_process, wait_for_everyone
        self.total_steps = total_steps(settings.recipe, batches_per_epoch)
        self.result = LoopResult(world_size=world_size)
        self.window: list[float] = []  # losses since the last log line
        self.epoch = self.batch = self.start_epoch = self.skip = 0
        self.show = not settings.logging.disable_tqdm and is_main
        self.bar: Any = None
        self.clock = SegmentClock()
        plan = settings.validation
        self.selection = ModelSelection(settings.best_metric, plan.load_best_model_at_end, plan.early_stopping_patience)
        self.tracker = Tracker(settings.logging.report_to, output_dir, settings.run_name, settings.record, is_main)

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
        for epoch in range(self.start_epoch, math.ceil(self.settings.recipe.epochs)):
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
        return i % self.settings.recipe.grad_accum_steps == 0 or i == self.batches_per_epoch

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
        if result.optimizer_steps % self.settings.logging.logging_steps == 0:
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
        return is_evaluation_step(self.settings.validation, self.result.optimizer_steps, self.total_steps, epoch_ended)

    def evaluated(self, model: PreTrainedModel, metrics: dict[str, float]) -> None:
        """After an evaluation: the history, the log line, the best model, early stopping, then
        the step's checkpoint or stop."""
        steps = self.result.optimizer_steps
        epoch = round(self.epoch + (self.batch + 1) / self.batches_per_epoch, 4)
        self.result.history.append({"step": steps, "epoch": epoch, "validation": metrics})
        self.tracker.log(eval_scalars(metrics), steps)
        by_steps, more_steps = self.settings.validation.eval_strategy == "steps", steps < self.total_steps
        if judge_evaluation(self.selection, model, metrics, steps, epoch, by_steps, more_steps, self.is_main):
            self.result.stopped_early = True
        if not self.finished:
            self._checkpoint_or_stop(model)

    def _checkpoint_or_stop(self, model: PreTrainedModel) -> None:
        save_steps = self.settings.checkpoints.save_steps
        if save_steps and self.result.optimizer_steps % save_steps == 0:
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
            self.output_dir, self.result.optimizer_steps, self.settings.record, position,
            self.settings.checkpoints.save_total_limit, save_state, self.is_main, self.wait_for_everyone,
        )  # fmt: skip

    def _stop_if_asked(self, model: PreTrainedModel, epoch: int, batches_done: int) -> None:
        if self.stop is not None and self.any_process(self.stop.signum is not None):
            saved = self.checkpoint(model, epoch, batches_done)
            raise TrainingInterruptedError(self.stop.signum or signal.SIGTERM, self.result.optimizer_steps, saved)
