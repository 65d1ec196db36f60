"""Checkpoints resume exactly: a run killed with SIGKILL part-way through an epoch and resumed
with ``latest`` ends with the weights and metrics of an uninterrupted run (native loop and
Trainer); ``latest`` with no checkpoint stops with exit 2; a NaN loss stops the run cleanly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import finetune
from finetune.checkpoint import is_complete, list_checkpoints
from finetune.config import TrainConfig
from finetune.loop import NonFiniteLossError


def train_args(model, glue_dir, out, loop, extra=()):
    return [
        "train", "--model", model, "--data-dir", glue_dir, "--output-dir", str(out), "--loop", loop,
        "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--max-train-samples", "80", "--max-eval-samples", "40",
        "--save-steps", "3", "--logging-steps", "2", "--seed", "7", "--no-progress", *extra,
    ]  # fmt: skip


def start(args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "finetune", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def kill_after_checkpoint(proc, out, step, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        whole = [s for s, p in list_checkpoints(out) if is_complete(p)]
        if whole and max(whole) >= step:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before checkpoint {step}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no checkpoint appeared in time")


def assert_same_history(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], dict):
                assert x[key] == pytest.approx(y[key], abs=1e-6)
            else:
                assert x[key] == pytest.approx(y[key], abs=1e-6), key


@pytest.mark.parametrize("loop", ["native", "accelerate", "trainer"])
def test_sigkill_then_resume_latest_equals_uninterrupted(tiny_models, glue_dir, tmp_path, loop):
    model = tiny_models["bert"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    ref = start(train_args(model, glue_dir, whole, loop))
    assert ref.wait() == 0, ref.stderr.read()[-3000:]

    proc = start(train_args(model, glue_dir, cut, loop))
    kill_after_checkpoint(proc, cut, 6)  # step 6 of 20: part-way through the first epoch (10 steps)
    assert not (cut / "results.json").exists()
    resumed = start(train_args(model, glue_dir, cut, loop, ["--resume-from-checkpoint", "latest"]))
    assert resumed.wait() == 0, resumed.stderr.read()[-3000:]

    a, b = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (whole, cut))
    assert rb["resumed_from"] and rb["resumed_from"].startswith(str(cut / "checkpoint-"))
    assert ra["validation"] == pytest.approx(rb["validation"], abs=1e-6)
    assert ra["test"] == pytest.approx(rb["test"], abs=1e-6)
    if loop != "trainer":
        assert_same_history(ra["history"], rb["history"])  # the same log, step for step
        assert rb["batches_seen_per_process"] < ra["batches_seen_per_process"]  # skipped, not replayed


def test_resume_latest_without_checkpoint_exits_2(tiny_models, glue_dir, tmp_path):
    proc = start(train_args(tiny_models["bert"], glue_dir, tmp_path / "none", "native",
                            ["--resume-from-checkpoint", "latest"]))  # fmt: skip
    _, err = proc.communicate()
    assert proc.returncode == 2 and "no usable checkpoint" in err and len(err.strip().splitlines()) == 1


def test_incomplete_checkpoint_is_not_resumed(tiny_models, glue_dir, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-9").mkdir(parents=True)  # as left by a crash while saving: no progress.json
    (out / "checkpoint-9" / "state.pt").write_bytes(b"half")
    proc = start(train_args(tiny_models["bert"], glue_dir, out, "native", ["--resume-from-checkpoint", "latest"]))
    _, err = proc.communicate()
    assert proc.returncode == 2 and "no usable checkpoint" in err


def test_nan_loss_stops_with_the_step_and_keeps_last_checkpoint(tiny_models, glue_dir, tmp_path):
    cfg = TrainConfig(
        model=tiny_models["bert"], data_dir=glue_dir, output_dir=str(tmp_path / "nan"), epochs=3, batch_size=8,
        lr=1e3, warmup_ratio=0.0, max_grad_norm=1e9, max_train_samples=80, max_eval_samples=16, save_steps=1,
        show_progress=False,
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"at step \d+"):
        finetune.train(cfg)
    kept = list_checkpoints(tmp_path / "nan")
    assert kept and all(is_complete(p) for _, p in kept)
    assert not (tmp_path / "nan" / "results.json").exists()
