"""Two processes (torchrun, gloo on the CPU) train the same loop under Accelerate: world size 2,
each rank sees half the batches, evaluation counts every example once, and the final weights
equal a one-process run with the same global batch."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file


def run(launcher, args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, "-m", "finetune", "train", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=tmp_path)  # fmt: skip


def common(model, glue_dir, out, batch_size):
    return [
        "--model", model, "--data-dir", glue_dir, "--output-dir", str(out), "--loop", "accelerate",
        "--epochs", "2", "--batch-size", str(batch_size), "--lr", "1e-3", "--warmup-ratio", "0",
        "--max-train-samples", "64", "--max-eval-samples", "37", "--seed", "3", "--no-progress",
        "--mixed-precision", "no", "--no-group-by-length",  # exact arithmetic, and the same global batches
    ]  # fmt: skip


def test_two_processes_equal_one_with_the_same_global_batch(tiny_bert_without_dropout, glue_dir, tmp_path):
    # without dropout: each process draws its own masks, so with it the runs differ by design
    model = tiny_bert_without_dropout
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun, "torchrun is installed with torch"
    two = run([torchrun, "--nproc_per_node", "2"], common(model, glue_dir, tmp_path / "two", 8), tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run([sys.executable], common(model, glue_dir, tmp_path / "one", 16), tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]

    r2, r1 = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("two", "one"))
    assert (r2["world_size"], r2["distributed_type"]) == (2, "MULTI_CPU")
    assert (r1["world_size"], r1["distributed_type"]) == (1, "NO")
    # 64 samples in batches of 8 are 8 batches an epoch: each rank ran half of them, 2 epochs
    assert r2["batches_seen_per_process"] == 8 // 2 * 2 and r1["batches_seen_per_process"] == 64 // 16 * 2
    assert r2["validation"]["examples"] == 37 and r2["test"]["examples"] == 37  # gathered, no duplicates
    epochs = [h["validation"]["examples"] for h in r2["history"] if "validation" in h]
    assert epochs == [37, 37]
    w2, w1 = (
        load_file(str(tmp_path / "two" / "model.safetensors")),
        load_file(str(tmp_path / "one" / "model.safetensors")),
    )
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], atol=1e-5, rtol=0, msg=key)
    assert r2["validation"]["accuracy"] == pytest.approx(r1["validation"]["accuracy"])


def test_native_loop_under_a_launcher_stops_clearly(tiny_models, glue_dir, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    args = common(tiny_models["bert"], glue_dir, tmp_path / "native", 8)
    args[args.index("accelerate")] = "native"
    done = run([torchrun, "--nproc_per_node", "2"], args, tmp_path)
    assert done.returncode != 0
    assert "--loop native runs one process, but the launcher started 2: use --loop accelerate" in done.stderr


def test_nan_loss_stops_every_rank(tiny_models, glue_dir, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    args = common(tiny_models["bert"], glue_dir, tmp_path / "nan", 8)
    args[args.index("--lr") + 1] = "1e4"
    args += ["--max-grad-norm", "1e12", "--save-steps", "1"]
    done = run([torchrun, "--nproc_per_node", "2"], args, tmp_path)  # returns: no rank hangs (timeout 600 s)
    assert done.returncode != 0
    assert done.stderr.count(": the training loss is") + done.stderr.count(": the gradient norm is") == 2  # both ranks
    assert not (tmp_path / "nan" / "results.json").exists()


def test_trainer_runs_under_torchrun(tiny_models, glue_dir, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    args = common(tiny_models["bert"], glue_dir, tmp_path / "trainer", 8)
    args[args.index("accelerate")] = "trainer"
    done = run([torchrun, "--nproc_per_node", "2"], args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "trainer" / "results.json").read_text())
    assert (results["world_size"], results["distributed_type"]) == (2, "MULTI_CPU")
    assert results["optimizer_steps"] == 64 // (8 * 2) * 2  # the global batch is 16
