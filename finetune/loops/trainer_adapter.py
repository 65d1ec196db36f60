"""The Hugging Face ``Trainer`` with finetune's training order and a loss log that resumes exactly,
through public names only (``get_train_dataloader``, ``training_step``, ``log``, callbacks), so a
new transformers cannot break it by renaming an internal (``tests/finetune/test_public_api.py``
looks for private members; ``.ci/transformers-range`` runs the Trainer tests on the oldest and the
newest release pyproject.toml allows).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback

from finetune.data.glue import train_sampler
from finetune.run.checkpoint import PREFIX
from finetune.run.files import write_json


class ResumableTrainer(Trainer):
    """The Trainer with finetune's training order and a log that resumes exactly.

    - With ``length_grouped``, the training order is finetune's length-grouped sampler, fixed by
      (seed, epoch), the native loop's; the Trainer's own ``LengthGroupedSampler`` draws its
      mega-batches from a generator that runs on across epochs, so a run resumed at an epoch
      boundary would see another order, and its order is not the reference grid's.
    - The loss it logs is its own window: the sum of ``training_step``'s losses since the last log
      line, over the steps since then, averaged over the processes (the Trainer's own arithmetic,
      in the same float32 order). Each checkpoint keeps the window (``unlogged_loss.json``); the
      Trainer keeps its own but does not save it, so a run resumed between two log lines would
      log a different loss at the next one.
    """

    UNLOGGED_LOSS_FILE = "unlogged_loss.json"
    length_grouped: bool = False

    def __init__(self, *args: Any, callbacks: list[TrainerCallback] | None = None, **kwargs: Any) -> None:
        # first in line, so the window is in a checkpoint before any other callback seals it
        super().__init__(*args, callbacks=[SaveLossWindow(self), *(callbacks or [])], **kwargs)
        self.saved_window: dict[str, Any] | None = None
        self.loss_window: torch.Tensor | None = None  # this process's loss summed since the last log line
        self.window_start = 0  # the step of the last log line

    def get_train_dataloader(self) -> DataLoader:
        """The Trainer's loader, or with ``length_grouped`` one of the same make over finetune's sampler."""
        if not self.length_grouped:
            return super().get_train_dataloader()
        dataset = self.train_dataset
        if self.args.remove_unused_columns:  # as the Trainer does: only the columns the model's forward names
            accepted = {*inspect.signature(self.model.forward).parameters, "label", "label_ids", *self.label_names}
            dataset = dataset.select_columns([c for c in dataset.column_names if c in accepted])
        sampler = train_sampler(dataset, self.args.train_batch_size, self.args.data_seed, group_by_length=True)
        loader = DataLoader(
            dataset,
            batch_size=self.args.train_batch_size,
            sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            drop_last=self.args.dataloader_drop_last,
        )
        return self.accelerator.prepare(loader)

    def train(self, resume_from_checkpoint: str | None = None, **kwargs: Any) -> Any:
        """``Trainer.train``, first reading the log window the checkpoint saved (if any)."""
        saved = Path(resume_from_checkpoint or "") / self.UNLOGGED_LOSS_FILE
        self.saved_window = json.loads(saved.read_text()) if resume_from_checkpoint and saved.exists() else None
        self.loss_window = None
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        """``Trainer.training_step``, its loss added to the window (the first step after resuming
        starts from the window the checkpoint saved)."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.loss_window is None:
            self.loss_window, self.window_start = torch.tensor(0.0, device=loss.device), self.state.global_step
            sums = (self.saved_window or {}).get("per_process", [])
            if len(sums) == self.args.world_size:
                self.loss_window += sums[self.args.process_index]
                self.window_start = self.saved_window["since_step"]
        self.loss_window += loss
        return loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """``Trainer.log``, its training loss replaced by the window's (every process logs at once)."""
        if "loss" in logs and self.loss_window is not None:
            total = self.gathered_window().mean().item()
            logs["loss"] = total / (self.state.global_step - self.window_start)
            self.loss_window.zero_()
            self.window_start = self.state.global_step
        super().log(logs, *args, **kwargs)

    def gathered_window(self) -> torch.Tensor:
        """Every process's loss window, in process order (collective: each process calls it)."""
        window = self.loss_window if self.loss_window is not None else torch.zeros((), device=self.args.device)
        return self.accelerator.gather(window.detach().reshape(1))


class SaveLossWindow(TrainerCallback):
    """Writes the trainer's loss window into each checkpoint. ``on_save`` runs on every process
    (the gather is collective); the main one writes."""

    def __init__(self, trainer: ResumableTrainer) -> None:
        self.trainer = trainer

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        sums = self.trainer.gathered_window().tolist()
        if args.should_save:
            folder = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
            record = {"per_process": sums, "since_step": self.trainer.window_start}
            write_json(folder / ResumableTrainer.UNLOGGED_LOSS_FILE, record)
