"""minigrad against torch on the CPU, float32, ratios measured in one run.

(a) the RNN-cell example from PyTorch's intro, forward + backward, per iteration;
(b) one training step of an MLP 512-512-512-10 on a batch of 128 (MSE, inline SGD update).

torch runs with one thread and with its default thread count. A ratio below 1.0 means minigrad
is faster. It also prints the minor page faults per call (freed memory faulted in again: what
made (b) slow before in-place updates wrote straight into the arrays). Run it with nothing else
on the machine:  python benchmarks/bench_minigrad.py
"""

from __future__ import annotations

import argparse
import functools
import resource

import numpy as np
import torch
from timing import race

import minigrad as mg


def rnn_steps(lib):
    """(a) for ``lib`` (minigrad or torch): the step, and the tensors it trains."""
    rng = np.random.default_rng(0)
    W_h = lib.tensor(rng.standard_normal((20, 20)).astype(np.float32), requires_grad=True)
    W_x = lib.tensor(rng.standard_normal((20, 10)).astype(np.float32), requires_grad=True)
    x = lib.tensor(rng.standard_normal((1, 10)).astype(np.float32))
    prev_h = lib.tensor(rng.standard_normal((1, 20)).astype(np.float32))

    def step() -> None:
        W_h.grad = W_x.grad = None
        next_h = (lib.mm(W_h, prev_h.t()) + lib.mm(W_x, x.t())).tanh()
        next_h.sum().backward()

    return step, [W_h, W_x]


def mlp_steps(lib, lr: float = 1e-3):
    """(b) for ``lib``: the step, and the parameters it updates."""
    rng = np.random.default_rng(0)
    sizes = [512, 512, 512, 10]
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        params += [lib.tensor(w, requires_grad=True), lib.tensor(np.zeros(fan_out, np.float32), requires_grad=True)]
    x = lib.tensor(rng.standard_normal((128, 512)).astype(np.float32))
    y = lib.tensor(rng.standard_normal((128, 10)).astype(np.float32))

    def step() -> None:
        h = x
        for i in range(0, len(params), 2):
            h = h @ params[i] + params[i + 1]
            if i < len(params) - 2:
                h = h.relu()
        loss = ((h - y) ** 2).mean()
        for p in params:
            p.grad = None
        loss.backward()
        with lib.no_grad():
            for p in params:
                p -= lr * p.grad

    return step, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9, help="rounds; each contender keeps its best")
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    cases = [("(a) RNN cell fwd+bwd", rnn_steps, 10000), ("(b) MLP 512-512-512-10 step", mlp_steps, 30)]
    print(f"torch {torch.__version__}, numpy {np.__version__}, torch default threads = {default_threads}")
    print(f"{'case':30} {'minigrad':>12} {'torch 1 thr':>12} {'torch def':>12} {'ratio 1thr':>10} {'ratio def':>10}")
    faults = {}
    contenders = [("minigrad", mg, default_threads), ("torch 1 thr", torch, 1), ("torch def", torch, default_threads)]
    threads = [functools.partial(torch.set_num_threads, n) for _, _, n in contenders]
    for name, make, iters in cases:
        steps = [make(lib)[0] for _, lib, _ in contenders]
        t_mg, t_1, t_d = race(steps, iters, args.repeats, before=threads)
        for (who, _, n), step in zip(contenders, steps):
            torch.set_num_threads(n)
            faults[who, name] = faults_per_call(step, iters)
        print(
            f"{name:30} {t_mg * 1e6:10.2f}us {t_1 * 1e6:10.2f}us {t_d * 1e6:10.2f}us "
            f"{t_mg / t_1:10.3f} {t_mg / t_d:10.3f}"
        )
    torch.set_num_threads(default_threads)
    print("page faults per call (memory handed back to the OS and faulted in again):")
    for name, _, _ in cases:
        counts = "  ".join(f"{who} {faults[who, name]:.1f}" for who, _, _ in contenders)
        print(f"  {name:28} {counts}")


def faults_per_call(step, calls: int) -> float:
    """Minor page faults per call of ``step`` (after it has been warmed up)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


if __name__ == "__main__":
    main()
