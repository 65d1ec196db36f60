"""Freezing strategies on BERT, RoBERTa and DistilBERT; the mean-pooling head; metrics."""

import numpy as np
import pytest
import torch

from finetune.analysis import metrics
from finetune.data.tasks import get_task
from finetune.model.modeling import ModelError, apply_freezing, count_parameters, encoder_layers, load_model

MRPC = get_task("mrpc")


def _trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_strategies_freeze_the_right_parameters(tiny_models, kind, pooling):
    model = load_model(tiny_models[kind], MRPC, pooling)
    base = model.base_model
    base_names = {f"{model.base_model_prefix}.{n}" for n, _ in base.named_parameters()}
    all_names = {n for n, _ in model.named_parameters()}

    apply_freezing(model, "full")
    assert _trainable_names(model) == all_names

    apply_freezing(model, "head")
    head = _trainable_names(model)
    assert head == all_names - base_names and head  # every parameter outside the base model trains
    if kind == "distilbert" and pooling == "cls":
        assert any(n.startswith("pre_classifier") for n in head)
    if kind == "roberta" and pooling == "cls":
        assert any(n.startswith("classifier.dense") for n in head)
    if kind == "bert":
        assert not any("pooler" in n for n in head)  # BERT's pooler belongs to the base

    layers = encoder_layers(model)
    assert len(layers) == 4
    frozen = apply_freezing(model, "partial")
    assert frozen == 2  # default: half of the layers
    trainable = _trainable_names(model)
    assert not any(n for n in trainable if ".embeddings." in f".{n}")
    for i, layer in enumerate(layers):
        assert all(p.requires_grad == (i >= 2) for p in layer.parameters())
    t, total = count_parameters(model)
    assert 0 < t < total
    with pytest.raises(ModelError, match="--freeze-layers 5 is more than the 4 encoder layers"):
        apply_freezing(model, "partial", 5)


def test_trainable_counts_on_the_default_checkpoint():
    from finetune.model.modeling import default_model_path

    model = load_model(default_model_path(), MRPC, "mean")
    expected = {"full": 22_566_146, "partial": 5_324_162, "head": 770}
    for strategy, count in expected.items():
        apply_freezing(model, strategy)
        assert count_parameters(model) == (count, 22_566_146)


def test_mean_pooling_ignores_padding(tiny_models):
    model = load_model(tiny_models["bert"], MRPC, "mean").eval()
    ids = torch.tensor([[101, 2023, 2003, 102]])
    short = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    padded_ids = torch.tensor([[101, 2023, 2003, 102, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    padded = model(input_ids=padded_ids, attention_mask=mask).logits
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-5)


def test_metrics_per_task():
    labels = np.array([1, 0, 1, 1, 0, 1])
    logits = np.eye(2)[[1, 0, 0, 1, 1, 1]]  # predictions 1 0 0 1 1 1: 4 of 6 right; tp 3, fp 1, fn 1
    assert metrics.compute_metrics(MRPC, logits, labels) == pytest.approx({"accuracy": 4 / 6, "f1": 0.75})
    cola = metrics.compute_metrics(get_task("cola"), logits, labels)
    assert cola["matthews"] == pytest.approx((3 * 1 - 1 * 1) / np.sqrt(4 * 4 * 2 * 2)) and cola["accuracy"] == 4 / 6
    x = np.array([0.1, 0.4, 0.2, 0.9])
    stsb = metrics.compute_metrics(get_task("stsb"), x[:, None], np.array([1.0, 3.0, 2.0, 4.0]))
    assert stsb["spearman"] == pytest.approx(1.0) and 0.9 < stsb["pearson"] < 1
    assert metrics.compute_metrics(get_task("sst2"), logits, labels) == {"accuracy": 4 / 6}


def test_post_init_draws_the_mean_head_normal_with_std_002_and_zero_bias(tiny_models):
    """MeanPoolingClassifier leaves its head to transformers' own initialisation (post_init): the
    classifier's weight drawn from normal(0, 0.02), its bias 0, as BERT's heads are."""
    from transformers import AutoConfig, AutoModel

    from finetune.model.mean_pooling import MeanPoolingClassifier, MeanPoolingConfig

    encoder_config = AutoConfig.from_pretrained(tiny_models["bert"])
    config = MeanPoolingConfig(encoder=encoder_config.to_dict(), num_labels=2)
    torch.manual_seed(0)
    head = MeanPoolingClassifier(config).classifier
    torch.manual_seed(0)  # the same draws by hand: the encoder, torch's default Linear, then normal(0, 0.02)
    AutoModel.from_config(config.encoder_config())
    expected = torch.nn.init.normal_(torch.nn.Linear(encoder_config.hidden_size, 2).weight.detach(), std=0.02)
    assert torch.equal(head.weight, expected) and not head.bias.any()
