"""Both loops on a tiny random BERT: a few steps, the loss falls, results.json is complete,
frozen weights do not move; the CLI's commands and its answers to bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import finetune
from finetune.config import TrainConfig

RESULT_KEYS = {
    "config", "versions", "device", "world_size", "distributed_type", "model", "trainable_params", "total_params",
    "frozen_encoder_layers", "history", "optimizer_steps", "train_runtime_s", "train_segments_s",
    "train_samples_per_second", "validation", "test",
}  # fmt: skip


def tiny_config(tiny_models, glue_dir, tmp_path, **overrides):
    settings = dict(
        model=tiny_models["bert"], data_dir=glue_dir, output_dir=str(tmp_path / "run"), epochs=8, batch_size=16,
        lr=3e-3, warmup_ratio=0.0, max_train_samples=32, max_eval_samples=48, logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.mark.parametrize("loop", ["native", "trainer"])
def test_loop_trains_and_writes_complete_results(tiny_models, glue_dir, tmp_path, loop):
    results = finetune.train(tiny_config(tiny_models, glue_dir, tmp_path, loop=loop))
    run = tmp_path / "run"
    on_disk = json.loads((run / "results.json").read_text())
    assert RESULT_KEYS <= set(on_disk) and on_disk["config"]["loop"] == loop
    assert on_disk["validation"]["examples"] == 48 and on_disk["test"]["examples"] == 48
    assert results["validation"] == on_disk["validation"]
    losses = [h["loss"] for h in on_disk["history"] if "loss" in h]
    assert len(losses) == 16  # 32 samples / 16 per batch x 8 epochs, logged every step
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # the loss falls
    epochs = [h for h in on_disk["history"] if "validation" in h]
    assert [h["epoch"] for h in epochs] == list(range(1, 9)) and "accuracy" in epochs[-1]["validation"]
    assert epochs[-1]["validation"] == on_disk["validation"]  # the last epoch's evaluation is the final one
    assert all(0 <= on_disk[s][m] <= 1 for s in ("validation", "test") for m in ("accuracy", "f1"))
    assert on_disk["trainable_params"] == on_disk["total_params"] and on_disk["optimizer_steps"] == 16
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(run))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging left behind
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes  # every file the run wrote, the same permissions

    from transformers import AutoModelForSequenceClassification, pipeline

    model = AutoModelForSequenceClassification.from_pretrained(run)
    assert model.config.id2label == {0: "not_equivalent", 1: "equivalent"}
    out = pipeline("text-classification", model=str(run), device=-1)({"text": "A cat.", "text_pair": "A dog."})
    assert out["label"] in ("not_equivalent", "equivalent")


@pytest.mark.parametrize("strategy", ["head", "partial"])
def test_frozen_weights_are_byte_identical_after_training(tiny_models, glue_dir, tmp_path, strategy):
    cfg = tiny_config(tiny_models, glue_dir, tmp_path, strategy=strategy, pooling="cls", epochs=2)
    results = finetune.train(cfg)
    before = load_file(os.path.join(tiny_models["bert"], "model.safetensors"))
    after = {k.removeprefix("bert."): v for k, v in load_file(str(tmp_path / "run" / "model.safetensors")).items()}
    if strategy == "head":  # the whole base model, BERT's pooler included
        frozen = list(before)
    else:  # embeddings and the lower half of the encoder layers
        frozen = [k for k in before if k.startswith(("embeddings.", "encoder.layer.0.", "encoder.layer.1."))]
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    moved = [k for k in before if k.startswith("encoder.layer.3.") and not torch.equal(before[k], after[k])]
    assert (strategy == "partial") == bool(moved)
    assert results["trainable_params"] < results["total_params"]


def test_same_seed_same_run(tiny_models, glue_dir, tmp_path):
    a = finetune.train(tiny_config(tiny_models, glue_dir, tmp_path / "a", epochs=1))
    b = finetune.train(tiny_config(tiny_models, glue_dir, tmp_path / "b", epochs=1))
    assert [h.get("loss") for h in a["history"]] == [h.get("loss") for h in b["history"]]


def run_cli(*args, env=None):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "finetune", *args], capture_output=True, text=True, env=full_env)


def test_cli_train_evaluate_predict_report(tiny_models, glue_dir, tmp_path):
    run = tmp_path / "cli-run"
    sizes = ["--epochs", "1", "--max-train-samples", "16", "--max-eval-samples", "16", "--no-progress"]
    done = run_cli("train", "--model", tiny_models["bert"], "--data-dir", glue_dir, "--output-dir", str(run), *sizes)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout[done.stdout.index("{") :])["output_dir"] == str(run)
    ev = run_cli("evaluate", "--checkpoint", str(run), "--split", "test", "--max-eval-samples", "16")
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout[ev.stdout.index("{") :])
    saved = json.loads((run / "results.json").read_text())["test"]
    assert metrics["accuracy"] == pytest.approx(saved["accuracy"]) and metrics["examples"] == 16
    pr = run_cli("predict", "--checkpoint", str(run), "The cat sat.", "A cat was sitting.")
    assert pr.returncode == 0, pr.stderr
    answer = json.loads(pr.stdout.strip().splitlines()[-1])
    assert answer["label"] in ("equivalent", "not_equivalent") and 0.5 <= answer["probability"] <= 1
    rep = run_cli("report", str(run), "--out", str(tmp_path / "report"))
    assert rep.returncode == 0, rep.stderr
    assert "| mrpc | native | full | mean | 1 | 16 (subset: 16 train, 16 eval) | 1 |" in rep.stdout
    assert (tmp_path / "report" / "loss.png").stat().st_size > 1000


def _one_line_error(done, pattern):
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert pattern in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--strategy", "most"], "argument --strategy: invalid choice: 'most' (choose from 'full', 'partial', 'head')"),
        (["--loop", "keras"], "argument --loop: invalid choice: 'keras'"),
        (["--data-dir", "/nonexistent/glue"], "no MRPC/ folder in /nonexistent/glue"),
        (["--strategy", "partial", "--freeze-layers", "9"], "--freeze-layers 9 is more than the 4 encoder layers"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--model", "/nonexistent/model"], "no model folder /nonexistent/model"),
        (["--eval-strategy", "no", "--load-best-model-at-end"], "--load-best-model-at-end needs evaluations"),
        (["--metric-for-best-model", "bleu"], "'bleu' is not a mrpc metric: choose one of accuracy, f1, loss"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tiny_models, glue_dir, tmp_path, capsys, args, message):
    """In-process (a subprocess per case costs seconds of imports); other tests run the CLI as a process."""
    from finetune.cli import main

    base = ["train", "--model", tiny_models["bert"], "--data-dir", glue_dir, "--output-dir", str(tmp_path / "x")]
    try:
        code = main([*base, *args, "--max-train-samples", "8", "--epochs", "1", "--no-progress"])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (code, err)
    assert message in err, err
    assert not (tmp_path / "x").exists()


def test_cli_malformed_data_file(tiny_models, glue_dir, tmp_path):
    import shutil

    shutil.copytree(os.path.join(glue_dir, "MRPC"), tmp_path / "glue" / "MRPC")
    (tmp_path / "glue" / "MRPC" / "dev_ids.tsv").write_text("only-one-id\n")
    done = run_cli("train", "--model", tiny_models["bert"], "--data-dir", str(tmp_path / "glue"), "--no-progress")
    _one_line_error(done, "expected two tab-separated IDs")


def test_cli_refuses_to_overwrite_another_run(tiny_models, glue_dir, tmp_path):
    run = tmp_path / "existing"
    run.mkdir()
    (run / "results.json").write_text('{"keep": true}')
    done = run_cli("train", "--model", tiny_models["bert"], "--data-dir", glue_dir, "--output-dir", str(run))
    _one_line_error(done, "already holds another run's results.json")
    assert (run / "results.json").read_text() == '{"keep": true}'
    ok = run_cli("train", "--model", tiny_models["bert"], "--data-dir", glue_dir, "--output-dir", str(run),
                 "--overwrite-output-dir", "--epochs", "1", "--max-train-samples", "8", "--max-eval-samples", "8",
                 "--no-progress")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "config" in json.loads((run / "results.json").read_text())


def test_cli_missing_checkpoint_and_unreadable_report(tmp_path):
    _one_line_error(run_cli("evaluate", "--checkpoint", str(tmp_path / "none")), "no checkpoint directory")
    _one_line_error(run_cli("report", str(tmp_path)), "no results.json under")
