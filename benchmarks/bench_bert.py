"""minigrad's BERT against torch's on the packaged MiniLM: one training step (forward, backward,
AdamW) and one inference pass on a median-length MRPC batch of 32, float32, the same threads,
alternating in one process, best of ``--rounds``.

    GLUE_DIR=../shared/data/glue python benchmarks/bench_bert.py
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import minigrad as mg
from minigrad import optim
from minigrad.models.bert import from_pretrained
from minigrad.nn import functional as F  # noqa: N812 - torch's spelling


def batch_of(size: int, data_dir: str | None) -> dict:
    from datasets import DatasetDict

    from finetune.data import RunData, load_glue, make_collator, tokenize_glue
    from finetune.modeling import default_model_path, load_tokenizer

    tokenizer = load_tokenizer(default_model_path())
    train = tokenize_glue(DatasetDict({"train": load_glue("mrpc", data_dir)["train"]}), tokenizer, "mrpc")
    run = RunData(train, make_collator(tokenizer), size, size, 0, True, ())
    batches = list(run.loader("train"))
    return sorted(batches[:-1], key=lambda b: b["input_ids"].shape[1])[len(batches) // 2]  # a median-length batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", default=os.environ.get("GLUE_DIR"))
    args = parser.parse_args()
    from finetune.modeling import default_model_path, load_model
    from finetune.tasks import get_task

    batch = batch_of(args.batch_size, args.data_dir)
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
    print(f"default model, MRPC batch {shape[0]} x {shape[1]} tokens, float32, {torch.get_num_threads()} threads, "
          f"best of {args.rounds}")  # fmt: skip
    print(f"{'':<12}{'torch':>10}{'minigrad':>10}{'minigrad / torch':>18}")
    for case in cases:
        t, m = best[(case, "torch")], best[(case, "minigrad")]
        print(f"{case:<12}{t * 1000:>8.0f} ms{m * 1000:>8.0f} ms{m / t:>17.2f}x")


if __name__ == "__main__":
    main()
