"""The run directory: refused when it holds another run, checked writable before any work,
locked for the life of the run, and replaced only by a run that finished.

With ``--overwrite-output-dir`` over an existing run, the new run works in a folder beside it
(``.<name>.incoming``) and is swapped in at the end, so a run that fails leaves the old one as it
was. The lock is a file beside the directory (``.<name>.lock``) held with ``flock``: the kernel
drops it when its process dies, so a killed run's lock is simply taken over.

A run directory that holds ``checkpoint-<step>/`` folders but no ``results.json`` is a run that did
not finish (stopped, killed, out of time): every command that reads runs names it as such, with the
command that resumes it (``unfinished_run``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

from finetune.config import ConfigError, train_command
from finetune.run.checkpoint import PREFIX, PROGRESS_FILE, is_complete, list_checkpoints, remove_incomplete
from finetune.run.files import check_writable_folder

RESULTS_FILE = "results.json"


class RunDirectory:
    """Where a run writes (``work``) and where it ends up (``path``)."""

    def __init__(self, path: Path, overwrite: bool, resuming: bool, owner: bool = True) -> None:
        """Check, without writing anything, that ``path`` may receive this run. Under a
        multi-process launcher only the ``owner`` (rank 0) takes the lock and writes."""
        path = path.absolute()
        if not path.name:
            raise ConfigError(f"--output-dir {path} is the root folder: choose a folder for the run")
        self.path = path
        self._lock_path = path.with_name(f".{path.name}.lock")
        self._lock: int | None = None
        check_writable_folder(path, "--output-dir")
        if owner:
            check_not_in_use(self._lock_path, path)
        holds_files = path.is_dir() and any(path.iterdir())
        if holds_files and not overwrite and (path / RESULTS_FILE).exists():
            raise ConfigError(
                f"output directory {path} already holds another run's results.json: choose another --output-dir "
                "or pass --overwrite-output-dir"
            )
        if holds_files and not overwrite and not resuming:
            raise ConfigError(
                f"output directory {path} is not empty: choose another --output-dir, pass --overwrite-output-dir, "
                "or --resume-from-checkpoint latest to continue the run there"
            )
        self.replacing = overwrite and holds_files
        self.work = path.with_name(f".{path.name}.incoming") if self.replacing else path

    def open(self, fresh: bool) -> None:
        """Take the lock, create the working folder (emptied for a fresh run that replaces
        another), and remove checkpoints that a crash left half-written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = take_lock(self._lock_path, self.path)
        if fresh and self.replacing:
            shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        remove_incomplete(self.work)

    def finish(self) -> None:
        """Put the finished run in place of the old one (if it replaces one)."""
        if self.replacing:
            old = self.path.with_name(f".{self.path.name}.replaced")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
            os.replace(self.work, self.path)
            shutil.rmtree(old)

    def close(self) -> None:
        """Release the lock (the working folder of an unfinished run stays, to be resumed)."""
        if self._lock is not None:
            self._lock_path.unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None


def check_not_in_use(lock_path: Path, run_path: Path) -> None:
    """ConfigError if a live run holds the lock (a stale lock file from a killed run is fine)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        _lock_or_refuse(fd, run_path)
    finally:
        os.close(fd)  # closing drops the probe's lock


def take_lock(lock_path: Path, run_path: Path) -> int:
    """An exclusive ``flock`` on ``lock_path``, held until its descriptor is closed."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_or_refuse(fd, run_path)
        except ConfigError:
            os.close(fd)
            raise
        try:
            same_file = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:  # else the holder unlinked it just before we locked: lock the new one
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)


def _lock_or_refuse(fd: int, run_path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        raise ConfigError(
            f"output directory {run_path} is in use by another finetune run (pid {holder}): wait for it to end "
            "or choose another --output-dir"
        ) from None


class UnfinishedRunError(ConfigError):
    """A run directory whose training did not finish: checkpoints, no results.json."""


def did_not_finish(path: Path) -> bool:
    """Does ``path`` hold ``checkpoint-<step>/`` folders and no results.json?"""
    return not (path / RESULTS_FILE).exists() and bool(list_checkpoints(path))


def unfinished_run(path: Path) -> str | None:
    """One line naming ``path`` as a run that did not finish, with its last checkpoint's step and
    the command that resumes it (rebuilt from the settings the checkpoint records), or that it is
    still training while a finetune process holds its lock; None unless it ``did_not_finish``."""
    checkpoints = list_checkpoints(path)
    if (path / RESULTS_FILE).exists() or not checkpoints:  # it finished, or it is no run: did_not_finish
        return None
    try:
        check_not_in_use(path.with_name(f".{path.name}.lock"), path)
    except ConfigError:
        return f"{path} is a run still training (a finetune process holds its lock): wait for it to finish"
    whole = [(step, p) for step, p in checkpoints if is_complete(p)]
    if not whole:
        return (
            f"{path} is a run that did not finish, and no checkpoint of it is whole ({checkpoints[-1][1].name} "
            "was cut off while being written): train it again, with --overwrite-output-dir"
        )
    step, newest = whole[-1]
    try:
        config = json.loads((newest / PROGRESS_FILE).read_text())["config"]
        command = train_command(config, str(path))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        command = f"finetune train (its settings) --output-dir {path} --resume-from-checkpoint latest"
    return f"{path} is a run that did not finish (its last checkpoint is step {step}): resume it with {command}"


def check_finished(path: Path) -> None:
    """UnfinishedRunError, naming the step and the resume command, if ``path`` is a run that did not
    finish; ConfigError if it is a checkpoint folder inside a run that holds no model to load (the
    native and Accelerate loops' hold their state only; the Trainer's a model, which may be used)."""
    message = unfinished_run(path)
    if message is not None:
        raise UnfinishedRunError(message)
    if is_complete(path) and path.name.startswith(PREFIX) and not (path / "config.json").is_file():
        parent = unfinished_run(path.parent)
        if parent is not None:
            raise UnfinishedRunError(f"{path} is a checkpoint, not a run directory: {parent}")
        raise ConfigError(f"{path} is a checkpoint inside the run {path.parent}, not a run directory: pass the run")


def unfinished_runs_below(folder: Path) -> list[Path]:
    """Every run directory at or below ``folder`` that did not finish (hidden folders aside: a
    replacing run's ``.<name>.incoming`` is not a run of its own)."""
    parents = {p.parent for p in folder.rglob(f"{PREFIX}*") if p.is_dir()}
    return sorted(
        d for d in parents
        if not any(part.startswith(".") for part in d.relative_to(folder).parts) and did_not_finish(d)
    )  # fmt: skip
