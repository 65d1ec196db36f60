"""``finetune compare``: is the difference between two groups of runs real, or within noise?

Two groups of runs of one task (five seeds of the native loop against five of the Trainer, say)
are compared on the same examples of a split, from each run's ``<split>_predictions.tsv``:

- **the difference** of the groups' mean metric, A minus B (fractions, as in results.json);
- **its 95% interval, paired over the examples**: a bootstrap that draws the split's examples
  with replacement, the same draw for every run of both groups, and recomputes each run's metric
  and each group's mean over its runs on the draw. The runs are kept whole (seeds are not
  resampled): with five seeds there is too little to resample, and the spread between them
  already sits inside each group's mean. Pairing matters: both groups are right and wrong on
  mostly the same examples, so the difference varies far less from draw to draw than either
  mean does. **The verdict uses this interval**: "real" when it excludes 0.
- **a second interval, between seeds** (Welch's t over the runs' metrics): it sees how far
  another set of seeds could move each mean, which the first one does not, but not the pairing.
- for one run against one run, **McNemar's exact test**: a binomial test on the examples only
  one of the two gets right.

``docs/finetune/reading-the-numbers.md`` explains how to read them.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from finetune.errors import ConfigError, DataError
from finetune.evaluation import PREDICTIONS_FILE
from finetune.tasks import GlueTask, get_task

METRICS = ("accuracy", "f1")
RESAMPLES = 10_000
LEVEL = 0.95


@dataclass(frozen=True)
class Group:
    """Per-example predictions of runs of one task on one split, one row per run."""

    task: GlueTask
    split: str
    runs: tuple[str, ...]  # run directories (or a name, for an ensemble)
    index: np.ndarray  # GLUE's idx of each example, the same for every run
    labels: np.ndarray
    predicted: np.ndarray  # (runs, examples)
    probability: np.ndarray | None  # (runs, examples), the positive class's; None unless binary

    def values(self, metric: str) -> np.ndarray:
        """Each run's ``metric`` on the whole split."""
        return metric_of(self.predicted, self.labels, metric)


def metric_of(predicted: np.ndarray, labels: np.ndarray, metric: str) -> np.ndarray:
    """``metric`` of each row of ``predicted`` against ``labels``, along the last axis. F1 (of the
    positive class, 0 when there are no positives predicted or true, as scikit-learn's with
    ``zero_division=0``) is not a mean over examples: it comes from the confusion counts."""
    if metric == "accuracy":
        return (predicted == labels).mean(axis=-1)
    true_pos = ((predicted == 1) & (labels == 1)).sum(axis=-1)
    wrong = (predicted != labels).sum(axis=-1)  # false positives and false negatives
    denominator = 2 * true_pos + wrong
    return np.divide(2 * true_pos, denominator, out=np.zeros(denominator.shape), where=denominator > 0)


def read_predictions(run_dir: Path, split: str) -> dict[str, np.ndarray]:
    """The columns of a run's ``<split>_predictions.tsv`` as arrays (``probability`` may be absent)."""
    path = run_dir / PREDICTIONS_FILE.format(split=split)
    if not path.is_file():
        raise DataError(
            f"{run_dir} has no {path.name} (a run from before runs kept their predictions): "
            f"re-run it, or write it with finetune predict --split {split} --output"
        )
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        columns = {
            "index": [int(r["index"]) for r in rows],
            "label": [int(r["label"]) for r in rows],
            "prediction": [int(r["prediction"]) for r in rows],
        }
        if rows and rows[0].get("probability") is not None:
            columns["probability"] = [float(r["probability"]) for r in rows]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError):
        raise DataError(f"{path} is damaged (not the table finetune train writes): predict the split again") from None
    if not rows:
        raise DataError(f"{path} has no rows")
    return {name: np.asarray(values) for name, values in columns.items()}


def load_group(runs: list[dict[str, Any]], split: str = "validation") -> Group:
    """The predictions of ``runs`` (results.json contents with their ``_dir``, as
    ``finetune.report.find_runs`` returns them) on ``split``, checked to be of one task and of the
    same examples, each run's accuracy the one its results.json records."""
    tasks = sorted({run["config"]["task"] for run in runs})
    if len(tasks) > 1:
        raise ConfigError(f"runs of different tasks in one group ({', '.join(tasks)}): compare runs of one task")
    task = get_task(tasks[0])
    if task.is_regression:
        raise ConfigError(f"{task.name} is a regression task: compare needs per-example right and wrong")
    columns = [read_predictions(Path(run["_dir"]), split) for run in runs]
    first = columns[0]
    for run, column in zip(runs, columns):
        _check_same_examples(runs[0]["_dir"], first, run["_dir"], column, split)
        recorded = (run.get(split) or {}).get("accuracy")
        if recorded is not None and not math.isclose(
            float((column["prediction"] == column["label"]).mean()), recorded, abs_tol=1e-9
        ):
            raise DataError(
                f"{run['_dir']}: its {split} predictions give another accuracy than its results.json "
                f"records ({recorded:.4f}): the files are of different runs"
            )
    binary = task.num_labels == 2 and all("probability" in c for c in columns)
    return Group(
        task=task, split=split, runs=tuple(run["_dir"] for run in runs), index=first["index"],
        labels=first["label"].astype(np.int8), predicted=np.stack([c["prediction"] for c in columns]).astype(np.int8),
        probability=np.stack([c["probability"] for c in columns]) if binary else None,
    )  # fmt: skip


def _check_same_examples(
    name_a: str, a: dict[str, np.ndarray], name_b: str, b: dict[str, np.ndarray], split: str
) -> None:
    """Refuse, in one line, two runs' predictions that are not of the same examples."""
    if len(a["index"]) != len(b["index"]):
        raise DataError(
            f"{split} splits of different sizes: {len(a['index'])} examples in {name_a}, "
            f"{len(b['index'])} in {name_b} (a run on part of the split, --max-eval-samples?)"
        )
    if not np.array_equal(a["index"], b["index"]) or not np.array_equal(a["label"], b["label"]):
        raise DataError(f"{name_a} and {name_b} list other {split} examples (index or label columns differ)")


def ensemble(group: Group) -> Group:
    """One prediction per example from all of ``group``'s runs: their positive-class probabilities
    averaged, then thresholded at 0.5 (ties go to class 0, as argmax does). Binary tasks only."""
    if group.probability is None:
        raise ConfigError(f"an ensemble averages the positive class's probability: {group.task.name} is not binary")
    mean = group.probability.mean(axis=0, keepdims=True)
    return Group(group.task, group.split, (f"ensemble of {len(group.runs)} runs",), group.index, group.labels,
                 (mean > 0.5).astype(np.int8), mean)  # fmt: skip


@dataclass(frozen=True)
class Interval:
    """A difference with the ends of its interval (fractions) and, where a test gives one, a p-value."""

    difference: float
    low: float
    high: float
    p_value: float | None = None

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(a: Group, b: Group, metric: str, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """A minus B's mean ``metric``, with its 95% percentile interval from ``resamples`` draws of
    the examples, the same draw for every run of both groups (``scipy.stats.bootstrap``,
    ``paired=True``). A group against itself gives exactly 0 on every draw: an interval [0, 0]."""
    count_a = len(a.runs)

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        *predicted, labels = samples  # each (draws, examples): one draw of examples per row
        per_run = np.stack([metric_of(p, labels, metric) for p in predicted])  # (runs, draws)
        return per_run[:count_a].mean(axis=0) - per_run[count_a:].mean(axis=0)

    result = stats.bootstrap(
        (*a.predicted, *b.predicted, a.labels), statistic, paired=True, vectorized=True, n_resamples=resamples,
        confidence_level=LEVEL, method="percentile", batch=500, rng=np.random.default_rng(seed),
    )  # fmt: skip
    difference = float(a.values(metric).mean() - b.values(metric).mean())
    low, high = result.confidence_interval
    return Interval(difference, float(low), float(high))


def between_seeds(a_values: list[float] | np.ndarray, b_values: list[float] | np.ndarray) -> Interval | None:
    """A minus B's mean over runs, with the 95% interval and p-value of Welch's t-test (unequal
    variances, ``scipy.stats.ttest_ind``); None with fewer than two runs a side or no spread at all."""
    a, b = np.asarray(a_values, dtype=float), np.asarray(b_values, dtype=float)
    if len(a) < 2 or len(b) < 2 or (np.all(a == a[0]) and np.all(b == b[0])):
        return None
    test = stats.ttest_ind(a, b, equal_var=False)
    ci = test.confidence_interval(LEVEL)
    return Interval(float(a.mean() - b.mean()), float(ci.low), float(ci.high), float(test.pvalue))


def mcnemar(a: Group, b: Group) -> dict[str, Any]:
    """McNemar's exact test for one run against one: of the examples exactly one of them gets
    right, would a fair coin give A's share of them? (``scipy.stats.binomtest``.)"""
    right_a, right_b = a.predicted[0] == a.labels, b.predicted[0] == b.labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    p_value = stats.binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": float(p_value)}


@dataclass(frozen=True)
class Comparison:
    """``finetune compare``'s answer: the paired difference, the interval between seeds and the verdict."""

    metric: str
    a: Group
    b: Group
    paired: Interval
    seeds: Interval | None
    mcnemar: dict[str, Any] | None
    resamples: int

    @property
    def real(self) -> bool:
        return self.paired.excludes_zero

    @property
    def a_mean(self) -> float:
        return float(self.a.values(self.metric).mean())

    @property
    def b_mean(self) -> float:
        return float(self.b.values(self.metric).mean())

    def to_json(self) -> dict[str, Any]:
        """One object: ``difference``, ``ci_low``, ``ci_high`` (fractions, A minus B) and ``real``
        first, then what they were computed from."""
        side = {name: {"runs": list(g.runs), "mean": float(g.values(self.metric).mean()),
                       "per_run": [float(v) for v in g.values(self.metric)]}
                for name, g in (("a", self.a), ("b", self.b))}  # fmt: skip
        seeds = self.seeds and {"difference": self.seeds.difference, "ci_low": self.seeds.low,
                                "ci_high": self.seeds.high, "p_value": self.seeds.p_value}  # fmt: skip
        return {
            "metric": self.metric, "difference": self.paired.difference, "ci_low": self.paired.low,
            "ci_high": self.paired.high, "real": self.real, "task": self.a.task.name, "split": self.a.split,
            "examples": len(self.a.labels), "confidence_level": LEVEL,
            "interval": f"paired bootstrap over the examples, runs kept whole ({self.resamples} resamples, "
            "percentile)", **side, "between_seeds": seeds, "mcnemar": self.mcnemar,
        }  # fmt: skip

    def describe(self) -> str:
        """The comparison in a few lines, in points (percent)."""
        split, n = self.a.split, len(self.a.labels)
        lines = [f"{self.a.task.name} {split} {self.metric}, A minus B, paired over the same {n} examples:"]
        for name, g in (("A", self.a), ("B", self.b)):
            values = ", ".join(f"{100 * v:.1f}" for v in g.values(self.metric))
            runs = f"mean of {len(g.runs)} runs: {values}" if len(g.runs) > 1 else "1 run"
            lines.append(f"  {name}: {100 * g.values(self.metric).mean():.1f}  ({runs})")
        p = self.paired
        lines.append(
            f"  difference: {points(p.difference)} points, 95% interval [{points(p.low)}, {points(p.high)}]"
            f"  (bootstrap over the examples, {self.resamples:,} resamples, runs kept whole)"
        )
        if self.seeds:
            s = self.seeds
            interval = f"[{points(s.low)}, {points(s.high)}], p = {s.p_value:.2g}"
            lines.append(
                f"  between seeds: {points(s.difference)} points, 95% interval {interval}  (Welch's t over the runs)"
            )
        if self.mcnemar:
            m = self.mcnemar
            lines.append(
                f"  McNemar's exact test: {m['only_a_right']} examples only A gets right, "
                f"{m['only_b_right']} only B: p = {m['p_value']:.2g}"
            )
        verdict = "real: the paired interval excludes 0" if self.real else "within noise: the paired interval holds 0"
        if self.mcnemar and self.real and self.mcnemar["p_value"] >= 1 - LEVEL:
            verdict += " (weak: McNemar's test does not reject at 5%, too few examples differ)"
        lines.append(f"  verdict: {verdict}")
        return "\n".join(lines)


def points(fraction: float) -> str:
    """A difference of fractions in signed points of percent: 0.0031 -> +0.3."""
    return f"{100 * fraction:+.1f}"


def compare(a: Group, b: Group, metric: str = "accuracy", resamples: int = RESAMPLES) -> Comparison:
    """Group A against group B on ``metric``: see the module's docstring."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    if metric == "f1" and a.task.metric != "accuracy_f1":
        raise ConfigError(f"f1 is not a metric of {a.task.name}: use --metric accuracy")
    if a.task != b.task:
        raise ConfigError(f"runs of different tasks: {a.task.name} (A) and {b.task.name} (B)")
    a_columns = {"index": a.index, "label": a.labels}
    _check_same_examples(a.runs[0], a_columns, b.runs[0], {"index": b.index, "label": b.labels}, a.split)
    single = len(a.runs) == 1 and len(b.runs) == 1 and metric == "accuracy"
    return Comparison(metric, a, b, paired_bootstrap(a, b, metric, resamples),
                      between_seeds(a.values(metric), b.values(metric)), mcnemar(a, b) if single else None,
                      resamples)  # fmt: skip
