"""Each process's memory for parameters, gradients and optimizer state, and the step time, with
plain data parallelism (DDP) and with ``--fsdp full_shard`` (FSDP2, ``finetune/model/sharding.py``).

    torchrun --nproc_per_node 2 benchmarks/bench_fsdp.py [--strategy full] [--steps 5]

The bytes are counted tensor by tensor (each process's own shards under FSDP), not read from the
allocator, so they hold on any device. Step times on a shared machine are only a ratio.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from finetune.data.tasks import get_task
from finetune.loops.common import build_optimizer
from finetune.model.modeling import apply_freezing, default_model_path, load_model
from finetune.model.sharding import Sharded
from finetune.pipeline import quiet_libraries

MIB = 2**20


def local_bytes(tensors: list[torch.Tensor]) -> int:
    """What this process holds of ``tensors`` (its shard of a DTensor)."""
    return sum((t.to_local() if isinstance(t, DTensor) else t).nbytes for t in tensors)


def measure(sharding: str, strategy: str, steps: int, batch_size: int, length: int) -> dict[str, float]:
    """Train ``steps`` steps on random tokens; this process's bytes and the mean step time."""
    torch.manual_seed(0)
    model = load_model(default_model_path(), get_task("mrpc"))
    apply_freezing(model, strategy)
    device = torch.device("cuda", dist.get_rank()) if torch.cuda.is_available() else torch.device("cpu")
    if sharding == "fsdp":
        Sharded(model, "full_shard", "no", device)
        forward: Callable[..., torch.Tensor] = model
    else:
        forward = torch.nn.parallel.DistributedDataParallel(model.to(device))
    optimizer = build_optimizer(model, 1e-5, 0.01, fused=True)
    batch = {
        "input_ids": torch.randint(1000, 2000, (batch_size, length), device=device),
        "attention_mask": torch.ones(batch_size, length, dtype=torch.long, device=device),
        "labels": torch.randint(0, 2, (batch_size,), device=device),
    }
    times = []
    for _ in range(steps + 1):  # the first step allocates the optimizer state: not timed
        start = time.perf_counter()
        forward(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        grads = [p.grad for p in model.parameters() if p.grad is not None]  # before they are freed
        optimizer.zero_grad(set_to_none=True)
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return {
        "params": local_bytes(list(model.parameters())) / MIB,
        "grads": local_bytes(grads) / MIB,
        "optimizer": local_bytes(state) / MIB,
        "step_s": sum(times[1:]) / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="full", choices=["full", "partial", "head"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()
    quiet_libraries()
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rows = {name: measure(name, args.strategy, args.steps, args.batch_size, args.length) for name in ("ddp", "fsdp")}
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, rows)
    if dist.get_rank() == 0:
        print(
            f"world size {dist.get_world_size()}, strategy {args.strategy}, batch {args.batch_size} x {args.length} "
            f"tokens per process; MiB held by each process"
        )
        print("| run | rank | parameters | gradients | optimizer state | total |")
        print("|---|---|---|---|---|---|")
        for name in rows:
            for rank, ranks_rows in enumerate(every):
                r = ranks_rows[name]
                total = r["params"] + r["grads"] + r["optimizer"]
                cells = [r["params"], r["grads"], r["optimizer"], total]
                print(f"| {name} | {rank} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
        ratio = sum(r["fsdp"]["step_s"] for r in every) / sum(r["ddp"]["step_s"] for r in every)
        print(f"step time fsdp / ddp: {ratio:.2f} (mean of {args.steps} steps a run)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
