"""finetune.model.dropout: masks with the right keep rate, the attention that equals SDPA's, and models
that predict exactly as before and save exactly as before."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from finetune.data.tasks import get_task
from finetune.model.dropout import ATTENTION, FastDropout, attention, fast_dropout, keep_mask, use_fast_dropout
from finetune.model.modeling import load_model


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_keeps_one_minus_p(p):
    mask = keep_mask(torch.Size([1000, 1000]), p)
    assert mask.dtype == torch.bool and mask.shape == (1000, 1000)
    sd = (p * (1 - p) / mask.numel()) ** 0.5
    assert abs(mask.float().mean().item() - (1 - p)) < 5 * sd
    rows, cols = mask.float().mean(1), mask.float().mean(0)  # no stripes: every row and column keeps 1 - p
    assert (rows - (1 - p)).abs().max() < 6 * (p * (1 - p) / 1000) ** 0.5
    assert (cols - (1 - p)).abs().max() < 6 * (p * (1 - p) / 1000) ** 0.5


def pattern_counts(kept: torch.Tensor, offset: int) -> torch.Tensor:
    """How often each of the 16 keep/drop patterns of 4 neighbouring elements occurs, windows
    starting at ``offset`` (0: the four that share one 64-bit draw; 2: across two draws)."""
    windows = kept[offset : offset + (kept.numel() - offset) // 4 * 4].view(-1, 4).long()
    return torch.bincount((windows * torch.tensor([8, 4, 2, 1])).sum(1), minlength=16)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_dropout_draws_the_distribution_nn_dropout_draws(p):
    """Independent Bernoulli(1 - p) keeps scaled by 1 / (1 - p), as ``nn.Dropout``: the same two
    values, and every pattern of 4 neighbours (inside one random word and across two) as often
    as independence predicts (chi-square, 15 degrees of freedom), for both."""
    x = torch.ones(400_000)
    torch.manual_seed(0)
    outputs = {"finetune": FastDropout(p).train()(x), "torch": torch.nn.Dropout(p).train()(x)}
    kept_k = torch.tensor([bin(i).count("1") for i in range(16)])
    expected_share = (1 - p) ** kept_k * p ** (4 - kept_k)
    for name, y in outputs.items():
        assert all(v == 0 or v == pytest.approx(1 / (1 - p)) for v in y.unique().tolist()), name
        for offset in (0, 2):
            counts = pattern_counts(y != 0, offset)
            expected = expected_share * counts.sum()
            chi2 = float(((counts - expected) ** 2 / expected).sum())
            assert chi2 < 45, (name, offset, chi2)  # P(chi2_15 > 45) < 1e-4


def test_no_fast_dropout_keeps_torchs_dropout(tiny_models, glue_dir, tmp_path, monkeypatch):
    import finetune.pipeline
    from finetune.config import TrainConfig

    def refuse(model):
        raise AssertionError("use_fast_dropout ran despite fast_dropout=False")

    monkeypatch.setattr(finetune.pipeline, "use_fast_dropout", refuse)
    results = finetune.pipeline.train(TrainConfig(model=tiny_models["bert"], data_dir=glue_dir, epochs=1,
                                                  max_train_samples=16, max_eval_samples=16, disable_tqdm=True,
                                                  output_dir=str(tmp_path / "run"), fast_dropout=False))  # fmt: skip
    assert results["config"]["fast_dropout"] is False


@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 0, 5), (7, 5, 3)])
def test_keep_mask_shapes_seeding_and_fresh_draws(shape):
    torch.manual_seed(0)
    first = keep_mask(torch.Size(shape), 0.5)
    torch.manual_seed(0)
    assert torch.equal(first, keep_mask(torch.Size(shape), 0.5))  # the global generator decides
    assert first.shape == shape
    if first.numel() > 20:
        assert not torch.equal(first, keep_mask(torch.Size(shape), 0.5))


def test_fast_dropout_scales_and_backpropagates_through_the_mask():
    x = torch.randn(400, 500, requires_grad=True)
    torch.manual_seed(1)
    y = fast_dropout(x, 0.2)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.01
    torch.testing.assert_close(y[kept], x[kept] / 0.8)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.8)
    assert fast_dropout(x, 0.0) is x
    assert not fast_dropout(x, 1.0).any()


def test_fast_dropout_module_is_identity_in_eval_and_drops_in_training():
    layer = FastDropout(0.3)
    x = torch.randn(200, 300)
    layer.eval()
    assert torch.equal(layer(x), x)
    layer.train()
    assert abs((layer(x) == 0).float().mean().item() - 0.3) < 0.01


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_attention_equals_sdpa_when_nothing_is_dropped(mask_kind):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[1, :, :, 3:] = False  # the second sequence is padded after 3 tokens
    mask = {"none": None, "bool": mask, "float": torch.zeros(2, 1, 5, 5).masked_fill(~mask, float("-inf"))}[mask_kind]
    module = torch.nn.Module()
    module.is_causal = False
    expected, _ = sdpa_attention_forward(module.eval(), q, k, v, mask, dropout=0.0, scaling=0.5)
    # p = 1e-9 rounds to 0 / 65536: the math path runs and keeps everything, scaled by 1 / (1 - 1e-9)
    got, _ = attention(module.train(), q, k, v, mask, dropout=1e-9, scaling=0.5)
    torch.testing.assert_close(got, expected)
    dropped, _ = attention(module.train(), q, k, v, mask, dropout=0.5, scaling=0.5)
    assert dropped.shape == expected.shape and not torch.allclose(dropped, expected)


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_models_predict_and_save_as_before(tiny_models, kind, pooling, tmp_path):
    task = get_task("mrpc")
    model = load_model(tiny_models[kind], task, pooling).eval()
    batch = {
        "input_ids": torch.tensor([[101, 2054, 2003, 102, 0], [101, 7592, 2088, 2003, 102]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
    }
    before = model(**batch).logits
    use_fast_dropout(model)
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    torch.testing.assert_close(model(**batch).logits, before)  # eval: torch's SDPA, no dropout

    model.train()
    torch.manual_seed(0)
    first = model(**batch).logits
    torch.manual_seed(0)
    assert torch.equal(model(**batch).logits, first)  # seeded
    assert not torch.allclose(model(**batch).logits, first)  # and dropout is on

    model.save_pretrained(tmp_path)
    assert ATTENTION not in (tmp_path / "config.json").read_text()
    assert "attn_implementation" not in json.loads((tmp_path / "config.json").read_text())
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(**batch).logits, model.eval()(**batch).logits)
