"""Checkpoints that resume exactly: ``checkpoint-<step>/`` folders inside the run directory.

Every checkpoint, whichever loop wrote it, ends with ``progress.json``: the run's configuration,
the size and SHA-256 of every file in the folder and, for the native and Accelerate loops, the
position in training (epoch, batch, optimizer steps, history so far). Our loops write the folder
under a temporary name and rename it into place; the Trainer writes its folder in place and we add
``progress.json`` after it (a ``TrainerCallback``). Either way a folder without ``progress.json``
was cut off while being written: ``latest`` does not see it, and the next run removes it.
Resuming checks the files against their recorded hashes and the configuration against the
current one before any work starts, and that no file the loops unpickle holds more than tensors
and plain data (``check_no_code``): the seal proves a checkpoint is whole, not who made it.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import io
import json
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from finetune.config import ConfigError, differing_settings
from finetune.run.files import give_usual_permissions, write_json

PREFIX = "checkpoint-"
PROGRESS_FILE = "progress.json"
PICKLED = (".pt", ".pth", ".bin", ".pkl")  # what torch.save writes: the native, Accelerate and Trainer states
NEVER_LOADED = {"training_args.bin"}  # the Trainer pickles its arguments there but never loads them to resume
# Beyond tensors and plain data, the NumPy arrays of accelerate's and the Trainer's RNG files,
# allowed exactly as those libraries allow them when they load (torch.serialization.safe_globals);
# the first is the function a pickled array names to rebuild itself (what ``ndarray.__reduce__`` gives).
NUMPY_GLOBALS = [np.zeros(0).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32)), codecs.encode]


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


def is_complete(path: Path) -> bool:
    """A checkpoint folder written to the end: its ``progress.json`` is there (it comes last)."""
    return (path / PROGRESS_FILE).is_file()


def remove_incomplete(output_dir: Path) -> list[Path]:
    """Delete what a crash while saving left behind: temporary folders and checkpoints without
    ``progress.json``. Returns what was removed."""
    if not output_dir.is_dir():
        return []
    stale = [p for p in output_dir.glob(f".{PREFIX}*.tmp") if p.is_dir()]
    stale += [p for _, p in list_checkpoints(output_dir) if not is_complete(p)]
    for p in stale:
        shutil.rmtree(p)
    return stale


def file_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file under ``directory`` (``progress.json`` aside)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != PROGRESS_FILE)
    return {str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files}


def sha256_of(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_progress(directory: Path, config: dict[str, Any], progress: dict[str, Any] | None = None) -> None:
    """Seal a checkpoint folder: ``progress.json`` with the config and the files' hashes, written
    beside its place and renamed in, so it is whole or absent."""
    give_usual_permissions(directory)
    write_json(directory / PROGRESS_FILE, {"config": config, "files": file_manifest(directory), **(progress or {})})


def read_progress(path: Path) -> dict[str, Any]:
    """The checkpoint's record, after checking that every file is as it was written."""
    try:
        record = json.loads((path / PROGRESS_FILE).read_text())
        files, config = record["files"], record["config"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ConfigError(
            f"{path / PROGRESS_FILE} is damaged (not the JSON finetune writes): resume from another checkpoint"
        ) from None
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise ConfigError(f"checkpoint {path} lacks {name}: resume from another checkpoint")
        if file.stat().st_size != expected["bytes"] or sha256_of(file) != expected["sha256"]:
            raise ConfigError(
                f"{file} is damaged (it differs from what was written: {file.stat().st_size} bytes, "
                f"{expected['bytes']} recorded): resume from another checkpoint"
            )
    if not isinstance(config, dict):
        raise ConfigError(f"{path / PROGRESS_FILE} is damaged: it records no configuration")
    return record


SHARD_INDEX = ".metadata"  # torch.distributed.checkpoint's index of a sharded checkpoint: a plain pickle


@functools.cache
def shard_index_globals() -> dict[str, set[str] | None]:
    """What a sharded checkpoint's index names: torch.distributed.checkpoint's own records, shapes,
    dtypes (a function: torch, slow to import, loads only when a checkpoint is checked, not when
    ``finetune report`` or ``compare`` list a run's checkpoints)."""
    import torch

    return {
        "torch.distributed.checkpoint.metadata": None,  # None: any class of the module
        "torch.distributed.checkpoint.filesystem": None,
        "torch": {"Size", *(name for name in dir(torch) if isinstance(getattr(torch, name), torch.dtype))},
        "torch.serialization": {"_get_layout"},
        "pathlib": {"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"},
    }


class ShardIndexUnpickler(pickle.Unpickler):
    """Reads a ``.metadata`` index, refusing any global beyond ``shard_index_globals()``."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = shard_index_globals().get(module, set())
        found = super().find_class(module, name) if allowed is None or name in allowed else None
        if found is None or (allowed is None and not isinstance(found, type)):
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed")
        return found


def check_sharded_no_code(index: Path) -> None:
    """A ``torch.distributed.checkpoint`` folder: its index and every non-tensor value it holds
    (which ``dcp.load`` unpickles unrestricted) must be data only."""
    import torch
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    with open(index, "rb") as f:
        metadata = ShardIndexUnpickler(f).load()
    for key, where in metadata.storage_data.items():
        if isinstance(metadata.state_dict_metadata.get(key.fqn), BytesStorageMetadata):
            with open(index.parent / where.relative_path, "rb") as f:
                f.seek(where.offset)
                with torch.serialization.safe_globals(NUMPY_GLOBALS):
                    torch.load(io.BytesIO(f.read(where.length)), weights_only=True)


def check_no_code(path: Path) -> None:
    """Load every pickled file of checkpoint ``path`` as the loops will, with
    ``torch.load(weights_only=True)``, and refuse one that holds anything else: a pickle can name
    any function to call while it loads, so a file edited to do so never reaches a loader."""
    import torch

    pickled = [
        p for p in path.rglob("*") if (p.suffix in PICKLED or p.name == SHARD_INDEX) and p.name not in NEVER_LOADED
    ]
    for file in sorted(pickled):
        try:
            if file.name == SHARD_INDEX:
                check_sharded_no_code(file)
                continue
            with torch.serialization.safe_globals(NUMPY_GLOBALS):
                torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise ConfigError(
                f"{file} holds more than tensors and numbers (loading it could run code): not resumed; resume only "
                "from a checkpoint you made or trust"
            ) from None


def resolve_resume(resume: str | None, output_dir: Path, config: dict[str, Any]) -> Path | None:
    """The checkpoint to resume: ``latest`` (the newest whole one in ``output_dir``) or a path;
    checked whole, undamaged, and made with the same run-changing settings as ``config``."""
    if resume is None:
        return None
    if resume == "latest":
        whole = [p for _, p in list_checkpoints(output_dir) if is_complete(p)]
        if not whole:
            raise ConfigError(
                f"--resume-from-checkpoint latest: no usable checkpoint-<step>/ in {output_dir} "
                "(train with --save-steps N to write them)"
            )
        path = whole[-1]
    else:
        path = Path(resume)
        if not path.is_dir():
            raise ConfigError(f"--resume-from-checkpoint: no checkpoint folder {path}")
        if not is_complete(path):
            raise ConfigError(
                f"--resume-from-checkpoint: {path} is not a finetune checkpoint (no {PROGRESS_FILE}): pass a "
                "checkpoint-<step>/ folder of a run, or latest"
            )
    saved = read_progress(path)["config"]
    check_no_code(path)
    differences = differing_settings(saved, config)
    if differences:
        raise ConfigError(
            f"cannot resume {path} with other settings: {'; '.join(differences)}: resume with the checkpoint's "
            "settings, or start a new run"
        )
    return path


def save_checkpoint(
    output_dir: Path,
    step: int,
    config: dict[str, Any],
    position: dict[str, Any],
    limit: int | None,
    save_state: Callable[[Path], None],
    is_main: bool = True,
    wait_for_everyone: Callable[[], None] = lambda: None,
) -> Path:
    """Write ``checkpoint-<step>`` atomically (``save_state`` fills a temporary folder, which is
    sealed and renamed); keep only the newest ``limit`` checkpoints. Every process calls it."""
    final = output_dir / f"{PREFIX}{step}"
    tmp = output_dir / f".{PREFIX}{step}.tmp"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    wait_for_everyone()
    save_state(tmp)
    wait_for_everyone()
    if is_main:
        write_progress(tmp, config, position)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if limit:
            for _, old in list_checkpoints(output_dir)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
    wait_for_everyone()
    return final


def load_progress(path: Path) -> dict[str, Any]:
    """The position and history a checkpoint recorded."""
    return json.loads((path / PROGRESS_FILE).read_text())
