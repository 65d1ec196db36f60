"""Bad input as a careless user gives it, by class: each is refused before any work with exit
code 2 and one line naming the problem and the fix (a specific exception from the library), and
nothing is written. No test here trains or loads a model: the checks come first."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.cli import main
from finetune.config import TrainConfig
from finetune.data.tasks import get_task
from finetune.errors import ConfigError, ModelError
from finetune.model.modeling import load_model


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


def refused(capsys, folder, message, *args):
    """``finetune ARGS`` exits 2 with one line on stderr holding ``message``, and ``folder`` is as it was."""
    before = files_under(folder)
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, (code, err)
    assert message in err[0] and "Traceback" not in err[0], err[0]
    assert files_under(folder) == before


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder holding a regular file FILE and two run folders that name their task
    (all that the commands read before the checks tested here)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "FILE").write_text("a regular file\n")
    for task in ("mrpc", "sst2", "cola"):
        (tmp_path / task).mkdir()
        (tmp_path / task / "results.json").write_text(json.dumps({"config": {"task": task}}))
    (tmp_path / "pairs.tsv").write_text("sentence1\tsentence2\ttext\nA b.\tC d.\tE f.\n")
    return tmp_path


# ----------------------------------------------------------------------------- config files


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"learning_rate": [1e-4, 2e-4]}, "learning_rate: --lr takes a number, got a list [0.0001, 0.0002]"),
        ({"epochs": {"a": 1}}, "epochs: --epochs takes a number, got a mapping {'a': 1}"),
        ({"lr": "fast"}, "lr: --lr takes a number, got 'fast'"),
        ({"max-length": 10.5}, "max-length: --max-length takes a whole number, got 10.5"),
        ({"max_length": True}, "max_length: --max-length takes a whole number, got True"),
        ({"seed": None}, "seed: --seed takes a whole number, got None"),
        ({"group_by_length": "maybe"}, "group_by_length: --group-by-length takes true or false, got 'maybe'"),
        ({"model": ["a", "b"]}, "model: --model takes a string, got a list ['a', 'b']"),
        ({"strategy": "most"}, "strategy: unknown strategy 'most': choose one of full, partial, head"),
        ({"task": "glue"}, "task: unknown task 'glue'"),
        ({"seed": -1}, "seed: --seed must be in [0, 2**32), got -1"),
        ({"batch_size": 0}, "batch_size: --batch-size must be positive, got 0"),
        ({1: 2}, "unknown settings 1"),
    ],
)
def test_a_bad_config_file_value_names_the_file_and_the_key(capsys, work, suffix, settings, message):
    import yaml

    path = work / f"config{suffix}"
    path.write_text(json.dumps(settings) if suffix == ".json" else yaml.safe_dump(settings))
    refused(capsys, work, f"config{suffix}: {message}", "train", str(path.name), "--output-dir", "run")


def test_numbers_written_as_text_are_read_as_on_the_command_line(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("lr: 5e-5\nmax_length: '64'\nepochs: 2\n")  # YAML reads 5e-5 as a string
    seen = {}
    monkeypatch.setattr("finetune.cli.cmd_train", lambda args: seen.setdefault("args", args) and 0)
    assert main(["train", str(path)]) == 0
    assert (seen["args"].lr, seen["args"].max_length, seen["args"].epochs) == (5e-5, 64, 2)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr": [1e-4]}, "--lr takes a number, got a list [0.0001]"),
        ({"max_length": 10.5}, "--max-length takes a whole number, got 10.5"),
        ({"loop": None}, "--loop takes a string, got None"),
    ],
)
def test_the_library_refuses_values_of_the_wrong_kind(settings, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        TrainConfig(**settings).validate()


def test_a_config_file_that_is_a_folder(capsys, work):
    refused(capsys, work, "config file mrpc is a folder: give a .json or .yaml file", "train", "mrpc")


# ----------------------------------------------------------------------------- output paths


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "--checkpoint", "mrpc", "--input", "pairs.tsv", "--output", "FILE/out.tsv"],
         "--output FILE/out.tsv: FILE is a file: choose another --output"),
        (["predict", "--checkpoint", "mrpc", "--split", "test", "--output", "FILE/out.tsv"],
         "--output FILE/out.tsv: FILE is a file"),
        (["predict", "--checkpoint", "mrpc", "--glue-submission", "FILE/sub"],
         "--glue-submission FILE/sub: FILE is a file: choose another --glue-submission"),
        (["predict", "--checkpoint", "mrpc", "--glue-submission", "FILE"], "--glue-submission FILE is a file"),
        (["report", "mrpc", "--out", "FILE/report"], "--out FILE/report: FILE is a file: choose another --out"),
        (["report", "mrpc", "--out", "FILE"], "--out FILE is a file: choose another --out"),
        (["report", "mrpc", "--out", "/proc/finetune-report"], "--out /proc/finetune-report: cannot write in /proc"),
        (["grid", "--results-dir", "FILE/results", "--runs-dir", "runs"],
         "--results-dir FILE/results: FILE is a file: choose another --results-dir"),
        (["grid", "--results-dir", "results", "--runs-dir", "FILE"], "--runs-dir FILE is a file"),
        (["train", "--output-dir", "FILE/run"], "FILE is a file: choose another --output-dir"),
    ],
)  # fmt: skip
def test_an_output_path_under_a_file_or_unwritable(capsys, work, args, message):
    refused(capsys, work, message, *args, *(["--data-dir", "nowhere"] if args[0] == "grid" else []))


def test_grid_checks_every_run_before_the_first(capsys, work):
    refused(capsys, work, "--seed must be in [0, 2**32), got -1", "grid", "--seeds", "1", "-1", "--only", "native-head",
            "--results-dir", "results", "--runs-dir", "runs", "--data-dir", "nowhere")  # fmt: skip


# ----------------------------------------------------------------------------- the number of texts


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "mrpc", "--text-columns", "text"],
         "mrpc takes a sentence pair: give two text columns, got 1 (--text-columns text)"),
        (["--checkpoint", "mrpc", "--text-columns", "sentence1", "sentence2", "text"],
         "mrpc takes a sentence pair: give two text columns, got 3"),
        (["--checkpoint", "sst2", "--text-columns", "sentence1", "sentence2"],
         "sst2 takes one sentence: give one text column, got 2 (--text-columns sentence1 sentence2)"),
    ],
)  # fmt: skip
def test_predict_a_file_with_the_wrong_number_of_text_columns(capsys, work, args, message):
    refused(capsys, work, message, "predict", *args, "--input", "pairs.tsv", "--output", "out.tsv")


@pytest.mark.parametrize(
    ("run", "sentences", "message"),
    [
        ("mrpc", ["One sentence."], "mrpc takes a sentence pair: give two sentences, got 1"),
        ("mrpc", ["A.", "B.", "C."], "mrpc takes a sentence pair: give two sentences, got 3"),
        ("sst2", ["A.", "B."], "sst2 takes one sentence: give one sentence, got 2"),
    ],
)
def test_predict_sentences_of_the_wrong_number(capsys, work, run, sentences, message):
    refused(capsys, work, message, "predict", "--checkpoint", run, *sentences)


# ----------------------------------------------------------------------------- unlabeled splits


@pytest.mark.parametrize("task", ["sst2", "cola"])
def test_evaluating_a_split_without_labels(capsys, work, glue_dir, task):
    refused(capsys, work, f"--split test: the {task} test split has no labels (GLUE keeps them private)",
            "evaluate", "--checkpoint", task, "--split", "test", "--data-dir", glue_dir)  # fmt: skip


# ----------------------------------------------------------------------------- local model paths


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("./no-such-model", "no model folder ./no-such-model: give an existing folder, or a Hub id"),
        ("/no/such/model", "no model folder /no/such/model"),
        ("~/no-such-finetune-model", "no model folder ~/no-such-finetune-model"),
        ("models/no/such", "no model folder models/no/such"),
        ("FILE", "model FILE is a file: give the folder holding its config.json, or a Hub id"),
    ],
)
def test_a_local_model_path_that_is_not_a_folder(capsys, work, glue_dir, model, message):
    refused(capsys, work, message, "train", "--model", model, "--data-dir", glue_dir, "--output-dir", "run")
    with pytest.raises(ModelError, match="no model folder|is a file"):
        load_model(model, get_task("mrpc"))


# ----------------------------------------------------------------------------- start-up


def test_help_imports_neither_torch_nor_transformers():
    code = "import sys; from finetune.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
    code += "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0 and done.stdout.strip().endswith("[]"), done.stdout[-500:] + done.stderr[-500:]
