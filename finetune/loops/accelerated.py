"""Running the same loop under Hugging Face Accelerate (DDP over torch.distributed; FSDP2 with
``--fsdp``, ``finetune/model/sharding.py``; FSDP or DeepSpeed where ``accelerate config`` sets them up
on GPUs), on one process or many.

Launch lines that work (see the README): ``torchrun --nproc_per_node N -m finetune train --loop
accelerate ...`` and ``accelerate launch [--multi_gpu] --num_processes N -m finetune train --loop
accelerate ...``. On a machine without a GPU the Accelerator must be told to use the CPU, or a
two-process launch silently trains two independent single-process copies; ``make_accelerator``
does that and checks the world size it got against the launcher's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import PreTrainedModel

from finetune.config import LoopSettings
from finetune.data.glue import RunData
from finetune.data.tasks import GlueTask
from finetune.errors import ConfigError
from finetune.loops.common import (
    LoopResult,
    build_optimizer,
    build_scheduler,
    evaluate,
    log_line,
    recipe_line,
)
from finetune.loops.progress import Progress
from finetune.model.devices import autocast_dtype, describe_device
from finetune.run.interrupt import StopRequest
from finetune.run.launch import launched_world_size

if TYPE_CHECKING:
    from finetune.model.sharding import Sharded


def make_accelerator(accumulation_steps: int, precision: str) -> Any:
    from accelerate import Accelerator

    kwargs: dict[str, Any] = {
        "gradient_accumulation_steps": accumulation_steps,
        "step_scheduler_with_optimizer": False,  # the scheduler counts optimizer steps, as in the native loop
        # without a GPU, use the CPU (gloo) explicitly: otherwise a multi-process launch makes N
        # independent world-size-1 runs
        "cpu": not torch.cuda.is_available(),
    }
    if precision != "auto":
        kwargs["mixed_precision"] = precision
    elif "ACCELERATE_MIXED_PRECISION" not in os.environ:  # no launcher / accelerate config setting: our rule
        dtype = autocast_dtype(torch.device("cuda" if torch.cuda.is_available() else "cpu"), "auto")
        kwargs["mixed_precision"] = {None: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    accelerator = Accelerator(**kwargs)
    if accelerator.num_processes != launched_world_size():
        raise ConfigError(
            f"the launcher started {launched_world_size()} processes but Accelerate formed a group of "
            f"{accelerator.num_processes}: check the launch line (see the README's distributed section)"
        )
    return accelerator


def train_accelerate(
    model: PreTrainedModel,
    data: RunData,
    task: GlueTask,
    settings: LoopSettings,
    output_dir: Path | None = None,
    resume_from: Path | None = None,
    stop: StopRequest | None = None,
) -> LoopResult:
    """``finetune.loops.native.train_native`` under Accelerate: the differences are the course's —
    ``prepare``, ``accelerator.accumulate``/``backward``/``clip_grad_norm_``, and gathering for metrics."""
    recipe = settings.recipe
    accelerator = make_accelerator(recipe.grad_accum_steps, settings.hardware.mixed_precision)
    fused = accelerator.device.type in ("cpu", "cuda")
    sharded = shard(model, settings.hardware.fsdp, accelerator)
    optimizer = build_optimizer(model, recipe.lr, recipe.weight_decay, fused, recipe.layer_lr_decay)  # over the shards
    if sharded is None:
        model, optimizer, train_loader, eval_loader = accelerator.prepare(
            model, optimizer, data.loader("train"), data.loader("validation")
        )
        scheduler = accelerator.prepare(build_scheduler(optimizer, recipe, len(train_loader)))  # per-process batches
        save_state, load_state = accelerator.save_state, accelerator.load_state
    else:  # Accelerate saves the scheduler and the RNGs, Sharded the model's and optimizer's shards
        train_loader, eval_loader = accelerator.prepare(data.loader("train"), data.loader("validation"))
        scheduler = build_scheduler(optimizer, recipe, len(train_loader))
        accelerator.register_for_checkpointing(scheduler)

        def save_state(folder: Path) -> None:
            accelerator.save_state(folder)
            sharded.save(folder, optimizer)

        def load_state(folder: Path) -> None:
            accelerator.load_state(folder)
            sharded.load(folder, optimizer)

    params = [p for p in model.parameters() if p.requires_grad]

    progress = Progress(
        settings, len(train_loader), output_dir, stop, save_state, world_size=accelerator.num_processes,
        is_main=accelerator.is_main_process, any_process=lambda flag: any_process(accelerator, flag),
        wait_for_everyone=accelerator.wait_for_everyone,
    )  # fmt: skip
    if resume_from is not None:
        progress.resume(resume_from, load_state)
    precision = {"no": "fp32"}.get(accelerator.mixed_precision, accelerator.mixed_precision)
    if accelerator.is_main_process:
        log_line(recipe_line(task, recipe, precision, f"{accelerator.device} x {accelerator.num_processes} processes"))
    model.train()
    for _epoch in progress.epochs():
        for _, batch in progress.batches(train_loader):
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                progress.record_loss(loss.detach(), len(batch["labels"]))
                accelerator.backward(loss)  # divides by the accumulation steps itself
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(params, recipe.max_grad_norm)
                    if sharded is not None:
                        norm = sharded.global_norm(norm)
                    progress.check_grad_norm(None if accelerator.scaler is not None else norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    progress.step_done(model, scheduler.get_last_lr()[0])
                    if progress.evaluation_due():
                        gather = accelerator.gather_for_metrics
                        progress.evaluated(
                            model, evaluate(model, eval_loader, task, gather=gather, progress=progress.show)
                        )
    progress.load_best_model(model)

    result = progress.result
    result.model = accelerator.unwrap_model(model) if sharded is None else sharded.gathered()
    result.precision = precision
    result.distributed_type = str(accelerator.distributed_type).split(".")[-1] if sharded is None else "FSDP"
    result.device = describe_device(accelerator.device)
    return result


def shard(model: PreTrainedModel, mode: str | None, accelerator: Any) -> Sharded | None:
    """``--fsdp``: shard ``model`` over the processes (None: no ``--fsdp``, or one process, which has
    nothing to shard: that is said, and it trains as usual)."""
    if not mode:
        return None
    if accelerator.num_processes == 1:
        if accelerator.is_main_process:
            log_line(
                f"--fsdp {mode}: one process has nothing to shard, training without it (launch several: "
                "torchrun --nproc_per_node N -m finetune train --loop accelerate ...)"
            )
        return None
    if accelerator.mixed_precision == "fp16":  # the loss scaler works on the optimizer Accelerate prepares
        raise ConfigError(f"--fsdp {mode} trains in bf16 or float32, not fp16: pass --mixed-precision bf16 or no")
    from finetune.model.sharding import Sharded  # torch.distributed.checkpoint is slow to import

    return Sharded(model, mode, accelerator.mixed_precision, accelerator.device)


def any_process(accelerator: Any, flag: bool) -> bool:
    """True if ``flag`` is set on any process (a signal may reach them at different steps)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.gather(torch.tensor([float(flag)], device=accelerator.device)).max() > 0)
