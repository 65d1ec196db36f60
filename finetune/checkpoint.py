"""Checkpoints that resume exactly: ``checkpoint-<step>/`` folders inside the run directory.

A checkpoint of the native or Accelerate loop holds the runtime's state (model, optimizer,
scheduler, RNG states: ``Runtime.save_state``) and ``progress.json`` (epoch, position in the
epoch, optimizer steps, history so far). It is written into a temporary folder and renamed into
place, and ``progress.json`` is written last, so a crash while saving never leaves a checkpoint
that looks whole. The Trainer writes its own ``checkpoint-<step>/`` folders (same names), which
count as whole when their ``trainer_state.json`` is there.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from finetune.config import ConfigError

PREFIX = "checkpoint-"
PROGRESS_FILE = "progress.json"
TRAINER_STATE_FILE = "trainer_state.json"


def is_complete(path: Path) -> bool:
    """A checkpoint folder that was written to the end (by our loops or by the Trainer)."""
    if (path / PROGRESS_FILE).is_file():
        progress = json.loads((path / PROGRESS_FILE).read_text())
        return all((path / name).exists() for name in progress.get("files", []))
    return (path / TRAINER_STATE_FILE).is_file()


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``checkpoint-<step>`` folder, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for p in output_dir.iterdir():
        m = re.fullmatch(rf"{PREFIX}(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """``latest``: the newest whole checkpoint in ``output_dir``; a path: that checkpoint, checked."""
    if resume is None:
        return None
    if resume == "latest":
        whole = [p for _, p in list_checkpoints(output_dir) if is_complete(p)]
        if not whole:
            raise ConfigError(
                f"--resume-from-checkpoint latest: no usable checkpoint-<step>/ in {output_dir} "
                "(train with --save-steps N to write them)"
            )
        return whole[-1]
    path = Path(resume)
    if not path.is_dir():
        raise ConfigError(f"--resume-from-checkpoint: no checkpoint folder {path}")
    if not is_complete(path):
        raise ConfigError(f"--resume-from-checkpoint: {path} is incomplete (the run died while saving it)")
    return path


def save_checkpoint(runtime: Any, output_dir: Path, step: int, progress: dict[str, Any], limit: int | None) -> Path:
    """Write ``checkpoint-<step>`` atomically; keep only the newest ``limit`` checkpoints."""
    final = output_dir / f"{PREFIX}{step}"
    tmp = output_dir / f".{PREFIX}{step}.tmp"
    if runtime.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    runtime.wait_for_everyone()
    files = runtime.save_state(tmp)
    runtime.wait_for_everyone()
    if runtime.is_main_process:
        (tmp / PROGRESS_FILE).write_text(json.dumps({**progress, "files": files}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if limit:
            for _, old in list_checkpoints(output_dir)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
    runtime.wait_for_everyone()
    return final


def load_checkpoint(runtime: Any, path: Path) -> dict[str, Any]:
    """Restore the runtime's state from ``path``; return its progress record."""
    runtime.load_state(path)
    return json.loads((path / PROGRESS_FILE).read_text())
