"""``finetune grid``: a table of runs trained one at a time, over several seeds. Two tables: the
reference runs (each strategy with the native loop, ``full`` with the Trainer) and, with
``--search``, the recipe search that chose the strategies' defaults. Each finished run's
results.json and per-example predictions are copied under the results folder as soon as it
completes, so a grid stopped part-way loses no finished run; runs already there are skipped."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from finetune.config import ConfigError, TrainConfig
from finetune.run.files import PREDICTIONS_FILE, check_writable_folder

# name -> the settings of that run (the strategy's defaults for the rest); results/<task>-<name>-seed<n>/
REFERENCE: dict[str, dict[str, Any]] = {
    "native-full": {"loop": "native", "strategy": "full"},
    "native-partial": {"loop": "native", "strategy": "partial"},
    "native-head": {"loop": "native", "strategy": "head"},
    "trainer-full": {"loop": "trainer", "strategy": "full"},
}

# The recipe search (native loop, full strategy unless named; results/search/<name>-seed<n>/). It ran
# before the defaults changed, so each entry names its learning rate: full 5e-5 and partial 1e-4 then.
SEARCH: dict[str, dict[str, Any]] = {
    "epochs5-best": {"lr": 5e-5, "epochs": 5, "load_best_model_at_end": True},
    "swap-pairs": {"lr": 5e-5, "swap_pairs": True},
    "lr1e-4": {"lr": 1e-4},
    "lr1e-4-lld0.8": {"lr": 1e-4, "layer_lr_decay": 0.8},
    "reinit1-epochs5-best": {"lr": 5e-5, "reinit_layers": 1, "epochs": 5, "load_best_model_at_end": True},
    "warmup0.2-epochs5-best": {"lr": 5e-5, "warmup_ratio": 0.2, "epochs": 5, "load_best_model_at_end": True},
    "swap-pairs-epochs5-best": {"lr": 5e-5, "swap_pairs": True, "epochs": 5, "load_best_model_at_end": True},
    "lr1e-4-best": {"lr": 1e-4, "load_best_model_at_end": True},
    "lr1e-4-reinit1-best": {"lr": 1e-4, "reinit_layers": 1, "load_best_model_at_end": True},
    "lr2e-4": {"lr": 2e-4},
    "lr1e-4-batch32": {"lr": 1e-4, "batch_size": 32},
    "lr1e-4-swap-pairs-best": {"lr": 1e-4, "swap_pairs": True, "load_best_model_at_end": True},
    "partial-lr2e-4-best": {"strategy": "partial", "lr": 2e-4, "load_best_model_at_end": True},
    "partial-lr2e-4": {"strategy": "partial", "lr": 2e-4},
    "partial-freeze2-best": {"strategy": "partial", "lr": 1e-4, "freeze_layers": 2, "load_best_model_at_end": True},
    "head-lr3e-3-epochs10-best": {"strategy": "head", "lr": 3e-3, "epochs": 10, "load_best_model_at_end": True},
}

# what the results folder keeps of a run: results.json and the predictions of each labelled split
KEPT_FILES = ("results.json", PREDICTIONS_FILE.format(split="*"))


def run_grid(
    seeds: list[int],
    results_dir: Path,
    runs_dir: Path,
    data_dir: str | None = None,
    task: str = "mrpc",
    only: list[str] | None = None,
    search: bool = False,
    overrides: dict[str, Any] | None = None,
) -> list[Path]:
    """Train every missing run of the reference table (or of ``SEARCH``); return the results.json
    paths written. ``overrides`` applies to every run (e.g. ``model``). Every run's settings and both
    folders are checked before the first run starts. The search keeps no models (90 MB each)."""
    from finetune.pipeline import train

    table = SEARCH if search else REFERENCE
    unknown = [name for name in only or [] if name not in table]
    if unknown:
        raise ConfigError(f"--only {' '.join(unknown)}: not in the grid; choose from {', '.join(table)}")
    check_writable_folder(results_dir, "--results-dir")
    check_writable_folder(runs_dir, "--runs-dir")
    runs = []
    for seed in seeds:
        for key, settings in table.items():
            name = f"{key}-seed{seed}" if search else f"{task}-{key}-seed{seed}"
            if (results_dir / name / "results.json").exists() or (only and key not in only):
                continue
            cfg = TrainConfig(**{"strategy": "full", **settings, **(overrides or {})}, task=task, seed=seed,
                              data_dir=data_dir, output_dir=str(runs_dir / name), overwrite_output_dir=True,
                              disable_tqdm=True)  # fmt: skip
            cfg.validate()
            runs.append((name, cfg))
    written = []
    for name, cfg in runs:
        start = time.time()
        results = train(cfg)
        target = results_dir / name
        target.mkdir(parents=True, exist_ok=True)
        for pattern in KEPT_FILES:
            for kept in (runs_dir / name).glob(pattern):
                shutil.copy(kept, target / kept.name)
        if search:
            shutil.rmtree(runs_dir / name)
        written.append(target / "results.json")
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in results["validation"].items() if k not in ("examples", "loss"))
        print(f"finished {name} in {time.time() - start:.0f} s: validation {metrics}", flush=True)
    return written
