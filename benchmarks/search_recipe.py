"""The recipe search for the default checkpoint on MRPC (native loop; the full strategy unless
a configuration names another): each configuration of ``SEARCH`` over the given seeds, one run
at a time, each finished run's results.json copied to ``results/search/<name>-seed<seed>/`` at
once (runs already there are skipped, so the search can be stopped and continued). Choices are made on validation only.

    GLUE_DIR=../shared/data/glue python benchmarks/search_recipe.py --seeds 1 2
    finetune report results/search results/mrpc-native-full-seed* --out docs/report-search
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from finetune.config import TrainConfig
from finetune.pipeline import train

# name -> settings that differ from the full strategy's defaults (lr 5e-5, batch 16, 3 epochs, warmup 0.1)
SEARCH: dict[str, dict] = {
    "epochs5-best": {"epochs": 5, "load_best_model_at_end": True},
    "swap-pairs": {"swap_pairs": True},
    "lr1e-4": {"lr": 1e-4},
    "lr1e-4-lld0.8": {"lr": 1e-4, "layer_lr_decay": 0.8},
    "reinit1-epochs5-best": {"reinit_layers": 1, "epochs": 5, "load_best_model_at_end": True},
    "warmup0.2-epochs5-best": {"warmup_ratio": 0.2, "epochs": 5, "load_best_model_at_end": True},
    "swap-pairs-epochs5-best": {"swap_pairs": True, "epochs": 5, "load_best_model_at_end": True},
    "lr1e-4-best": {"lr": 1e-4, "load_best_model_at_end": True},
    "lr1e-4-reinit1-best": {"lr": 1e-4, "reinit_layers": 1, "load_best_model_at_end": True},
    "lr2e-4": {"lr": 2e-4},
    "lr1e-4-batch32": {"lr": 1e-4, "batch_size": 32},
    "lr1e-4-swap-pairs-best": {"lr": 1e-4, "swap_pairs": True, "load_best_model_at_end": True},
    # the other strategies (defaults: partial lr 1e-4, head lr 1e-3 batch 32, both 3 epochs)
    "partial-lr2e-4-best": {"strategy": "partial", "lr": 2e-4, "load_best_model_at_end": True},
    "partial-lr2e-4": {"strategy": "partial", "lr": 2e-4},
    "partial-freeze2-best": {"strategy": "partial", "freeze_layers": 2, "load_best_model_at_end": True},
    "head-lr3e-3-epochs10-best": {"strategy": "head", "lr": 3e-3, "epochs": 10, "load_best_model_at_end": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", nargs="+", choices=list(SEARCH), help="these configurations only")
    parser.add_argument("--results-dir", default="results/search")
    parser.add_argument("--runs-dir", default="runs/search")
    parser.add_argument("--data-dir", default=os.environ.get("GLUE_DIR"))
    args = parser.parse_args()
    for seed in args.seeds:
        for name, settings in SEARCH.items():
            target = Path(args.results_dir) / f"{name}-seed{seed}" / "results.json"
            if target.exists() or (args.only and name not in args.only):
                continue
            run_dir = Path(args.runs_dir) / f"{name}-seed{seed}"
            config = TrainConfig(**{"strategy": "full", **settings}, seed=seed, data_dir=args.data_dir,
                                 output_dir=str(run_dir), overwrite_output_dir=True, disable_tqdm=True)  # fmt: skip
            start = time.time()
            results = train(config)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(run_dir / "results.json", target)
            shutil.rmtree(run_dir)  # the models are not kept: 90 MB each
            v = results["validation"]
            print(f"{name} seed {seed}: validation accuracy {v['accuracy']:.4f} f1 {v['f1']:.4f} "
                  f"({time.time() - start:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
