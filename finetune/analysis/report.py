"""``finetune report``: a Markdown table across runs (mean and spread over seeds), what is real
among their differences (``finetune.analysis.compare``), seed ensembles, and PNG plots."""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from finetune.config import LOOPS, RUN_SETTINGS, STRATEGIES, STRATEGY_DEFAULTS, ConfigError, TrainConfig
from finetune.errors import DataError
from finetune.run.files import check_writable_folder, write_atomic

# Runs are pooled only when every setting that changes the result agrees (all but the seed).
GROUP_KEYS = tuple(k for k in RUN_SETTINGS if k != "seed")
SHOWN = ("task", "loop", "strategy", "pooling", "epochs")  # the table's first columns
# Two settings are compared when they differ in the loop alone, or in the strategy and its recipe.
RECIPE_KEYS = {"strategy", "freeze_layers", *STRATEGY_DEFAULTS["full"]}
# Published MRPC validation numbers of bert-base (110M parameters, 5x this project's default
# model), single runs: (who, model, accuracy %, F1 %).
PUBLISHED = [
    ("HF course, Trainer", "bert-base-uncased", 85.8, 90.0),  # huggingface.co/learn/llm-course/chapter3/3
    ("HF course, custom loop", "bert-base-uncased", 84.3, 89.1),  # huggingface.co/learn/llm-course/chapter3/4
    ("run_glue.py", "bert-base-cased", 84.07, 88.85),  # transformers examples/pytorch/text-classification
]
BERT_BASE_PARAMS = 110e6


def find_runs(paths: list[Path]) -> list[dict[str, Any]]:
    """results.json of each run directory given, or of every finished run below a folder given
    (``unfinished_runs`` names those left out). A run directory given that did not finish is
    refused, naming the command that resumes it."""
    from finetune.run.rundir import check_finished, unfinished_run

    runs = []
    for path in paths:
        if not path.exists():
            raise ConfigError(f"no such run directory {path}")
        check_finished(path)
        files = [path / "results.json"] if (path / "results.json").exists() else sorted(path.rglob("results.json"))
        for f in files:
            run = _read_results(f)
            run["_dir"] = str(f.parent)
            runs.append(run)
    if not runs:
        unfinished = unfinished_runs(paths)
        if unfinished:
            others = f" ({len(unfinished) - 1} more did not finish)" if len(unfinished) > 1 else ""
            raise ConfigError(
                f"no finished run under {', '.join(map(str, paths))}{others}: {unfinished_run(unfinished[0])}"
            )
        raise ConfigError(f"no results.json under {', '.join(map(str, paths))}: pass run directories")
    return runs


def unfinished_runs(paths: list[Path]) -> list[Path]:
    """The runs at or below ``paths`` that did not finish (``finetune.run.rundir.unfinished_run``)."""
    from finetune.run.rundir import unfinished_runs_below

    return sorted({run for path in paths if path.is_dir() for run in unfinished_runs_below(path)})


def unfinished_note(paths: list[Path]) -> str:
    """A line per run left out because it did not finish, with the command that resumes it; empty if none."""
    from finetune.run.rundir import unfinished_run

    left_out = unfinished_runs(paths)
    if not left_out:
        return ""
    lines = [f"Left out, {len(left_out)} run{'s' * (len(left_out) > 1)} that did not finish:", ""]
    return "\n".join(lines + [f"- {unfinished_run(run)}" for run in left_out])


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


def setting_key(run: dict[str, Any], keys: tuple[str, ...] = GROUP_KEYS) -> tuple:
    """The run's values of ``keys`` (missing settings count as None): its setting, by default."""
    return tuple(run["config"].get(k) for k in keys)


def group_runs(runs: list[dict[str, Any]], keys: tuple[str, ...] = GROUP_KEYS) -> dict[tuple, list[dict[str, Any]]]:
    """Runs keyed by their values of ``keys`` (missing settings count as None)."""
    groups: dict[tuple, list] = defaultdict(list)
    for run in runs:
        groups[setting_key(run, keys)].append(run)
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


def _naming(groups: dict[tuple, list]) -> list[str]:
    """The settings that tell apart groups of the same task, loop and strategy (the learning rates
    of a search, say): the comparisons name them beside loop/strategy."""
    alike: dict[tuple, list[tuple]] = defaultdict(list)
    for key in groups:
        setting = dict(zip(GROUP_KEYS, key))
        alike[setting["task"], setting["loop"], setting["strategy"]].append(key)
    return [
        k for i, k in enumerate(GROUP_KEYS) if any(len({str(key[i]) for key in keys}) > 1 for keys in alike.values())
    ]


def _label(setting: dict[str, Any], varying: list[str]) -> str:
    """A setting as the comparisons name it: loop/strategy, and the settings ``_naming`` gives."""
    others = ", ".join(f"{k}={_text(setting[k])}" for k in varying)
    return f"{setting['loop']}/{setting['strategy']}" + (f" ({others})" if others else "")


def _order(setting: dict[str, Any]) -> tuple[int, int]:
    """native before trainer before accelerate (then others), full before partial before head."""
    rank = {name: i for i, name in enumerate((*LOOPS, *STRATEGIES))}
    return rank.get(setting["loop"], len(LOOPS)), rank.get(setting["strategy"], len(STRATEGIES))


def comparable_pairs(runs: list[dict[str, Any]]) -> list[tuple[dict, list, dict, list]]:
    """(setting A, its runs, setting B, its runs) for each two settings that differ in the loop
    alone (native vs Trainer), or in the strategy and what its recipe sets (full vs partial vs
    head): loop pairs first, A the one listed first in LOOPS and STRATEGIES."""
    groups = [(dict(zip(GROUP_KEYS, key)), group) for key, group in group_runs(runs).items()]
    pairs = []
    for (a, runs_a), (b, runs_b) in itertools.combinations(groups, 2):
        differ = {k for k in GROUP_KEYS if a[k] != b[k]}
        if differ == {"loop"} or ("strategy" in differ and differ <= RECIPE_KEYS):
            pairs.append(((a, runs_a), (b, runs_b)) if _order(a) <= _order(b) else ((b, runs_b), (a, runs_a)))
    pairs.sort(key=lambda p: (p[0][0]["loop"] == p[1][0]["loop"], _order(p[0][0]), _order(p[1][0])))
    return [(a, runs_a, b, runs_b) for (a, runs_a), (b, runs_b) in pairs]


def _metrics_of(task: str) -> tuple[str, ...]:
    from finetune.data.tasks import get_task

    return ("accuracy", "f1") if get_task(task).metric == "accuracy_f1" else ("accuracy",)


class Predictions:
    """Each setting's predictions on a split (``finetune.analysis.compare.Group``), loaded once; None,
    with a note why, where a run has no predictions file or they cannot be compared."""

    def __init__(self) -> None:
        self.loaded: dict[tuple[tuple[str, ...], str], Any] = {}
        self.without: set[str] = set()  # runs without a predictions file (older results)
        self.notes: list[str] = []  # other reasons

    def __call__(self, group: list[dict[str, Any]], split: str) -> Any:
        from finetune.analysis.compare import load_group
        from finetune.run.files import PREDICTIONS_FILE

        key = (tuple(run["_dir"] for run in group), split)
        if key not in self.loaded:
            self.loaded[key] = None
            missing = {d for d in key[0] if not (Path(d) / PREDICTIONS_FILE.format(split=split)).is_file()}
            self.without |= missing
            try:
                self.loaded[key] = None if missing else load_group(group, split)
            except (ConfigError, DataError) as e:
                self.notes.append(str(e))
        return self.loaded[key]

    def note(self) -> str:
        """Why some settings were compared between seeds only, or not at all; empty if none."""
        lines = []
        if self.without:
            first = sorted(self.without)[0]
            lines.append(
                f"{len(self.without)} runs (such as {first}) have no predictions files: they finished before "
                "runs kept them, so their settings are compared between seeds only. `finetune predict "
                "--checkpoint RUN --split validation --output RUN/validation_predictions.tsv` writes one "
                "from a saved model (and `--split test` the other)."
            )
        lines += [f"Not compared over examples: {note}." for note in dict.fromkeys(self.notes)]
        return "\n\n".join(lines)


def _interval(i: Any) -> str:
    from finetune.analysis.compare import points

    return f"{points(i.difference)} [{points(i.low)}, {points(i.high)}]" if i else "-"


def comparison_rows(runs: list[dict[str, Any]], predictions: Predictions) -> list[str]:
    """A Markdown table: for each pair of ``comparable_pairs``, split and metric, the means, A
    minus B with the 95% interval of the settings (seeds and examples, paired) and its verdict,
    the smallest difference the groups detect, and the interval of these runs only. Without
    predictions files, the interval between seeds alone (Welch's t over the runs' metrics)."""
    from finetune.analysis.compare import between_seeds, compare

    varying = _naming(group_runs(runs))
    header = ["A vs B", "split", "metric", "A", "B", "A minus B [95%, the settings]", "verdict",
              "detectable (80% power)", "these runs only [95%]"]  # fmt: skip
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for a, runs_a, b, runs_b in comparable_pairs(runs):
        for split, metric in itertools.product(("validation", "test"), _metrics_of(a["task"])):
            values = [[r[split][metric] for r in g if metric in (r.get(split) or {})] for g in (runs_a, runs_b)]
            if not all(values):
                continue
            pa, pb = predictions(runs_a, split), predictions(runs_b, split)
            if pa is not None and pb is not None:
                result = compare(pa, pb, metric)
                cells = [_interval(result.settings), _verdict(result.real), _points(result.detectable),
                         _interval(result.these_runs)]  # fmt: skip
            else:
                seeds = between_seeds(*values)
                cells = [_interval(seeds), _verdict(seeds and seeds.excludes_zero) + " (between seeds only)", "-", "-"]
            means = [f"{mean_std([100 * x for x in v])[0]:.1f} (n={len(v)})" for v in values]
            rows.append(f"| {_label(a, varying)} vs {_label(b, varying)} | {split} | {metric} | {means[0]} | "
                        f"{means[1]} | {' | '.join(cells)} |")  # fmt: skip
    return rows


def _verdict(real: bool | None) -> str:
    return {True: "**real**", False: "noise", None: "unknown (one run a side)"}[real]


def _points(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}"


def ensemble_rows(runs: list[dict[str, Any]], predictions: Predictions) -> list[str]:
    """A Markdown table: for each setting with several runs of a binary task, the mean of its
    runs and its seed ensemble (``finetune.analysis.compare.ensemble``), the gain paired over the examples."""
    from finetune.analysis.compare import compare, ensemble

    groups = group_runs(runs)
    varying = _naming(groups)
    rows = [
        "| setting | runs | split | accuracy: mean of runs → ensemble (gain [95%], verdict) | f1: the same |",
        "|" + "---|" * 5,
    ]
    for (key, group), split in itertools.product(groups.items(), ("validation", "test")):
        members = predictions(group, split) if len(group) > 1 else None
        if members is None or members.probability is None:
            continue
        setting, cells = dict(zip(GROUP_KEYS, key)), []
        for metric in ("accuracy", "f1"):
            result = compare(ensemble(members), members, metric) if metric in _metrics_of(setting["task"]) else None
            gain = result and result.these_runs  # the ensemble is made of these runs: they are what it is about
            cells.append(f"{100 * result.b_mean:.1f} → {100 * result.a_mean:.1f} ({_interval(gain)}, "
                         f"{'real' if gain.excludes_zero else 'noise'})" if result else "-")  # fmt: skip
        rows.append(f"| {_label(setting, varying)} | {len(group)} | {split} | {' | '.join(cells)} |")
    return rows


def what_is_real(runs: list[dict[str, Any]], predictions: Predictions | None = None) -> str:
    """The report's section on which differences are real (``comparison_rows``), with the seed
    ensembles apart (``ensemble_rows``) and a note on runs that could not be compared."""
    predictions = predictions or Predictions()
    rows, ensembles = comparison_rows(runs, predictions), ensemble_rows(runs, predictions)
    text = "## What is real\n\n" + (
        "A minus B in points of %. The verdict is about the settings: real when their 95% interval excludes 0, "
        "else noise. That interval sees both what other seeds and what other examples like these would give, "
        "paired over the examples; the interval of these runs only holds the runs as they are. Detectable: the "
        "smallest true difference these groups find real 80% of the time. See "
        "docs/finetune/reading-the-numbers.md.\n\n" + "\n".join(rows)
        if len(rows) > 2
        else "No two settings here differ in the loop, or in the strategy and its recipe, alone."
    )
    if len(ensembles) > 2:
        text += (
            "\n\n**Seed ensembles**, an extra apart from the single-model rows: what keeping all the runs of a "
            "setting buys. Each example's positive-class probability is averaged over the runs and thresholded "
            "at 0.5; the gain is over the mean of the single runs, paired over the examples, for these runs "
            "(an ensemble is made of them).\n\n" + "\n".join(ensembles)
        )
    return text + (f"\n\n{predictions.note()}" if predictions.note() else "")


def setting_colours(runs: list[dict[str, Any]]) -> dict[tuple, str]:
    """One colour per setting (a key of ``group_runs``), the same in every plot of a report:
    matplotlib's ten-colour cycle in the order of the table's rows."""
    return {key: f"C{i % 10}" for i, key in enumerate(group_runs(runs))}


def plot_loss(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = setting_colours(runs)
    fig, ax = plt.subplots(figsize=(8, 5))
    for run in runs:
        steps = [h for h in run["history"] if "loss" in h]
        c = run["config"]
        ax.plot([h["step"] for h in steps], [h["loss"] for h in steps], lw=1, color=colours[setting_key(run)],
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
    colours = setting_colours(runs)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for key, group in group_runs(runs).items():
            xs = [r["train_runtime_s"] / 60 for r in group]
            ys = [(r.get("validation") or {}).get(metric, float("nan")) * 100 for r in group]
            setting = dict(zip(GROUP_KEYS, key))
            label = f"{setting['loop']}/{setting['strategy']} ({setting['pooling']})"
            ax.scatter(xs, ys, label=label, s=30, color=colours[key])
        ax.set(xlabel="training time (min)", ylabel=f"validation {metric} (%)", title=f"Validation {metric} vs time")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _model_label(run: dict[str, Any]) -> str:
    """The model a run fine-tuned and its size: ``sentence-transformers/all-MiniLM-L6-v2, 22.6M``."""
    from finetune.model.modeling import public_name

    source = (run.get("model") or {}).get("name_or_path") or run["config"].get("model")
    name = public_name(source) if source else "the default model"
    return f"{name}, {run['total_params'] / 1e6:.1f}M" if run.get("total_params") else name


def plot_published(runs: list[dict[str, Any]], path: Path, predictions: Predictions | None = None) -> bool:
    """MRPC validation accuracy and F1 of each setting (mean over its seeds with the 95% interval
    of the mean; its seed ensemble apart) beside the published bert-base numbers, every row named
    with its model and size. False, and no file, without MRPC runs."""
    from finetune.analysis.compare import METRICS, ensemble

    mrpc = {key: group for key, group in group_runs(runs).items() if dict(zip(GROUP_KEYS, key))["task"] == "mrpc"}
    if not mrpc:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    varying, colours = _naming(mrpc), setting_colours(runs)
    rows: list[tuple[str, str, str, dict[str, list[float]]]] = []  # (label, kind, colour, metric -> values in %)
    ensembles = []  # listed after the single-model rows, apart
    for key, group in mrpc.items():
        label = f"{_label(dict(zip(GROUP_KEYS, key)), varying)} · {_model_label(group[0])}"
        values = {m: [100 * r["validation"][m] for r in group if m in (r.get("validation") or {})] for m in METRICS}
        rows.append((f"{label} · {len(group)} run{'s' * (len(group) > 1)}", "project", colours[key], values))
        members = (predictions or Predictions())(group, "validation") if len(group) > 1 else None
        if members is not None and members.probability is not None:
            one = ensemble(members)
            ensembles.append((f"{label} · ensemble of {len(group)} runs (extra)", "ensemble", colours[key],
                              {m: [100 * float(one.values(m)[0])] for m in METRICS}))  # fmt: skip
    rows += ensembles
    for who, model, accuracy, f1 in PUBLISHED:  # not a setting of these runs: black
        rows.append((f"{who} · {model}, {BERT_BASE_PARAMS / 1e6:.0f}M · 1 run (published)", "published", "black",
                     {"accuracy": [accuracy], "f1": [f1]}))  # fmt: skip
    markers = {"project": dict(marker="o"), "ensemble": dict(marker="*", ms=11), "published": dict(marker="D")}
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 1.8), sharey=True)
    for ax, metric in zip(axes, METRICS):
        for y, (_, kind, colour, values) in enumerate(rows):
            v = values[metric]
            if not v:
                continue
            low, high = confidence_interval(v) if len(v) > 1 else (v[0], v[0])
            m = sum(v) / len(v)
            ax.errorbar(m, y, xerr=[[m - low], [high - m]], ls="none", capsize=3, color=colour, **markers[kind])
        name = {"accuracy": "accuracy", "f1": "F1"}[metric]
        ax.set(xlabel=f"MRPC validation {name} (%)", title=f"Validation {name}")
        ax.grid(axis="x", alpha=0.3)
        for y in range(1, len(rows)):
            if rows[y][1] != rows[y - 1][1]:  # a line between single runs, ensembles and published rows
                ax.axhline(y - 0.5, color="grey", lw=0.8)
    axes[0].set_yticks(range(len(rows)), [label for label, *_ in rows], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(
        "This project's settings (mean over seeds, 95% interval) beside published bert-base runs: different models",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(paths: list[Path], out: Path) -> str:
    """Write report.md, loss.png, metric_vs_time.png and, for MRPC runs, published.png into
    ``out``; return the Markdown: the table and what is real."""
    check_writable_folder(out, "--out")
    runs = find_runs(paths)
    out.mkdir(parents=True, exist_ok=True)
    predictions = Predictions()
    text = markdown_table(runs) + "\n\n" + what_is_real(runs, predictions)
    left_out = unfinished_note(paths)
    text += f"\n\n{left_out}" if left_out else ""
    plot_loss(runs, out / "loss.png")
    plot_metric_vs_time(runs, out / "metric_vs_time.png")
    figures = ["![training loss](loss.png)", "![validation metric vs training time](metric_vs_time.png)"]
    if plot_published(runs, out / "published.png", predictions):
        figures.append("![these runs beside published bert-base numbers (other models)](published.png)")
    write_atomic(out / "report.md", text + "\n\n" + "\n\n".join(figures) + "\n")
    return text
