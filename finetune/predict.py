"""Using a finished run: metrics on a split, predictions for a sentence, a file, or the GLUE server.

Input files are read with the standard library, not ``datasets``, so that a bad row is refused
with its file and line number before any prediction is made.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finetune.analysis.evaluation import (
    EvalSettings,
    evaluate_saved,
    has_labels,
    logits_of,
    prediction_table,
    read_split,
)
from finetune.data.glue import load_glue, read_utf8
from finetune.data.tasks import GlueTask, get_task, test_split
from finetune.errors import ConfigError, DataError, one_line
from finetune.model.modeling import load_tokenizer
from finetune.pipeline import quiet_libraries
from finetune.run.files import FORMATS, check_writable_folder, write_atomic, write_rows

# The GLUE server's file for each task's test split, and whether it wants label names (else ids).
SUBMISSION_FILES = {
    "cola": "CoLA.tsv", "sst2": "SST-2.tsv", "mrpc": "MRPC.tsv", "qqp": "QQP.tsv", "stsb": "STS-B.tsv",
    "mnli": "MNLI-m.tsv", "qnli": "QNLI.tsv", "rte": "RTE.tsv", "wnli": "WNLI.tsv",
}  # fmt: skip
NAMED_LABELS = ("mnli", "qnli", "rte")


def evaluate_checkpoint(
    checkpoint: str, task_name: str, split: str, data_dir: str | None = None, max_samples: int | None = None
) -> dict[str, float] | None:
    """The task's metrics for the run saved in ``checkpoint`` on ``split``, computed as the run
    computed the ones it recorded (``finetune.analysis.evaluation``)."""
    quiet_libraries()
    task = get_task(task_name)
    data = read_split(task, split, data_dir, max_samples)
    if not has_labels(data.labels):
        raise ConfigError(
            f"--split {split}: the {task.name} {split} split has no labels (GLUE keeps them private), so there is "
            f"nothing to score: use --split validation, or finetune predict --split {split} --output FILE"
        )
    settings = EvalSettings.of_run(Path(checkpoint))
    metrics, _ = evaluate_saved(Path(checkpoint), task, [data], settings, progress=True)[split]
    return metrics


def predict_split(
    checkpoint: str, task: GlueTask, split: str, output: Path, data_dir: str | None = None, progress: bool = True
) -> int:
    """Write the per-example predictions of ``split`` (the rows of the run's ``<split>_predictions.tsv``)."""
    check_output_path(output)
    data = read_split(task, split, data_dir)
    _, logits = evaluate_saved(Path(checkpoint), task, [data], EvalSettings.of_run(Path(checkpoint)), progress)[split]
    rows = prediction_table(task, data, logits)
    write_rows(output, rows)
    return len(rows)


def load_classifier(checkpoint: str) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) of a finished run."""
    from transformers import AutoModelForSequenceClassification

    import finetune.model.modeling  # noqa: F401 - registers the mean-pooling head with the Auto classes

    tokenizer = load_tokenizer(checkpoint)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a classifier from {checkpoint}: {one_line(e)}") from None
    return model, tokenizer


def check_text_count(task: GlueTask | None, count: int, noun: str, given: str = "") -> None:
    """Refuse inputs with the wrong number of texts (``noun``: sentences, text columns; ``given``
    shows them): two for a pair task, one for a single-sentence task, one or two with no task."""
    one = noun.removesuffix("s")
    if task is None:
        kind, wanted = f"give one {one} or two", (1, 2)
    elif len(task.text_columns) == 2:
        kind, wanted = f"{task.name} takes a sentence pair: give two {noun}", (2,)
    else:
        kind, wanted = f"{task.name} takes one sentence: give one {one}", (1,)
    if count not in wanted:
        raise ConfigError(f"{kind}, got {count}{f' ({given})' if given else ''}")


def predict(checkpoint: str, sentences: list[str], task: GlueTask | None = None) -> tuple[str, float]:
    """(label name, probability) for one sentence or a sentence pair (as ``task`` takes, if given)."""
    check_text_count(task, len(sentences), "sentences")
    model, tokenizer = load_classifier(checkpoint)
    logits = logits_of(model, tokenizer, [sentences], EvalSettings.of_run(Path(checkpoint)))
    (row,) = prediction_rows(logits, model.config.id2label, regression=False)
    return row["label_name"], row["probability"]


# ----------------------------------------------------------------------------- files


def read_examples(path: Path, columns: list[str]) -> list[list[str]]:
    """The text ``columns`` of every row of a .tsv, .csv (with a header) or .jsonl file."""
    if not path.is_file():
        raise DataError(f"no input file {path}")
    suffix = path.suffix.lower()
    if suffix not in (*FORMATS, ".jsonl"):
        raise DataError(f"{path}: unknown format {suffix or '(no suffix)'}: give a .tsv, .csv or .jsonl file")
    text = read_utf8(path)
    rows = _jsonl_rows(path, text) if suffix == ".jsonl" else _table_rows(path, text, FORMATS[suffix])
    examples = []
    for line, row in rows:
        missing = [c for c in columns if c not in row]
        if missing:
            raise DataError(
                f"{path}, line {line}: no column {missing[0]!r} (it has {', '.join(map(str, row))}): "
                "name the text columns with --text-columns"
            )
        for column in columns:
            if not isinstance(row[column], str) or not row[column].strip():
                raise DataError(f"{path}, line {line}: column {column!r} is empty or not text")
        examples.append([row[c] for c in columns])
    if not examples:
        raise DataError(f"{path} holds no rows to predict")
    return examples


def _table_rows(path: Path, text: str, delimiter: str) -> list[tuple[int, dict[str, str]]]:
    # GLUE's TSV files are not quoted (a sentence may hold a lone "): read them as plain fields
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path} is empty: it needs a header line naming its columns") from None
    rows = []
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue  # a blank line
        if len(fields) != len(header):
            raise DataError(f"{path}, line {reader.line_num}: {len(fields)} fields, but the header has {len(header)}")
        rows.append((reader.line_num, dict(zip(header, fields))))
    return rows


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {line}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {line}: a JSON object is needed, got {type(row).__name__}")
        rows.append((line, row))
    return rows


def prediction_rows(logits: np.ndarray, id2label: dict[int, str], regression: bool) -> list[dict[str, Any]]:
    """One row per example: index, and label, label name and probability (or the score)."""
    if regression:
        return [{"index": i, "score": round(float(v), 6)} for i, v in enumerate(logits[:, 0])]
    probs = torch.from_numpy(logits).softmax(-1)
    best = probs.argmax(-1)
    return [
        {"index": i, "label": int(b), "label_name": id2label[int(b)], "probability": round(float(probs[i, b]), 6)}
        for i, b in enumerate(best)
    ]


def predict_file(
    checkpoint: str, input_path: Path, output_path: Path, task: GlueTask | None, text_columns: list[str] | None,
    batch_size: int | None = None, progress: bool = True,
) -> int:  # fmt: skip
    """Classify every row of ``input_path`` and write ``output_path``; returns the number of rows.
    ``batch_size`` None: the run's evaluation batch size (its recorded numbers reproduce exactly)."""
    check_output_path(output_path, input_path)
    columns = text_columns or (list(task.text_columns) if task else None)
    if not columns:
        raise ConfigError("this run names no task: give the input's text columns with --text-columns")
    check_text_count(task, len(columns), "text columns", f"--text-columns {' '.join(columns)}")
    examples = read_examples(input_path, columns)
    model, tokenizer = load_classifier(checkpoint)
    settings = EvalSettings.of_run(Path(checkpoint))
    if batch_size is not None:
        settings = dataclasses.replace(settings, batch_size=batch_size)
    logits = logits_of(model, tokenizer, examples, settings, progress)
    rows = prediction_rows(logits, model.config.id2label, model.config.num_labels == 1)
    write_rows(output_path, rows)
    return len(rows)


def check_output_path(output: Path, input_path: Path | None = None) -> None:
    if output.suffix.lower() not in (*FORMATS, ".jsonl"):
        raise ConfigError(f"--output {output}: give a .tsv, .csv or .jsonl file name")
    if input_path is not None and output.resolve() == input_path.resolve():
        raise ConfigError(f"--output {output} is the input file: write the predictions elsewhere")
    if output.is_dir():
        raise ConfigError(f"--output {output} is a directory: give a file name")
    check_writable_folder(output.parent, "--output", output)
    if not output.parent.is_dir():
        raise ConfigError(f"--output {output}: no directory {output.parent}")


# ----------------------------------------------------------------------------- GLUE submission


def write_glue_submission(
    checkpoint: str, task: GlueTask, out_dir: Path, data_dir: str | None = None, progress: bool = True
) -> Path:
    """The task's test predictions as the GLUE server takes them (``run_glue.py --do_predict``):
    ``<out_dir>/MRPC.tsv`` etc., ``index`` and ``prediction`` per test example, labels as ids
    (names for MNLI, QNLI, RTE), STS-B scores as floats."""
    check_writable_folder(out_dir, "--glue-submission")
    model, tokenizer = load_classifier(checkpoint)
    if model.config.num_labels != task.num_labels:
        raise ConfigError(f"{checkpoint} predicts {model.config.num_labels} labels, {task.name} has {task.num_labels}")
    test = load_glue(task.name, data_dir)[test_split(task)]
    examples = [list(values) for values in zip(*(test[c] for c in task.text_columns))]
    logits = logits_of(model, tokenizer, examples, EvalSettings.of_run(Path(checkpoint)), progress)
    if task.is_regression:
        predictions = [f"{v:.3f}" for v in logits[:, 0]]
    else:
        ids = logits.argmax(-1)
        predictions = [task.label_names[i] if task.name in NAMED_LABELS else str(i) for i in ids]
    lines = ["index\tprediction"] + [f"{idx}\t{p}" for idx, p in zip(test["idx"], predictions)]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / SUBMISSION_FILES[task.name]
    write_atomic(target, "\n".join(lines) + "\n")
    return target
