"""The best model and early stopping (--eval-strategy, --load-best-model-at-end,
--metric-for-best-model, --early-stopping-patience) in all three loops, on a tiny BERT with dropout on."""

import json

import pytest
import torch
from safetensors.torch import load_file

import finetune
from finetune.config import ConfigError, TrainConfig
from finetune.loops.selection import ModelSelection


def test_selection_ranks_by_the_metric_and_counts_patience(tmp_path):
    model = torch.nn.Linear(2, 1)
    selection = ModelSelection("accuracy", keep_weights=True, patience=2)
    assert selection.update(model, {"accuracy": 0.5, "loss": 0.9}, step=1, epoch=1)
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight += 1
    assert not selection.update(model, {"accuracy": 0.5, "loss": 0.1}, step=2, epoch=2)  # a tie is no improvement
    assert not selection.should_stop
    assert not selection.update(model, {"accuracy": 0.4, "loss": 0.1}, step=3, epoch=3)
    assert selection.should_stop and selection.best == {"step": 1, "epoch": 1, "metric": "accuracy", "value": 0.5}
    selection.save(tmp_path)
    again = ModelSelection("accuracy", keep_weights=True, patience=2)
    again.load(tmp_path, json.loads(json.dumps(selection.state())))
    assert again.best == selection.best and again.should_stop
    again.restore(model)
    assert all(torch.equal(model.state_dict()[k], kept[k]) for k in kept)

    by_loss = ModelSelection("loss")
    by_loss.update(model, {"loss": 0.5}, 1, 1)
    assert by_loss.update(model, {"loss": 0.4}, 2, 2) and not by_loss.update(model, {"loss": 0.45}, 3, 3)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"eval_strategy": "steps"}, "--eval-strategy steps needs --eval-steps"),
        ({"eval_steps": 5}, "--eval-steps only applies to --eval-strategy steps"),
        ({"eval_strategy": "no", "load_best_model_at_end": True}, "--load-best-model-at-end needs evaluations"),
        ({"eval_strategy": "no", "early_stopping_patience": 2}, "--early-stopping-patience needs evaluations"),
        ({"early_stopping_patience": 0}, "--early-stopping-patience must be positive"),
        ({"metric_for_best_model": "matthews"}, "is not a mrpc metric: choose one of accuracy, f1, loss"),
        ({"eval_strategy": "sometimes"}, "unknown eval_strategy 'sometimes'"),
    ],
)
def test_bad_evaluation_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings).validate()


def test_the_trainer_spelling_of_a_metric_is_accepted():
    assert TrainConfig(metric_for_best_model="eval_f1").best_metric() == "f1"
    assert TrainConfig(task="cola").best_metric() == "matthews"


def _config(tiny_models, glue_dir, out, loop, **overrides):
    settings = dict(
        model=tiny_models["bert"], data_dir=glue_dir, output_dir=str(out), loop=loop, epochs=4, batch_size=8,
        lr=3e-3, warmup_ratio=0.0, max_train_samples=32, max_eval_samples=48, logging_steps=2, disable_tqdm=True,
        seed=3,
    )  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


@pytest.mark.parametrize("loop", ["native", "accelerate", "trainer"])
def test_the_run_ends_with_the_best_evaluation(tiny_models, glue_dir, tmp_path, loop):
    cfg = _config(tiny_models, glue_dir, tmp_path / "run", loop, eval_strategy="steps", eval_steps=3,
                  load_best_model_at_end=True, metric_for_best_model="loss")  # fmt: skip
    results = finetune.train(cfg)
    evaluations = [h for h in results["history"] if "validation" in h]
    assert [h["step"] for h in evaluations] == [3, 6, 9, 12, 15, 16]  # every 3 steps, and the last
    losses = [h["validation"]["loss"] for h in evaluations]
    best = min(range(len(losses)), key=lambda i: (losses[i], i))
    assert results["best"]["step"] == evaluations[best]["step"] and results["best"]["metric"] == "loss"
    assert results["best"]["value"] == pytest.approx(losses[best])
    # the saved model is the best one: evaluating it again gives the best evaluation's numbers
    assert results["validation"]["loss"] == pytest.approx(losses[best], abs=1e-5)
    assert results["validation"]["accuracy"] == pytest.approx(evaluations[best]["validation"]["accuracy"])
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())


@pytest.mark.parametrize("loop", ["native", "trainer"])
def test_early_stopping_ends_the_run_after_patience_evaluations(tiny_models, glue_dir, tmp_path, loop):
    # a learning rate too small to change any prediction: accuracy never improves after the first evaluation
    cfg = _config(tiny_models, glue_dir, tmp_path / "run", loop, lr=1e-12, eval_strategy="steps", eval_steps=2,
                  early_stopping_patience=2, metric_for_best_model="accuracy")  # fmt: skip
    results = finetune.train(cfg)
    evaluations = [h["step"] for h in results["history"] if "validation" in h]
    assert evaluations == [2, 4, 6] and results["optimizer_steps"] == 6  # of 16
    assert results["stopped_early"] is True and results["best"]["step"] == 2


def test_without_evaluations_only_the_final_one_is_made(tiny_models, glue_dir, tmp_path):
    results = finetune.train(_config(tiny_models, glue_dir, tmp_path / "run", "native", eval_strategy="no"))
    assert not [h for h in results["history"] if "validation" in h]
    assert results["validation"]["examples"] == 48 and results["best"] is None and results["stopped_early"] is False
