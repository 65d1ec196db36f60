"""Library parts finetune uses where they keep the exact resume, and the ones it does not use, with
the difference that rules each out (docs/finetune/reliability.md)."""

import json
import random

import pytest
import torch
from accelerate import skip_first_batches
from datasets import Dataset
from transformers.trainer_pt_utils import LengthGroupedSampler as TransformersLengthGroupedSampler
from transformers.trainer_utils import get_last_checkpoint

from finetune.config import TrainConfig
from finetune.data.glue import LengthGroupedSampler, make_collator, make_dataloader, set_epoch
from finetune.model.modeling import default_model_path, load_tokenizer
from finetune.run.checkpoint import PROGRESS_FILE, resolve_resume


@pytest.fixture(scope="module")
def dataset_and_collator():
    rng = random.Random(0)
    rows = [[101] + [1000 + rng.randrange(500) for _ in range(rng.randrange(3, 40))] + [102] for _ in range(203)]
    dataset = Dataset.from_dict(
        {"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows], "labels": [i % 2 for i in range(len(rows))]}
    )
    return dataset, make_collator(load_tokenizer(default_model_path()))


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("skip", [1, 5, 12])
def test_accelerates_skip_first_batches_gives_the_batches_a_resumed_epoch_needs(dataset_and_collator, grouped, skip):
    """What finetune hand-wrote before (iterate and drop ``skip`` collated batches): the same
    batches after them, and the same draws from the loader's generator and the global RNG."""
    dataset, collator = dataset_and_collator

    def epoch(skipping):
        loader = make_dataloader(dataset, collator, 16, shuffle=True, seed=7, group_by_length=grouped)
        set_epoch(loader, 2)
        torch.manual_seed(3)
        if skipping:
            batches = list(skip_first_batches(loader, skip))
        else:
            batches = iter(loader)
            for _ in range(skip):
                next(batches)
            batches = list(batches)
        return batches, loader.generator.get_state(), torch.get_rng_state()

    library, by_hand = epoch(True), epoch(False)
    assert len(library[0]) == len(by_hand[0]) == 13 - skip
    for a, b in zip(library[0], by_hand[0], strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(library[1], by_hand[1]) and torch.equal(library[2], by_hand[2])


def test_transformers_length_grouped_sampler_is_not_fixed_by_seed_and_epoch():
    """Why finetune keeps its own: the Trainer builds transformers' sampler without a generator,
    so its order comes from the global RNG, which a resume at an epoch boundary restores to
    another point; with a generator its mega-batches still come out in another order than the
    reference grid's."""
    lengths = [random.Random(i).randrange(5, 60) for i in range(500)]
    torch.manual_seed(0)
    theirs = TransformersLengthGroupedSampler(16, lengths=lengths)
    assert list(theirs) != list(theirs)  # the same sampler, another order at each iteration
    ours = LengthGroupedSampler(lengths, 16, seed=42)
    ours.set_epoch(1)
    first = list(ours)
    assert first == list(ours)  # fixed by (seed, epoch)
    seeded = TransformersLengthGroupedSampler(16, lengths=lengths, generator=torch.Generator().manual_seed(43))
    assert list(seeded) != first


def test_get_last_checkpoint_would_pick_a_checkpoint_cut_off_while_written(tmp_path):
    """Why ``--resume-from-checkpoint latest`` is finetune's: transformers' ``get_last_checkpoint``
    takes the highest ``checkpoint-<step>``, also one without its closing ``progress.json``."""
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
    config = TrainConfig().to_dict()
    (tmp_path / "checkpoint-2" / PROGRESS_FILE).write_text(json.dumps({"config": config, "files": {}}))
    assert get_last_checkpoint(str(tmp_path)).endswith("checkpoint-4")
    assert resolve_resume("latest", tmp_path, config) == tmp_path / "checkpoint-2"
