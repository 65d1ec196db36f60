"""Stopping on request: SIGTERM (what a job scheduler sends before it kills) and Ctrl-C.

While a ``StopRequest`` is active, the first such signal only raises a flag; the training loop
sees it at the next optimizer step (or after an evaluation), writes a checkpoint there and raises
``TrainingInterruptedError``, which the CLI turns into one line and exit code 128 + signal (143 for
SIGTERM, 130 for Ctrl-C). A second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any


class TrainingInterruptedError(Exception):
    """Training stopped on a signal after writing a checkpoint."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        if checkpoint is None:
            where = "no checkpoint written (pass --output-dir to keep one)"
        else:
            where = f"checkpoint {checkpoint} written: continue with --resume-from-checkpoint latest"
        super().__init__(f"stopped by {name} at step {step}; {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequest:
    """A context manager that turns SIGTERM and SIGINT into a flag (``signum``)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.signum = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
