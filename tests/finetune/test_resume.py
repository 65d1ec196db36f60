"""Checkpoints resume exactly, with dropout on: a run killed with SIGKILL (just after a checkpoint,
while writing the next one, during an evaluation) or stopped by SIGTERM / Ctrl-C and resumed with
``latest`` ends with the weights, losses, history and metrics of an uninterrupted run, for the
native loop, the Accelerate loop and the Trainer. A checkpoint is resumed only with the settings
it was made with, and only if its files are as they were written."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune.model.modeling import default_model_path
from finetune.run.checkpoint import PROGRESS_FILE, is_complete, list_checkpoints

LOOPS = ["native", "accelerate", "trainer"]


def train_args(model, glue_dir, out, loop, extra=(), samples=80):
    return [
        "train", "--model", model, "--data-dir", glue_dir, "--output-dir", str(out), "--loop", loop,
        "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--max-train-samples", str(samples),
        "--max-eval-samples", "40", "--save-steps", "3", "--logging-steps", "4", "--seed", "7", "--no-progress", *extra,
    ]  # fmt: skip


def start(args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "finetune", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(args):
    proc = start(args)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


def kill_after_checkpoint(proc, out, step, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        whole = [s for s, p in list_checkpoints(out) if is_complete(p)]
        if whole and max(whole) >= step:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before checkpoint {step}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no checkpoint appeared in time")


def assert_same_run(whole, cut, loop):
    """The resumed run in ``cut`` ended exactly where the uninterrupted one in ``whole`` did."""
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (whole, cut))
    assert rb["resumed_from"] and rb["resumed_from"].startswith(str(cut / "checkpoint-"))
    assert ra["validation"] == pytest.approx(rb["validation"], abs=1e-6)
    assert ra["test"] == pytest.approx(rb["test"], abs=1e-6)
    assert len(ra["history"]) == len(rb["history"])
    for x, y in zip(ra["history"], rb["history"]):  # the same log, step for step: losses and evaluations
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], abs=1e-6), (key, x, y)
    if loop != "trainer":
        assert rb["batches_seen_per_process"] < ra["batches_seen_per_process"]  # skipped, not replayed
    assert_time_summed(cut)


def assert_time_summed(run):
    """A resumed run's training time is its segments' sum: the stopped one up to the checkpoint
    resumed (as that checkpoint recorded it), then the resumed one; samples/s come from the sum."""
    results = json.loads((run / "results.json").read_text())
    segments = results["train_segments_s"]
    resumed = json.loads((Path(results["resumed_from"]) / PROGRESS_FILE).read_text())
    assert len(segments) == 2 and segments[0] == pytest.approx(resumed["train_segments_s"][0], abs=1e-3)
    assert results["train_runtime_s"] == pytest.approx(sum(segments), abs=2e-3) and min(segments) > 0
    samples = results["train_examples"] * results["config"]["epochs"]
    assert results["train_samples_per_second"] == pytest.approx(samples / results["train_runtime_s"], rel=1e-3)


def plant_half_written_checkpoint(out, step):
    """What a SIGKILL while writing checkpoint-<step> leaves: our loops' temporary folder, or the
    Trainer's folder without progress.json (it writes in place), with a file cut short."""
    source = max((p for s, p in list_checkpoints(out) if is_complete(p)), key=lambda p: int(p.name.split("-")[1]))
    for target in (out / f".checkpoint-{step}.tmp", out / f"checkpoint-{step}"):
        shutil.copytree(source, target)
        (target / PROGRESS_FILE).unlink()
        biggest = max((p for p in target.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])


@pytest.fixture(scope="module")
def uninterrupted(tiny_models, glue_dir, tmp_path_factory):
    """One uninterrupted run per loop, shared by the interruption tests."""
    runs = {}
    for loop in LOOPS:
        runs[loop] = tmp_path_factory.mktemp(f"whole-{loop}") / "run"
        finish(train_args(tiny_models["bert"], glue_dir, runs[loop], loop))
    return runs


@pytest.mark.parametrize("loop", LOOPS)
def test_sigkill_after_a_checkpoint_and_while_writing_the_next(tiny_models, glue_dir, tmp_path, loop, uninterrupted):
    cut = tmp_path / "cut"
    kill_after_checkpoint(start(train_args(tiny_models["bert"], glue_dir, cut, loop)), cut, 6)  # epoch 1 of 2
    assert not (cut / "results.json").exists()
    plant_half_written_checkpoint(cut, 9)
    finish(train_args(tiny_models["bert"], glue_dir, cut, loop, ["--resume-from-checkpoint", "latest"]))
    assert_same_run(uninterrupted[loop], cut, loop)
    assert not (cut / ".checkpoint-9.tmp").exists()  # the debris was cleaned, and never resumed from
    assert is_complete(cut / "checkpoint-9")  # written again, whole, by the resumed run


@pytest.mark.parametrize("loop", LOOPS)
def test_sigkill_at_the_end_of_an_epoch_during_its_evaluation(tiny_models, glue_dir, tmp_path, loop, uninterrupted):
    cut = tmp_path / "cut"
    # step 10 ends epoch 1 (80 examples / 8); its evaluation follows the checkpoint at once
    kill_after_checkpoint(start(train_args(tiny_models["bert"], glue_dir, cut, loop)), cut, 10)
    finish(train_args(tiny_models["bert"], glue_dir, cut, loop, ["--resume-from-checkpoint", "latest"]))
    assert_same_run(uninterrupted[loop], cut, loop)


def stop_with(signum, args, after="epoch 1: validation"):
    """Start a run, send ``signum`` once it has printed ``after``, and return (exit code, stderr)."""
    proc = start(args)
    for line in proc.stdout:
        if line.startswith(after):
            proc.send_signal(signum)
            break
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.mark.parametrize(("loop", "signum", "code"), [("native", signal.SIGTERM, 143), ("trainer", signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_save_a_checkpoint_and_say_how_to_resume(
    tiny_models, glue_dir, tmp_path, loop, signum, code, uninterrupted
):
    cut = tmp_path / "cut"
    returncode, err = stop_with(signum, train_args(tiny_models["bert"], glue_dir, cut, loop))
    assert returncode == code, err[-2000:]
    message = err.strip().splitlines()[-1]
    found = re.search(rf"stopped by {signal.Signals(signum).name} at step (\d+); checkpoint (\S+) written", message)
    assert found and "--resume-from-checkpoint latest" in message, message
    assert found[2] == str(cut / f"checkpoint-{found[1]}") and is_complete(Path(found[2]))  # where it stopped
    finish(train_args(tiny_models["bert"], glue_dir, cut, loop, ["--resume-from-checkpoint", "latest"]))
    assert_same_run(uninterrupted[loop], cut, loop)


# The real model (dropout 0.1): (MRPC pairs, settings, the checkpoint after which it is killed).
# short: 12 steps, killed after step 6; longer: 40 steps of batch 16, killed mid-epoch after step 10.
REAL_RUNS = {
    "short": (48, ["--lr", "5e-5", "--eval-batch-size", "40"], 6),
    "longer": (320, ["--lr", "5e-5", "--batch-size", "16", "--save-steps", "5", "--max-eval-samples", "200"], 10),
}


# short in the native loop by default; the rest (40 s to a few minutes each) with --run-slow, as
# the tiny-model tests above check every loop's resume in every run
@pytest.mark.parametrize(
    "run, loop",
    [(run, loop) if (run, loop) == ("short", "native") else pytest.param(run, loop, marks=pytest.mark.slow)
     for run in REAL_RUNS for loop in LOOPS],
)  # fmt: skip
def test_resume_on_the_default_checkpoint_is_exact(glue_dir, tmp_path, run, loop):
    samples, args, kill_after = REAL_RUNS[run]
    model, whole, cut = default_model_path(), tmp_path / "whole", tmp_path / "cut"
    finish(train_args(model, glue_dir, whole, loop, args, samples=samples))
    kill_after_checkpoint(start(train_args(model, glue_dir, cut, loop, args, samples=samples)), cut, kill_after)
    finish(train_args(model, glue_dir, cut, loop, [*args, "--resume-from-checkpoint", "latest"], samples=samples))
    assert_same_run(whole, cut, loop)


def test_resume_with_other_settings_names_each_difference(tiny_models, glue_dir, tmp_path):
    out = tmp_path / "run"
    kill_after_checkpoint(start(train_args(tiny_models["bert"], glue_dir, out, "native")), out, 3)
    changed = ["--resume-from-checkpoint", "latest", "--lr", "2e-3", "--max-length", "64", "--no-progress"]
    proc = start([*train_args(tiny_models["bert"], glue_dir, out, "native"), *changed])
    _, err = proc.communicate()
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "--lr 0.001 (then) vs 0.002 (now)" in err and "--max-length 128 (then) vs 64 (now)" in err
    # settings that cannot change the result may differ
    same = ["--resume-from-checkpoint", "latest", "--logging-steps", "5", "--save-total-limit", "1"]
    finish([*train_args(tiny_models["bert"], glue_dir, out, "native"), *same])


def test_resume_latest_without_checkpoint_exits_2(tiny_models, glue_dir, tmp_path):
    proc = start(
        train_args(tiny_models["bert"], glue_dir, tmp_path / "none", "native", ["--resume-from-checkpoint", "latest"])
    )
    _, err = proc.communicate()
    assert proc.returncode == 2 and "no usable checkpoint" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- runs that did not finish

UNFINISHED = re.compile(
    r"(\S+) is a run that did not finish \(its last checkpoint is step (\d+)\): resume it with (.+)"
)


@pytest.fixture(scope="module")
def stopped(tiny_models, glue_dir, tmp_path_factory):
    """A run stopped by SIGTERM after its first epoch: checkpoint-<step>/, and no model or results.json."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    returncode, err = stop_with(signal.SIGTERM, train_args(tiny_models["bert"], glue_dir, run, "native"))
    assert returncode == 143 and not (run / "results.json").exists(), err[-2000:]
    return run


def cli_error(capsys, *args):
    """The CLI's exit code and its one line on stderr, in-process."""
    from finetune.cli import main

    code = main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return code, err[0]


@pytest.mark.parametrize(
    "command",
    [["evaluate", "--checkpoint"], ["predict", "--checkpoint", "{run}", "A sentence.", "Another one.", "--checkpoint"],
     ["push", "--hub-model-id", "me/model", "--checkpoint"], ["compare", "{run}", "--against"],
     ["report", "--out", "{tmp}/report"]],
    ids=["evaluate", "predict", "push", "compare", "report"],
)  # fmt: skip
def test_each_command_names_a_run_that_did_not_finish_and_how_to_resume_it(capsys, stopped, tmp_path, command):
    args = [word.format(run=stopped, tmp=tmp_path) for word in command]
    code, line = cli_error(capsys, *args, str(stopped))
    found = UNFINISHED.search(line)
    assert code == 2 and found, line
    last = max(step for step, _ in list_checkpoints(stopped))
    assert found[1] == str(stopped) and int(found[2]) == last
    assert found[3].startswith("finetune train ") and found[3].endswith(
        f"--output-dir {stopped} --resume-from-checkpoint latest"
    )
    assert not (tmp_path / "report").exists()


def test_a_folder_that_is_no_run_is_named_as_such(capsys, tmp_path):
    (tmp_path / "notes.md").write_text("not a run")
    for command in (["evaluate", "--checkpoint"], ["predict", "A sentence.", "--checkpoint"]):
        code, line = cli_error(capsys, *command, str(tmp_path))
        assert code == 2 and f"{tmp_path} is not a run directory" in line and "--task" not in line, line


def test_the_named_command_resumes_the_run_and_report_lists_what_is_left_out(capsys, stopped, tmp_path):
    """The command the message gives resumes the run (resuming refuses other settings, so it
    rebuilt the run's own), and its time adds up; ``report`` over a folder names the run left out."""
    from finetune.run.rundir import unfinished_run

    resumed, left = tmp_path / "runs" / "resumed", tmp_path / "runs" / "left"
    for copy in (resumed, left):
        shutil.copytree(stopped, copy)
    command = shlex.split(UNFINISHED.search(unfinished_run(resumed))[3])
    assert command[:2] == ["finetune", "train"] and "--lr" in command and "--seed" in command
    finish(command[1:])
    assert_time_summed(resumed)
    from finetune.cli import main

    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Left out, 1 run that did not finish:" in report and f"- {unfinished_run(left)}" in report
    assert main(["compare", str(tmp_path / "runs"), "--against", str(resumed)]) == 0
    assert f"- {unfinished_run(left)}" in capsys.readouterr().err  # compare says what it left out, too


def test_a_cut_off_checkpoint_a_run_still_training_and_a_checkpoint_given_for_a_run_are_named(tmp_path):
    """Directories as a run leaves them, made by hand: its only checkpoint cut off, or with an
    unreadable progress.json (the resume command then says what it cannot know), a checkpoint
    folder given where a run goes, a run whose lock a live process holds."""
    from finetune.config import ConfigError
    from finetune.run.rundir import UnfinishedRunError, check_finished, take_lock, unfinished_run

    run = tmp_path / "run"
    (run / "checkpoint-3").mkdir(parents=True)
    assert "train it again, with --overwrite-output-dir" in unfinished_run(run)  # no progress.json: cut off
    (run / "checkpoint-3" / PROGRESS_FILE).write_text("{not json")
    assert unfinished_run(run).endswith(
        f"(its last checkpoint is step 3): resume it with finetune train (its settings) --output-dir {run} "
        "--resume-from-checkpoint latest"
    )
    given = re.escape(f"{run}/checkpoint-3 is a checkpoint, not a run directory: {run} is a run that did not finish")
    with pytest.raises(UnfinishedRunError, match=f"^{given}"):
        check_finished(run / "checkpoint-3")
    lock = take_lock(tmp_path / ".run.lock", run)
    try:
        still = f"{run} is a run still training (a finetune process holds its lock): wait for it to finish"
        assert unfinished_run(run) == still
    finally:
        os.close(lock)
    (run / "results.json").write_text("{}")
    assert unfinished_run(run) is None  # finished
    with pytest.raises(ConfigError, match=re.escape(f"checkpoint-3 is a checkpoint inside the run {run}, not a run")):
        check_finished(run / "checkpoint-3")
