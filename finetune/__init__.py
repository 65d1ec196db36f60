"""finetune: reference fine-tuning of a pretrained transformer on GLUE (MRPC by default).

Python API: ``finetune.train(TrainConfig(...)) -> results`` (the dict written to results.json).
Command line: ``finetune train | evaluate | predict | push | report | compare | grid``.

The map, top floor first; each folder imports only from the floors below it
(tests/finetune/test_architecture.py checks it):

    cli.py        the command line: parses, refuses bad input in one line, runs a command
    pipeline.py   finetune train (``finetune.train``): data, model, freezing, the chosen loop,
                  the saved and evaluated run;  predict.py: finetune evaluate and predict;
                  grid.py: finetune grid;  push: run/hub.py;  report, compare: analysis/
    loops/        the three ways to train, none importing another: native.py (plain PyTorch),
                  accelerated.py (the same loop under Accelerate), trainer.py (the HF Trainer,
                  with trainer_adapter.py for its order and exact resume); progress.py keeps the
                  first two's books; common.py, selection.py (the best model, early stopping)
                  and tracking.py (TensorBoard) serve all three
    analysis/     measuring runs: metrics, the evaluation of a saved run, compare (+ calibration), report
    run/          a run on disk and across processes: its directory, checkpoints, SIGTERM and
                  Ctrl-C, the launcher's processes, the Hub, atomic files
    config.py     TrainConfig, every setting of a run, in groups; LoopSettings, what a loop receives
    model/        loading the checkpoint and its head, freezing, devices, fast dropout, FSDP2 sharding
    data/         the GLUE tasks, read, tokenized and batched
    errors.py     the input and run errors the floors raise (ConfigError, DataError, ...)
"""

from typing import Any

from finetune.config import TrainConfig
from finetune.errors import ConfigError, DataError, ModelError, NonFiniteError
from finetune.run.interrupt import TrainingInterruptedError

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
        from finetune.data.glue import load_glue

        return load_glue
    raise AttributeError(f"module 'finetune' has no attribute {name!r}")
