"""How far to trust ``finetune compare``: its false alarms and its power, measured on simulated runs.

A verdict that says "real" is only as good as how often it says so wrongly. This module draws
groups of runs whose truth is known and counts the verdicts:

- **the generator** (``Recipe.runs``): the validation split is ``examples`` items, each with a
  difficulty (a logit drawn from Normal(``mu``, ``tau``), once per simulated split); a run (a seed)
  shifts every logit by its own draw from Normal(0, ``seed_sd``), the per-seed effect; then each
  example of each run is right with probability sigmoid(logit + seed shift + ``shift``), the per-run,
  per-example effect. Labels are positive with MRPC's share; a wrong answer is the other label.
- **its parameters** match the reference grid's native ``full`` runs on MRPC's 408 validation
  pairs (results/mrpc-native-full-seed1..5): accuracy 80.9%, runs 1.35 points apart from seed to
  seed (standard deviation), two seeds answering 9.4% of the examples differently.
- **a recipe truly d points better** has every logit shifted by the amount that raises the
  expected accuracy by d points (``Recipe.better``): the same examples stay hard.

``python -m finetune.analysis.calibration`` prints the table in docs/finetune/reading-the-numbers.md;
tests/finetune/test_calibration.py checks the promises (at most 5% false alarms, 80% power at
3 points with 5 seeds a side) on every run of the suite.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize, special

from finetune.analysis.compare import Group, compare
from finetune.data.tasks import get_task

POSITIVE_SHARE = 0.684  # MRPC's validation split: 279 of 408 pairs are paraphrases


@dataclass(frozen=True)
class Recipe:
    """A recipe's runs on a split, as the generator draws them (see the module's docstring)."""

    mu: float = 5.059
    tau: float = 5.492
    seed_sd: float = 0.1763
    shift: float = 0.0
    examples: int = 408

    def expected_accuracy(self, grid: int = 20_001) -> float:
        """Accuracy over the population of examples and seeds (a quadrature over both normals)."""
        z = np.linspace(-8, 8, grid)
        weight = np.exp(-(z**2) / 2)
        total_sd = np.hypot(self.tau, self.seed_sd)  # a difficulty plus a seed shift: one normal
        return float((special.expit(self.mu + self.shift + total_sd * z) * weight).sum() / weight.sum())

    def better(self, points: float) -> Recipe:
        """The recipe whose expected accuracy is ``points`` higher (a logit shift of every example)."""
        target = self.expected_accuracy() + points / 100
        shift = optimize.brentq(lambda s: replace(self, shift=s).expected_accuracy() - target, -20, 20)
        return replace(self, shift=shift)

    def runs(self, difficulty: np.ndarray, labels: np.ndarray, seeds: int, rng: np.random.Generator) -> Group:
        """``seeds`` runs of this recipe on the examples of ``difficulty`` and ``labels``."""
        seed_shift = rng.normal(0, self.seed_sd, (seeds, 1))
        right = rng.random((seeds, len(labels))) < special.expit(difficulty + seed_shift + self.shift)
        predicted = np.where(right, labels, 1 - labels).astype(np.int8)
        names = tuple(f"seed{s}" for s in range(seeds))
        return Group(get_task("mrpc"), "validation", names, np.arange(len(labels)), labels, predicted, None)


def split(recipe: Recipe, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A validation split drawn from the population: each example's difficulty and label."""
    difficulty = rng.normal(recipe.mu, recipe.tau, recipe.examples)
    return difficulty, (rng.random(recipe.examples) < POSITIVE_SHARE).astype(np.int8)


def rate_real(
    points: float, seeds: int, comparisons: int, metric: str = "accuracy", seed: int = 0, recipe: Recipe | None = None
) -> tuple[float, float]:
    """Of ``comparisons`` comparisons of ``seeds`` runs a side, a recipe ``points`` better (A)
    against the base recipe (B): the share called real by the verdict (the settings' interval) and
    by the interval of these runs only. With ``points`` 0 both are false alarms; else, power."""
    base = recipe or Recipe()
    other = base.better(points) if points else base
    rng = np.random.default_rng(seed)
    real = these_runs = 0
    for _ in range(comparisons):
        difficulty, labels = split(base, rng)
        result = compare(other.runs(difficulty, labels, seeds, rng), base.runs(difficulty, labels, seeds, rng), metric)
        real += bool(result.real)
        these_runs += result.these_runs.excludes_zero
    return real / comparisons, these_runs / comparisons


def table(seed_counts: tuple[int, ...], differences: tuple[float, ...], comparisons: int) -> str:
    """A Markdown table of ``rate_real`` for each number of seeds a side and each true difference."""
    header = "| seeds a side | " + " | ".join(f"{d:g} points" for d in differences) + " |"
    rows = [header, "|---" * (len(differences) + 1) + "|"]
    for seeds in seed_counts:
        cells = []
        for d in differences:
            real, these = rate_real(d, seeds, comparisons, seed=seeds)
            cells.append(f"{100 * real:.1f}% ({100 * these:.1f}%)")
        rows.append(f"| {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m finetune.analysis.calibration",
        description="How often finetune compare calls a difference real, on simulated runs matched to the "
        "reference grid: 0 points (false alarms) and recipes truly better (power). In brackets: the interval of "
        "these runs only.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5], help="runs a side")
    parser.add_argument("--points", type=float, nargs="+", default=[0, 1, 2, 3, 5], help="true differences")
    parser.add_argument("--comparisons", type=int, default=2000, help="simulated comparisons per cell")
    args = parser.parse_args(argv)
    print(table(tuple(args.seeds), tuple(args.points), args.comparisons))


if __name__ == "__main__":
    main()
