"""Using a finished run: metrics on a split, or a prediction for one input."""

from __future__ import annotations

import torch
from datasets import DatasetDict

from finetune.data import load_glue, make_collator, make_dataloader, tokenize_glue
from finetune.loop import pick_device
from finetune.modeling import load_model, load_tokenizer
from finetune.pipeline import quiet_libraries
from finetune.run import evaluate
from finetune.tasks import get_task, test_split, validation_split


def evaluate_checkpoint(
    checkpoint: str, task_name: str, split: str, data_dir: str | None = None, max_samples: int | None = None
) -> dict[str, float] | None:
    """The task's metrics for the model saved in ``checkpoint`` on ``split``."""
    quiet_libraries()
    task = get_task(task_name)
    tokenizer = load_tokenizer(checkpoint)
    model = load_model(checkpoint, task)
    name = validation_split(task) if split == "validation" else test_split(task)
    raw = load_glue(task_name, data_dir)[name]
    if max_samples is not None:
        raw = raw.select(range(min(max_samples, len(raw))))
    data = tokenize_glue(DatasetDict({name: raw}), tokenizer, task_name)[name]
    device = pick_device()
    model.to(device)
    loader = make_dataloader(data, make_collator(tokenizer), 64, shuffle=False)
    return evaluate(model, loader, task, device, progress=True)


def predict(checkpoint: str, sentences: list[str]) -> tuple[str, float]:
    """(label name, probability) for one sentence or a sentence pair."""
    from finetune.config import ConfigError

    if not 1 <= len(sentences) <= 2:
        raise ConfigError(f"give one sentence or a pair, got {len(sentences)}")
    tokenizer = load_tokenizer(checkpoint)
    from transformers import AutoModelForSequenceClassification

    import finetune.modeling  # noqa: F401 - registers the mean-pooling head with the Auto classes

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    inputs = tokenizer(*sentences, truncation=True, return_tensors="pt")
    with torch.no_grad():
        probs = model(**inputs).logits.softmax(-1)[0]
    best = int(probs.argmax())
    return model.config.id2label[best], float(probs[best])
