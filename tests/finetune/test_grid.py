"""``finetune grid``: one loop for the reference table and the recipe search; each finished run's
files kept at once, a finished run skipped next time, the search's models not kept, and the
committed search results made with the settings its table names."""

import json
import os
from pathlib import Path

import pytest

from finetune.grid import SEARCH, run_grid

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small(tiny_models):
    return {"model": tiny_models["bert"], "max_train_samples": 16, "max_eval_samples": 16, "epochs": 1}


def test_each_finished_run_is_kept_and_skipped_next_time(small, glue_dir, tmp_path, capsys):
    results, runs = tmp_path / "results", tmp_path / "runs"
    written = run_grid([1], results, runs, glue_dir, only=["native-head"], overrides=small)
    assert written == [results / "mrpc-native-head-seed1" / "results.json"]
    kept = ["results.json", "test_predictions.tsv", "validation_predictions.tsv"]
    assert sorted(os.listdir(written[0].parent)) == kept
    config = json.loads(written[0].read_text())["config"]
    assert (config["loop"], config["strategy"], config["seed"]) == ("native", "head", 1)
    assert (runs / "mrpc-native-head-seed1" / "model.safetensors").exists()  # the reference grid keeps its models
    assert "finished mrpc-native-head-seed1 in" in capsys.readouterr().out
    assert run_grid([1], results, runs, glue_dir, only=["native-head"], overrides=small) == []


def test_the_search_runs_through_the_same_loop_and_keeps_no_model(small, glue_dir, tmp_path):
    results, runs = tmp_path / "search", tmp_path / "runs"
    written = run_grid([2], results, runs, glue_dir, only=["lr2e-4"], search=True, overrides=small)
    assert written == [results / "lr2e-4-seed2" / "results.json"]
    config = json.loads(written[0].read_text())["config"]
    assert (config["strategy"], config["lr"], config["seed"]) == ("full", 2e-4, 2)
    assert not (runs / "lr2e-4-seed2").exists()


def test_the_committed_search_runs_were_made_with_their_tables_settings():
    """The defaults changed after the search, so an entry that left its lr to them would not reproduce."""
    found = sorted((ROOT / "results" / "search").glob("*/results.json"))
    assert len(found) >= 10
    for path in found:
        config = json.loads(path.read_text())["config"]
        name, _, seed = path.parent.name.rpartition("-seed")
        expected = {"strategy": "full", "loop": "native", "seed": int(seed), **SEARCH[name]}
        assert {k: config[k] for k in expected} == expected, path.parent.name


def test_a_task_whose_test_split_has_no_labels_keeps_the_validation_predictions(small, glue_dir, tmp_path):
    written = run_grid([1], tmp_path / "results", tmp_path / "runs", glue_dir, "sst2", ["native-head"], overrides=small)
    assert sorted(os.listdir(written[0].parent)) == ["results.json", "validation_predictions.tsv"]
