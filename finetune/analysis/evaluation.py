"""One evaluation of a finished run, shared by every command that reports its numbers.

``finetune train`` saves the model, then measures the *saved* directory here; ``finetune
evaluate`` and ``finetune predict`` call the same functions with the settings the run recorded
(results.json's ``evaluation``: device, autocast precision, batch size, max length, padding).
Same weights, same inputs in the same batches, same code: the same logits, bit for bit, on the
same kind of device. (Another device, or another CPU's BLAS, changes the last bits of a logit,
and then a prediction that sits on the decision boundary may flip; ``evaluate`` says so.)

The examples go through the model in their file order, ``batch_size`` at a time, each batch
padded to its longest example (or to ``max_length`` with ``pad_to_max_length``), as the
training loop's evaluation batches them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from finetune.analysis.metrics import compute_metrics
from finetune.data.glue import load_glue
from finetune.data.tasks import GlueTask, test_split, validation_split
from finetune.errors import ConfigError
from finetune.model.mean_pooling import classification_loss

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class EvalSettings:
    """How a run's examples are computed; results.json keeps them as ``evaluation``."""

    device: str = "cpu"  # the device type the recorded numbers were computed on
    precision: str = "fp32"  # autocast: fp32 (none), bf16 or fp16; the weights stay float32
    batch_size: int = 64
    max_length: int | None = 128  # None: the tokenizer's own limit
    pad_to_max_length: bool = False

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AUTOCAST[self.precision]

    def record(self) -> dict[str, Any]:
        """The settings for results.json, with a sentence on when the numbers reproduce exactly."""
        return {
            **asdict(self),
            "reproduces": "bit for bit with `finetune evaluate` on a CPU or GPU of the same kind; on another "
            "device the logits differ in the last bits, which can flip a prediction on the decision boundary",
        }

    @classmethod
    def of_run(cls, run_dir: Path) -> EvalSettings:
        """The settings ``run_dir`` recorded; defaults (float32, batches of 64) for a plain model folder."""
        path = run_dir / "results.json"
        results = json.loads(path.read_text()) if path.is_file() else {}
        recorded = results.get("evaluation")
        if recorded is not None:
            return cls(**{k: recorded[k] for k in asdict(cls())})
        if not results:
            return cls(device=_available(None))
        # a run written before the settings were recorded: the loop's rule and its config
        from finetune.model.devices import autocast_dtype, pick_device

        config = results["config"]
        device = pick_device(_available(config.get("device", "auto")))
        dtype = autocast_dtype(device, config.get("mixed_precision", "auto"))
        precision = {v: k for k, v in AUTOCAST.items()}[dtype]
        return cls(device.type, precision, config.get("eval_batch_size", 64), config.get("max_length", 128),
                   config.get("pad_to_max_length", False))  # fmt: skip


def _available(device: str | None) -> str:
    """``device`` if torch can use it here, else the best one that is ("auto" stays "auto")."""
    from finetune.model.devices import pick_device

    if device in (None, "auto"):
        return pick_device().type if device is None else "auto"
    if device == "cuda" and not torch.cuda.is_available():
        return pick_device().type
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return pick_device().type
    return device


# ----------------------------------------------------------------------------- the computation


def logits_of(
    model: Any, tokenizer: Any, examples: list[list[str]], settings: EvalSettings, progress: bool = False
) -> np.ndarray:
    """The model's logits for ``examples`` (each one text or a pair), in their order, as float32."""
    device = torch.device(_available(settings.device))
    model.to(device).eval()
    padding = "max_length" if settings.pad_to_max_length else "longest"
    batches = range(0, len(examples), settings.batch_size)
    outputs = []
    with torch.no_grad():
        for start in tqdm(batches, desc="evaluating", leave=False, disable=not progress):
            texts = list(zip(*examples[start : start + settings.batch_size]))
            inputs = tokenizer(
                *texts, truncation=True, max_length=settings.max_length, padding=padding, return_tensors="pt"
            ).to(device)
            dtype = settings.autocast_dtype
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outputs.append(model(**inputs).logits.float().cpu())
    width = getattr(model.config, "num_labels", 1)
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, width), dtype=np.float32)


def score(task: GlueTask, logits: np.ndarray, labels: np.ndarray, config: Any) -> dict[str, float] | None:
    """The task's metrics, the mean loss and the number of examples; None for an unlabeled split."""
    if not has_labels(labels):
        return None  # a test split without labels
    metrics = compute_metrics(task, logits, labels)
    metrics["loss"] = float(classification_loss(torch.from_numpy(logits), torch.from_numpy(labels), config))
    metrics["examples"] = len(labels)
    return metrics


def has_labels(labels: np.ndarray) -> bool:
    """False for a split whose labels GLUE keeps private: every label -1, as the Hub has them."""
    return not bool((labels < 0).all())


@dataclass
class SplitData:
    """One split's examples as the model reads them: texts, gold labels and GLUE's ``idx``."""

    name: str  # "validation" or "test" (the task's own split name is in ``hub_name``)
    hub_name: str
    examples: list[list[str]]
    labels: np.ndarray
    idx: list[int]


def read_split(task: GlueTask, split: str, data_dir: str | None, max_samples: int | None = None) -> SplitData:
    """The first ``max_samples`` (all: None) examples of the task's validation or test split."""
    hub_name = validation_split(task) if split == "validation" else test_split(task)
    raw = load_glue(task.name, data_dir)[hub_name]
    if max_samples is not None:
        if max_samples <= 0:
            raise ConfigError(f"--max-eval-samples must be positive, got {max_samples}")
        raw = raw.select(range(min(max_samples, len(raw))))
    examples = [list(texts) for texts in zip(*(raw[c] for c in task.text_columns))]
    return SplitData(split, hub_name, examples, np.asarray(raw["label"]), list(raw["idx"]))


def prediction_table(task: GlueTask, split: SplitData, logits: np.ndarray) -> list[dict[str, Any]]:
    """Per-example rows for ``<split>_predictions.tsv``: GLUE's ``index``, the gold ``label``, the
    ``prediction`` and, for classes, the ``probability`` of the positive class (binary tasks) or of
    the predicted one; for regression the predicted score."""
    if task.is_regression:
        return [
            {"index": i, "label": float(y), "prediction": float(v)}
            for i, y, v in zip(split.idx, split.labels, logits[:, 0])
        ]
    probs = torch.from_numpy(logits).softmax(-1).numpy()
    predicted = logits.argmax(-1)
    rows = []
    for i, y, p, prob in zip(split.idx, split.labels, predicted, probs):
        shown = prob[1] if task.num_labels == 2 else prob[p]
        rows.append({"index": i, "label": int(y), "prediction": int(p), "probability": f"{float(shown):.6f}"})
    return rows


def evaluate_saved(
    run_dir: Path,
    task: GlueTask,
    splits: list[SplitData],
    settings: EvalSettings,
    progress: bool = False,
) -> dict[str, tuple[dict[str, float] | None, np.ndarray]]:
    """Load the model saved in ``run_dir`` and return, for each split, (metrics, logits)."""
    from finetune.model.modeling import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(run_dir))
    model = load_model(str(run_dir), task)
    results = {}
    for split in splits:
        logits = logits_of(model, tokenizer, split.examples, settings, progress)
        results[split.name] = (score(task, logits, split.labels, model.config), logits)
    return results
