"""Training speed on the real workload, against the machine's own limit.

For the default model on MRPC's real pair lengths, in one run: samples/s, achieved TFLOP/s and the
share of the machine's measured bf16 matmul ceiling (MFU) of a full training step (forward,
backward, clipping, AdamW), and the peak memory (RSS) of each run, for

- ``course``: the Hugging Face course's loop as a user first writes it: float32, random batches
  with dynamic padding, ``torch.optim.AdamW`` (its default for-each update);
- ``native``, ``accelerate``, ``trainer``: ``finetune train`` with each loop and the reference
  recipe (bf16 autocast where the CPU computes in it, fused AdamW, the recipe's batching);
- ``native-fp32``: the native loop in float32 (``--mixed-precision no``), as on a CPU without
  bf16 arithmetic, and ``native-avx2``: the same with torch, oneDNN and MKL held to AVX2 kernels
  (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``), as on a CPU with
  AVX2 and no AVX-512. Each prints its time as a multiple of ``native``'s: a run's time on such a
  CPU is about the bf16 run's time times that (``--only native native-fp32 native-avx2``).

Each contender runs in its own process on the first ``--samples`` training pairs for one epoch
(its evaluation is 8 pairs: noise), ``--repeats`` times in rounds over all contenders; the fastest
of each counts (a 30-step run varies by 10-15% from one run to the next). FLOPs are counted per batch from its
padded shape with the standard transformer formula, checked against torch's ``FlopCounterMode``.

    python benchmarks/bench_train.py --samples 480 --batch-size 16
    python benchmarks/bench_train.py --samples 480 --batch-size 16 --only native native-fp32 native-avx2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from finetune.config import STRATEGY_DEFAULTS
from finetune.data.glue import load_glue, make_collator, make_dataloader, tokenize_glue
from finetune.data.tasks import get_task
from finetune.model.modeling import default_model_path, load_model, load_tokenizer

CONTENDERS = ("course", "native", "accelerate", "trainer", "native-fp32", "native-avx2")
DEFAULT_CONTENDERS = CONTENDERS[:4]
# What a CPU with AVX2 and no AVX-512 runs: torch's own kernels, oneDNN's and MKL's held to AVX2.
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """The best TFLOP/s of an n x n matmul in ``dtype`` on this machine's torch threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e12


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_flops(config: Any, batch: int, length: int) -> float:
    """Forward + backward FLOPs of a BERT encoder step: 6 per parameter per token for the dense
    layers, plus attention's scores and weighted sum (2 x 2 x L x d per token per layer, x3)."""
    d, layers, ff = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    dense = layers * (4 * d * d + 2 * d * ff)
    tokens = batch * length
    return 6 * dense * tokens + 3 * 4 * layers * d * length * tokens


def batch_shapes(dataset: Any, collator: Any, batch_size: int, group: bool) -> list[tuple[int, int]]:
    """(batch, padded length) of each batch of the first epoch, as the run's sampler makes them."""
    loader = make_dataloader(dataset, collator, batch_size, True, seed=42, group_by_length=group)
    return [tuple(b["input_ids"].shape) for b in loader]


def course_loop(samples: int, batch_size: int, lr: float, data_dir: str) -> None:
    """The course's loop: no mixed precision, plain AdamW, random batches; prints its seconds."""
    from transformers import get_scheduler

    task, path = get_task("mrpc"), default_model_path()
    tokenizer = load_tokenizer(path)
    data = tokenize_glue(load_glue("mrpc", data_dir), tokenizer, "mrpc")["train"].select(range(samples))
    loader = make_dataloader(data, make_collator(tokenizer), batch_size, True, seed=42)
    torch.manual_seed(42)
    model = load_model(path, task)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = get_scheduler("linear", optimizer, 0, len(loader))
    model.train()
    start = time.perf_counter()
    for batch in loader:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    print(json.dumps({"seconds": time.perf_counter() - start}))


def run_contender(name: str, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    """(training seconds, peak RSS in GiB) of one contender in its own process."""
    if name == "course":
        command = [sys.executable, __file__, "--course", "--samples", str(args.samples), "--batch-size",
                   str(args.batch_size), "--data-dir", args.data_dir]  # fmt: skip
    else:
        loop, _, precision = name.partition("-")  # native-fp32: the native loop in float32
        command = [sys.executable, "-m", "finetune", "train", "--loop", loop, "--data-dir", args.data_dir,
                   "--output-dir", str(out / name), "--overwrite-output-dir", "--epochs", "1",
                   "--batch-size", str(args.batch_size), "--max-train-samples", str(args.samples),
                   "--max-eval-samples", "8", "--no-progress",
                   *(["--mixed-precision", "no"] if precision else []),
                   *(["--group-by-length"] if args.group_by_length else [])]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(AVX2_ONLY if name == "native-avx2" else {})}
    with open(out / f"{name}.out", "w+") as stdout, open(out / f"{name}.err", "w+") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: this child's own peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0), stderr.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{stderr.read()[-2000:]}")
        printed = stdout.read()
    rss = usage.ru_maxrss / 2**20  # KiB -> GiB
    if name == "course":
        return json.loads(printed.strip().splitlines()[-1])["seconds"], rss
    return json.loads((out / name / "results.json").read_text())["train_runtime_s"], rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=480, help="training pairs per contender")
    parser.add_argument("--batch-size", type=int, default=STRATEGY_DEFAULTS["full"]["batch_size"])
    parser.add_argument("--group-by-length", action="store_true", help="finetune's loops batch by length")
    parser.add_argument("--data-dir", default=os.environ.get("GLUE_DIR", "../shared/data/glue"))
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, default=list(DEFAULT_CONTENDERS))
    parser.add_argument("--repeats", type=int, default=3, help="runs of each contender, in rounds; the fastest counts")
    parser.add_argument("--course", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.course:
        return course_loop(args.samples, args.batch_size, STRATEGY_DEFAULTS["full"]["lr"], args.data_dir)

    fp32, bf16 = matmul_ceiling(torch.float32), matmul_ceiling(torch.bfloat16)
    path = default_model_path()
    tokenizer = load_tokenizer(path)
    train = tokenize_glue(load_glue("mrpc", args.data_dir), tokenizer, "mrpc")["train"].select(range(args.samples))
    model = load_model(path, get_task("mrpc"))
    collator = make_collator(tokenizer)
    check = next(iter(make_dataloader(train, collator, args.batch_size, False)))
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(**check).loss.backward()
    formula = step_flops(model.config.encoder_config(), *check["input_ids"].shape)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul ceiling (2048^3, best of 10): "
        f"float32 {fp32:.2f} TFLOP/s, bf16 {bf16:.2f} TFLOP/s"
    )
    print(f"FLOPs of one step: formula {formula / 1e9:.1f} G, FlopCounterMode {counter.get_total_flops() / 1e9:.1f} G")
    print(f"{args.samples} MRPC training pairs, batch {args.batch_size}, 1 epoch each, best of {args.repeats} rounds\n")
    print(
        f"{'contender':<12}{'batching':<10}{'seconds':>9}{'samples/s':>11}{'vs course':>11}{'TFLOP/s':>9}"
        f"{'MFU bf16':>10}{'MFU fp32':>10}{'peak RSS':>10}"
    )
    course_speed, best = None, {}
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in args.only}
        for _ in range(args.repeats):  # rounds over all contenders: each sees the machine's slow moments too
            for name in args.only:
                runs[name].append(run_contender(name, args, Path(tmp)))
        for name in args.only:
            grouped = args.group_by_length and name != "course"
            shapes = batch_shapes(train, collator, args.batch_size, grouped)
            flops = sum(step_flops(model.config.encoder_config(), b, n) for b, n in shapes)
            seconds, rss = min(s for s, _ in runs[name]), max(r for _, r in runs[name])
            best[name] = seconds
            speed = args.samples / seconds
            course_speed = course_speed or (speed if name == "course" else None)
            ratio = f"{speed / course_speed:.2f}x" if course_speed else "-"
            achieved = flops / seconds / 1e12
            print(
                f"{name:<12}{'grouped' if grouped else 'random':<10}{seconds:>9.1f}{speed:>11.1f}{ratio:>11}"
                f"{achieved:>9.2f}{achieved / bf16:>10.0%}{achieved / fp32:>10.0%}{rss:>8.2f} GiB"
            )
    for name in ("native-fp32", "native-avx2"):
        if name in best and "native" in best:
            print(f"{name} takes {best[name] / best['native']:.2f}x the time of native (bf16 where this CPU has it)")


if __name__ == "__main__":
    main()
