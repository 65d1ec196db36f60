"""The one place finetune touches private members of the Hugging Face ``Trainer``, each because an
exact resume needs it and no public hook reaches it.

Private members change between transformers releases without notice, so pyproject.toml pins
transformers to the range this was tested with (``TESTED_TRANSFORMERS``), and
``tests/finetune/test_trainer_adapter.py`` fails, saying so, when the installed version is outside it.
Everything else of the Trainer path (``finetune/trainer_loop.py``) goes through public names:
``TrainingArguments``, callbacks, ``training_step``, ``log``, ``state``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from finetune.checkpoint import PREFIX
from finetune.data import train_sampler
from finetune.files import write_json

TESTED_TRANSFORMERS = ">=5.25,<5.26"  # pyproject.toml's requirement; tested with 5.25.0


class ResumableTrainer(Trainer):
    """The Trainer with finetune's training order and a log that resumes exactly.

    - With ``length_grouped``, the training order is finetune's length-grouped sampler, fixed by
      (seed, epoch), the native loop's; the Trainer's own ``LengthGroupedSampler`` draws its
      mega-batches from a generator that runs on across epochs, so a run resumed at an epoch
      boundary would see another order, and its order is not the reference grid's.
    - Its checkpoints keep the loss summed since the last log line. The Trainer does not save it,
      so a run resumed between two log lines would log a different loss at the next one.
    """

    UNLOGGED_LOSS_FILE = "unlogged_loss.json"
    length_grouped: bool = False

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        # private: the Trainer takes a sampler only here (the public get_train_dataloader builds its
        # loader through the private _get_dataloader, which this keeps as it is)
        if not self.length_grouped:
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return train_sampler(dataset, self.args.train_batch_size, self.args.data_seed, group_by_length=True)

    def train(self, resume_from_checkpoint: str | None = None, **kwargs: Any) -> Any:
        """``Trainer.train``, first reading the log window the checkpoint saved (if any)."""
        saved = Path(resume_from_checkpoint or "") / self.UNLOGGED_LOSS_FILE
        self._unlogged_loss = json.loads(saved.read_text()) if resume_from_checkpoint and saved.exists() else None
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        """``Trainer.training_step``; the first one after resuming puts the saved log window back."""
        if self._unlogged_loss is not None:
            # private: the loss summed since the last log line and that line's step; the Trainer
            # resets both when it resumes, and no public name sets them
            sums = self._unlogged_loss["per_process"]
            if len(sums) == self.args.world_size:
                self._tr_loss += sums[self.args.process_index]
                self._globalstep_last_logged = self._unlogged_loss["since_step"]
            self._unlogged_loss = None
        return super().training_step(model, inputs, num_items_in_batch)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        # private: the hook that runs on every process (the gather is collective) inside the save,
        # before on_save, where FinetuneCallback seals the folder with progress.json
        super()._save_checkpoint(model, trial)
        sums = self.accelerator.gather(self._tr_loss.detach().reshape(1)).tolist()  # every process's window
        if self.args.should_save:
            folder = Path(self.args.output_dir) / f"{PREFIX}{self.state.global_step}"
            record = {"per_process": sums, "since_step": self._globalstep_last_logged}
            write_json(folder / self.UNLOGGED_LOSS_FILE, record)
