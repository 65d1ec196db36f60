"""Is resuming exact on the real workload? For each loop: train the default checkpoint (dropout on)
on MRPC without interruption; train it again, SIGKILL the process right after a checkpoint in the
middle of an epoch, resume with ``--resume-from-checkpoint latest``; print the largest weight
difference and whether the logged history and the metrics agree.

    python benchmarks/check_resume.py --data-dir ../shared/data/glue --train-samples 320 --kill-after 10
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from finetune.checkpoint import is_complete, list_checkpoints


def run_args(data_dir: str, out: Path, loop: str, samples: int, save_steps: int) -> list[str]:
    return [
        sys.executable, "-m", "finetune", "train", "--data-dir", data_dir, "--output-dir", str(out), "--loop", loop,
        "--epochs", "2", "--batch-size", "16", "--max-train-samples", str(samples), "--max-eval-samples", "200",
        "--save-steps", str(save_steps), "--logging-steps", "1", "--seed", "1", "--no-progress",
    ]  # fmt: skip


def run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{done.stderr[-2000:]}")


def kill_after(args: list[str], out: Path, step: int) -> None:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not any(s >= step and is_complete(p) for s, p in list_checkpoints(out)):
        if proc.poll() is not None:
            raise SystemExit(f"the run ended before checkpoint {step}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def compare(whole: Path, cut: Path) -> tuple[float, bool, bool]:
    """(largest weight difference, histories equal, final metrics equal)."""
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (whole, cut))
    return diff, ra["history"] == rb["history"], (ra["validation"], ra["test"]) == (rb["validation"], rb["test"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("GLUE_DIR", "../shared/data/glue"))
    parser.add_argument("--loops", nargs="+", default=["native", "accelerate", "trainer"])
    parser.add_argument("--train-samples", type=int, default=320)
    parser.add_argument("--save-steps", type=int, default=5)
    parser.add_argument("--kill-after", type=int, default=10, help="SIGKILL once this checkpoint is whole")
    args = parser.parse_args()
    steps = -(-args.train_samples // 16)
    print(f"default checkpoint, dropout 0.1, {args.train_samples} MRPC pairs, batch 16, 2 epochs of {steps} steps;")
    print(f"killed after checkpoint {args.kill_after}, resumed with latest (torch {torch.__version__})")
    print(f"{'loop':<11}{'max |weight difference|':>25}{'history equal':>15}{'metrics equal':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for loop in args.loops:
            whole, cut = Path(tmp) / f"{loop}-whole", Path(tmp) / f"{loop}-cut"
            run(run_args(args.data_dir, whole, loop, args.train_samples, args.save_steps))
            kill_after(run_args(args.data_dir, cut, loop, args.train_samples, args.save_steps), cut, args.kill_after)
            run([*run_args(args.data_dir, cut, loop, args.train_samples, args.save_steps), "--resume-from-checkpoint",
                 "latest"])  # fmt: skip
            diff, history, metrics = compare(whole, cut)
            print(f"{loop:<11}{diff:>25.3g}{history!s:>15}{metrics!s:>15}", flush=True)


if __name__ == "__main__":
    main()
