"""``finetune compare``: is the difference between two groups of runs real, or within noise?

Two groups of runs of one task (five seeds of the native loop against five of the Trainer, say)
are compared on the same examples of a split, from each run's ``<split>_predictions.tsv``:

- **the difference** of the groups' mean metric, A minus B (fractions, as in results.json);
- **its 95% interval for the settings** (the verdict: "real" when it excludes 0): Student's t
  over variance components, each group's seed spread over its number of runs (from its runs, or
  the other side's, or ``--seed-sd``) plus the examples' part, the variance of the paired
  per-example differences less the seed noise already counted, over the number of examples; the
  degrees of freedom from Welch and Satterthwaite. Pairing matters: both groups are right and
  wrong on mostly the same examples, so the examples' part is far smaller than either mean's;
  with it come the smallest difference found real 80% of the time and the seeds a side needed;
- **the interval of these runs only** (the examples vary, the runs are kept as they are), which
  answers for these runs, not for the settings;
- for one run against one run, **McNemar's exact test**: a binomial test on the examples only
  one of the two gets right.

``finetune/analysis/calibration.py`` measures the verdict's false alarms and power on simulated runs.

``docs/finetune/reading-the-numbers.md`` explains how to read them.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from finetune.data.tasks import GlueTask, get_task
from finetune.errors import ConfigError, DataError
from finetune.run.files import PREDICTIONS_FILE

METRICS = ("accuracy", "f1")
LEVEL = 0.95
POWER = 0.80
MAX_SEEDS = 100


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
    ``finetune.analysis.report.find_runs`` returns them) on ``split``, checked to be of one task and of the
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


def per_example(predicted: np.ndarray, labels: np.ndarray, metric: str) -> np.ndarray:
    """Each example's share of each run's ``metric``, (runs, examples), whose mean over the examples
    is the run's metric. Accuracy: right (1) or wrong (0). F1 is a ratio of sums, U / V with
    u = 2 [true positive] and v = u + [wrong]; its linearisation (the delta method) gives example i
    F1 + (u_i - F1 v_i) / mean(v), which averages to F1 exactly and varies as F1 does to first order."""
    if metric == "accuracy":
        return (predicted == labels).astype(float)
    u = 2.0 * ((predicted == 1) & (labels == 1))
    v = u + (predicted != labels)
    f1 = metric_of(predicted, labels, "f1")[..., None]
    mean_v = v.mean(axis=-1, keepdims=True)
    return f1 + np.divide(u - f1 * v, mean_v, out=np.zeros_like(u), where=mean_v > 0)


@dataclass(frozen=True)
class SeedSpread:
    """How far one run's metric moves from seed to seed in a group (a standard deviation, as a
    fraction), with its degrees of freedom and where it comes from; ``per_example`` is the part of
    each example's variance that is seed noise (0 where unknown, which only widens the interval)."""

    sd: float
    df: float
    source: str
    per_example: float = 0.0
    borrowed: bool = False  # the other group's, assumed equal: one estimate for both sides


def seed_spread(group: Group, metric: str, given: float | None = None) -> SeedSpread | None:
    """``group``'s seed spread: from its own runs when it has two or more, else ``given`` (a
    standard deviation in points, as ``--seed-sd`` takes it), else None."""
    if len(group.runs) > 1:
        values, z = group.values(metric), per_example(group.predicted, group.labels, metric)
        noise = float(z.var(axis=0, ddof=1).mean())  # each example's seed-to-seed variance, on average
        # A run's metric moves at least by its examples' seed noise averaged (noise / n): two runs
        # that happen to score alike still answered different examples differently.
        sd = max(float(values.std(ddof=1)), math.sqrt(noise / z.shape[1]))
        return SeedSpread(sd, len(values) - 1, f"its {len(values)} runs", noise)
    return None if given is None else SeedSpread(given / 100, math.inf, f"--seed-sd {given:g}")


@dataclass(frozen=True)
class Interval:
    """A difference with the ends of its 95% interval (fractions), its standard error, degrees of
    freedom and two-sided p-value (Student's t)."""

    difference: float
    low: float
    high: float
    std_error: float
    df: float
    p_value: float

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    @classmethod
    def from_components(cls, difference: float, components: list[tuple[float, float]]) -> Interval:
        """The t interval of ``difference`` from independent variance components ``(variance,
        degrees of freedom)``, its degrees of freedom from Welch and Satterthwaite's formula."""
        variance = sum(v for v, _ in components)
        if variance == 0:  # nothing varies: the difference is what it is
            return cls(difference, difference, difference, 0.0, math.inf, float(difference == 0))
        df = variance**2 / sum(v**2 / d for v, d in components if v > 0)
        se = math.sqrt(variance)
        half = stats.t.ppf((1 + LEVEL) / 2, df) * se
        p_value = 2 * stats.t.sf(abs(difference) / se, df)
        return cls(difference, float(difference - half), float(difference + half), se, float(df), float(p_value))


def paired_differences(a: Group, b: Group, metric: str) -> np.ndarray:
    """Each example's difference of the two groups' mean shares of ``metric`` (``per_example``):
    the same example on both sides, so what both get right or wrong cancels."""
    return per_example(a.predicted, a.labels, metric).mean(0) - per_example(b.predicted, b.labels, metric).mean(0)


def these_runs(difference: float, d: np.ndarray) -> Interval:
    """A minus B (``difference``) for these runs as they are: only the examples vary. The paired
    differences ``d`` have a variance; over n examples the difference's standard error is its square
    root over sqrt(n) (what a paired bootstrap over the examples estimates, without its resampling)."""
    return Interval.from_components(difference, [(float(d.var(ddof=1)) / len(d), len(d) - 1)])


def examples_part(d: np.ndarray, spreads: tuple[SeedSpread, SeedSpread], runs: tuple[int, int]) -> float:
    """The examples' share of the difference's variance: the variance of the paired differences
    ``d``, less the seed noise inside it (each group's, over its number of ``runs``), over the
    number of examples. It does not shrink with more seeds."""
    seed_noise = sum(s.per_example / n for s, n in zip(spreads, runs))
    return max(float(d.var(ddof=1)) - seed_noise, 0.0) / len(d)


def _components(spreads: tuple[SeedSpread, SeedSpread], runs: tuple[int, int], examples: float, n: int) -> list:
    """The variance components of A minus B's mean, ``(variance, degrees of freedom)``, for
    ``runs`` seeds a side: each group's seed spread over its runs (one component where one
    estimate serves both sides), and the examples' part (``examples_part``) from ``n`` examples."""
    (sa, sb), (na, nb) = spreads, runs
    if sa.borrowed or sb.borrowed:
        seeds = [(sa.sd**2 * (1 / na + 1 / nb), sa.df)]
    else:
        seeds = [(sa.sd**2 / na, sa.df), (sb.sd**2 / nb, sb.df)]
    return [*seeds, (examples, n - 1)]


def _detectable(components: list[tuple[float, float]]) -> float:
    """The smallest true difference found real 80% of the time (two-sided 5% test): about
    (t at 97.5% + t at 80%) standard errors."""
    interval = Interval.from_components(0.0, components)
    return float((stats.t.ppf((1 + LEVEL) / 2, interval.df) + stats.t.ppf(POWER, interval.df)) * interval.std_error)


def seeds_needed(spreads: tuple[SeedSpread, SeedSpread], examples: float, n: int, difference: float) -> int | None:
    """About how many seeds a side would find ``difference`` real with 80% power, the spreads as
    measured; None when no number up to ``MAX_SEEDS`` would (the examples limit it). The smallest
    difference detectable falls as seeds are added, so a bisection finds the number."""

    def detectable(seeds: int) -> float:
        grown = tuple(replace(s, df=seeds - 1 if math.isfinite(s.df) else s.df) for s in spreads)
        return _detectable(_components(grown, (seeds, seeds), examples, n))

    low, high = 2, MAX_SEEDS
    if detectable(high) > abs(difference):
        return None
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if detectable(middle) <= abs(difference) else (middle + 1, high)
    return low


def mcnemar(a: Group, b: Group) -> dict[str, Any]:
    """McNemar's exact test for one run against one: of the examples exactly one of them gets
    right, would a fair coin give A's share of them? (``scipy.stats.binomtest``.)"""
    right_a, right_b = a.predicted[0] == a.labels, b.predicted[0] == b.labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    p_value = stats.binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": float(p_value)}


def between_seeds(a_values: list[float] | np.ndarray, b_values: list[float] | np.ndarray) -> Interval | None:
    """A minus B's mean over runs from their metrics alone, for runs without predictions files:
    Welch's t (``scipy.stats.ttest_ind``, unequal variances); None with fewer than two runs a side
    or no spread at all. It sees the seeds, not the pairing over the examples."""
    a, b = np.asarray(a_values, dtype=float), np.asarray(b_values, dtype=float)
    if len(a) < 2 or len(b) < 2 or (np.all(a == a[0]) and np.all(b == b[0])):
        return None
    test = stats.ttest_ind(a, b, equal_var=False)
    ci = test.confidence_interval(LEVEL)
    se = float(math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    return Interval(float(a.mean() - b.mean()), float(ci.low), float(ci.high), se, float(test.df), float(test.pvalue))


@dataclass(frozen=True)
class Comparison:
    """``finetune compare``'s answer. ``settings`` is the interval the verdict uses (None when one
    run a side leaves the seed spread unknown); ``these_runs`` holds the runs fixed."""

    metric: str
    a: Group
    b: Group
    settings: Interval | None
    these_runs: Interval
    spreads: tuple[SeedSpread | None, SeedSpread | None]
    examples: float | None  # the examples' part of the difference's variance (``examples_part``)
    mcnemar: dict[str, Any] | None

    @cached_property
    def detectable(self) -> float | None:
        """The smallest difference these groups find real with 80% power (asked for by the report,
        not by the verdict: computed only when read)."""
        if self.settings is None:
            return None
        return _detectable(_components(self.spreads, self.run_counts, self.examples, len(self.a.labels)))

    @cached_property
    def seeds_needed(self) -> int | None:
        """When within noise: about how many seeds a side the difference needs (computed when read)."""
        if self.settings is None or self.settings.excludes_zero or self.these_runs.difference == 0:
            return None
        return seeds_needed(self.spreads, self.examples, len(self.a.labels), self.these_runs.difference)

    @property
    def run_counts(self) -> tuple[int, int]:
        """How many runs each group has."""
        return len(self.a.runs), len(self.b.runs)

    @property
    def real(self) -> bool | None:
        """The verdict on the settings: their interval excludes 0; None when it cannot be given."""
        return None if self.settings is None else self.settings.excludes_zero

    @property
    def a_mean(self) -> float:
        return float(self.a.values(self.metric).mean())

    @property
    def b_mean(self) -> float:
        return float(self.b.values(self.metric).mean())

    def to_json(self) -> dict[str, Any]:
        """One object: ``difference``, ``ci_low``, ``ci_high`` and ``real`` (the settings' interval
        and verdict; null when one run a side leaves them unknown) first, then the rest."""
        s, r = self.settings, self.these_runs
        side = {name: {"runs": list(g.runs), "mean": float(g.values(self.metric).mean()),
                       "per_run": [float(v) for v in g.values(self.metric)],
                       "seed_sd": spread and spread.sd, "seed_sd_source": spread and spread.source}
                for name, g, spread in (("a", self.a, self.spreads[0]), ("b", self.b, self.spreads[1]))}  # fmt: skip
        return {
            "metric": self.metric, "difference": r.difference, "ci_low": s and s.low, "ci_high": s and s.high,
            "real": self.real, "task": self.a.task.name, "split": self.a.split, "examples": len(self.a.labels),
            "confidence_level": LEVEL, "interval": SETTINGS_INTERVAL, "df": s and s.df, "p_value": s and s.p_value,
            "detectable_difference": self.detectable, "seeds_needed": self.seeds_needed, **side,
            "these_runs": {"ci_low": r.low, "ci_high": r.high, "real": r.excludes_zero, "interval": THESE_RUNS},
            "mcnemar": self.mcnemar,
        }  # fmt: skip

    def describe(self) -> str:
        """The comparison in a few lines, in points (percent)."""
        split, n = self.a.split, len(self.a.labels)
        lines = [f"{self.a.task.name} {split} {self.metric}, A minus B, paired over the same {n} examples:"]
        for name, g in (("A", self.a), ("B", self.b)):
            values = ", ".join(f"{100 * v:.1f}" for v in g.values(self.metric))
            runs = f"mean of {len(g.runs)} runs: {values}" if len(g.runs) > 1 else "1 run"
            lines.append(f"  {name}: {100 * g.values(self.metric).mean():.1f}  ({runs})")
        s, r = self.settings, self.these_runs
        lines.append(f"  difference: {points(r.difference)} points")
        if s is None:
            lines.append(
                "  the settings: unknown: one run a side says nothing of how far another seed moves a run; run "
                "more seeds, or give --seed-sd POINTS (the reference grid's: docs/finetune/results-mrpc.md)"
            )
        else:
            lines.append(f"  the settings, 95% interval {_ends(s)}  (other seeds and other examples like these; "
                         f"t with {s.df:.1f} df)")  # fmt: skip
            for name, spread in zip("AB", self.spreads):
                lines.append(f"    seed-to-seed spread of {name}: {100 * spread.sd:.1f} points, from {spread.source}")
        lines.append(f"  these runs only, 95% interval {_ends(r)}  (other examples like these, the runs as they are)")
        if self.mcnemar:
            m = self.mcnemar
            lines.append(
                f"  McNemar's exact test: {m['only_a_right']} examples only A gets right, "
                f"{m['only_b_right']} only B: p = {m['p_value']:.2g}"
            )
        if self.detectable is not None:
            lines.append(f"  detectable: {100 * self.detectable:.1f} points or more is found real 80% of the time "
                         "with these groups")  # fmt: skip
        lines.append(f"  verdict: {self.verdict()}")
        return "\n".join(lines)

    def verdict(self) -> str:
        """The verdict in words: about the settings where it can be given, else about these runs."""
        if self.settings is None:
            about = "differ" if self.these_runs.excludes_zero else "do not differ beyond noise"
            return f"not known for the settings (one run a side); these two runs {about} on these examples"
        if self.real:
            return "real: the settings' interval excludes 0"
        need = (
            f"about {self.seeds_needed} seeds a side would find {points(self.these_runs.difference)} points real"
            if self.seeds_needed
            else f"no number of seeds up to {MAX_SEEDS} finds {points(self.these_runs.difference)} points real "
            "on these examples"
        )
        return f"within noise: the settings' interval holds 0; {need}"


SETTINGS_INTERVAL = (
    "the settings: t interval over seeds and examples, paired over the examples (variance components: each group's "
    "seed spread over its runs, plus the examples' part of the paired per-example differences)"
)
THESE_RUNS = "these runs only: t interval over the examples, paired, the runs as they are"


def _ends(i: Interval) -> str:
    return f"[{points(i.low)}, {points(i.high)}]"


def points(fraction: float) -> str:
    """A difference of fractions in signed points of percent: 0.0031 -> +0.3."""
    return f"{100 * fraction:+.1f}"


def compare(a: Group, b: Group, metric: str = "accuracy", seed_sd: float | None = None) -> Comparison:
    """Group A against group B on ``metric``: see the module's docstring. ``seed_sd`` (points) is
    the seed-to-seed spread of one run for a side of a single run."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    if metric == "f1" and a.task.metric != "accuracy_f1":
        raise ConfigError(f"f1 is not a metric of {a.task.name}: use --metric accuracy")
    if a.task != b.task:
        raise ConfigError(f"runs of different tasks: {a.task.name} (A) and {b.task.name} (B)")
    if seed_sd is not None and not (math.isfinite(seed_sd) and seed_sd >= 0):
        raise ConfigError(f"seed_sd={seed_sd}: give the spread in points, a number 0 or more (1.4, say)")
    a_columns = {"index": a.index, "label": a.labels}
    _check_same_examples(a.runs[0], a_columns, b.runs[0], {"index": b.index, "label": b.labels}, a.split)
    single = len(a.runs) == 1 and len(b.runs) == 1 and metric == "accuracy"
    spreads = seed_spread(a, metric, seed_sd), seed_spread(b, metric, seed_sd)
    if spreads[0] is None and len(b.runs) > 1:
        spreads = replace(spreads[1], source=f"B's {len(b.runs)} runs, assumed equal", borrowed=True), spreads[1]
    if spreads[1] is None and len(a.runs) > 1:
        spreads = spreads[0], replace(spreads[0], source=f"A's {len(a.runs)} runs, assumed equal", borrowed=True)
    d, counts = paired_differences(a, b, metric), (len(a.runs), len(b.runs))
    runs = these_runs(float(a.values(metric).mean() - b.values(metric).mean()), d)
    settings = examples = None
    if spreads[0] is not None and spreads[1] is not None:
        examples = examples_part(d, spreads, counts)
        settings = Interval.from_components(runs.difference, _components(spreads, counts, examples, len(a.labels)))
    return Comparison(metric, a, b, settings, runs, spreads, examples, mcnemar(a, b) if single else None)
