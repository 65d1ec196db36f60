"""Where a training step's time goes, and what the cheaper dropout masks save.

One training step as ``finetune train`` runs it (the default model, the strategy's batch size,
MRPC's length-grouped batches, bf16 autocast where the CPU has it, fused AdamW), in one process:
the same batches with torch's dropout and with ``finetune.model.dropout``'s, alternating, then
``torch.profiler`` over 8 steps of the latter, its time put into a few kinds of work.

    GLUE_DIR=../shared/data/glue python benchmarks/profile_step.py --strategy full
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from mrpc_batches import mrpc_train_batches

from finetune.config import STRATEGY_DEFAULTS
from finetune.data.tasks import get_task
from finetune.loops.common import build_optimizer
from finetune.model.devices import autocast_dtype
from finetune.model.dropout import use_fast_dropout
from finetune.model.modeling import apply_freezing, default_model_path, load_model

KINDS = {  # profiler op name -> kind of work
    "aten::mm": "matmuls", "aten::addmm": "matmuls", "aten::bmm": "matmuls",
    "aten::bernoulli_": "dropout masks", "aten::random_": "dropout masks", "aten::ge": "dropout masks",
    "aten::copy_": "dtype casts (autocast)", "aten::_to_copy": "dtype casts (autocast)",
    "aten::_fused_adamw_": "optimizer", "aten::fill_": "zeroing gradients",
}  # fmt: skip


def build(strategy: str, fast: bool, data_dir: str | None) -> tuple:
    torch.manual_seed(0)
    task, path = get_task("mrpc"), default_model_path()
    model = load_model(path, task)
    apply_freezing(model, strategy)
    if fast:
        use_fast_dropout(model)
    model.train()
    optimizer = build_optimizer(model, 1e-5, 0.01, fused=True)
    return model, optimizer, mrpc_train_batches(STRATEGY_DEFAULTS[strategy]["batch_size"], data_dir)[:48]


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict, dtype: torch.dtype | None) -> None:
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", choices=list(STRATEGY_DEFAULTS), default="full")
    parser.add_argument("--data-dir", default=os.environ.get("GLUE_DIR"))
    args = parser.parse_args()
    dtype = autocast_dtype(torch.device("cpu"), "auto")
    setups = {name: build(args.strategy, name == "finetune", args.data_dir) for name in ("torch", "finetune")}
    times: dict[str, list[float]] = {name: [] for name in setups}
    for round_ in range(4):  # alternate blocks of 12 batches: both see the same batches, under the same load
        for name, (model, optimizer, batches) in setups.items():
            block = batches[round_ * 12 : (round_ + 1) * 12]
            start = time.perf_counter()
            for batch in block:
                step(model, optimizer, batch, dtype)
            if round_:  # the first round warms up
                times[name].append((time.perf_counter() - start) / len(block))
    per_step = {name: sum(t) / len(t) * 1000 for name, t in times.items()}
    print(
        f"strategy {args.strategy}, batch {STRATEGY_DEFAULTS[args.strategy]['batch_size']}, "
        f"{'bf16' if dtype else 'fp32'} autocast, {torch.get_num_threads()} threads"
    )
    for name, ms in per_step.items():
        print(f"  {name + ' dropout':<17} {ms:7.1f} ms a step")
    print(f"  speed-up          {per_step['torch'] / per_step['finetune']:7.2f}x")

    model, optimizer, batches = setups["finetune"]
    with torch.profiler.profile() as prof:
        for batch in batches[:8]:
            step(model, optimizer, batch, dtype)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = {}
    for e in events:
        kind = KINDS.get(e.key, "everything else")
        shares[kind] = shares.get(kind, 0.0) + e.self_cpu_time_total / total
    print(f"where the time goes (torch.profiler, 8 steps, {total / 8 / 1000:.0f} ms a step under the profiler):")
    for kind, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<24} {share:6.1%}")


if __name__ == "__main__":
    main()
