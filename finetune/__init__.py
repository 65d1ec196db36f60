"""finetune: reference fine-tuning of a pretrained transformer on GLUE (MRPC by default).

Python API: ``finetune.train(TrainConfig(...)) -> results`` (the dict written to results.json).
Command line: ``finetune train | evaluate | predict | report | grid``.
"""

from typing import Any

from finetune.config import TrainConfig
from finetune.errors import ConfigError, DataError, ModelError, NonFiniteError
from finetune.interrupt import TrainingInterruptedError

__all__ = [
    "ConfigError", "DataError", "ModelError", "NonFiniteError", "TrainConfig", "TrainingInterruptedError",
    "load_glue", "train",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    """``train`` and ``load_glue`` import torch and the Hugging Face libraries: only when used."""
    if name == "train":
        from finetune.pipeline import train

        return train
    if name == "load_glue":
        from finetune.data import load_glue

        return load_glue
    raise AttributeError(f"module 'finetune' has no attribute {name!r}")
