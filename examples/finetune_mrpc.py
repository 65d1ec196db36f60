"""Fine-tune the packaged MiniLM (a 6-layer BERT) on MRPC with minigrad, as ``finetune train`` does
with torch: the same tokenizer, data, length-grouped batches with dynamic padding, recipe
(``finetune.config.STRATEGY_DEFAULTS``: AdamW, linear warmup and decay, clipping at 1.0) and
freezing strategies, all taken from finetune's API. It writes a ``results.json`` in finetune's
format (loop ``minigrad``), so ``finetune report`` puts minigrad's runs in the same table as torch's.

    python examples/finetune_mrpc.py --strategy head --output-dir runs/minigrad-head
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import minigrad as mg
from minigrad import optim
from minigrad.models.bert import BertForSequenceClassification, from_pretrained
from minigrad.nn import functional as F  # noqa: N812 - torch's spelling
from minigrad.nn.utils import clip_grad_norm_


def finetune_choices(path: str, strategy: str) -> tuple[set[str], set[str]]:
    """The parameters finetune trains with ``strategy`` and those of them it exempts from weight
    decay, by minigrad's names: finetune's ``apply_freezing`` and ``build_optimizer`` decide, on
    finetune's own model of the same checkpoint."""
    from finetune.data.tasks import get_task
    from finetune.loops.common import build_optimizer
    from finetune.model.modeling import apply_freezing, load_model

    theirs = load_model(path, get_task("mrpc"), "mean")  # its encoder is "encoder.", minigrad's "bert."
    apply_freezing(theirs, strategy)
    names = {id(p): name.replace("encoder.", "bert.", 1) for name, p in theirs.named_parameters()}
    groups = build_optimizer(theirs, lr=1.0, weight_decay=1.0).param_groups
    trainable = {names[id(p)] for g in groups for p in g["params"]}
    exempt = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    return trainable, exempt


def evaluate(model: BertForSequenceClassification, loader: Any, task: Any) -> dict[str, float]:
    from finetune.analysis.metrics import compute_metrics

    model.eval()
    logits, labels = [], []
    with mg.no_grad():
        for batch in loader:
            logits.append(model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).data)
            labels.append(batch["labels"].numpy())
    model.train()
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    metrics = compute_metrics(task, logits, labels)
    metrics["loss"] = float(F.cross_entropy(mg.tensor(logits), mg.tensor(labels)).item())
    metrics["examples"] = len(labels)
    return metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from datasets import DatasetDict

    from finetune.config import STRATEGY_DEFAULTS, TrainConfig
    from finetune.data.glue import RunData, load_glue, make_collator, set_epoch, tokenize_glue
    from finetune.data.tasks import get_task
    from finetune.model.modeling import default_model_path, load_tokenizer
    from finetune.run.files import write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", choices=("full", "partial", "head"), default="head")
    parser.add_argument("--epochs", type=float, help="default: the strategy's recipe")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-dir", default=os.environ.get("GLUE_DIR"))
    parser.add_argument("--max-train-samples", type=int)
    parser.add_argument("--max-eval-samples", type=int)
    parser.add_argument("--output-dir", default="runs/minigrad-mrpc")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    recipe = dict(STRATEGY_DEFAULTS[args.strategy])
    recipe["epochs"] = args.epochs or recipe["epochs"]
    task, path = get_task("mrpc"), default_model_path()
    mg.manual_seed(args.seed)

    raw = load_glue("mrpc", args.data_dir)
    for split, limit in (
        ("train", args.max_train_samples),
        ("validation", args.max_eval_samples),
        ("test", args.max_eval_samples),
    ):
        if limit is not None:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    tokenizer = load_tokenizer(path)
    data = tokenize_glue(DatasetDict(raw), tokenizer, "mrpc")
    run = RunData(data, make_collator(tokenizer), recipe["batch_size"], 64, args.seed, group_by_length=True)
    train_loader = run.loader("train")

    model = from_pretrained(path, num_labels=2, pooling="mean")
    trains, exempt = finetune_choices(path, args.strategy)
    for name, p in model.named_parameters():
        p.requires_grad = name in trains
    trainable = [p for name, p in model.named_parameters() if name in trains]
    defaults = TrainConfig()
    groups = [{"params": [p for n, p in model.named_parameters() if n in trains - exempt],
               "weight_decay": defaults.weight_decay},
              {"params": [p for n, p in model.named_parameters() if n in exempt], "weight_decay": 0.0}]  # fmt: skip
    optimizer = optim.AdamW([g for g in groups if g["params"]], lr=recipe["lr"])
    total = int(np.ceil(len(train_loader) * recipe["epochs"]))
    schedule = optim.LinearWarmupSchedule(optimizer, int(np.ceil(recipe["warmup_ratio"] * total)), total)

    history, step, start = [], 0, time.perf_counter()
    bar = tqdm(total=total, desc="training", disable=args.no_progress)
    model.train()
    for epoch in range(int(np.ceil(recipe["epochs"]))):
        set_epoch(train_loader, epoch)  # the order depends on (seed, epoch), as in finetune
        for batch in train_loader:
            logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            loss = F.cross_entropy(logits, mg.tensor(batch["labels"].numpy()))
            loss.backward()
            clip_grad_norm_(trainable, defaults.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            bar.update(1)
            if step % 10 == 0:
                history.append({"step": step, "epoch": round(step / len(train_loader), 4), "loss": loss.item(),
                                "learning_rate": schedule.get_last_lr()[0]})  # fmt: skip
            if step >= total:
                break
        metrics = evaluate(model, run.loader("validation"), task)
        history.append({"step": step, "epoch": epoch + 1, "validation": metrics})
        tqdm.write(f"epoch {epoch + 1}: validation accuracy={metrics['accuracy']:.4f} f1={metrics['f1']:.4f}")
    bar.close()
    runtime = time.perf_counter() - start
    results = {
        "config": {
            "task": "mrpc",
            "loop": "minigrad",
            "strategy": args.strategy,
            "pooling": "mean",
            "seed": args.seed,
            "max_train_samples": args.max_train_samples,
            "max_eval_samples": args.max_eval_samples,
            "group_by_length": True,
            "output_dir": args.output_dir,
            **recipe,
        },
        "model": {"name_or_path": path, "local": True, "class": "minigrad BertForSequenceClassification"},
        "device": "cpu (NumPy)",
        "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in model.parameters()),
        "train_examples": len(run.splits["train"]),
        "history": history,
        "optimizer_steps": step,
        "train_runtime_s": round(runtime, 3),
        "train_samples_per_second": round(len(run.splits["train"]) * recipe["epochs"] / runtime, 3),
        "validation": evaluate(model, run.loader("validation"), task),
        "test": evaluate(model, run.loader("test"), task),
    }
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    print(json.dumps({k: results[k] for k in ("validation", "test", "train_runtime_s")}, indent=2))
    return results


if __name__ == "__main__":
    main()
