"""The same fine-tuning through the Hugging Face ``Trainer``, with the same hyperparameters,
freezing, evaluation code and safety checks as the native loop, so the two can be compared run for
run. The Trainer's own evaluation is off: a callback runs the loops' ``evaluate`` (``common.py``)
when ``--eval-strategy`` says, and keeps the best model and stops early with the loops'
``ModelSelection`` (``selection.py``), so the best model is chosen the same way in every loop; the console shows what
the native loop's does (``ConsoleCallback``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import (
    PreTrainedModel,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainingArguments,
)

from finetune.config import LoopSettings, ValidationSettings
from finetune.data.glue import RunData
from finetune.data.tasks import GlueTask
from finetune.errors import NonFiniteError
from finetune.loops.common import (
    LoopResult,
    SegmentClock,
    build_optimizer,
    check_finite_weights,
    evaluate,
    is_evaluation_step,
    judge_evaluation,
    log_line,
    recipe_line,
    restore_best_model,
)
from finetune.loops.selection import ModelSelection
from finetune.loops.tracking import eval_scalars, trainer_callback
from finetune.loops.trainer_adapter import ResumableTrainer
from finetune.model.devices import autocast_dtype, describe_device, pick_device
from finetune.run.checkpoint import PREFIX, load_progress, write_progress
from finetune.run.interrupt import StopRequest, TrainingInterruptedError
from finetune.run.launch import is_launch_main_process


def training_arguments(
    settings: LoopSettings, output_dir: str, device: torch.device, extra: dict[str, Any] | None = None
) -> TrainingArguments:
    """TrainingArguments mirroring the native loop's recipe (linear schedule, warmup, clipping at
    ``--max-grad-norm``, no weight decay on biases and LayerNorm weights), checkpoints and logging;
    the Trainer's own evaluation off (``FinetuneCallback`` evaluates); ``extra``: more of them."""
    recipe, log_settings = settings.recipe, settings.logging
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "num_train_epochs": recipe.epochs,
        "per_device_train_batch_size": recipe.batch_size,
        "per_device_eval_batch_size": settings.validation.eval_batch_size,
        "learning_rate": recipe.lr,
        "warmup_steps": float(recipe.warmup_ratio),  # transformers 5: a float below 1 is the ratio of the steps
        "weight_decay": recipe.weight_decay,
        "max_grad_norm": recipe.max_grad_norm,
        "gradient_accumulation_steps": recipe.grad_accum_steps,
        "lr_scheduler_type": "linear",
        "eval_strategy": "no",  # FinetuneCallback evaluates with the native loop's code instead
        "logging_nan_inf_filter": False,  # a NaN loss must stop the run, not be averaged away
        "save_strategy": "steps" if settings.checkpoints.save_steps else "no",
        "logging_strategy": "steps",
        "logging_steps": log_settings.logging_steps,
        "seed": recipe.seed,
        "data_seed": recipe.seed,
        "report_to": "none",
        "use_cpu": device.type == "cpu",
        "disable_tqdm": log_settings.disable_tqdm,
        "dataloader_num_workers": 0,
    }
    dtype = autocast_dtype(device, settings.hardware.mixed_precision)
    if dtype is not None:  # the native loop's rule: bf16 where the hardware has it (GPU or CPU), else fp16
        kwargs["bf16" if dtype == torch.bfloat16 else "fp16"] = True
    checkpoints = settings.checkpoints
    if checkpoints.save_steps:
        kwargs.update(save_steps=checkpoints.save_steps, save_total_limit=checkpoints.save_total_limit)
    return TrainingArguments(**kwargs, **(extra or {}))


class CheckedTrainer(ResumableTrainer):
    """The Trainer (with finetune's order and exact resume: ``finetune/loops/trainer_adapter.py``) that
    stops, before the optimizer step, when the training loss is not finite; the Trainer would
    average a NaN away in its log and step anyway."""

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        """``Trainer.training_step``, then the loss's check."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not bool(torch.isfinite(loss).all()):
            raise NonFiniteError(
                f"step {self.state.global_step + 1}: the training loss is {float(loss)}; stopped before the "
                "optimizer step, the last checkpoint is good: lower --lr"
            )
        return loss


class FinetuneCallback(TrainerCallback):
    """What the Trainer is made to do as the native loop does: evaluate when ``--eval-strategy``
    says with the same code (the result goes into the Trainer's log, so checkpoints keep it), keep
    the best model and stop early; stop on a non-finite gradient norm before the optimizer step;
    never save non-finite weights; seal each checkpoint with ``progress.json``; on SIGTERM/Ctrl-C
    save a checkpoint and stop."""

    def __init__(
        self,
        evaluate: Any,
        plan: ValidationSettings,
        record: dict[str, Any],
        selection: ModelSelection,
        stop: StopRequest | None,
        clock: SegmentClock,
    ) -> None:
        self.evaluate, self.plan, self.record, self.selection = evaluate, plan, record, selection
        self.stop, self.clock = stop, clock
        self.stopped_early = False
        self.report: Any = None  # Trainer.log, to send evaluations to --report-to as well

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
        if not math.isfinite(norm):
            raise NonFiniteError(
                f"step {state.global_step + 1}: the gradient norm is {norm}; stopped before the optimizer step, "
                "the last checkpoint is good: lower --lr"
            )

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if is_evaluation_step(self.plan, state.global_step, state.max_steps, float(state.epoch).is_integer()):
            metrics = self.evaluate(model)
            entry = {"step": state.global_step, "epoch": round(state.epoch, 4), "validation": metrics}
            state.log_history.append(entry)  # saved in checkpoints with the Trainer's own log
            if self.report is not None:
                self.report({k.replace("/", "_"): v for k, v in eval_scalars(metrics).items()})  # eval_accuracy ...
            by_steps, more_steps = self.plan.eval_strategy == "steps", state.global_step < state.max_steps
            step, epoch, show = state.global_step, entry["epoch"], state.is_world_process_zero
            if judge_evaluation(self.selection, model, metrics, step, epoch, by_steps, more_steps, show):
                control.should_training_stop = self.stopped_early = True
        if self.stop is not None and self.stop.signum is not None:
            control.should_save = True
        if control.should_save:
            check_finite_weights(model, state.global_step)

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        folder = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
        if state.is_world_process_zero:
            self.selection.save(folder)
            progress = {"selection": self.selection.state(), "train_segments_s": self.clock.segments()}
            write_progress(folder, self.record, progress)
        if self.stop is not None and self.stop.signum is not None:
            raise TrainingInterruptedError(self.stop.signum, state.global_step, folder)


class ConsoleCallback(TrainerCallback):
    """The console as the native loop shows it: one "training" bar with the last logged loss (the
    per-epoch validation lines come from ``judge_evaluation``). It replaces the Trainer's own
    printer, which writes every log entry as a raw dict; the entries still reach results.json's
    history and ``--report-to``."""

    def __init__(self, show: bool) -> None:
        self.show, self.bar = show, None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", disable=not self.show)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.bar.close()


def train_with_trainer(
    model: PreTrainedModel,
    data: RunData,
    task: GlueTask,
    settings: LoopSettings,
    output_dir: Path | None = None,
    resume_from: Path | None = None,
    stop: StopRequest | None = None,
) -> LoopResult:
    """The same run through ``CheckedTrainer``; evaluation by the native loop's ``evaluate``."""
    recipe, log_settings, hardware = settings.recipe, settings.logging, settings.hardware
    device = pick_device(hardware.device)
    dtype = autocast_dtype(device, hardware.mixed_precision)  # evaluation in the training's precision
    eval_loader = data.loader("validation")

    def evaluate_validation(model: PreTrainedModel) -> dict[str, float] | None:
        return evaluate(model, eval_loader, task, device, dtype, progress=not log_settings.disable_tqdm)

    plan = settings.validation
    selection = ModelSelection(settings.best_metric, plan.load_best_model_at_end, plan.early_stopping_patience)
    clock = SegmentClock()  # training time across resumes
    if resume_from is not None:
        saved = load_progress(resume_from)
        selection.load(resume_from, saved.get("selection"))
        clock.earlier = saved.get("train_segments_s", [])
    callback = FinetuneCallback(evaluate_validation, plan, settings.record, selection, stop, clock)
    callbacks: list[TrainerCallback] = [callback]
    if log_settings.report_to == "tensorboard" and is_launch_main_process():
        callbacks.append(trainer_callback(output_dir, settings.run_name or output_dir.name))
    # the Trainer's own AdamW has the same groups; layer-wise lr decay needs finetune's
    fused = device.type in ("cpu", "cuda")
    optimizer = (
        build_optimizer(model, recipe.lr, recipe.weight_decay, fused, recipe.layer_lr_decay)
        if recipe.layer_lr_decay != 1
        else None
    )
    skeleton, fsdp = None, None
    if hardware.fsdp:  # on a GPU (TrainConfig.validate): the Trainer shards, the full model is gathered at the end
        from finetune.model.sharding import empty_copy, gather, trainer_arguments

        skeleton, fsdp = empty_copy(model), trainer_arguments(hardware.fsdp, model)
    trainer = CheckedTrainer(
        model=model,
        optimizers=(optimizer, None),
        args=training_arguments(settings, str(output_dir), device, fsdp),
        train_dataset=data.splits["train"],
        data_collator=data.collator,
        processing_class=data.collator.tokenizer,
        callbacks=callbacks,
    )
    trainer.length_grouped = data.group_by_length
    for printer in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(printer)
    trainer.add_callback(ConsoleCallback(show=not log_settings.disable_tqdm and trainer.is_world_process_zero()))
    if log_settings.report_to != "none":
        callback.report = trainer.log
    if trainer.is_world_process_zero():
        precision = "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32"
        log_line(recipe_line(task, recipe, precision, describe_device(trainer.args.device)))
    clock.start()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    result = LoopResult(train_segments_s=clock.segments(), model=trainer.model)
    result.best, result.stopped_early = restore_best_model(selection, trainer.model), callback.stopped_early
    if skeleton is not None:
        result.model = gather(trainer.model, skeleton)
    result.resumed_from = str(resume_from) if resume_from else None
    result.history = _history(trainer.state.log_history)
    result.optimizer_steps = trainer.state.global_step
    result.samples_seen = round(len(data.splits["train"]) * trainer.state.epoch)  # fewer if stopped early
    result.precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    result.world_size = trainer.args.world_size
    result.distributed_type = str(trainer.accelerator.distributed_type).split(".")[-1]
    result.device = describe_device(trainer.args.device)
    return result


def _history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Trainer's log in the native loop's format: step entries and per-epoch validation."""
    history = []
    for entry in log_history:
        if "loss" in entry:
            history.append(
                {"step": entry["step"], "epoch": entry["epoch"], "loss": entry["loss"],
                 "learning_rate": entry.get("learning_rate")}
            )  # fmt: skip
        elif "validation" in entry:
            history.append(entry)
    return history
