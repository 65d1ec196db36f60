"""``finetune compare``: the paired difference of two groups of runs, its intervals and verdict,
checked on synthetic run directories whose statistics are known, and once on tiny trained runs."""

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from finetune.cli import main
from finetune.compare import Group, compare, ensemble, load_group, mcnemar, metric_of
from finetune.files import write_json, write_rows
from finetune.report import find_runs, write_report
from finetune.tasks import get_task

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
        assert (result.paired.difference, result.paired.low, result.paired.high) == (0.0, 0.0, 0.0)
        assert not result.real
    assert main(["compare", *map(str, runs), "--against", *map(str, runs), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["difference"], answer["ci_low"], answer["ci_high"], answer["real"]) == (0.0, 0.0, 0.0, False)


def test_the_interval_has_the_width_of_the_paired_differences(tmp_path):
    """Two single runs: A wrong on 40 examples, B on 60, 20 of them shared. The per-example
    difference of correctness d has mean 0.05 and the bootstrap interval must be about
    1.96 sd(d) / sqrt(n) wide each side: the paired standard error, far below the unpaired one."""
    a = group(write_run(tmp_path / "a", with_errors(range(0, 40))))
    b = group(write_run(tmp_path / "b", with_errors(range(20, 80))))
    result = compare(a, b)
    d = (a.predicted[0] == a.labels).astype(float) - (b.predicted[0] == b.labels)
    half = 1.96 * d.std() / math.sqrt(N)
    assert result.paired.difference == pytest.approx(0.05, abs=1e-15)
    assert result.paired.low == pytest.approx(0.05 - half, abs=0.006)
    assert result.paired.high == pytest.approx(0.05 + half, abs=0.006)
    assert result.real  # 0.05 ± 0.038
    assert result.seeds is None  # one run a side: no spread between seeds
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
    assert result.paired.difference == 0 and result.paired.low < 0 < result.paired.high
    assert not result.real and "within noise" in result.describe()


def test_f1_is_computed_from_the_confusion_counts_of_each_draw():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (3, 50))
    predicted = rng.integers(0, 2, (3, 50))
    predicted[2] = 0  # no positive predicted: F1 0, as scikit-learn's with zero_division=0
    labels[2, :5] = 1
    expected = [f1_score(y, p, zero_division=0.0) for y, p in zip(labels, predicted)]
    assert metric_of(predicted, labels, "f1") == pytest.approx(expected, abs=1e-15)
    assert metric_of(np.zeros((1, 4)), np.zeros(4), "f1") == [0.0]  # nothing positive anywhere


def test_groups_of_seeds_give_both_intervals(tmp_path, capsys):
    rng = np.random.default_rng(2)
    a = seeds_of(tmp_path, "a", [rng.choice(N, 60, replace=False) for _ in range(5)])
    b = seeds_of(tmp_path, "b", [rng.choice(N, 120, replace=False) for _ in range(3)], strategy="head")
    result = compare(group(*a), group(*b), "f1")
    a_f1, b_f1 = group(*a).values("f1"), group(*b).values("f1")
    assert result.paired.difference == pytest.approx(a_f1.mean() - b_f1.mean(), abs=1e-15)
    assert result.real and result.paired.low < result.paired.difference < result.paired.high
    # between seeds: Welch's t, its degrees of freedom from Welch-Satterthwaite
    va, vb = a_f1.var(ddof=1) / 5, b_f1.var(ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (result.seeds.low, result.seeds.high) == pytest.approx(
        (a_f1.mean() - b_f1.mean() - half, a_f1.mean() - b_f1.mean() + half)
    )
    assert result.mcnemar is None
    assert main(["compare", *map(str, a), "--against", *map(str, b), "--metric", "f1", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["metric"] == "f1" and answer["real"] is True and answer["examples"] == N
    assert answer["a"]["mean"] == pytest.approx(a_f1.mean()) and len(answer["b"]["per_run"]) == 3
    assert answer["between_seeds"]["p_value"] < 0.05 and answer["a"]["runs"][0] == str(a[0])


def test_the_text_answer_names_the_interval_and_the_verdict(tmp_path, capsys):
    a = seeds_of(tmp_path / "A", "a", [range(0, 40), range(40, 100)])
    seeds_of(tmp_path / "B", "b", [range(0, 120), range(100, 200)])
    assert main(["compare", str(tmp_path / "A"), "--against", str(tmp_path / "B")]) == 0  # folders of runs
    out = capsys.readouterr().out
    assert "mrpc validation accuracy, A minus B, paired over the same 400 examples:" in out
    assert "A: 87.5  (mean of 2 runs: 90.0, 85.0)" in out and "B: 72.5  (mean of 2 runs: 70.0, 75.0)" in out
    assert "difference: +15.0 points, 95% interval [" in out and "between seeds: +15.0 points" in out
    assert "verdict: real: the paired interval excludes 0" in out
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
    assert answer["ci_low"] <= answer["difference"] <= answer["ci_high"]


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
