"""What finetune does with bad input and faults: every bad input is refused before any work with
exit code 2 and one line naming the value and the fix; a run that goes non-finite stops (exit 1)
without saving a poisoned model; output directories are locked, checked writable up front, and an
old run is replaced only by a finished one. docs/finetune/faults.md tabulates these cases."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import finetune
from finetune.cli import main
from finetune.config import TrainConfig
from finetune.errors import NonFiniteError
from finetune.run.checkpoint import PROGRESS_FILE, is_complete, list_checkpoints


def cli(capsys, *args):
    """Run the ``finetune`` command in this process: (exit code, stderr lines)."""
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's own errors (an invalid choice) exit from inside
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


def refused(capsys, message, *args):
    code, err = cli(capsys, *args)
    assert code == 2 and len(err) == 1, (code, err)
    assert message in err[0], err[0]
    assert "Traceback" not in err[0]


def tiny_train(model, glue_dir, out, *extra):
    return ["train", "--model", model, "--data-dir", str(glue_dir), "--output-dir", str(out), "--epochs", "1",
            "--max-train-samples", "16", "--max-eval-samples", "16", "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tiny_models, glue_dir, tmp_path_factory):
    """A finished tiny MRPC run with checkpoints (trained with GLUE_DIR, not --data-dir)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GLUE_DIR": glue_dir}
    args = ["train", "--model", tiny_models["bert"], "--output-dir", str(out), "--epochs", "1",
            "--max-train-samples", "32", "--max-eval-samples", "16", "--batch-size", "8", "--save-steps", "2",
            "--no-progress"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "finetune", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


# ----------------------------------------------------------------------------- bad numbers


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "nan"], "--epochs must be a finite number, got nan"),
        (["--lr", "inf"], "--lr must be a finite number, got inf"),
        (["--warmup-ratio", "nan"], "--warmup-ratio must be a finite number"),
        (["--seed", "-1"], "--seed must be in [0, 2**32), got -1"),
        (["--weight-decay", "-0.1"], "--weight-decay must be >= 0, got -0.1"),
        (["--max-grad-norm", "-1"], "--max-grad-norm must be positive, got -1.0"),
        (["--max-grad-norm", "nan"], "--max-grad-norm must be a finite number, got nan"),
        (["--max-length", "100000"], "--max-length 100000 is more than this model's 512 positions"),
        (["--max-length", "4"], "--max-length 4 cannot hold a mrpc example (5 tokens at the least)"),
        (["--max-train-samples", "0"], "--max-train-samples must be positive, got 0"),
        (["--max-eval-samples", "0"], "--max-eval-samples must be positive, got 0"),
        (["--save-steps", "0"], "--save-steps must be positive, got 0"),
        (["--batch-size", "0"], "--batch-size must be positive, got 0"),
        (["--task", "nope"], "unknown task 'nope'"),
        (["--strategy", "most"], "argument --strategy: invalid choice: 'most' (choose from 'full', 'partial', 'head')"),
    ],
)
def test_bad_numbers_and_names(capsys, tiny_models, glue_dir, tmp_path, args, message):
    refused(capsys, message, *tiny_train(tiny_models["bert"], glue_dir, tmp_path / "x"), *args)
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_device_cuda_without_a_gpu(capsys, tiny_models, glue_dir, tmp_path):
    args = tiny_train(tiny_models["bert"], glue_dir, tmp_path / "x", "--device", "cuda")
    refused(capsys, "--device cuda: torch sees no CUDA GPU here", *args)
    args = tiny_train(tiny_models["bert"], glue_dir, tmp_path / "x", "--mixed-precision", "fp16")
    refused(capsys, "--mixed-precision fp16 needs a CUDA GPU", *args)
    assert not (tmp_path / "x").exists()  # refused before the run directory was made


# ----------------------------------------------------------------------------- bad data files


def broken_mrpc(glue_dir, tmp_path, name, change):
    root = tmp_path / "glue"
    shutil.copytree(os.path.join(glue_dir, "MRPC"), root / "MRPC")
    path = root / "MRPC" / name
    path.write_bytes(change(path.read_bytes()))
    return root


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("msr_paraphrase_train.txt", lambda b: b[:500_000], "ends mid-line: it was cut off"),
        ("msr_paraphrase_train.txt", lambda b: b[: b.index(b"\n") + 1], "no rows after the header"),
        ("msr_paraphrase_test.txt", lambda b: b.replace(b"PCCW", b"\xff", 1), "test.txt:2: bytes that are not UTF-8"),
        ("dev_ids.tsv", lambda b: b"", "dev_ids.tsv: empty"),
        ("dev_ids.tsv", lambda b: b"only-one-id\n", "dev_ids.tsv:1: expected two tab-separated IDs"),
        ("dev_ids.tsv", lambda b: b + b"1\t2\n", "not in msr_paraphrase_train.txt"),
    ],
)
def test_bad_data_files_name_the_file_and_line(capsys, tiny_models, glue_dir, tmp_path, name, change, message):
    root = broken_mrpc(glue_dir, tmp_path, name, change)
    refused(capsys, message, *tiny_train(tiny_models["bert"], root, tmp_path / "x"))
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- bad models


@pytest.fixture(scope="module")
def bad_models(tiny_models, tmp_path_factory):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("bad-models")
    truncated = shutil.copytree(tiny_models["bert"], root / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    no_tokenizer = root / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tiny_models["bert"], name), no_tokenizer)
    three = root / "three-labels"
    config = AutoConfig.from_pretrained(tiny_models["bert"], num_labels=3)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(three)
    shutil.copy(os.path.join(tiny_models["bert"], "tokenizer.json"), three)
    shutil.copy(os.path.join(tiny_models["bert"], "tokenizer_config.json"), three)
    return {"truncated": truncated, "no_tokenizer": no_tokenizer, "three": three}


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", "cannot load model"),
        ("no_tokenizer", "lacks its tokenizer files"),
        ("three", "is a classifier with 3 labels but mrpc has 2"),
    ],
)
def test_bad_models(capsys, bad_models, glue_dir, tmp_path, kind, message):
    refused(capsys, message, *tiny_train(str(bad_models[kind]), glue_dir, tmp_path / "x"))
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- bad checkpoints


def damaged_copy(finished_run, tmp_path, damage):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "results.json").unlink()  # an unfinished run, to be resumed
    checkpoint = list_checkpoints(out)[-1][1]
    damage(checkpoint)
    return out, checkpoint


def truncate_state(checkpoint):
    state = checkpoint / "state.pt"
    state.write_bytes(state.read_bytes()[:-100])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (truncate_state, "state.pt is damaged"),
        (lambda c: (c / PROGRESS_FILE).write_text("{garbage"), "progress.json is damaged"),
    ],
)
def test_damaged_checkpoints_are_refused(capsys, tiny_models, glue_dir, finished_run, tmp_path, damage, message):
    out, _ = damaged_copy(finished_run, tmp_path, damage)
    args = ["train", "--model", tiny_models["bert"], "--data-dir", glue_dir, "--output-dir", str(out), "--epochs", "1",
            "--max-train-samples", "32", "--max-eval-samples", "16", "--batch-size", "8", "--save-steps", "2",
            "--no-progress", "--resume-from-checkpoint", "latest"]  # fmt: skip
    refused(capsys, message, *args)


def test_a_folder_that_is_not_a_checkpoint(capsys, tiny_models, glue_dir, tmp_path):
    code, err = cli(capsys, *tiny_train(tiny_models["bert"], glue_dir, tmp_path / "x"), "--resume-from-checkpoint",
                    tiny_models["bert"])  # fmt: skip
    assert code == 2 and len(err) == 1 and "is not a finetune checkpoint" in err[0]
    assert "while saving" not in err[0]


# ----------------------------------------------------------------------------- evaluate, predict, report, grid


def test_evaluate_in_a_new_shell_finds_the_data_the_run_used(finished_run, monkeypatch, capsys):
    recorded = json.loads((finished_run / "results.json").read_text())["config"]["data_dir"]
    assert os.path.isabs(recorded) and os.path.isdir(os.path.join(recorded, "MRPC"))
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["evaluate", "--checkpoint", str(finished_run), "--max-eval-samples", "16"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("{") :])
    saved = json.loads((finished_run / "results.json").read_text())["validation"]
    assert {k: metrics[k] for k in saved} == saved and metrics["examples"] == 16  # exactly, the loss too


def test_evaluate_refuses_a_damaged_run_or_another_task(capsys, finished_run, tmp_path):
    refused(capsys, "was trained on mrpc, not sst2", "evaluate", "--checkpoint", str(finished_run), "--task", "sst2")
    copy = shutil.copytree(finished_run, tmp_path / "copy")
    (copy / "results.json").write_text('{"config": ')
    refused(capsys, "results.json is damaged", "evaluate", "--checkpoint", str(copy))


def test_predict_wants_a_pair_for_a_pair_task(capsys, finished_run):
    refused(capsys, "mrpc takes a sentence pair: give two sentences, got 1", "predict", "--checkpoint",
            str(finished_run), "Only one sentence.")  # fmt: skip


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"config": {}}'])
def test_report_refuses_empty_or_damaged_results(capsys, tmp_path, content):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(content)
    refused(capsys, "results.json is empty or damaged", "report", str(tmp_path / "run"), "--out", str(tmp_path / "r"))


def test_grid_only_with_an_unknown_name(capsys, tmp_path):
    refused(capsys, "--only native-fast: not in the grid; choose from native-full", "grid", "--only", "native-fast",
            "--results-dir", str(tmp_path / "results"))  # fmt: skip
    assert not (tmp_path / "results").exists()


# ----------------------------------------------------------------------------- non-finite runs


def checkpoint_weights(checkpoint):
    """The model weights a checkpoint holds (our loops: state.pt; the Trainer: model.safetensors)."""
    if (checkpoint / "state.pt").exists():
        return torch.load(checkpoint / "state.pt", weights_only=False)["model"]
    return load_file(str(checkpoint / "model.safetensors"))


@pytest.mark.parametrize("loop", ["native", "trainer"])
def test_a_diverging_run_stops_before_stepping_and_keeps_only_finite_checkpoints(tiny_models, glue_dir, tmp_path, loop):
    out = tmp_path / "nan"
    cfg = TrainConfig(
        model=tiny_models["bert"], data_dir=glue_dir, output_dir=str(out), loop=loop, epochs=3, batch_size=8,
        lr=1e3, warmup_ratio=0.0, max_grad_norm=1e9, max_train_samples=80, max_eval_samples=16, save_steps=1,
        disable_tqdm=True,
    )  # fmt: skip
    with pytest.raises(NonFiniteError, match=r"^step \d+.*: the (training loss|gradient norm) is (nan|inf)"):
        finetune.train(cfg)
    kept = list_checkpoints(out)
    assert kept and all(is_complete(p) for _, p in kept)
    for _, checkpoint in kept:
        weights = checkpoint_weights(checkpoint)
        assert weights and all(bool(torch.isfinite(t).all()) for t in weights.values()), checkpoint
    assert not (out / "results.json").exists() and not (out / "model.safetensors").exists()


def test_the_cli_reports_a_diverging_trainer_run_in_one_line(tiny_models, glue_dir, tmp_path):
    args = tiny_train(tiny_models["bert"], glue_dir, tmp_path / "nan", "--loop", "trainer", "--lr", "1e3",
                      "--max-grad-norm", "1e9", "--epochs", "3", "--batch-size", "4")  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "finetune", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("finetune train: error: step ") and "Traceback" not in done.stderr
    assert not (tmp_path / "nan" / "results.json").exists()


# ----------------------------------------------------------------------------- output directories


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("/proc/finetune-test-run", "--output-dir /proc/finetune-test-run: cannot write in /proc"),
        ("FILE/run", "is a file: choose another --output-dir"),
    ],
)
def test_an_unwritable_output_dir_is_refused_before_training(capsys, tiny_models, glue_dir, tmp_path, where, message):
    (tmp_path / "FILE").write_text("a file, not a folder")
    out = where.replace("FILE", str(tmp_path / "FILE"))
    refused(capsys, message, *tiny_train(tiny_models["bert"], glue_dir, out))


def test_two_runs_into_one_directory_and_a_stale_lock(tiny_models, glue_dir, tmp_path):
    out = tmp_path / "shared"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    long_run = tiny_train(tiny_models["bert"], glue_dir, out, "--epochs", "50", "--max-train-samples", "400")
    first = subprocess.Popen([sys.executable, "-m", "finetune", *long_run], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lock = tmp_path / ".shared.lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text()) and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    again = [*tiny_train(tiny_models["bert"], glue_dir, out), "--resume-from-checkpoint", "latest"]
    second = subprocess.run([sys.executable, "-m", "finetune", *again], env=env, capture_output=True, text=True)
    first.kill()
    first.wait()
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"is in use by another finetune run (pid {first.pid})" in second.stderr.strip().splitlines()[-1]
    assert lock.exists()  # SIGKILL left the lock file: the next run takes it over
    third = subprocess.run([sys.executable, "-m", "finetune", *tiny_train(tiny_models["bert"], glue_dir, out),
                            "--overwrite-output-dir"], env=env, capture_output=True, text=True)  # fmt: skip
    assert third.returncode == 0, third.stderr[-2000:]
    assert (out / "results.json").exists() and not lock.exists()


def test_overwrite_keeps_the_old_run_until_the_new_one_finishes(capsys, tiny_models, glue_dir, finished_run, tmp_path):
    out = shutil.copytree(finished_run, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    diverging = [
        "--overwrite-output-dir",
        "--lr",
        "1e3",
        "--max-grad-norm",
        "1e9",
        "--epochs",
        "3",
        "--batch-size",
        "4",
    ]
    code, err = cli(capsys, *tiny_train(tiny_models["bert"], glue_dir, out), *diverging)
    assert code == 1 and ("the training loss is" in err[-1] or "the gradient norm is" in err[-1]), err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # the old run, untouched
    assert cli(capsys, *tiny_train(tiny_models["bert"], glue_dir, out), "--overwrite-output-dir")[0] == 0
    assert json.loads((out / "results.json").read_text())["config"]["max_train_samples"] == 16  # the new run
    assert not list_checkpoints(out)  # the old run's checkpoints went with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing left beside it


def test_a_folder_without_a_tokenizer_is_named_in_one_whole_line(tmp_path):
    """transformers' own message there ends in a colon before its list ("Couldn't instantiate the
    backend tokenizer from one of:"): finetune says what is wrong instead, and wraps any such
    message whole."""
    from finetune.errors import ModelError, one_line
    from finetune.model.modeling import load_tokenizer

    (tmp_path / "notes.md").write_text("no model here")
    with pytest.raises(ModelError, match=r"the folder holds no tokenizer files \(tokenizer.json or vocab.txt\)"):
        load_tokenizer(str(tmp_path))
    listed = ValueError("Couldn't do it from one of: \n(1) this, \n(2) that.\nAnd more.")
    assert one_line(listed) == "Couldn't do it from one of: (1) this, (2) that. And more."
    assert one_line(ValueError("First line.\nDetail")) == "First line." and one_line(KeyError()) == "KeyError"
