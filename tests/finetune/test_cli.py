"""The command line is built from TrainConfig (HfArgumentParser): the Hugging Face example scripts'
names train the same run as the short ones, a JSON or YAML file can stand in for flags, and
``--help`` shows every option with its default."""

import dataclasses
import json

import pytest

from finetune.cli import build_parser, config_from_args, main
from finetune.config import GROUPS, TrainConfig


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


def test_help_shows_the_settings_in_their_groups():
    """``finetune train --help`` has a section per settings group, each option in its own group's."""
    text = build_parser().train_parser.format_help()
    sections = [text.index(f"\n{group._argument_group_name}:\n") for group in GROUPS]
    assert sections == sorted(sections)
    for group, start, end in zip(GROUPS, sections, [*sections[1:], len(text)], strict=True):
        for field in dataclasses.fields(group):
            assert f"  --{field.name} " in text[start:end] or f"  --{field.name}\n" in text[start:end], field.name


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--stratgy", "full"], "unrecognized arguments: --stratgy (did you mean --strategy?)"),
        (["train", "--output-dri=runs/x", "--lrr"],
         "unrecognized arguments: --output-dri=runs/x --lrr (did you mean --output-dir, --lr?)"),
        (["train", "--strategy", "ful"],
         "argument --strategy: invalid choice: 'ful' (choose from 'full', 'partial', 'head') (did you mean full?)"),
        (["evaluate", "--checkpoint", "x", "--split", "tset"], "invalid choice: 'tset' (choose from 'validation', "
         "'test') (did you mean test?)"),
        (["trian"], "invalid choice: 'trian' (choose from 'train', 'evaluate', 'predict', 'push', 'report', "
         "'compare', 'grid') (did you mean train?)"),
        (["report", "runs", "--zzzz"], "unrecognized arguments: --zzzz"),  # nothing close: no guess
    ],
)  # fmt: skip
def test_a_mistyped_option_or_choice_gets_the_closest_one_in_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].endswith(message), err


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"strategy": "head", "loop": "trainer", "lr": 3e-4, "group_by_length": False, "swap_pairs": True},
        {"model": "my models/tiny bert", "epochs": 1.5, "save_steps": 7, "disable_tqdm": True, "fsdp": None},
        {"data_dir": "/data/glue", "strategy": "partial", "freeze_layers": 2, "max_train_samples": 400},
    ],
)
def test_the_resume_command_rebuilds_the_recorded_settings(monkeypatch, settings):
    """The command an unfinished run's message gives parses back to the run's settings exactly
    (resuming refuses any other), and lists only those that differ from their defaults."""
    import shlex

    from finetune.config import train_command

    monkeypatch.delenv("GLUE_DIR", raising=False)
    recorded = TrainConfig(**settings).resolved().to_dict()
    words = shlex.split(train_command(recorded, "runs/my run"))
    assert words[:2] == ["finetune", "train"] and words[-4:] == [
        "--output-dir", "runs/my run", "--resume-from-checkpoint", "latest"
    ]  # fmt: skip
    again = config_from_args(build_parser().parse_args(words[1:])).resolved().to_dict()
    assert again == {**recorded, "output_dir": "runs/my run", "resume_from_checkpoint": "latest"}
    assert len(words) == 6 + sum(2 - isinstance(v, bool) for k, v in settings.items() if v is not None)
