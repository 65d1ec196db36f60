"""--report-to tensorboard in every loop (what the event files hold), and --push-to-hub through a
test double of ``huggingface_hub.HfApi`` that records the repo id, the files and the card: the
checks before training, the upload after it, and what a failed upload leaves."""

import json
from pathlib import Path
from typing import ClassVar

import huggingface_hub
import pytest
from huggingface_hub import ModelCard

import finetune
from finetune.cli import main
from finetune.config import TrainConfig
from finetune.errors import ConfigError


def _config(tiny_models, glue_dir, out, **overrides):
    settings = dict(
        model=tiny_models["bert"], data_dir=glue_dir, output_dir=str(out), epochs=2, batch_size=8, lr=3e-3,
        max_train_samples=32, max_eval_samples=32, logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


def _scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = [p for p in (run_dir / "tensorboard").iterdir() if p.is_dir()]
    assert [p.name for p in folders] == [run_dir.name]
    events = EventAccumulator(str(folders[0]))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("loop", ["native", "accelerate", "trainer"])
def test_tensorboard_gets_loss_learning_rate_and_every_evaluation(tiny_models, glue_dir, tmp_path, loop):
    run = tmp_path / "run"
    results = finetune.train(
        _config(tiny_models, glue_dir, run, loop=loop, report_to="tensorboard", eval_strategy="steps", eval_steps=3)
    )
    scalars = _scalars(run)
    assert {"train/loss", "train/learning_rate", "eval/accuracy", "eval/f1", "eval/loss"} <= set(scalars)
    evaluations = [h for h in results["history"] if "validation" in h]
    assert [s for s, _ in scalars["eval/accuracy"]] == [h["step"] for h in evaluations] == [3, 6, 8]
    for (_, value), h in zip(scalars["eval/f1"], evaluations):
        assert value == pytest.approx(h["validation"]["f1"], abs=1e-6)
    losses = [h for h in results["history"] if "loss" in h]
    assert [s for s, _ in scalars["train/loss"]] == [h["step"] for h in losses]
    for (_, value), h in zip(scalars["train/loss"], losses):
        assert value == pytest.approx(h["loss"], rel=1e-5)


def test_tensorboard_without_the_package_is_refused_before_training(tiny_models, glue_dir, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match="--report-to tensorboard needs the tensorboard package"):
        finetune.train(_config(tiny_models, glue_dir, tmp_path / "run", report_to="tensorboard"))
    assert not (tmp_path / "run").exists()


class RecordingHub:
    """Stands in for ``huggingface_hub.HfApi``: records each call, uploads nothing."""

    calls: ClassVar[list] = []
    refuse_token = fail_upload = False

    def __init__(self, token=None):
        self.token = token

    def whoami(self):
        self.calls.append(("whoami", self.token))
        if self.refuse_token:
            raise OSError("401 Client Error: Unauthorized")
        return {"name": "me"}

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, *, repo_id, operations, commit_message, **kwargs):
        if self.fail_upload:
            raise ConnectionError("connection reset")
        files = {op.path_in_repo: op.path_or_fileobj for op in operations}
        content = {name: what if isinstance(what, bytes) else Path(what).read_bytes() for name, what in files.items()}
        self.calls.append(("create_commit", repo_id, sorted(files), content))


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHub)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(RecordingHub, "calls", [])
    return RecordingHub


def test_push_uploads_the_model_tokenizer_results_and_a_card(tiny_models, glue_dir, tmp_path, hub):
    run = tmp_path / "run"
    results = finetune.train(_config(tiny_models, glue_dir, run, save_steps=2, report_to="tensorboard",
                                     push_to_hub=True, hub_model_id="me/tiny-mrpc", hub_token="hf_secret"))  # fmt: skip
    assert [c[0] for c in hub.calls] == ["whoami", "create_repo", "create_commit"]
    assert hub.calls[0] == ("whoami", "hf_secret") and hub.calls[1] == ("create_repo", "me/tiny-mrpc", False, True)
    _, repo, files, content = hub.calls[2]
    card_text = content["README.md"].decode()
    assert repo == "me/tiny-mrpc"
    assert files == sorted(["config.json", "model.safetensors", "mean_pooling.py", "tokenizer.json",
                            "tokenizer_config.json", "results.json", "README.md", "validation_predictions.tsv",
                            "test_predictions.tsv"])  # fmt: skip
    assert "mean_pooling.MeanPoolingClassifier" in content["config.json"].decode()  # the code the auto_map names
    for name in ("results.json", "config.json", "README.md"):  # no local path leaves the machine
        assert '"/' not in content[name].decode() and "/tmp/" not in content[name].decode(), name
    assert json.loads(content["results.json"])["config"]["model"] == "bert"  # the local folder, by its name
    assert str(tmp_path) in (run / "results.json").read_text()  # kept for local use
    assert {p.name for p in run.iterdir()} - set(files) >= {"tensorboard", "checkpoint-6"}  # not uploaded
    assert results["hub_url"] == "https://huggingface.co/me/tiny-mrpc"
    assert "hf_secret" not in (run / "results.json").read_text()  # the token is never written

    card = ModelCard(card_text)
    index = card.data.to_dict()["model-index"][0]["results"]
    found = {(r["dataset"]["split"], m["type"]): m["value"] for r in index for m in r["metrics"]}
    for split in ("validation", "test"):
        for metric in ("accuracy", "f1"):
            assert found[(split, metric)] == pytest.approx(results[split][metric])
    assert "GLUE MRPC" in card.text
    assert 'model="me/tiny-mrpc", trust_remote_code=True)' in card.text and '"text_pair"' in card.text
    assert f"| validation | 32 | {100 * results['validation']['accuracy']:.1f}" in card.text
    assert card.data.base_model is None  # a local folder is no Hub id
    assert (run / "README.md").read_text() == card_text


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("offline", ["--hub-model-id", "me/x"], "the Hub is switched off here (HF_HUB_OFFLINE=1)"),
        ("no-token", ["--hub-model-id", "me/x"], "no Hugging Face token"),
        ("refused", ["--hub-model-id", "me/x", "--hub-token", "hf_bad"], "the Hub did not accept the token"),
        ("", ["--hub-model-id", "me/x/y", "--hub-token", "t"], "--hub-model-id 'me/x/y' is not a repository id"),
        ("", [], "--push-to-hub needs --hub-model-id"),
    ],
)
def test_push_problems_stop_the_run_before_training(
    tiny_models, glue_dir, tmp_path, hub, monkeypatch, capsys, setup, args, message
):
    if setup == "offline":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    if setup == "no-token":
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(RecordingHub, "refuse_token", setup == "refused")
    run = tmp_path / "run"
    code = main(["train", "--model", tiny_models["bert"], "--data-dir", glue_dir, "--output-dir", str(run),
                 "--max-train-samples", "8", "--push-to-hub", *args])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not run.exists() and not [c for c in hub.calls if c[0] != "whoami"]


def test_a_failed_upload_keeps_the_run_and_finetune_push_sends_it_later(
    tiny_models, glue_dir, tmp_path, hub, monkeypatch, capsys
):
    run = tmp_path / "run"
    monkeypatch.setattr(RecordingHub, "fail_upload", True)
    code = main(["train", "--model", tiny_models["bert"], "--data-dir", glue_dir, "--output-dir", str(run),
                 "--max-train-samples", "8", "--max-eval-samples", "8", "--epochs", "1", "--no-progress",
                 "--push-to-hub", "--hub-model-id", "me/later", "--hub-token", "t"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"the run is saved in {run}: finetune push --checkpoint {run} --hub-model-id me/later" in err
    assert json.loads((run / "results.json").read_text())["validation"]["examples"] == 8
    monkeypatch.setattr(RecordingHub, "fail_upload", False)
    code = main(["push", "--checkpoint", str(run), "--hub-model-id", "me/later", "--hub-token", "t"])
    assert code == 0 and json.loads(capsys.readouterr().out)["hub_url"].endswith("me/later")
    assert hub.calls[-1][0] == "create_commit" and "model.safetensors" in hub.calls[-1][2]
