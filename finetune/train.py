"""``finetune.train(config) -> results``: data, model, freezing, the chosen loop, final
evaluation, and the run directory (model, tokenizer, results.json), written all at once."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict
from transformers import set_seed

from finetune.config import ConfigError, TrainConfig
from finetune.data import load_glue, make_collator, make_dataloader, tokenize_glue
from finetune.loop import NativeRuntime, evaluate, pick_device, train_loop
from finetune.modeling import (
    apply_freezing,
    count_parameters,
    default_model_path,
    load_model,
    load_tokenizer,
    model_source,
)
from finetune.tasks import get_task, test_split, validation_split

RESULTS_FILE = "results.json"


def default_output_dir(cfg: TrainConfig) -> Path:
    """runs/<task>-<loop>-<strategy>-seed<seed>-<time>, never an existing directory."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{cfg.task}-{cfg.loop}-{cfg.strategy}-seed{cfg.seed}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse to overwrite another run (or any non-empty directory) unless asked to."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output directory {path} exists and is a file: choose another --output-dir")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        what = "another run's results.json" if (path / RESULTS_FILE).exists() else "files"
        raise ConfigError(
            f"output directory {path} already holds {what}: choose another --output-dir or pass --overwrite-output-dir"
        )


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


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


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one fine-tuning and return the dict also written to ``<output_dir>/results.json``."""
    cfg = config.resolved()
    task = get_task(cfg.task)
    output_dir = Path(cfg.output_dir) if cfg.output_dir else default_output_dir(cfg)
    check_output_dir(output_dir, cfg.overwrite_output_dir)
    cfg.output_dir = str(output_dir)
    set_seed(cfg.seed)

    # raw data and model first: bad input fails before any long work
    raw = load_glue(cfg.task, cfg.data_dir)
    model_path = cfg.model or default_model_path()
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, task, cfg.pooling)
    frozen_layers = apply_freezing(model, cfg.strategy, cfg.freeze_layers)
    trainable, total = count_parameters(model)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    # data
    val_name, test_name = validation_split(task), test_split(task)
    data = tokenize_glue(raw, tokenizer, cfg.task, cfg.max_length, cfg.pad_to_max_length)
    data = limit_samples(data, cfg, "train", [val_name, test_name])
    collator = make_collator(tokenizer)

    # train
    device = pick_device(cfg.device)
    runtime = NativeRuntime(device, cfg.mixed_precision, cfg.grad_accum_steps)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.partial-"))
    try:
        if cfg.loop == "trainer":
            from finetune.trainer_loop import train_with_trainer

            trainer, loop = train_with_trainer(
                model, tokenizer, data["train"], data[val_name], collator, task, cfg, str(staging / "trainer"),
                use_cpu=device.type == "cpu",
            )  # fmt: skip
            model = trainer.model
            shutil.rmtree(staging / "trainer", ignore_errors=True)
        elif cfg.loop == "native":
            train_loader = make_dataloader(
                data["train"],
                collator,
                cfg.batch_size,
                shuffle=True,
                seed=cfg.seed,
                group_by_length=cfg.group_by_length,
            )
            eval_loader = make_dataloader(data[val_name], collator, cfg.eval_batch_size, shuffle=False)
            loop = train_loop(model, train_loader, eval_loader, task, cfg, runtime)
        else:
            raise ConfigError(f"--loop {cfg.loop} is not available in this version")

        # final evaluation of the last-epoch model, the same code for every loop
        model.to(device)
        final = {
            split: evaluate(model, make_dataloader(data[name], collator, cfg.eval_batch_size, False), task, runtime)
            for split, name in (("validation", val_name), ("test", test_name))
        }
        moved = [
            n for n, p in model.named_parameters() if n in frozen_before and not torch.equal(p.cpu(), frozen_before[n])
        ]
        if moved:
            raise RuntimeError(f"frozen parameters changed during training: {moved[:3]}")

        results = {
            "config": cfg.to_dict(),
            "versions": versions(),
            "device": device_description(device),
            "world_size": runtime.world_size,
            "distributed_type": runtime.distributed_type,
            "model": {**model_source(model_path), "class": type(model).__name__},
            "trainable_params": trainable,
            "total_params": total,
            "frozen_encoder_layers": frozen_layers,
            "history": loop.history,
            "optimizer_steps": loop.optimizer_steps,
            "train_runtime_s": round(loop.train_runtime_s, 3),
            "train_samples_per_second": round(loop.samples_seen / loop.train_runtime_s, 3),
            "validation": final["validation"],
            "test": final["test"],
        }
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json_atomic(staging / RESULTS_FILE, results)
        _move_into_place(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return results


def _move_into_place(staging: Path, output_dir: Path) -> None:
    """Replace ``output_dir`` by the finished ``staging`` directory (old contents removed only
    after the new run is complete)."""
    if output_dir.exists():
        trash = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
        os.replace(output_dir, trash)
        os.replace(staging, output_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, output_dir)
