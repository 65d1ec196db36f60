"""``--report-to tensorboard``: the training loss, the learning rate and every evaluation as
TensorBoard scalars under ``<run directory>/tensorboard/<run name>/``, in every loop.

The native and Accelerate loops log through Accelerate's ``TensorBoardTracker``; the Trainer
through its own ``TensorBoardCallback``, pointed at the same folder. The tags are the Trainer's in
all three: ``train/loss``, ``train/learning_rate``, ``eval/<metric>``. ``tensorboard`` is an
optional package (``pip install -e '.[tensorboard]'``); asking for it without the package is
refused before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LOG_DIR = "tensorboard"


def log_dir(run_dir: Path) -> Path:
    """Where a run's TensorBoard events go: ``tensorboard --logdir <run>/tensorboard``."""
    return run_dir / LOG_DIR


def eval_scalars(metrics: dict[str, float] | None) -> dict[str, float]:
    """An evaluation's metrics as TensorBoard tags: ``eval/accuracy``, ``eval/loss`` ..."""
    return {f"eval/{k}": v for k, v in (metrics or {}).items() if k != "examples"}


class Tracker:
    """Logs scalars for the custom loops when ``--report-to tensorboard``; does nothing otherwise
    (and on every process but the main one)."""

    def __init__(
        self, report_to: str, run_dir: Path | None, run_name: str | None, config: dict[str, Any], is_main: bool = True
    ) -> None:
        """``run_dir``: where the events go (``<run_dir>/tensorboard/<run_name>/``); ``run_name``:
        the run directory's own name (the folder being written may be a staging one); ``config``:
        the run's settings, kept as TensorBoard's hyperparameters."""
        self.tracker: Any = None
        if report_to == "tensorboard" and is_main and run_dir is not None:
            from accelerate.tracking import TensorBoardTracker

            self.tracker = TensorBoardTracker(run_name or run_dir.name, log_dir(run_dir))
            self.tracker.start()
            self.tracker.store_init_configuration({k: v for k, v in config.items() if v is not None})

    def log(self, values: dict[str, float], step: int) -> None:
        if self.tracker is not None and values:
            self.tracker.log(values, step=step)

    def finish(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()


def trainer_callback(run_dir: Path, run_name: str) -> Any:
    """The Trainer's ``TensorBoardCallback`` writing where the custom loops write."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(SummaryWriter(log_dir=str(log_dir(run_dir) / run_name)))
