"""Training throughput on MRPC: padding to 128 tokens vs dynamic padding vs length-grouped
dynamic padding, for each freezing strategy, ratios measured in one run.

Each measurement runs real training steps (forward, backward, clip, AdamW step) of the default
checkpoint at batch 32 and counts samples per second; the configurations are measured in
alternating rounds and the median round is kept, so slow drift hits them all alike.

    python benchmarks/bench_padding.py [--steps 8] [--rounds 3] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from finetune.data.glue import load_glue, make_collator, make_dataloader, set_epoch, tokenize_glue
from finetune.data.tasks import get_task
from finetune.loops.common import build_optimizer
from finetune.model.modeling import apply_freezing, default_model_path, load_model, load_tokenizer

MODES = ("pad-128", "dynamic", "grouped")


def samples_per_second(model, loader, steps: int) -> tuple[float, float]:
    """(samples/s, mean padded length) over ``steps`` training steps, after one warm-up step."""
    optimizer = build_optimizer(model, 1e-5, 0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    batches = itertools.islice(iter(loader), steps + 1)
    seen, tokens, start = 0, 0, None
    for i, batch in enumerate(batches):
        if i == 1:
            start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss
        if i >= 1:
            seen += len(batch["labels"])
            tokens += batch["input_ids"].shape[1]
    return seen / (time.perf_counter() - start), tokens / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    torch.manual_seed(0)
    task = get_task("mrpc")
    tokenizer = load_tokenizer(default_model_path())
    raw = load_glue("mrpc", args.data_dir)
    dynamic = tokenize_glue(raw, tokenizer, "mrpc")["train"]
    padded = tokenize_glue(raw, tokenizer, "mrpc", max_length=128, pad_to_max_length=True)["train"]
    collator = make_collator(tokenizer)
    loaders = {
        "pad-128": make_dataloader(padded, collator, args.batch_size, shuffle=True, seed=0),
        "dynamic": make_dataloader(dynamic, collator, args.batch_size, shuffle=True, seed=0),
        "grouped": make_dataloader(dynamic, collator, args.batch_size, shuffle=True, seed=0, group_by_length=True),
    }
    model = load_model(default_model_path(), task, "mean")
    rates: dict[tuple[str, str], list[float]] = {}
    lengths: dict[str, float] = {}
    for round_ in range(args.rounds):
        for strategy in ("full", "partial", "head"):
            apply_freezing(model, strategy)
            for mode in MODES:
                set_epoch(loaders[mode], round_)
                rate, length = samples_per_second(model, loaders[mode], args.steps)
                rates.setdefault((strategy, mode), []).append(rate)
                lengths[mode] = length
    mean_len = sum(len(ids) for ids in dynamic["input_ids"]) / len(dynamic)
    print(
        f"batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, torch threads {torch.get_num_threads()}"
    )
    print(
        f"mean pair length {mean_len:.1f} tokens; mean padded length: "
        + ", ".join(f"{m} {lengths[m]:.1f}" for m in MODES)
    )
    print(f"{'strategy':9} {'mode':8} {'samples/s':>10} {'vs pad-128':>11} {'vs full':>8}")
    for strategy in ("full", "partial", "head"):
        for mode in MODES:
            rate = statistics.median(rates[(strategy, mode)])
            base = statistics.median(rates[(strategy, "pad-128")])
            full = statistics.median(rates[("full", mode)])
            print(f"{strategy:9} {mode:8} {rate:10.1f} {rate / base:10.2f}x {rate / full:7.2f}x")


if __name__ == "__main__":
    main()
