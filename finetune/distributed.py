"""Running the same loop under Hugging Face Accelerate (DDP over torch.distributed; FSDP or
DeepSpeed where ``accelerate config`` sets them up), on one process or many.

Launch lines that work (see the README): ``torchrun --nproc_per_node N -m finetune train --loop
accelerate ...`` and ``accelerate launch [--multi_gpu] --num_processes N -m finetune train --loop
accelerate ...``. On a machine without a GPU the Accelerator must be told to use the CPU, or a
two-process launch silently trains two independent single-process copies; ``make_accelerator``
does that and checks the world size it got against the launcher's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel

from finetune.config import ConfigError


def launched_world_size() -> int:
    """How many processes the launcher (torchrun / accelerate launch) started; 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_launch_main_process() -> bool:
    """True in the launcher's process of rank 0 (or without a launcher): the one that owns the run directory."""
    return int(os.environ.get("RANK", "0")) == 0


def check_single_process_loop(loop: str) -> None:
    """The native loop is one process; under a multi-process launcher it would silently run N copies."""
    if launched_world_size() > 1 and loop == "native":  # (the Trainer joins the process group itself)
        raise ConfigError(
            f"--loop {loop} runs one process, but the launcher started {launched_world_size()}: "
            "use --loop accelerate (or --loop trainer) under torchrun / accelerate launch"
        )


def make_accelerator(accumulation_steps: int, precision: str) -> Any:
    from accelerate import Accelerator

    kwargs: dict[str, Any] = {
        "gradient_accumulation_steps": accumulation_steps,
        "step_scheduler_with_optimizer": False,  # the scheduler counts optimizer steps, as in the native loop
        # without a GPU, use the CPU (gloo) explicitly: otherwise a multi-process launch makes N
        # independent world-size-1 runs
        "cpu": not torch.cuda.is_available(),
    }
    if precision in ("bf16", "fp16", "no"):
        kwargs["mixed_precision"] = precision  # else: whatever the launcher / accelerate config says
    accelerator = Accelerator(**kwargs)
    if accelerator.num_processes != launched_world_size():
        raise ConfigError(
            f"the launcher started {launched_world_size()} processes but Accelerate formed a group of "
            f"{accelerator.num_processes}: check the launch line (see the README's distributed section)"
        )
    return accelerator


class AccelerateRuntime:
    """The loop's runtime interface on top of ``accelerate.Accelerator``."""

    def __init__(self, accumulation_steps: int, precision: str) -> None:
        self.accelerator = make_accelerator(accumulation_steps, precision)
        self.device = self.accelerator.device
        self.world_size = self.accelerator.num_processes
        self.distributed_type = str(self.accelerator.distributed_type).split(".")[-1]
        self.is_main_process = self.accelerator.is_main_process

    def prepare(self, model: PreTrainedModel, optimizer: Any, *loaders: DataLoader) -> tuple:
        return self.accelerator.prepare(model, optimizer, *loaders)

    def prepare_scheduler(self, scheduler: Any) -> Any:
        return self.accelerator.prepare(scheduler)

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return batch  # prepared dataloaders already place batches

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.accelerator.autocast()

    @contextlib.contextmanager
    def accumulate(self, model: PreTrainedModel, last_in_epoch: bool) -> Iterator[None]:
        with self.accelerator.accumulate(model):
            yield

    @property
    def sync_gradients(self) -> bool:
        return self.accelerator.sync_gradients

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)  # divides by the accumulation steps itself

    def clip_grad_norm(self, params: list[torch.nn.Parameter], max_norm: float) -> float | None:
        """Clip the (synchronised) gradients; their norm before clipping, None under fp16 loss scaling."""
        norm = float(self.accelerator.clip_grad_norm_(params, max_norm))
        return None if self.accelerator.scaler is not None else norm

    def optimizer_step(self, optimizer: Any) -> None:
        optimizer.step()

    def all_finite(self, loss: torch.Tensor) -> bool:
        """True only if the loss is finite on every process, so all of them stop together."""
        flags = self.accelerator.gather(torch.isfinite(loss).reshape(1).float())
        return bool(flags.min() > 0)

    def any_process(self, flag: bool) -> bool:
        """True if ``flag`` is set on any process (a signal may reach them at different steps)."""
        if self.world_size == 1:
            return flag
        return bool(self.accelerator.gather(torch.tensor([float(flag)], device=self.device)).max() > 0)

    def gather_for_metrics(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.gather_for_metrics(tensor)

    def skip_first_batches(self, loader: DataLoader, n: int) -> Any:
        return self.accelerator.skip_first_batches(loader, n)

    def wait_for_everyone(self) -> None:
        self.accelerator.wait_for_everyone()

    def save_state(self, directory: Path) -> None:
        self.accelerator.save_state(str(directory))

    def load_state(self, directory: Path) -> None:
        self.accelerator.load_state(str(directory))

    def unwrap(self, model: PreTrainedModel) -> PreTrainedModel:
        return self.accelerator.unwrap_model(model)
