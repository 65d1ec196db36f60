"""Writing a file so that a crash never leaves half of it: one helper for every file a run writes."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from finetune.errors import ConfigError

PREDICTIONS_FILE = "{split}_predictions.tsv"  # in a run directory, one per labelled split

FORMATS = {".tsv": "\t", ".csv": ","}  # tables; and .jsonl: one JSON object per line


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place: readers see the
    old file or the new one, never a part. (Created with ``open``, so it gets the usual permissions.)"""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_writable_folder(folder: Path, option: str, given: Path | None = None) -> None:
    """Refuse, before any work, a folder that cannot be created or written (a file in its place or
    above it, read-only, on /proc) by making and removing a scratch folder in its nearest existing
    ancestor. ``option`` and ``given`` (default: ``folder``) name it as the user gave it."""
    given = folder if given is None else given
    ancestor = folder
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        where = "" if ancestor == given else f": {ancestor}"
        raise ConfigError(f"{option} {given}{where} is a file: choose another {option}")
    try:
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".finetune-write-test-"))
    except OSError as e:
        raise ConfigError(
            f"{option} {given}: cannot write in {ancestor} ({e.strerror}): choose another {option}"
        ) from None


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON, atomically."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def give_usual_permissions(folder: Path) -> None:
    """Give every file under ``folder`` the permissions ``open`` would: some libraries write
    through ``mkstemp``, whose files only their owner may read (safetensors' weights, for one)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """.tsv / .csv with a header, or .jsonl, written whole or not at all."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=list(rows[0]), delimiter=FORMATS.get(suffix, "\t"), lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    write_atomic(path, text)
