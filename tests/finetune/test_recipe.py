"""The recipe levers: --swap-pairs (both sentence orders), --reinit-layers N (the top encoder layers
drawn afresh), --layer-lr-decay (lower layers learn slower)."""

import pytest
import torch

import finetune
from finetune.config import ConfigError, TrainConfig
from finetune.data.glue import load_glue, with_swapped_pairs
from finetune.data.tasks import get_task
from finetune.loops.common import build_optimizer
from finetune.model.modeling import ModelError, encoder_layers, load_model, reinit_top_layers

MRPC = get_task("mrpc")


def test_swapped_pairs_double_the_data_with_the_same_labels(glue_dir):
    train = load_glue("mrpc", glue_dir)["train"].select(range(50))
    both = with_swapped_pairs(train, MRPC)
    assert len(both) == 100
    assert both["sentence1"][50:] == train["sentence2"] and both["sentence2"][50:] == train["sentence1"]
    assert both["label"][50:] == train["label"] and both["sentence1"][:50] == train["sentence1"]


def test_a_run_with_swapped_pairs_trains_on_twice_the_pairs(tiny_models, glue_dir, tmp_path):
    results = finetune.train(TrainConfig(model=tiny_models["bert"], data_dir=glue_dir, output_dir=str(tmp_path / "r"),
                                         epochs=1, max_train_samples=16, max_eval_samples=8, swap_pairs=True,
                                         disable_tqdm=True))  # fmt: skip
    assert results["train_examples"] == 32 and results["optimizer_steps"] == 2


def test_swap_pairs_needs_a_pair_task():
    with pytest.raises(ConfigError, match="--swap-pairs needs a sentence-pair task; sst2 has one sentence"):
        TrainConfig(task="sst2", swap_pairs=True).validate()


@pytest.mark.parametrize(("kind", "pooling"), [("bert", "mean"), ("distilbert", "mean"), ("bert", "cls")])
def test_reinit_draws_only_the_top_layers_afresh(tiny_models, kind, pooling):
    # cls: the stock head, loaded by from_pretrained, whose weights transformers marks as
    # initialised; its own _init_weights would leave them as they are
    model = load_model(tiny_models[kind], MRPC, pooling)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    reinit_top_layers(model, 2)
    layers = encoder_layers(model)
    top = {id(p) for layer in list(layers)[2:] for p in layer.parameters()}
    for name, p in model.named_parameters():
        if id(p) in top and p.dim() == 2:
            assert not torch.equal(p, before[name]), name  # drawn afresh
        elif id(p) not in top:
            assert torch.equal(p, before[name]), name  # untouched
    with pytest.raises(ModelError, match="--reinit-layers 5 is more than the 4 encoder layers"):
        reinit_top_layers(model, 5)


def test_layer_lr_decay_gives_each_depth_its_rate(tiny_models):
    model = load_model(tiny_models["bert"], MRPC)
    plain = build_optimizer(model, 1e-3, 0.01)
    assert [g["lr"] for g in plain.param_groups] == [1e-3, 1e-3]  # one rate, decay / no decay groups
    decayed = build_optimizer(model, 1e-3, 0.01, layer_lr_decay=0.5)
    rate = {id(p): g["lr"] for g in decayed.param_groups for p in g["params"]}
    layers = encoder_layers(model)
    assert rate[id(model.encoder.embeddings.word_embeddings.weight)] == pytest.approx(1e-3 * 0.5**5)
    for i, layer in enumerate(layers):  # layer 3 (the top) at 0.5, layer 0 at 0.5**4
        rates = {rate[id(p)] for p in layer.parameters()}
        assert len(rates) == 1 and rates.pop() == pytest.approx(1e-3 * 0.5 ** (4 - i))
    assert rate[id(model.classifier.weight)] == 1e-3
    assert sum(len(g["params"]) for g in decayed.param_groups) == len(list(model.parameters()))


@pytest.mark.parametrize("loop", ["native", "trainer"])
def test_runs_with_every_lever_train(tiny_models, glue_dir, tmp_path, loop):
    results = finetune.train(TrainConfig(model=tiny_models["bert"], data_dir=glue_dir, output_dir=str(tmp_path / "r"),
                                         loop=loop, epochs=1, max_train_samples=16, max_eval_samples=8,
                                         swap_pairs=True, reinit_layers=1, layer_lr_decay=0.8,
                                         disable_tqdm=True))  # fmt: skip
    assert results["config"]["layer_lr_decay"] == 0.8 and results["validation"]["examples"] == 8


def test_bad_lever_values_are_refused():
    with pytest.raises(ConfigError, match=r"--layer-lr-decay must be in \(0, 1\]"):
        TrainConfig(layer_lr_decay=1.5).validate()
    with pytest.raises(ConfigError, match="--reinit-layers must be >= 0"):
        TrainConfig(reinit_layers=-1).validate()
