"""``--push-to-hub``: a finished run's model, tokenizer, results and a model card on the Hugging Face Hub.

Through ``huggingface_hub``: ``check_hub_access`` runs before any training (offline, no token, a
bad repo id or a token the Hub refuses each stop the run with one line); ``push_run`` writes the
model card (``README.md``: task, recipe, results) into the run directory and uploads exactly the
files ``UPLOADED`` names, results.json with every local path replaced by a public name
(``shareable_results``). ``finetune push`` uploads a run later.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
from pathlib import Path
from typing import Any

from finetune.data.tasks import get_task
from finetune.errors import ConfigError, one_line
from finetune.model.modeling import DEFAULT_BASE_MODEL, public_name

# What a run directory shares: the model (with the mean head, its code: mean_pooling.py, which
# config.json's auto_map names), its tokenizer, results.json and the card (not the checkpoints,
# the lock or TensorBoard's events).
UPLOADED = [
    "config.json", "model.safetensors", "mean_pooling.py", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "results.json", "README.md",
    "*_predictions.tsv",
]  # fmt: skip


class HubError(ConfigError):
    """The Hub cannot be reached or refuses the upload."""


def check_hub_access(repo_id: str | None, token: str | None = None) -> str:
    """The token to push with, once the Hub is known to be reachable and to accept it."""
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not repo_id:
        raise ConfigError("--push-to-hub needs --hub-model-id NAME or USER/NAME (the repository to create or update)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ConfigError(f"--hub-model-id {repo_id!r} is not a repository id: {one_line(e)}") from None
    if constants.HF_HUB_OFFLINE:
        raise HubError(
            "--push-to-hub: the Hub is switched off here (HF_HUB_OFFLINE=1): unset it, or drop --push-to-hub"
        )
    token = token or get_token()
    if token is None:
        raise HubError("--push-to-hub: no Hugging Face token: run `hf auth login`, set HF_TOKEN, or pass --hub-token")
    try:
        HfApi(token=token).whoami()
    except Exception as e:  # offline, DNS, refused, 401: all mean no upload will work
        raise HubError(
            f"--push-to-hub: the Hub did not accept the token ({_error_summary(e)}): check the network and the token"
        ) from None
    return token


def files_to_upload(run_dir: Path) -> list[str]:
    """The names of the files of ``run_dir`` that ``push_run`` uploads."""
    return sorted(
        p.name for p in run_dir.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, u) for u in UPLOADED)
    )


def model_card(results: dict[str, Any], repo_id: str) -> Any:
    """A ``huggingface_hub.ModelCard``: metadata (base model, dataset, metrics for the Hub's
    leaderboards) and a text with the recipe and the results table."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    cfg = results["config"]
    task = cfg["task"]
    base = base_model_id(cfg.get("model"))
    splits = [s for s in ("validation", "test") if results.get(s)]
    metrics = [m for m in results[splits[0]] if m not in ("loss", "examples")] if splits else []
    data = ModelCardData(
        base_model=base,
        datasets=["nyu-mll/glue"],
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["text-classification", "glue", task, "finetune"],
        metrics=metrics,
        model_name=repo_id,
        eval_results=[
            EvalResult(
                task_type="text-classification",
                dataset_type="nyu-mll/glue",
                dataset_name=f"GLUE {task.upper()}",
                dataset_config=task,
                dataset_split=split,
                metric_type=m,
                metric_value=results[split][m],
            )
            for split in splits
            for m in metrics
        ],
    )
    recipe = ["strategy", "loop", "pooling", "epochs", "batch_size", "lr", "warmup_ratio", "weight_decay",
              "max_length", "seed", "mixed_precision", "load_best_model_at_end"]  # fmt: skip
    rows = "\n".join(f"| {k} | {cfg.get(k)} |" for k in recipe)
    table = "\n".join(
        f"| {split} | {results[split]['examples']} | "
        + " | ".join(f"{100 * results[split][m]:.1f}" for m in metrics)
        + " |"
        for split in splits
    )
    # the mean head's code travels with the weights (mean_pooling.py): transformers runs it only when asked
    remote = ", trust_remote_code=True" if cfg.get("pooling", "mean") == "mean" else ""
    pair = len(get_task(task).text_columns) == 2
    example = '{"text": "The cat sat.", "text_pair": "A cat was sitting."}' if pair else '"The cat sat."'
    best = results.get("best")
    best_line = (f"\nThe model is the best evaluation's (step {best['step']}, validation {best['metric']} "
                 f"{best['value']:.4f}).\n" if best and cfg.get("load_best_model_at_end") else "")  # fmt: skip
    text = f"""---
{data.to_yaml()}
---

# {repo_id}

{base or "A pretrained encoder"} fine-tuned on GLUE {task.upper()} by `finetune train`
({cfg["loop"]} loop, strategy `{cfg["strategy"]}`, \
{results.get("trainable_params", 0):,} of {results.get("total_params", 0):,} parameters trained).

## Results

| split | examples | {" | ".join(metrics)} |
|---|---|{"---|" * len(metrics)}
{table}
{best_line}
## Recipe

| setting | value |
|---|---|
{rows}

Trained in {results.get("train_runtime_s", 0):.0f} s on {results.get("device", "?")}; the run's `results.json`
holds the whole configuration, versions and evaluation history.

```python
from transformers import pipeline

classifier = pipeline("text-classification", model="{repo_id}"{remote})
classifier({example})
```
"""
    return ModelCard(text)


def shareable_results(results: dict[str, Any]) -> dict[str, Any]:
    """results.json as uploaded: every absolute local path (the model, the data, the run, a
    checkpoint) replaced by a name others can use: the Hub id of the packaged default, else the
    folder's or file's own name. The local results.json keeps its paths for local use."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str) and os.path.isabs(value):
            return public_name(value)
        return value

    return clean(copy.deepcopy(results))


def base_model_id(name_or_path: str | None) -> str | None:
    """The Hub id a run started from: the packaged default's, a Hub id as given, None for a local folder."""
    if name_or_path is None:
        return DEFAULT_BASE_MODEL
    return None if Path(name_or_path).is_dir() else name_or_path


def push_run(
    run_dir: Path, results: dict[str, Any], repo_id: str, token: str | None = None, private: bool = False
) -> str:
    """Write the card into ``run_dir`` and upload the run's model files; returns the repo's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    model_card(results, repo_id).save(run_dir / "README.md")
    shared = json.dumps(shareable_results(results), indent=2).encode() + b"\n"
    files = {name: run_dir / name for name in files_to_upload(run_dir)} | {"results.json": shared}
    api = HfApi(token=token)
    message = f"finetune: {results['config']['task']}, strategy {results['config']['strategy']}"
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=what) for name, what in files.items()]
        api.create_commit(repo_id=repo_id, operations=operations, commit_message=message)
    except Exception as e:  # the run itself is safe on disk: say how to push it again
        raise HubError(
            f"uploading to {repo_id} failed ({_error_summary(e)}); the run is saved in {run_dir}: "
            f"finetune push --checkpoint {run_dir} --hub-model-id {repo_id}"
        ) from None
    return str(url)


def _error_summary(e: Exception) -> str:
    return f"{type(e).__name__}: {one_line(e)}"
