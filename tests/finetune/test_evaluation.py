"""A run's recorded numbers reproduce: ``finetune evaluate`` on the saved directory prints exactly
the metrics results.json holds, for every loop and strategy in the precision the run used (bf16 on
this CPU when it has it), and ``finetune predict`` gives the same per-example predictions."""

import csv
import json

import pytest

from finetune.cli import main
from finetune.data.glue import load_glue

EVAL_SAMPLES = 20  # two full batches of 10: `predict --split` on the whole split batches them alike


@pytest.fixture(
    scope="module",
    params=["native-full", "native-head", "trainer-full", "trainer-head", "accelerate-full", "accelerate-head"],
)
def run(request, tiny_models, glue_dir, tmp_path_factory):
    loop, strategy = request.param.split("-")
    out = tmp_path_factory.mktemp(request.param) / "run"
    args = ["train", "--model", tiny_models["bert"], "--data-dir", glue_dir, "--output-dir", str(out), "--loop", loop,
            "--strategy", strategy, "--epochs", "1", "--max-train-samples", "32", "--max-eval-samples",
            str(EVAL_SAMPLES), "--batch-size", "8", "--eval-batch-size", "10", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return out


def recorded(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def evaluate(run_dir, capsys, *args):
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run_dir), *args]) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


def read_table(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.mark.parametrize("split", ["validation", "test"])
def test_evaluate_prints_exactly_what_the_run_recorded(run, capsys, split):
    results = recorded(run)
    metrics = evaluate(run, capsys, "--split", split)
    assert {k: metrics[k] for k in results[split]} == results[split]  # every digit, the loss included
    assert metrics["examples"] == EVAL_SAMPLES  # the run's own --max-eval-samples by default
    assert results["evaluation"]["batch_size"] == 10  # the run's --eval-batch-size, kept for evaluate


def test_the_last_validation_of_training_is_the_final_one(run):
    results = recorded(run)
    last = [entry["validation"] for entry in results["history"] if "validation" in entry][-1]
    assert last == results["validation"]


def test_the_predictions_files_hold_the_recorded_accuracy(run, capsys, tmp_path):
    results = recorded(run)
    for split in ("validation", "test"):
        rows = read_table(run / f"{split}_predictions.tsv")
        assert list(rows[0]) == ["index", "label", "prediction", "probability"]
        assert [int(r["index"]) for r in rows] == list(range(EVAL_SAMPLES))
        accuracy = sum(r["label"] == r["prediction"] for r in rows) / len(rows)
        assert accuracy == results[split]["accuracy"]
    assert main(["predict", "--checkpoint", str(run), "--split", "validation", "--output", str(tmp_path / "v.tsv"),
                 "--no-progress"]) == 0  # fmt: skip
    whole = read_table(tmp_path / "v.tsv")  # the whole split, in the same batches: the run's rows come first
    assert len(whole) == 408 and whole[:EVAL_SAMPLES] == read_table(run / "validation_predictions.tsv")


def test_predict_on_a_file_of_the_validation_pairs_agrees(run, glue_dir, tmp_path, capsys):
    validation = load_glue("mrpc", glue_dir)["validation"].select(range(EVAL_SAMPLES))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"sentence1": a, "sentence2": b}) + "\n"
                             for a, b in zip(validation["sentence1"], validation["sentence2"])))  # fmt: skip
    assert main(["predict", "--checkpoint", str(run), "--input", str(pairs), "--output", str(tmp_path / "p.tsv"),
                 "--no-progress"]) == 0  # fmt: skip
    predicted = [int(r["label"]) for r in read_table(tmp_path / "p.tsv")]
    assert predicted == [int(r["prediction"]) for r in read_table(run / "validation_predictions.tsv")]
