"""finetune: reference fine-tuning of a pretrained transformer on GLUE (MRPC by default).

Python API: ``finetune.train(TrainConfig(...)) -> results`` (the dict written to results.json).
Command line: ``finetune train | evaluate | predict | report``.
"""

from finetune.config import ConfigError, TrainConfig
from finetune.data import DataError, load_glue
from finetune.interrupt import TrainingInterruptedError
from finetune.modeling import ModelError
from finetune.run import NonFiniteError
from finetune.train import train

__all__ = [
    "ConfigError", "DataError", "ModelError", "NonFiniteError", "TrainConfig", "TrainingInterruptedError",
    "load_glue", "train",
]  # fmt: skip
