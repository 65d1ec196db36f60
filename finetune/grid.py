"""``finetune grid``: the reference runs (each strategy with the native loop, ``full`` with the
Trainer, over several seeds), one at a time, each finished run's results.json and per-example
predictions copied under ``results/`` as soon as it completes, so a grid stopped part-way loses no
finished run. Runs already under ``results/`` are skipped."""

from __future__ import annotations

import shutil
from pathlib import Path

from finetune.config import ConfigError, TrainConfig
from finetune.evaluation import PREDICTIONS_FILE
from finetune.files import check_writable_folder

GRID = [("native", "full"), ("native", "partial"), ("native", "head"), ("trainer", "full")]


def run_grid(
    seeds: list[int],
    results_dir: Path,
    runs_dir: Path,
    data_dir: str | None = None,
    task: str = "mrpc",
    only: list[str] | None = None,
) -> list[Path]:
    """Train every missing run of the grid; return the results.json paths written. Every run's
    settings and both folders are checked before the first run starts."""
    from finetune.pipeline import train

    names = [f"{loop}-{strategy}" for loop, strategy in GRID]
    unknown = [name for name in only or [] if name not in names]
    if unknown:
        raise ConfigError(f"--only {' '.join(unknown)}: not in the grid; choose from {', '.join(names)}")
    check_writable_folder(results_dir, "--results-dir")
    check_writable_folder(runs_dir, "--runs-dir")
    runs = []
    for seed in seeds:
        for loop, strategy in GRID:
            name = f"{task}-{loop}-{strategy}-seed{seed}"
            if (results_dir / name / "results.json").exists() or (only and f"{loop}-{strategy}" not in only):
                continue
            cfg = TrainConfig(
                task=task, loop=loop, strategy=strategy, seed=seed, data_dir=data_dir,
                output_dir=str(runs_dir / name), overwrite_output_dir=True, disable_tqdm=True,
            )  # fmt: skip
            cfg.validate()
            runs.append((name, cfg))
    written = []
    for name, cfg in runs:
        target = results_dir / name / "results.json"
        train(cfg)
        target.parent.mkdir(parents=True, exist_ok=True)
        for kept in ("results.json", *(PREDICTIONS_FILE.format(split=s) for s in ("validation", "test"))):
            shutil.copy(runs_dir / name / kept, target.parent / kept)
        written.append(target)
        print(f"finished {name}: {target}", flush=True)
    return written
