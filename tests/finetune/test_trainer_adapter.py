"""finetune/loops/trainer_adapter.py through the Trainer's public names: its loss window logs what the
Trainer itself logs, and its length-grouped loader makes finetune's batches with the columns the
Trainer's own loader keeps. (Resuming, and the log after a resume, are in test_resume.py.)
``.ci/transformers-range`` runs this file on the oldest and the newest transformers allowed."""

import pytest
import torch
from datasets import Dataset
from transformers import Trainer

from finetune.config import TrainConfig
from finetune.data.glue import make_collator, train_sampler
from finetune.data.tasks import get_task
from finetune.loops.trainer import training_arguments
from finetune.loops.trainer_adapter import ResumableTrainer
from finetune.model.modeling import load_model, load_tokenizer


@pytest.fixture
def parts(tiny_models):
    """A tiny mean-head model, 40 pairs of random lengths, and the loop's Trainer arguments."""
    tokenizer = load_tokenizer(tiny_models["bert"])
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(40):
        n, m = torch.randint(2, 20, (2,), generator=generator).tolist()
        rows.append(tokenizer(" ".join(["word"] * n), " ".join(["other"] * m)) | {"labels": i % 2})
    dataset = Dataset.from_list(rows)
    return tiny_models["bert"], dataset, make_collator(tokenizer)


def trainer(cls, parts, output_dir):
    model_path, dataset, collator = parts
    torch.manual_seed(0)
    model = load_model(model_path, get_task("mrpc"))
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, warmup_ratio=0.1, logging_steps=3, seed=7, disable_tqdm=True)
    args = training_arguments(cfg.loop_settings(), str(output_dir), torch.device("cpu"))
    return cls(model=model, args=args, train_dataset=dataset, data_collator=collator)


def test_the_logged_loss_is_the_trainers_own(parts, tmp_path):
    losses = []
    for cls in (ResumableTrainer, Trainer):  # each built and trained in turn: the same random draws
        run = trainer(cls, parts, tmp_path / cls.__name__)
        run.train()
        losses.append([e["loss"] for e in run.state.log_history if "loss" in e])
    assert len(losses[0]) == 6 and losses[0] == losses[1]  # 20 steps, a line every 3: the same floats


def test_the_length_grouped_loader_makes_finetunes_batches(parts, tmp_path):
    ours, stock = (trainer(cls, parts, tmp_path / cls.__name__) for cls in (ResumableTrainer, Trainer))
    ours.length_grouped = True
    loader = ours.get_train_dataloader()
    assert len(loader) == 10
    first = next(iter(loader))
    assert first.keys() == next(iter(stock.get_train_dataloader())).keys()  # the columns the Trainer keeps
    assert "token_type_ids" not in first  # the mean head's forward does not name it: the Trainer drops it

    _, dataset, collator = parts
    order = list(train_sampler(dataset, 4, 7, group_by_length=True))
    for epoch in (0, 1):  # as the Trainer steps through its epochs
        loader.set_epoch(epoch)
        sampler = train_sampler(dataset, 4, 7, group_by_length=True)
        sampler.set_epoch(epoch)
        order = list(sampler)
        for i, batch in enumerate(loader):
            expected = collator([{k: dataset[j][k] for k in first} for j in order[4 * i : 4 * i + 4]])
            assert torch.equal(batch["input_ids"], expected["input_ids"]), (epoch, i)
