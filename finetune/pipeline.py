"""``finetune.train(config) -> results``: data, model, freezing, the chosen loop, final
evaluation, and the run directory (model, tokenizer, results.json)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict
from transformers import set_seed

from finetune.analysis.evaluation import EvalSettings, evaluate_saved, prediction_table, read_split
from finetune.config import TrainConfig
from finetune.data.glue import RunData, load_glue, make_collator, resolve_data_dir, tokenize_glue, with_swapped_pairs
from finetune.data.tasks import get_task, validation_split
from finetune.loops.accelerated import train_accelerate
from finetune.loops.common import LoopResult, check_finite_weights, log_line
from finetune.loops.native import train_native
from finetune.model.devices import pick_device
from finetune.model.dropout import use_fast_dropout
from finetune.model.modeling import (
    DEFAULT_MODEL_PACKAGE,
    apply_freezing,
    check_max_length,
    check_tokenizer,
    count_parameters,
    default_model_path,
    load_model,
    load_tokenizer,
    model_source,
    reinit_top_layers,
)
from finetune.run.checkpoint import resolve_resume
from finetune.run.files import PREDICTIONS_FILE, give_usual_permissions, write_json, write_rows
from finetune.run.hub import check_hub_access, push_run
from finetune.run.interrupt import StopRequest
from finetune.run.launch import check_single_process_loop, is_launch_main_process
from finetune.run.rundir import RESULTS_FILE, RunDirectory


def train_through_trainer(*args: Any) -> LoopResult:
    """``finetune.loops.trainer.train_with_trainer``, imported when a run asks for it: importing the
    Trainer takes seconds, which ``finetune predict`` and the other loops need not wait for."""
    from finetune.loops.trainer import train_with_trainer

    return train_with_trainer(*args)


TRAIN_LOOPS: dict[str, Callable[..., LoopResult]] = {
    "native": train_native,
    "accelerate": train_accelerate,
    "trainer": train_through_trainer,
}  # --loop -> the function that trains


def default_output_dir(cfg: TrainConfig) -> Path:
    """runs/<task>-<loop>-<strategy>-seed<seed>-<time>, never an existing directory."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{cfg.task}-{cfg.loop}-{cfg.strategy}-seed{cfg.seed}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def limit_samples(data: DatasetDict, max_train: int | None, max_eval: int | None) -> DatasetDict:
    """--max-train-samples: the first N rows of ``train``; --max-eval-samples: of every other split."""
    limited = DatasetDict(data)
    for name, split in data.items():
        limit = max_train if name == "train" else max_eval
        if limit is not None:
            limited[name] = split.select(range(min(limit, len(split))))
    return limited


def versions() -> dict[str, str]:
    import accelerate
    import datasets
    import numpy
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "accelerate": accelerate.__version__,
        "numpy": numpy.__version__,
    }


def quiet_libraries() -> None:
    """Keep the libraries' warnings and per-split progress bars off the console (the training
    progress bar stays), so an error is the one line on stderr; the CLI and the API alike."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one fine-tuning and return the dict also written to ``<output_dir>/results.json``.

    Every input is checked before training starts (ConfigError, DataError, ModelError); a
    non-finite loss, gradient or weight stops it (NonFiniteError), SIGTERM or Ctrl-C too, after a
    checkpoint (TrainingInterruptedError)."""
    quiet_libraries()
    cfg = config.resolved()
    task = get_task(cfg.task)
    check_single_process_loop(cfg.loop)
    output_dir = Path(cfg.output_dir) if cfg.output_dir else default_output_dir(cfg)
    cfg.output_dir = str(output_dir)
    data_root = resolve_data_dir(cfg.data_dir)
    cfg.data_dir = str(data_root.resolve()) if data_root else None  # recorded, so the run can be evaluated again
    owner = is_launch_main_process()
    hub_token = check_hub_access(cfg.hub_model_id, cfg.hub_token) if cfg.push_to_hub and owner else None
    run_dir = RunDirectory(output_dir, cfg.overwrite_output_dir, cfg.resume_from_checkpoint is not None, owner)
    resume = resolve_resume(cfg.resume_from_checkpoint, run_dir.work, cfg.to_dict())
    set_seed(cfg.seed)

    # raw data and model first: bad input fails before any long work
    raw = load_glue(cfg.task, cfg.data_dir)
    model_path = cfg.model or default_model_path()
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, task, cfg.pooling)
    check_tokenizer(tokenizer, model, model_path)
    check_max_length(cfg.max_length, tokenizer, model, task)
    reinit_top_layers(model, cfg.reinit_layers)
    frozen_layers = apply_freezing(model, cfg.strategy, cfg.freeze_layers)
    if cfg.fast_dropout:  # a speed path: the same mask distribution as nn.Dropout, cheaper on the CPU
        use_fast_dropout(model)
    trainable, total = count_parameters(model)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    # data: the splits training uses, tokenized (the final evaluation reads its own: finetune.analysis.evaluation)
    val_name = validation_split(task)
    raw = DatasetDict({"train": raw["train"], "validation": raw[val_name]})
    raw = limit_samples(raw, cfg.max_train_samples, cfg.max_eval_samples)
    if cfg.swap_pairs:
        raw["train"] = with_swapped_pairs(raw["train"], task)
    splits = tokenize_glue(raw, tokenizer, cfg.task, cfg.max_length, cfg.pad_to_max_length)
    run_data = RunData(
        splits, make_collator(tokenizer), cfg.batch_size, cfg.eval_batch_size, cfg.seed, cfg.group_by_length
    )

    # train, save, then evaluate the saved model on validation and test, as `finetune evaluate` will
    if owner:
        run_dir.open(fresh=resume is None)
        log_line(
            f"{cfg.task}: {cfg.loop} loop, strategy {cfg.strategy} ({trainable:,} of {total:,} parameters "
            f"train), model {cfg.model or DEFAULT_MODEL_PACKAGE}"
        )
    try:
        with StopRequest() as stop:
            loop = TRAIN_LOOPS[cfg.loop](model, run_data, task, cfg.loop_settings(), run_dir.work, resume, stop)
        model = loop.model
        moved = [
            n for n, p in model.named_parameters() if n in frozen_before and not torch.equal(p.cpu(), frozen_before[n])
        ]
        if moved:
            raise RuntimeError(f"frozen parameters changed during training: {moved[:3]}")

        settings = EvalSettings(
            pick_device(cfg.device).type, loop.precision, cfg.eval_batch_size, cfg.max_length, cfg.pad_to_max_length
        )
        results = {
            "config": cfg.to_dict(),
            "versions": versions(),
            "device": loop.device,
            "world_size": loop.world_size,
            "distributed_type": loop.distributed_type,
            "model": {**model_source(model_path), "class": type(model).__name__},
            "trainable_params": trainable,
            "total_params": total,
            "frozen_encoder_layers": frozen_layers,
            "train_examples": len(splits["train"]),
            "history": loop.history,
            "best": loop.best,
            "stopped_early": loop.stopped_early,
            "optimizer_steps": loop.optimizer_steps,
            "resumed_from": loop.resumed_from,
            "train_runtime_s": round(loop.train_runtime_s, 3),  # the sum of the segments (one per resume, plus one)
            "train_segments_s": [round(seconds, 3) for seconds in loop.train_segments_s],
            "train_samples_per_second": round(loop.samples_seen / max(loop.train_runtime_s, 1e-9), 3),
            "batches_seen_per_process": loop.batches_seen,
            "evaluation": settings.record(),
        }
        if owner:
            check_finite_weights(model, loop.optimizer_steps)
            save_model(model, tokenizer, run_dir.work)
            eval_splits = [read_split(task, s, cfg.data_dir, cfg.max_eval_samples) for s in ("validation", "test")]
            final = evaluate_saved(run_dir.work, task, eval_splits, settings)
            for split in eval_splits:
                metrics, logits = final[split.name]
                results[split.name] = metrics
                if metrics is not None:  # a labelled split: its per-example predictions beside the model
                    write_rows(
                        run_dir.work / PREDICTIONS_FILE.format(split=split.name), prediction_table(task, split, logits)
                    )
            write_json(run_dir.work / RESULTS_FILE, results)  # last: results.json marks a finished run
            run_dir.finish()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # the other processes wait for the save
    finally:
        run_dir.close()
    if cfg.push_to_hub and owner:  # the run is complete on disk first: a failed upload loses nothing
        results["hub_url"] = push_run(output_dir, results, cfg.hub_model_id, hub_token, cfg.hub_private_repo)
        log_line(f"pushed to {results['hub_url']}")
    return results


def save_model(model: Any, tokenizer: Any, output_dir: Path) -> None:
    """Model and tokenizer, each written beside its place and renamed into it, so an interrupted
    save leaves no half-written file."""
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=".final-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        give_usual_permissions(staging)
        for item in staging.iterdir():
            target = output_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
