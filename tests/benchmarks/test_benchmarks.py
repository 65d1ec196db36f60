"""The benchmark scripts: their timer, and that each case computes the same thing in both libraries."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import minigrad as mg

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_minigrad
from timing import race


def test_race_times_each_step_and_runs_its_setup_before_each_block():
    calls = []
    best = race([lambda: None, lambda: time.sleep(0.002)], iters=5, repeats=3, before=[lambda: calls.append(1), None])
    assert best[1] > 0.0015 > best[0]  # each step keeps its own best block
    assert calls == [1, 1, 1]  # once per round, for the step that has one


@pytest.mark.parametrize("case", [bench_minigrad.rnn_steps, bench_minigrad.mlp_steps])
def test_each_case_does_the_same_in_minigrad_and_torch(case):
    """Two steps from the same numbers: the same gradients, and (b) the same updated weights."""
    results = {}
    for lib in (mg, torch):
        step, tensors = case(lib)
        step()
        step()
        results[lib] = [(t.detach().numpy().copy(), t.grad.numpy().copy()) for t in tensors]
    for (value, grad), (value_t, grad_t) in zip(results[mg], results[torch]):
        np.testing.assert_allclose(value, value_t, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(grad, grad_t, rtol=1e-3, atol=1e-5)


def test_bench_bert_splits_a_step_by_kind_of_work_and_puts_the_engine_back():
    import bench_bert

    from minigrad import optim
    from minigrad.autograd import Function
    from minigrad.nn import functional as F  # noqa: N812

    w = mg.tensor(np.random.default_rng(0).standard_normal((64, 64)), requires_grad=True)
    opt = optim.AdamW([w], lr=1e-3)

    def step():
        F.gelu(w.mm(w)).softmax(-1).square().sum().backward()
        opt.step()
        opt.zero_grad()

    apply, adam_step = Function.__dict__["apply"], optim.Adam.step
    spent, total = bench_bert.time_split(step, rounds=3)
    assert {"matrix products", "GELU and its gradient", "softmax forward", "AdamW", "other ops"} <= set(spent)
    assert all(seconds > 0 for kind, seconds in spent.items() if kind != "the rest: dropout draws, engine, Python")
    assert sum(spent.values()) == pytest.approx(total)
    assert Function.__dict__["apply"] is apply and optim.Adam.step is adam_step


def test_the_mrpc_batches_are_the_whole_training_set_length_grouped(glue_dir):
    from mrpc_batches import mrpc_train_batches

    batches = mrpc_train_batches(32, glue_dir)
    assert len(batches) == -(-3668 // 32) and sum(len(b["labels"]) for b in batches) == 3668
    widths = [b["input_ids"].shape[1] for b in batches]
    assert min(widths) < max(widths) <= 128  # dynamic padding, grouped by length
