"""No code runs from a run directory: an edited checkpoint (its seal recomputed) is refused before
it is unpickled, in every loop, and finetune's commands never import a module a run directory
carries. A marker file proves that the planted code never ran."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from finetune.cli import main
from finetune.run.checkpoint import PROGRESS_FILE, file_manifest, list_checkpoints

# the file each loop unpickles when it resumes (one of several for Accelerate and the Trainer)
LOADED_BY = {"native": "state.pt", "accelerate": "random_states_0.pkl", "trainer": "rng_state.pth"}


class Payload:
    """Unpickling this object calls ``exec``: the attack."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('the payload ran')",)


def reseal(checkpoint):
    """What an attacker can do: recompute the sizes and hashes progress.json records."""
    record = json.loads((checkpoint / PROGRESS_FILE).read_text())
    record["files"] = file_manifest(checkpoint)
    (checkpoint / PROGRESS_FILE).write_text(json.dumps(record))


def snapshot(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def train_args(model, glue_dir, out, loop):
    return ["train", "--model", model, "--data-dir", glue_dir, "--output-dir", str(out), "--loop", loop, "--epochs",
            "1", "--max-train-samples", "32", "--max-eval-samples", "8", "--batch-size", "8", "--save-steps", "2",
            "--no-progress"]  # fmt: skip


@pytest.mark.parametrize("loop", ["native", "accelerate", "trainer"])
def test_a_checkpoint_holding_a_pickled_payload_is_refused_unrun(tiny_models, glue_dir, tmp_path, capsys, loop):
    out, marker = tmp_path / "run", tmp_path / "marker"
    assert main(train_args(tiny_models["bert"], glue_dir, out, loop)) == 0
    (out / "results.json").unlink()  # an unfinished run, to be resumed
    checkpoint = list_checkpoints(out)[-1][1]
    target = checkpoint / LOADED_BY[loop]
    assert target.is_file()
    torch.save(Payload(marker), target)
    reseal(checkpoint)
    before = snapshot(out)
    capsys.readouterr()
    code = main([*train_args(tiny_models["bert"], glue_dir, out, loop), "--resume-from-checkpoint", "latest"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{target} holds more than tensors and numbers" in err and "checkpoint you made or trust" in err
    assert not marker.exists() and snapshot(out) == before  # nothing ran, nothing written


def test_the_native_loader_itself_never_unpickles_code(tiny_models, glue_dir, tmp_path):
    """Even called directly (past the check at resume), the native loop loads with weights_only=True."""
    from finetune.loops.native import load_state

    marker = tmp_path / "marker"
    torch.save(Payload(marker), tmp_path / "state.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        load_state(tmp_path, {})
    assert not marker.exists()


@pytest.fixture(scope="module")
def planted_run(tiny_models, glue_dir, tmp_path_factory):
    """A finished run whose config.json points its Auto classes at a module planted beside it."""
    out = tmp_path_factory.mktemp("planted") / "run"
    assert main(train_args(tiny_models["bert"], glue_dir, out, "native")) == 0
    marker = out.parent / "marker"
    (out / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "from transformers import BertConfig, BertForSequenceClassification\n"
        "class EvilConfig(BertConfig):\n    pass\n"
        "class EvilModel(BertForSequenceClassification):\n    config_class = EvilConfig\n"
    )
    config = json.loads((out / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel"}
    (out / "config.json").write_text(json.dumps(config))
    return out, marker


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "--split", "validation"],
        ["predict", "He said the pie business doesn't fit.", "The pie business doesn't fit, he said."],
        ["predict", "--split", "validation", "--output", "{tmp}/p.tsv", "--no-progress"],
        ["report", "--out", "{tmp}/report"],
    ],
)
def test_finetune_never_imports_a_module_a_run_directory_carries(planted_run, tmp_path, command):
    run, marker = planted_run
    args = [a.format(tmp=tmp_path) for a in command]
    args = [*args, str(run)] if args[0] == "report" else [args[0], "--checkpoint", str(run), *args[1:]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # a new process: nothing imported before
    done = subprocess.run([sys.executable, "-m", "finetune", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not marker.exists()


def test_minigrad_loads_a_planted_run_without_importing_it(planted_run, tmp_path):
    from minigrad.models import bert

    run, marker = planted_run
    copy = shutil.copytree(run, tmp_path / "run")
    model = bert.from_pretrained(str(copy))
    assert model is not None and not marker.exists()
