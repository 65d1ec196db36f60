"""``finetune compare``: the paired difference of two groups of runs, its intervals and verdict,
checked on synthetic run directories whose statistics are known, and once on tiny trained runs."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from finetune.analysis.compare import (
    MAX_SEEDS,
    Group,
    compare,
    ensemble,
    examples_part,
    load_group,
    mcnemar,
    metric_of,
    paired_differences,
    per_example,
)
from finetune.analysis.report import find_runs, write_report
from finetune.cli import main
from finetune.data.tasks import get_task
from finetune.run.files import write_json, write_rows

N = 400


def labels_of(n=N):
    """Alternating gold labels: half positive."""
    return np.arange(n) % 2


def write_run(path, predicted, labels=None, task="mrpc", loop="native", strategy="full", seed=1, probability=None,
              index=None, splits=("validation", "test")):  # fmt: skip
    """A finished run directory as ``finetune grid`` keeps it: results.json and the predictions files
    (the same predictions on both splits)."""
    labels = labels_of(len(predicted)) if labels is None else labels
    predicted = np.asarray(predicted)
    probability = np.where(predicted == 1, 0.9, 0.1) if probability is None else probability
    index = range(len(predicted)) if index is None else index
    path.mkdir(parents=True)
    metrics = {
        "accuracy": float((predicted == labels).mean()),
        "f1": float(f1_score(labels, predicted)),
        "examples": len(labels),
    }
    write_json(path / "results.json", {
        "config": {"task": task, "loop": loop, "strategy": strategy, "seed": seed, "pooling": "mean", "epochs": 3},
        "history": [], "trainable_params": 770, "total_params": 22_566_146, "train_runtime_s": 10.0,
        "train_samples_per_second": 1.0, "model": {"name_or_path": "sentence-transformers/all-MiniLM-L6-v2"},
        **{s: metrics for s in splits},
    })  # fmt: skip
    for split in splits:
        write_rows(
            path / f"{split}_predictions.tsv",
            [
                {"index": i, "label": int(y), "prediction": int(p), "probability": f"{q:.6f}"}
                for i, y, p, q in zip(index, labels, predicted, probability)
            ],
        )
    return path


def with_errors(wrong, n=N):
    """Predictions right on every example but those in ``wrong``."""
    predicted = labels_of(n).copy()
    predicted[list(wrong)] ^= 1
    return predicted


def group(*paths, split="validation"):
    return load_group(find_runs(list(paths)), split)


def seeds_of(tmp_path, name, error_sets, **settings):
    return [
        write_run(tmp_path / f"{name}-seed{s}", with_errors(w), seed=s, **settings)
        for s, w in enumerate(error_sets, start=1)
    ]


def test_a_group_against_itself_is_zero_with_an_interval_of_zero(tmp_path, capsys):
    rng = np.random.default_rng(0)
    runs = seeds_of(tmp_path, "a", [rng.choice(N, 80, replace=False) for _ in range(5)])
    for metric in ("accuracy", "f1"):
        a = group(*runs)
        result = compare(a, a, metric)
        runs_only = result.these_runs
        assert (runs_only.difference, runs_only.low, runs_only.high) == (0.0, 0.0, 0.0)
        # another five seeds of the same settings could differ: the settings' interval is not [0, 0]
        assert result.settings.low == pytest.approx(-result.settings.high) and result.settings.high > 0
        assert result.real is False and result.seeds_needed is None
    assert main(["compare", *map(str, runs), "--against", *map(str, runs), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["difference"], answer["real"]) == (0.0, False) and answer["ci_low"] < 0 < answer["ci_high"]
    assert answer["these_runs"]["ci_low"] == answer["these_runs"]["ci_high"] == 0.0


def test_the_interval_of_these_runs_has_the_width_of_the_paired_differences(tmp_path):
    """Two single runs: A wrong on 40 examples, B on 60, 20 of them shared. The per-example
    difference of correctness d has mean 0.05 and the interval of these runs must be about
    1.96 sd(d) / sqrt(n) wide each side: the paired standard error, far below the unpaired one.
    It agrees with a paired bootstrap over the examples (what this verdict used to be)."""
    a = group(write_run(tmp_path / "a", with_errors(range(0, 40))))
    b = group(write_run(tmp_path / "b", with_errors(range(20, 80))))
    result = compare(a, b)
    d = (a.predicted[0] == a.labels).astype(float) - (b.predicted[0] == b.labels)
    half = 1.96 * d.std() / math.sqrt(N)
    runs_only = result.these_runs
    assert runs_only.difference == pytest.approx(0.05, abs=1e-15)
    assert (runs_only.low, runs_only.high) == pytest.approx((0.05 - half, 0.05 + half), abs=0.001)
    boot = stats.bootstrap((d,), np.mean, n_resamples=4000, method="percentile", rng=np.random.default_rng(0))
    assert (runs_only.low, runs_only.high) == pytest.approx(tuple(boot.confidence_interval), abs=0.004)
    assert runs_only.excludes_zero  # 0.05 ± 0.038
    # one run a side: how far another seed moves a run is unknown, so nothing is said of the settings
    assert result.settings is None and result.real is None and result.detectable is None
    # only A right where B alone is wrong (40-79), only B right where A alone is (0-19)
    assert result.mcnemar == {
        "only_a_right": 40,
        "only_b_right": 20,
        "p_value": pytest.approx(stats.binomtest(40, 60).pvalue),
    }


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_examples(tmp_path):
    a = group(write_run(tmp_path / "a", with_errors(range(0, 2))))
    b = group(write_run(tmp_path / "b", with_errors(range(100, 110))))
    # A alone right on 10, B alone on 2: P(X <= 2 or X >= 10), X ~ Binomial(12, 1/2) = 2 (1 + 12 + 66) / 2**12
    assert mcnemar(a, b) == {"only_a_right": 10, "only_b_right": 2, "p_value": pytest.approx(158 / 4096, rel=1e-12)}
    assert mcnemar(a, a)["p_value"] == 1.0  # no discordant example at all


def test_equal_accuracy_with_other_errors_is_within_noise(tmp_path):
    a = group(write_run(tmp_path / "a", with_errors(range(0, 60))))
    b = group(write_run(tmp_path / "b", with_errors(range(60, 120))))
    result = compare(a, b)
    assert result.these_runs.difference == 0 and result.these_runs.low < 0 < result.these_runs.high
    assert "these two runs do not differ beyond noise on these examples" in result.describe()


def test_f1_is_computed_from_the_confusion_counts_of_each_draw():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (3, 50))
    predicted = rng.integers(0, 2, (3, 50))
    predicted[2] = 0  # no positive predicted: F1 0, as scikit-learn's with zero_division=0
    labels[2, :5] = 1
    expected = [f1_score(y, p, zero_division=0.0) for y, p in zip(labels, predicted)]
    assert metric_of(predicted, labels, "f1") == pytest.approx(expected, abs=1e-15)
    assert metric_of(np.zeros((1, 4)), np.zeros(4), "f1") == [0.0]  # nothing positive anywhere


def test_the_settings_interval_adds_the_seed_spread_to_the_examples(tmp_path, capsys):
    """Five runs against three, by hand: the variance of A minus B is each group's seed variance
    over its runs (at least the seed noise of its examples), plus the variance of the per-example
    differences of the groups' mean correctness less the seed noise inside it, over the examples;
    Welch and Satterthwaite's degrees of freedom; a t interval."""
    rng = np.random.default_rng(2)
    a = seeds_of(tmp_path, "a", [rng.choice(N, rng.integers(50, 70), replace=False) for _ in range(5)])
    b = seeds_of(tmp_path, "b", [rng.choice(N, rng.integers(100, 140), replace=False) for _ in range(3)],
                 strategy="head")  # fmt: skip
    ga, gb = group(*a), group(*b)
    result = compare(ga, gb)
    right_a, right_b = (ga.predicted == ga.labels).astype(float), (gb.predicted == gb.labels).astype(float)
    # a run's seed variance: at least its examples' seed noise averaged (here every seed errs on other examples)
    seeds = [max(r.mean(1).var(ddof=1), r.var(0, ddof=1).mean() / N) / len(r) for r in (right_a, right_b)]
    noise = right_a.var(0, ddof=1).mean() / 5 + right_b.var(0, ddof=1).mean() / 3
    examples = max((right_a.mean(0) - right_b.mean(0)).var(ddof=1) - noise, 0) / N
    variance = sum(seeds) + examples
    df = variance**2 / (seeds[0] ** 2 / 4 + seeds[1] ** 2 / 2 + examples**2 / (N - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(variance)
    difference = right_a.mean() - right_b.mean()
    assert result.settings.difference == pytest.approx(difference, abs=1e-15)
    assert (result.settings.low, result.settings.high) == pytest.approx((difference - half, difference + half))
    assert result.real and result.settings.df == pytest.approx(df)
    detectable = (stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * math.sqrt(variance)
    assert result.detectable == pytest.approx(detectable) and result.seeds_needed is None  # real already
    assert main(["compare", *map(str, a), "--against", *map(str, b), "--metric", "f1", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["metric"] == "f1" and answer["real"] is True and answer["examples"] == N
    assert answer["a"]["mean"] == pytest.approx(ga.values("f1").mean()) and len(answer["b"]["per_run"]) == 3
    assert answer["a"]["seed_sd_source"] == "its 5 runs" and answer["detectable_difference"] > 0
    assert answer["ci_low"] < answer["difference"] < answer["ci_high"] and answer["a"]["runs"][0] == str(a[0])


def test_f1_per_example_shares_average_to_f1_and_vary_as_a_bootstrap_says():
    """F1 is no mean over examples; its linearisation is: the shares average to each run's F1
    exactly, and their standard error matches a bootstrap of F1 itself."""
    rng = np.random.default_rng(4)
    labels = (rng.random(400) < 0.68).astype(np.int8)
    predicted = np.where(rng.random((3, 400)) < 0.82, labels, 1 - labels).astype(np.int8)
    shares = per_example(predicted, labels, "f1")
    assert shares.mean(1) == pytest.approx(metric_of(predicted, labels, "f1"), abs=1e-12)
    draws = rng.integers(0, 400, (4000, 400))
    boot = metric_of(predicted[0][draws], labels[draws], "f1")
    assert shares[0].std(ddof=1) / math.sqrt(400) == pytest.approx(boot.std(), rel=0.08)


def test_one_run_a_side_borrows_the_spread_of_the_other_side_or_takes_it_given(tmp_path, capsys):
    rng = np.random.default_rng(5)
    many = seeds_of(tmp_path, "b", [rng.choice(N, rng.integers(50, 80), replace=False) for _ in range(4)])
    one = write_run(tmp_path / "a", with_errors(range(0, 20)))
    result = compare(group(one), group(*many))
    assert result.spreads[0].sd == result.spreads[1].sd and result.spreads[0].source == "B's 4 runs, assumed equal"
    assert result.settings.low < result.these_runs.low  # another seed of A could land elsewhere
    assert main(["compare", str(one), "--against", str(many[0]), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["real"] is None and answer["ci_low"] is None and answer["these_runs"]["real"] is True
    assert main(["compare", str(one), "--against", str(many[0])]) == 0
    out = capsys.readouterr().out
    assert "the settings: unknown: one run a side says nothing of how far another seed moves a run" in out
    assert "verdict: not known for the settings (one run a side); these two runs differ on these examples" in out
    assert main(["compare", str(one), "--against", str(many[0]), "--seed-sd", "1.4", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["a"]["seed_sd"] == pytest.approx(0.014) and answer["a"]["seed_sd_source"] == "--seed-sd 1.4"
    assert isinstance(answer["real"], bool) and answer["ci_low"] < answer["these_runs"]["ci_low"]


def test_within_noise_says_how_many_seeds_the_difference_needs(tmp_path):
    """Two groups of three runs 1.5 points apart, each run wrong on other examples: within
    noise, and the number of seeds is the first whose detectable difference is at most 1.5."""
    rng = np.random.default_rng(6)
    a = seeds_of(tmp_path, "a", [rng.choice(N, n, replace=False) for n in (60, 70, 65)])
    b = seeds_of(tmp_path, "b", [rng.choice(N, n, replace=False) for n in (66, 77, 70)])
    result = compare(group(*a), group(*b))
    assert result.real is False and 3 < result.seeds_needed < MAX_SEEDS
    spreads, n = result.spreads, N
    examples = examples_part(paired_differences(group(*a), group(*b), "accuracy"), spreads, (3, 3))

    def detectable(seeds):
        grown = [replace(s, df=seeds - 1) for s in spreads]
        variance = sum(s.sd**2 for s in grown) / seeds + examples
        df = variance**2 / (sum((s.sd**2 / seeds) ** 2 / (seeds - 1) for s in grown) + examples**2 / (n - 1))
        return (stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * math.sqrt(variance)

    needed = result.seeds_needed
    assert detectable(needed) <= abs(result.these_runs.difference) < detectable(needed - 1)
    assert f"about {needed} seeds a side would find +1.5 points real" in result.describe()


@pytest.mark.parametrize("value", ["-1", "nan", "lots"])
def test_a_seed_spread_that_is_no_spread_is_one_line(tmp_path, capsys, value):
    a = write_run(tmp_path / "a", with_errors(range(20)))
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(a), "--against", str(a), "--seed-sd", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument --seed-sd: {value!r} is no spread: give points of the metric, 0 or more" in err


def test_the_text_answer_names_the_intervals_and_the_verdict(tmp_path, capsys):
    a = seeds_of(tmp_path / "A", "a", [range(0, 40), range(40, 100)])
    seeds_of(tmp_path / "B", "b", [range(0, 120), range(100, 200)])
    assert main(["compare", str(tmp_path / "A"), "--against", str(tmp_path / "B")]) == 0  # folders of runs
    out = capsys.readouterr().out
    assert "mrpc validation accuracy, A minus B, paired over the same 400 examples:" in out
    assert "A: 87.5  (mean of 2 runs: 90.0, 85.0)" in out and "B: 72.5  (mean of 2 runs: 70.0, 75.0)" in out
    assert "difference: +15.0 points" in out and "the settings, 95% interval [" in out
    assert "seed-to-seed spread of A: 3.5 points, from its 2 runs" in out and "these runs only, 95% interval [" in out
    # 15 points, but two seeds a side 5 points apart: too few to tell the settings apart; three would do
    assert "verdict: within noise: the settings' interval holds 0; about 3 seeds a side would find +15.0" in out
    assert "detectable: " in out
    assert main(["compare", str(a[0]), "--against", str(a[0]), "--split", "test"]) == 0
    assert "McNemar's exact test: 0 examples only A gets right, 0 only B: p = 1" in capsys.readouterr().out


def test_a_seed_ensemble_averages_the_probabilities():
    labels = np.array([1, 1, 0, 0])
    probability = np.array([[0.9, 0.4, 0.6, 0.5], [0.6, 0.4, 0.2, 0.5], [0.1, 0.9, 0.3, 0.5]])
    runs = Group(get_task("mrpc"), "validation", ("a", "b", "c"), np.arange(4), labels,
                 (probability > 0.5).astype(np.int8), probability)  # fmt: skip
    one = ensemble(runs)
    assert one.predicted.tolist() == [[1, 1, 0, 0]]  # means 0.533, 0.567, 0.367 and 0.5: a tie goes to 0
    assert one.values("accuracy") == [1.0] and runs.values("accuracy").tolist() == [0.5, 0.75, 0.75]


@pytest.mark.parametrize(
    "case, message",
    [
        ("task", "runs of different tasks: mrpc (A) and rte (B)"),
        ("size", "validation splits of different sizes: 400 examples in"),
        ("index", "list other validation examples (index or label columns differ)"),
        ("missing", "has no validation_predictions.tsv (a run from before runs kept their predictions)"),
        ("mixed", "runs of different tasks in one group (mrpc, rte)"),
        ("damaged", "validation_predictions.tsv is damaged"),
        ("not-its-own", "its validation predictions give another accuracy than its results.json records (0.9000)"),
        ("f1", "f1 is not a metric of rte: use --metric accuracy"),
        ("nothing", "no such run directory"),
    ],
)
def test_what_cannot_be_compared_is_one_line(tmp_path, capsys, case, message):
    a = write_run(tmp_path / "a", with_errors(range(20)))
    b = {
        "task": lambda: write_run(tmp_path / "b", with_errors(range(20)), task="rte"),
        "size": lambda: write_run(tmp_path / "b", with_errors(range(20), n=40)),
        "index": lambda: write_run(tmp_path / "b", with_errors(range(20)), index=range(1, N + 1)),
        "missing": lambda: write_run(tmp_path / "b", with_errors(range(20)), splits=("test",)),
        "mixed": lambda: write_run(tmp_path / "b", with_errors(range(20)), task="rte"),
        "damaged": lambda: write_run(tmp_path / "b", with_errors(range(20))),
        "not-its-own": lambda: write_run(tmp_path / "b", with_errors(range(40))),
        "f1": lambda: write_run(tmp_path / "b", with_errors(range(20)), task="rte"),
        "nothing": lambda: tmp_path / "b",
    }[case]()
    if case == "damaged":
        (b / "validation_predictions.tsv").write_text("index\tlabel\n0\tyes\n")
    if case == "not-its-own":
        (b / "validation_predictions.tsv").write_text((a / "validation_predictions.tsv").read_text())
    groups = {"mixed": [str(a), str(b), "--against", str(a)], "f1": [str(b), "--against", str(b), "--metric", "f1"]}
    assert main(["compare", *groups.get(case, [str(a), "--against", str(b)])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.fixture(scope="module")
def tiny_runs(tiny_models, glue_dir, tmp_path_factory):
    """Two tiny trained runs (two seeds), as finetune train writes them."""
    root = tmp_path_factory.mktemp("compare-runs")
    for seed in (1, 2):
        args = ["train", "--model", tiny_models["bert"], "--data-dir", glue_dir, "--output-dir",
                str(root / f"seed{seed}"), "--strategy", "head", "--epochs", "1", "--max-train-samples", "32",
                "--max-eval-samples", "40", "--seed", str(seed), "--no-progress"]  # fmt: skip
        assert main(args) == 0
    return root


def test_compare_reads_the_files_finetune_train_writes(tiny_runs, capsys):
    capsys.readouterr()
    assert main(["compare", str(tiny_runs / "seed1"), "--against", str(tiny_runs / "seed2"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    recorded = [json.loads((tiny_runs / s / "results.json").read_text())["validation"] for s in ("seed1", "seed2")]
    assert answer["examples"] == 40 and answer["mcnemar"] is not None
    assert answer["difference"] == pytest.approx(recorded[0]["accuracy"] - recorded[1]["accuracy"], abs=1e-12)
    assert answer["these_runs"]["ci_low"] <= answer["difference"] <= answer["these_runs"]["ci_high"]
    assert answer["real"] is None  # one run a side: nothing said of the settings


def test_the_report_says_what_is_real_and_places_the_published_numbers(tmp_path):
    rng = np.random.default_rng(3)
    for loop, strategy, wrong in (("native", "full", 60), ("trainer", "full", 62), ("native", "head", 110)):
        seeds_of(tmp_path / "runs", f"{loop}-{strategy}", [rng.choice(N, wrong, replace=False) for _ in range(3)],
                 loop=loop, strategy=strategy)  # fmt: skip
    text = write_report([tmp_path / "runs"], tmp_path / "report")
    rows = {
        line.split(" | ")[0][2:] + f" {line.split(' | ')[1]} {line.split(' | ')[2]}": line
        for line in text.splitlines()
        if " vs " in line
    }
    assert "| noise |" in rows["native/full vs trainer/full validation accuracy"]  # 85.0 against 84.5
    assert "| **real** |" in rows["native/full vs native/head validation accuracy"]  # 85.0 against 72.5
    assert "| **real** |" in rows["native/full vs native/head test f1"]
    assert not any(key.startswith("trainer/full vs native/head") for key in rows)  # loop and strategy differ
    assert "Seed ensembles" in text and "| native/head | 3 | validation | 72.5 → " in text
    assert "have no predictions files" not in text
    assert (tmp_path / "report" / "published.png").stat().st_size > 10_000
    assert "(published.png)" in (tmp_path / "report" / "report.md").read_text()
