"""minigrad's BERT against torch's on the packaged MiniLM: one training step (forward, backward,
AdamW) and one inference pass on a median-length MRPC batch of 32, float32, the same threads,
alternating in one process, best of ``--rounds``; then the memory each library's training step
takes beyond the loaded model and batch (peak RSS, each in a fresh process), and where minigrad's
step spends its time.

    GLUE_DIR=../shared/data/glue python benchmarks/bench_bert.py
    GLUE_DIR=../shared/data/glue python benchmarks/bench_bert.py --plain first_grad   # one kernel plain

``MINIGRAD_KERNELS=plain`` runs every kernel plain; ``--plain NAME`` (repeatable) only the ones
named, so that what one fast kernel buys is the difference between two runs' ratios.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

import torch
from mrpc_batches import mrpc_train_batches

import minigrad as mg
from minigrad import kernels, optim
from minigrad.autograd import Function
from minigrad.models.bert import from_pretrained
from minigrad.nn import functional as F  # noqa: N812 - torch's spelling


def batch_of(size: int, data_dir: str | None) -> dict:
    batches = mrpc_train_batches(size, data_dir)
    return sorted(batches[:-1], key=lambda b: b["input_ids"].shape[1])[len(batches) // 2]  # a median-length batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", default=os.environ.get("GLUE_DIR"))
    parser.add_argument("--plain", action="append", default=[], choices=kernels.NAMES, help="run this kernel plain")
    parser.add_argument("--memory-of", choices=("torch", "minigrad"), help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    for name in args.plain:
        setattr(kernels, name, getattr(kernels, f"plain_{name}"))
    batch = batch_of(args.batch_size, args.data_dir)
    torch_step, minigrad_step, torch_infer, minigrad_infer = contenders(batch)
    if args.memory_of:
        print(step_memory_mib(torch_step if args.memory_of == "torch" else minigrad_step))
        return
    cases = {"train step": (torch_step, minigrad_step), "inference": (torch_infer, minigrad_infer)}
    best = {(case, lib): float("inf") for case in cases for lib in ("torch", "minigrad")}
    for fn in (f for pair in cases.values() for f in pair):
        fn()  # warm up
    for _ in range(args.rounds):  # alternate: both see the same machine
        for case, (t_fn, m_fn) in cases.items():
            for lib, fn in (("torch", t_fn), ("minigrad", m_fn)):
                start = time.perf_counter()
                fn()
                best[(case, lib)] = min(best[(case, lib)], time.perf_counter() - start)
    shape = tuple(batch["input_ids"].shape)
    print(
        f"default model, MRPC batch {shape[0]} x {shape[1]} tokens, float32, {torch.get_num_threads()} threads, "
        f"best of {args.rounds}, kernels {kernels.mode}" + (f" but {', '.join(args.plain)} plain" if args.plain else "")
    )
    print(f"{'':<12}{'torch':>10}{'minigrad':>10}{'minigrad / torch':>18}")
    for case in cases:
        t, m = best[(case, "torch")], best[(case, "minigrad")]
        print(f"{case:<12}{t * 1000:>8.0f} ms{m * 1000:>8.0f} ms{m / t:>17.2f}x")
    memory = {}
    for lib in ("torch", "minigrad"):
        child = [sys.executable, __file__, "--memory-of", lib, "--batch-size", str(args.batch_size)]
        child += [arg for name in args.plain for arg in ("--plain", name)]
        done = subprocess.run(
            child + (["--data-dir", args.data_dir] if args.data_dir else []), capture_output=True, text=True, check=True
        )
        memory[lib] = float(done.stdout.split()[-1])
    print(
        f"{'step memory':<12}{memory['torch']:>7.0f} MiB{memory['minigrad']:>7.0f} MiB"
        f"{memory['minigrad'] / memory['torch']:>17.2f}x   (peak RSS above the loaded model, fresh processes)"
    )
    spent, total = time_split(minigrad_step, args.rounds)
    print(f"\nwhere minigrad's training step goes ({total * 1000:.0f} ms, mean of {args.rounds}):")
    for kind, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<34}{seconds * 1000:>6.0f} ms {seconds / total:>5.0%}")


def contenders(batch: dict) -> tuple:
    """A training step and an inference pass for each library, on the same model and batch."""
    from finetune.data.tasks import get_task
    from finetune.model.modeling import default_model_path, load_model

    inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    labels = batch["labels"]
    torch.manual_seed(0)
    theirs = load_model(default_model_path(), get_task("mrpc"), "mean")
    theirs.save_pretrained("/tmp/bench-bert-model")
    mine = from_pretrained("/tmp/bench-bert-model")
    t_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-5)
    m_opt = optim.AdamW(list(mine.parameters()), lr=1e-5)
    m_labels = mg.tensor(labels.numpy())

    def torch_step() -> None:
        theirs.train()
        loss = torch.nn.functional.cross_entropy(theirs(**batch).logits, labels)
        loss.backward()
        t_opt.step()
        t_opt.zero_grad()

    def minigrad_step() -> None:
        mine.train()
        loss = F.cross_entropy(mine(*inputs), m_labels)
        loss.backward()
        m_opt.step()
        m_opt.zero_grad()

    def torch_infer() -> None:
        theirs.eval()
        with torch.no_grad():
            theirs(**batch)

    def minigrad_infer() -> None:
        mine.eval()
        with mg.no_grad():
            mine(*inputs)

    return torch_step, minigrad_step, torch_infer, minigrad_infer


KINDS = {"Mm": "matrix products", "Addmm": "matrix products", "MatMul": "matrix products",
         "Gelu": "GELU and its gradient", "GeluBackward": "GELU and its gradient",
         "LayerNorm": "LayerNorm forward", "Softmax": "softmax forward"}  # fmt: skip


def time_split(step, rounds: int) -> tuple[dict[str, float], float]:
    """Where a minigrad training step's time goes: each op timed where ``Function.apply`` runs it
    (forward, and the ops the backward formulas call), AdamW's step, and the rest (dropout's
    random draws, the engine's bookkeeping, Python), per step."""
    spent: collections.Counter = collections.Counter()
    apply, adam_step = Function.__dict__["apply"], optim.Adam.step

    def timed(kind: str, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            spent[kind] += time.perf_counter() - start

    Function.apply = classmethod(lambda cls, *a: timed(KINDS.get(cls.__name__, "other ops"), apply.__func__, cls, *a))
    optim.Adam.step = lambda self: timed("AdamW", adam_step, self)
    try:
        start = time.perf_counter()
        for _ in range(rounds):
            step()
        total = time.perf_counter() - start
    finally:
        Function.apply, optim.Adam.step = apply, adam_step
    spent["the rest: dropout draws, engine, Python"] = total - sum(spent.values())
    return {kind: seconds / rounds for kind, seconds in spent.items()}, total / rounds


def step_memory_mib(step) -> float:
    """How far three training steps raise the process's peak RSS above what it held before them
    (Linux: writing 5 to clear_refs resets the peak, VmHWM, to the current RSS)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mib("VmRSS")
    for _ in range(3):
        step()
    return _status_mib("VmHWM") - before


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


if __name__ == "__main__":
    main()
