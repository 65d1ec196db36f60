"""MRPC's training batches as ``finetune train`` makes them, for the benchmark scripts."""

from __future__ import annotations

from datasets import DatasetDict

from finetune.data.glue import RunData, load_glue, make_collator, tokenize_glue
from finetune.model.modeling import default_model_path, load_tokenizer


def mrpc_train_batches(batch_size: int, data_dir: str | None) -> list[dict]:
    """The training set, tokenized by the default model's tokenizer, in length-grouped batches with
    dynamic padding (the order of seed 0, epoch 0)."""
    tokenizer = load_tokenizer(default_model_path())
    train = tokenize_glue(DatasetDict({"train": load_glue("mrpc", data_dir)["train"]}), tokenizer, "mrpc")
    return list(RunData(train, make_collator(tokenizer), batch_size, batch_size, 0, True).loader("train"))
