"""The same fine-tuning through the Hugging Face ``Trainer``, with the same hyperparameters,
freezing and metrics as the native loop, so the two can be compared run for run."""

from __future__ import annotations

import inspect
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments

from finetune.config import TrainConfig
from finetune.loop import LoopResult, autocast_dtype
from finetune.metrics import compute_metrics
from finetune.tasks import GlueTask


def training_arguments(cfg: TrainConfig, output_dir: str, use_cpu: bool) -> TrainingArguments:
    """TrainingArguments mirroring the native loop (linear schedule, warmup, clipping at 1.0,
    no weight decay on biases and LayerNorm weights, evaluation each epoch)."""
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "num_train_epochs": cfg.epochs,
        "per_device_train_batch_size": cfg.batch_size,
        "per_device_eval_batch_size": cfg.eval_batch_size,
        "learning_rate": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "lr_scheduler_type": "linear",
        "eval_strategy": "epoch",
        "save_strategy": "steps" if cfg.save_steps else "no",
        "logging_strategy": "steps",
        "logging_steps": cfg.logging_steps,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "report_to": "none",
        "use_cpu": use_cpu,
        "disable_tqdm": not cfg.show_progress,
        "dataloader_num_workers": 0,
    }
    dtype = None if use_cpu else autocast_dtype(torch.device("cuda"), cfg.mixed_precision)
    if dtype is not None:  # the native loop's rule: bf16 where the GPU has it, else fp16
        kwargs["bf16" if dtype == torch.bfloat16 else "fp16"] = True
    if cfg.save_steps:
        kwargs.update(save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit)
    # Names that moved in transformers v5: a float warmup_steps < 1 is the ratio, and length
    # grouping is a train_sampling_strategy. Older versions take the v4 names.
    accepted = inspect.signature(TrainingArguments).parameters
    if "warmup_ratio" in accepted:
        kwargs["warmup_ratio"] = cfg.warmup_ratio
    else:
        kwargs["warmup_steps"] = float(cfg.warmup_ratio)
    if "train_sampling_strategy" in accepted:
        kwargs["train_sampling_strategy"] = "group_by_length" if cfg.group_by_length else "random"
    else:
        kwargs["group_by_length"] = cfg.group_by_length
    return TrainingArguments(**kwargs)


def train_with_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_set: Dataset,
    eval_set: Dataset,
    collator: DataCollatorWithPadding,
    task: GlueTask,
    cfg: TrainConfig,
    output_dir: str,
    use_cpu: bool,
    resume_from: Path | None = None,
) -> tuple[Trainer, LoopResult]:
    def metrics(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return compute_metrics(task, np.asarray(logits), np.asarray(prediction.label_ids))

    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, output_dir, use_cpu),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=metrics,
    )
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    result = LoopResult(train_runtime_s=time.perf_counter() - start)
    result.resumed_from = str(resume_from) if resume_from else None
    result.history = _history(trainer.state.log_history, len(eval_set))
    result.optimizer_steps = trainer.state.global_step
    result.samples_seen = math.ceil(len(train_set) * cfg.epochs)
    return trainer, result


def _history(log_history: list[dict[str, Any]], eval_examples: int) -> list[dict[str, Any]]:
    """The Trainer's log in the native loop's format: step entries and per-epoch validation."""
    history = []
    for entry in log_history:
        if "loss" in entry:
            history.append(
                {"step": entry["step"], "epoch": entry["epoch"], "loss": entry["loss"],
                 "learning_rate": entry.get("learning_rate")}
            )  # fmt: skip
        elif "eval_loss" in entry:
            metrics = {k[len("eval_") :]: v for k, v in entry.items() if k.startswith("eval_")}
            metrics = {k: v for k, v in metrics.items() if not k.endswith(("runtime", "per_second"))}
            metrics["examples"] = eval_examples
            history.append({"step": entry["step"], "epoch": round(entry["epoch"]), "validation": metrics})
    return history
