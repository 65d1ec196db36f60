"""``finetune report``: a Markdown table across runs (mean and spread over seeds) and PNG plots."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from finetune.config import RUN_SETTINGS, ConfigError, TrainConfig
from finetune.files import write_atomic

# Runs are pooled only when every setting that changes the result agrees (all but the seed).
GROUP_KEYS = tuple(k for k in RUN_SETTINGS if k != "seed")
SHOWN = ("task", "loop", "strategy", "pooling", "epochs")  # the table's first columns


def find_runs(paths: list[Path]) -> list[dict[str, Any]]:
    """results.json of each run directory given, or of every run below a folder given."""
    runs = []
    for path in paths:
        if not path.exists():
            raise ConfigError(f"no such run directory {path}")
        files = [path / "results.json"] if (path / "results.json").exists() else sorted(path.rglob("results.json"))
        for f in files:
            run = _read_results(f)
            run["_dir"] = str(f.parent)
            runs.append(run)
    if not runs:
        raise ConfigError(f"no results.json under {', '.join(map(str, paths))}: pass run directories")
    return runs


def _read_results(path: Path) -> dict[str, Any]:
    """One run's results.json, refused in one line when it is empty, damaged or not a run's."""
    try:
        run = json.loads(path.read_text())
        if not isinstance(run, dict) or not isinstance(run.get("config"), dict) or "history" not in run:
            raise KeyError
        run["config"] = {**TrainConfig().to_dict(), **run["config"]}  # settings added since: their defaults
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError):
        raise ConfigError(f"{path} is empty or damaged (not a results.json of finetune train): remove it") from None
    return run


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Where the true mean lies with probability ``level``: mean ± t * sd / sqrt(n), Student's t
    for n - 1 degrees of freedom (with 5 seeds, t = 2.78: wider than two standard errors)."""
    from scipy import stats

    m, s = mean_std(values)
    half = float(stats.t.ppf((1 + level) / 2, len(values) - 1)) * s / math.sqrt(len(values))
    return m - half, m + half


def group_runs(runs: list[dict[str, Any]], keys: tuple[str, ...] = GROUP_KEYS) -> dict[tuple, list[dict[str, Any]]]:
    """Runs keyed by their values of ``keys`` (missing settings count as None)."""
    groups: dict[tuple, list] = defaultdict(list)
    for run in runs:
        groups[tuple(run["config"].get(k) for k in keys)].append(run)
    return dict(sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))))


def _cell(runs: list[dict[str, Any]], split: str, metric: str) -> str:
    values = [r[split][metric] * 100 for r in runs if r.get(split) and metric in r[split]]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    (m, s), (low, high) = mean_std(values), confidence_interval(values)
    return f"{m:.1f} ± {s:.1f} [{low:.1f}, {high:.1f}]"


def _text(value: Any) -> str:
    """A setting as the table shows it: 3.0 epochs as 3, 5e-05 as 5e-05."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _data_cell(run: dict[str, Any]) -> str:
    """The training-set size, marked when the run used only part of the data."""
    c = run["config"]
    size = run.get("train_examples") or c.get("max_train_samples")
    text = f"{size:,}" if size else "all"
    subset = [f"{n} train" for n in [c.get("max_train_samples")] if n] + [
        f"{n} eval" for n in [c.get("max_eval_samples")] if n
    ]
    return f"{text} (subset: {', '.join(subset)})" if subset else text


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """One row per setting (every run-changing option but the seed): metrics as mean ± sample
    std over seeds [95% confidence interval of the mean] (%). Settings beyond the first columns
    that vary between rows get a column."""
    names = ("accuracy", "f1", "matthews", "pearson", "spearman")
    metrics = [m for m in names if any(m in (r.get("validation") or {}) for r in runs)]
    groups = group_runs(runs)
    varying = [k for i, k in enumerate(GROUP_KEYS) if k not in SHOWN and len({str(key[i]) for key in groups}) > 1]
    header = [*SHOWN, "train examples", *(["other settings"] if varying else []), "seeds"]
    header += [f"val {m}" for m in metrics] + [f"test {m}" for m in metrics]
    header += ["trainable params", "train time (s)", "samples/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, group in groups.items():
        setting = dict(zip(GROUP_KEYS, key))
        time_m, _ = mean_std([r["train_runtime_s"] for r in group])
        speed_m, _ = mean_std([r["train_samples_per_second"] for r in group])
        row = [*(_text(setting[k]) for k in SHOWN), _data_cell(group[0])]
        if varying:
            row.append(", ".join(f"{k}={_text(setting[k])}" for k in varying))
        row.append(str(len(group)))
        row += [_cell(group, "validation", m) for m in metrics] + [_cell(group, "test", m) for m in metrics]
        row += [f"{group[0]['trainable_params']:,}", f"{time_m:.0f}", f"{speed_m:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def loop_agreement(runs: list[dict[str, Any]], metric: str = "accuracy") -> str:
    """For each setting run with both the native loop and the Trainer (all else equal but the
    seed): the difference of their mean validation ``metric`` against two standard errors of it."""
    keys = tuple(k for k in GROUP_KEYS if k != "loop")
    lines = []
    for key, group in group_runs(runs, keys).items():
        by_loop: dict[str, list[float]] = defaultdict(list)
        for run in group:
            value = (run.get("validation") or {}).get(metric)
            if value is not None:
                by_loop[run["config"]["loop"]].append(value * 100)
        a, b = by_loop.get("native", []), by_loop.get("trainer", [])
        if len(a) < 2 or len(b) < 2:
            continue
        (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
        se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
        verdict = "agree" if abs(ma - mb) <= 2 * se else "differ"
        setting = dict(zip(keys, key))
        lines.append(
            f"- {setting['task']}/{setting['strategy']}/{setting['pooling']}: native {ma:.1f} vs Trainer {mb:.1f} "
            f"validation {metric} (n={len(a)}/{len(b)}): difference {ma - mb:+.1f}, two standard errors "
            f"{2 * se:.1f}: {verdict}"
        )
    return "\n".join(lines)


def plot_loss(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for run in runs:
        steps = [h for h in run["history"] if "loss" in h]
        c = run["config"]
        ax.plot([h["step"] for h in steps], [h["loss"] for h in steps], lw=1,
                label=f"{c['loop']}/{c['strategy']} seed {c['seed']}")  # fmt: skip
    ax.set(xlabel="optimizer step", ylabel="training loss", title="Training loss per step")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_metric_vs_time(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("accuracy", "f1") if any(m in (r.get("validation") or {}) for r in runs)] or ["accuracy"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for key, group in group_runs(runs).items():
            xs = [r["train_runtime_s"] / 60 for r in group]
            ys = [(r.get("validation") or {}).get(metric, float("nan")) * 100 for r in group]
            setting = dict(zip(GROUP_KEYS, key))
            ax.scatter(xs, ys, label=f"{setting['loop']}/{setting['strategy']} ({setting['pooling']})", s=30)
        ax.set(xlabel="training time (min)", ylabel=f"validation {metric} (%)", title=f"Validation {metric} vs time")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(paths: list[Path], out: Path) -> str:
    """Write report.md, loss.png and metric_vs_time.png into ``out``; return the table."""
    runs = find_runs(paths)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(runs)
    agreement = loop_agreement(runs)
    if agreement:
        table += "\n\nNative loop vs Trainer:\n" + agreement
    plot_loss(runs, out / "loss.png")
    plot_metric_vs_time(runs, out / "metric_vs_time.png")
    write_atomic(
        out / "report.md",
        f"{table}\n\n![training loss](loss.png)\n\n![validation metric vs training time](metric_vs_time.png)\n",
    )
    return table
