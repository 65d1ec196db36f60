"""GLUE data: build the Hub's datasets from local GLUE files, tokenize, batch with dynamic padding.

``load_glue("mrpc", "/path/to/glue")`` gives the same ``DatasetDict`` as
``datasets.load_dataset("nyu-mll/glue", "mrpc")``: same splits, features and rows. Without a
directory (and without ``GLUE_DIR``) it loads from the Hub.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, concatenate_datasets
from torch.utils.data import DataLoader, Sampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from finetune.data.tasks import GlueTask, get_task
from finetune.errors import DataError

GLUE_DIR_ENV = "GLUE_DIR"


# ----------------------------------------------------------------------------- loading


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The GLUE root: the argument, else ``$GLUE_DIR``, else None (meaning: use the Hub)."""
    chosen = data_dir if data_dir is not None else os.environ.get(GLUE_DIR_ENV) or None
    return None if chosen is None else Path(chosen).expanduser()


def load_glue(task: str, data_dir: str | os.PathLike | None = None) -> DatasetDict:
    """The GLUE task as a DatasetDict, from the GLUE-layout folder ``data_dir`` (or ``$GLUE_DIR``),
    or from the Hub's ``nyu-mll/glue`` when neither is given."""
    spec = get_task(task)
    root = resolve_data_dir(data_dir)
    if root is None:
        return _load_from_hub(spec)
    folder = root / spec.folder
    if not folder.is_dir():
        raise DataError(
            f"no {spec.folder}/ folder in {root}: point --data-dir (or {GLUE_DIR_ENV}) at the GLUE root "
            f"that holds {spec.folder}/"
        )
    splits = _read_mrpc(spec, folder) if spec.name == "mrpc" else _read_generic(spec, folder)
    features = _features(spec)
    return DatasetDict(
        {name: Dataset.from_dict(_columns(rows, spec), features=features) for name, rows in splits.items()}
    )


def _load_from_hub(spec: GlueTask) -> DatasetDict:
    hint = f"pass --data-dir DIR or set {GLUE_DIR_ENV}=DIR, DIR being a GLUE-layout folder holding {spec.folder}/"
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise DataError(f"GLUE/{spec.name} has no local copy and the Hub is offline: {hint}")
    from datasets import load_dataset

    try:
        return load_dataset("nyu-mll/glue", spec.name)
    except Exception as e:
        raise DataError(f"could not load GLUE/{spec.name} from the Hub ({type(e).__name__}): {hint}") from None


def _features(spec: GlueTask) -> Features:
    label = Value("float32") if spec.is_regression else ClassLabel(names=list(spec.label_names))
    return Features({**{c: Value("string") for c in spec.text_columns}, "label": label, "idx": Value("int32")})


def _columns(rows: list[dict[str, Any]], spec: GlueTask) -> dict[str, list]:
    cols: dict[str, list] = {c: [] for c in (*spec.text_columns, "label", "idx")}
    for i, row in enumerate(rows):
        for c in spec.text_columns:
            cols[c].append(row[c])
        cols["label"].append(row["label"])
        cols["idx"].append(i)
    return cols


def read_utf8(path: Path) -> str:
    """A text file's contents: UTF-8, a byte-order mark (Excel's exports) dropped; anything else is
    a DataError naming the line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: bytes that are not UTF-8 text: the file is damaged, or in another encoding "
            "(save it as UTF-8)"
        ) from None


def _read_tsv(path: Path) -> list[list[str]]:
    """The rows of a tab-separated file (UTF-8, an optional byte-order mark, no quoting)."""
    if not path.is_file():
        raise DataError(f"missing data file {path}: the GLUE folder is incomplete")
    return list(csv.reader(read_utf8(path).splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))


def _ends_mid_line(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _label(spec: GlueTask, raw: str, path: Path, line: int) -> int | float:
    try:
        if spec.is_regression:
            return float(raw)
        if raw in spec.label_names:
            return spec.label_names.index(raw)
        value = int(raw)
        if not 0 <= value < spec.num_labels:
            raise ValueError
        return value
    except ValueError:
        raise DataError(f"{path}:{line}: bad label {raw!r} for {spec.name}") from None


def _read_mrpc(spec: GlueTask, folder: Path) -> dict[str, list[dict]]:
    """MRPC as GLUE builds it: validation = the train-file rows whose ID pair is in dev_ids.tsv.
    The original files end with a newline, so one that does not was cut off."""
    dev_path = folder / spec.files["validation"]
    dev_rows = [r for r in _read_tsv(dev_path) if r]
    if not dev_rows:
        raise DataError(f"{dev_path}: empty: it should list the validation split's ID pairs, two per line")
    for line, pair in enumerate(dev_rows, start=1):
        if len(pair) != 2:
            raise DataError(f"{dev_path}:{line}: expected two tab-separated IDs per line, found {len(pair)} fields")
    dev_ids = {tuple(r) for r in dev_rows}

    def rows(path: Path) -> Iterator[tuple[tuple[str, str], dict]]:
        table = _read_tsv(path)
        header = table[0] if table else []
        expected = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
        if header != expected:
            raise DataError(f"{path}: header {header} is not MRPC's {expected}")
        if len(table) < 2:
            raise DataError(f"{path}: no rows after the header: the file is empty or cut off")
        if _ends_mid_line(path):
            raise DataError(f"{path}:{len(table)}: the file ends mid-line: it was cut off, copy it again")
        for line, r in enumerate(table[1:], start=2):
            if len(r) != 5:
                raise DataError(f"{path}:{line}: expected 5 tab-separated fields, found {len(r)}")
            yield (r[1], r[2]), {"sentence1": r[3], "sentence2": r[4], "label": _label(spec, r[0], path, line)}

    train, validation, found = [], [], set()
    for ids, row in rows(folder / spec.files["train"]):
        (validation if ids in dev_ids else train).append(row)
        found.add(ids)
    missing = sorted(dev_ids - found)
    if missing:
        raise DataError(
            f"{dev_path}: {len(missing)} ID pairs (first: {' '.join(missing[0])}) are not in "
            f"{spec.files['train']}: the two files do not belong together"
        )
    test = [row for _, row in rows(folder / spec.files["test"])]
    return {"train": train, "validation": validation, "test": test}


def _read_generic(spec: GlueTask, folder: Path) -> dict[str, list[dict]]:
    """A GLUE TSV task; unlabeled (test) files get label -1, as on the Hub."""
    splits = {}
    for split, filename in spec.files.items():
        path = folder / filename
        table = _read_tsv(path)
        labeled = not split.startswith("test")
        has_header = spec.header or not labeled  # CoLA's test file has a header, train/dev don't
        header = table[0] if has_header and table else []
        body = table[1:] if has_header else table
        start = 2 if has_header else 1

        def column(ref: str | int, header: list[str] = header, path: Path = path) -> int:
            if isinstance(ref, int):
                return ref
            if ref not in header:
                raise DataError(f"{path}: no column {ref!r} in header {header}")
            return header.index(ref)

        text_refs = spec.file_text_columns if labeled or spec.header else ("sentence",)
        text_idx = [column(c) for c in text_refs]
        label_idx = column(spec.file_label_column) if labeled and spec.file_label_column is not None else None
        rows = []
        for line, r in enumerate(body, start=start):
            if not r:
                continue
            needed = max([*text_idx, label_idx if label_idx is not None else 0])
            if len(r) <= needed:
                cut = " (the file ends mid-line: it was cut off)" if r is body[-1] and _ends_mid_line(path) else ""
                raise DataError(f"{path}:{line}: expected at least {needed + 1} fields, found {len(r)}{cut}")
            row = {c: r[i] for c, i in zip(spec.text_columns, text_idx)}
            row["label"] = _label(spec, r[label_idx], path, line) if label_idx is not None else -1
            rows.append(row)
        if not rows:
            raise DataError(f"{path}: no data rows: the file is empty or cut off")
        splits[split] = rows
    return splits


def with_swapped_pairs(dataset: Dataset, task: GlueTask) -> Dataset:
    """The pairs followed by the same pairs in the other order: the label of a paraphrase (or a
    duplicate question) does not depend on which sentence comes first, so this doubles the data."""
    first, second = task.text_columns
    swapped = dataset.map(lambda b: {first: b[second], second: b[first]}, batched=True, desc="swapping pairs")
    return concatenate_datasets([dataset, swapped])


# ----------------------------------------------------------------------------- tokenizing


def tokenize_glue(
    datasets: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    max_length: int = 128,
    pad_to_max_length: bool = False,
) -> DatasetDict:
    """Tokenize every split with ``map(batched=True)`` and truncation; no padding here (the
    collator pads each batch) unless ``pad_to_max_length``. Text columns and ``idx`` are dropped
    and ``label`` becomes ``labels``, the name the models' forward takes."""
    spec = get_task(task)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[c] for c in spec.text_columns]
        padding = "max_length" if pad_to_max_length else False
        return tokenizer(*texts, truncation=True, max_length=max_length, padding=padding)

    drop = [*spec.text_columns, "idx"]
    tokenized = datasets.map(encode, batched=True, remove_columns=drop, desc="tokenizing")
    return tokenized.rename_column("label", "labels")


def make_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
    """Pads each batch to its own longest sequence (dynamic padding)."""
    return DataCollatorWithPadding(tokenizer=tokenizer, return_tensors="pt")


# ----------------------------------------------------------------------------- batching


class EpochShuffleSampler(Sampler[int]):
    """A random order of the dataset that depends only on (seed, epoch): a run resumed in the
    middle of an epoch sees exactly the order it would have seen."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class LengthGroupedSampler(Sampler[int]):
    """Random batches of similar length, so dynamic padding pads little.

    Each epoch: shuffle all indices, cut them into mega-batches of ``batch_size * group``, sort
    each mega-batch by length, cut it into batches, and shuffle the batches' order (the one short
    batch, if any, stays last). It yields the indices batch after batch, so a DataLoader with the
    same ``batch_size`` makes exactly these batches, and the Trainer can take it as its sampler.
    Like ``EpochShuffleSampler`` the order depends only on (seed, epoch).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group: int = 50) -> None:
        self.lengths, self.batch_size, self.seed, self.group, self.epoch = lengths, batch_size, seed, group, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        mega = self.batch_size * self.group
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: self.lengths[i], reverse=True)
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        short = [b for b in batches if len(b) < self.batch_size]
        full = [b for b in batches if len(b) == self.batch_size]
        for b in torch.randperm(len(full), generator=generator).tolist():
            yield from full[b]
        for batch in short:
            yield from batch


def make_dataloader(
    dataset: Dataset,
    collator: DataCollatorWithPadding,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    group_by_length: bool = False,
) -> DataLoader:
    """A DataLoader whose order is fixed by (seed, epoch): call ``loader.sampler.set_epoch``
    (or the batch sampler's) at each epoch, as for a DistributedSampler.

    It has its own ``generator``: without one, every ``iter(loader)`` draws a seed from the global
    torch RNG, so a run resumed mid-epoch (RNG restored, then a new iterator) would shift every
    dropout mask after the resume."""
    generator = torch.Generator().manual_seed(seed)
    sampler = train_sampler(dataset, batch_size, seed, group_by_length) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator, generator=generator)


def train_sampler(dataset: Dataset, batch_size: int, seed: int, group_by_length: bool) -> Sampler[int]:
    """The training order, fixed by (seed, epoch): length-grouped batches, or a plain shuffle."""
    if group_by_length:
        return LengthGroupedSampler([len(ids) for ids in dataset["input_ids"]], batch_size, seed)
    return EpochShuffleSampler(len(dataset), seed)


@dataclass
class RunData:
    """A run's tokenized splits (``train``, ``validation``, ``test``) and how to batch them."""

    splits: DatasetDict
    collator: DataCollatorWithPadding
    batch_size: int
    eval_batch_size: int
    seed: int
    group_by_length: bool = False

    def loader(self, split: str) -> DataLoader:
        """The training split shuffled by (seed, epoch), the others in order."""
        if split == "train":
            return make_dataloader(
                self.splits[split], self.collator, self.batch_size, True, self.seed, self.group_by_length
            )
        return make_dataloader(self.splits[split], self.collator, self.eval_batch_size, False, self.seed)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's sampler (plain or under Accelerate) which epoch is starting."""
    if hasattr(loader, "set_epoch"):  # Accelerate's prepared loaders forward it
        loader.set_epoch(epoch)
    for sampler in (loader.sampler, getattr(loader, "batch_sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
