"""The command line is built from TrainConfig (HfArgumentParser): the Hugging Face example scripts'
names train the same run as the short ones, a JSON or YAML file can stand in for flags, and
``--help`` shows every option with its default."""

import dataclasses
import json

import pytest

from finetune.cli import build_parser, config_from_args, main
from finetune.config import TrainConfig


def parsed(*args):
    return config_from_args(build_parser().parse_args(["train", *args]))


def test_hugging_face_names_give_the_same_run_as_the_short_names():
    hf = parsed(
        "--model_name_or_path", "bert-base-uncased", "--task_name", "mrpc", "--learning_rate", "2e-5",
        "--num_train_epochs", "4", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32",
        "--gradient_accumulation_steps", "2", "--max_seq_length", "96", "--warmup_ratio", "0.06",
        "--weight_decay", "0.1", "--output_dir", "runs/x", "--seed", "3",
    )  # fmt: skip
    short = parsed(
        "--model", "bert-base-uncased", "--task", "mrpc", "--lr", "2e-5", "--epochs", "4", "--batch-size", "8",
        "--eval-batch-size", "32", "--grad-accum-steps", "2", "--max-length", "96", "--warmup-ratio", "0.06",
        "--weight-decay", "0.1", "--output-dir", "runs/x", "--seed", "3",
    )  # fmt: skip
    assert hf == short
    assert (hf.lr, hf.epochs, hf.batch_size, hf.max_length, hf.grad_accum_steps) == (2e-5, 4.0, 8, 96, 2)
    assert parsed("--learning-rate", "2e-5").lr == parsed("--learning_rate", "2e-5").lr == 2e-5
    assert parsed("--no-progress").disable_tqdm and parsed("--disable_tqdm").disable_tqdm
    assert parsed() == TrainConfig()  # the parser's defaults are the dataclass's


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_config_file_stands_in_for_flags(tmp_path, monkeypatch, suffix):
    import yaml

    settings = {"learning_rate": 3e-5, "num_train_epochs": 2, "strategy": "head", "max-length": 64}
    path = tmp_path / f"config{suffix}"
    path.write_text(json.dumps(settings) if suffix == ".json" else yaml.safe_dump(settings))
    seen = {}
    monkeypatch.setattr("finetune.cli.cmd_train", lambda args: seen.setdefault("cfg", config_from_args(args)) and 0)
    assert main(["train", str(path), "--seed", "5"]) == 0
    cfg = seen["cfg"]
    assert (cfg.lr, cfg.epochs, cfg.strategy, cfg.max_length, cfg.seed) == (3e-5, 2, "head", 64, 5)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"learning_rate": 1e-4, "lerning_rate": 2}', "unknown settings lerning_rate"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a mapping of settings"),
    ],
)
def test_a_bad_config_file_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_help_shows_every_option_with_its_default():
    train = build_parser().train_parser
    text = train.format_help()
    for field in dataclasses.fields(TrainConfig):
        assert f"--{field.name}" in text, field.name
    for action in train._actions:
        if action.dest != "help":
            assert action.help and "(default" in action.help, action.dest
    assert "{native,trainer,accelerate}" in text and "{full,partial,head}" in text
