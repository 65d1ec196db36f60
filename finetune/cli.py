"""The ``finetune`` command: train, evaluate, predict, push, report, compare, grid.

Bad input ends with exit code 2 and a one-line message on stderr; nothing on disk is touched.
Each command imports the heavy libraries (torch, transformers, datasets) only when it runs, so
``finetune --help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from finetune.config import GROUPS, TrainConfig, file_value
from finetune.data.tasks import UnknownTaskError, get_task
from finetune.errors import ConfigError, DataError, ModelError, NonFiniteError, one_line
from finetune.run.interrupt import TrainingInterruptedError

USER_ERRORS = (ConfigError, DataError, ModelError, UnknownTaskError, FileNotFoundError)
RUN_ERRORS = (NonFiniteError,)  # the run itself went wrong: exit 1, one line


CHOICE_ERROR = re.compile(r"invalid choice: '?(?P<value>.*?)'? \(choose from (?P<choices>.*)\)")


def did_you_mean(words: list[str], known: list[str]) -> str:
    """`` (did you mean --strategy?)``: the closest known spelling of each word (difflib), or ""."""
    close = [match for word in words for match in difflib.get_close_matches(word, known, n=1)]
    return f" (did you mean {', '.join(dict.fromkeys(close))}?)" if close else ""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (exit 2), with the closest option or choice to a
    mistyped one (argparse's own ``suggest_on_error`` needs Python 3.14), and whose help shows each
    option's default, unless its help already says what an unset option means. Given
    ``dataclass_types``, it holds their fields as options, made by ``HfArgumentParser`` when first
    needed (parsing, help, usage): importing transformers takes most of a second that ``finetune
    --help`` and the other commands' parsing do without."""

    def __init__(self, *args: Any, dataclass_types: tuple[type, ...] | None = None, **kwargs: Any) -> None:
        self.option_strings: list[str] = []  # every option's spellings, for did-you-mean
        self.subcommands: argparse.Action | None = None
        super().__init__(*args, **kwargs)
        self._pending_dataclass = dataclass_types

    def error(self, message: str) -> NoReturn:
        wrong = CHOICE_ERROR.search(message)
        if wrong:
            message += did_you_mean([wrong["value"]], [c.strip(" '") for c in wrong["choices"].split(",")])
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """``ArgumentParser.parse_args``, naming the closest known option to each unrecognized one."""
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            flags = [word.split("=")[0] for word in extras if word.startswith("-")]
            self.error(f"unrecognized arguments: {' '.join(extras)}{did_you_mean(flags, self.options_of(namespace))}")
        return namespace

    def options_of(self, namespace: argparse.Namespace) -> list[str]:
        """The option strings of this parser and of the subcommand ``namespace`` chose."""
        chosen = self.subcommands and self.subcommands.choices.get(getattr(namespace, self.subcommands.dest, None))
        return self.option_strings + (chosen.option_strings if chosen else [])

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """argparse's, with " (default: ...)" after an option's help (ArgumentDefaultsHelpFormatter's
        rule); the option's spellings are kept for did-you-mean."""
        return self.noted(super().add_argument(*args, **kwargs))

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        """argparse's, whose options are noted as this parser's own are (``noted``)."""
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument
        group.add_argument = lambda *a, **k: self.noted(add(*a, **k))
        return group

    def noted(self, action: argparse.Action) -> argparse.Action:
        """An option just added: its default shown in its help, its spellings kept."""
        self.option_strings.extend(action.option_strings)
        shown = action.help and action.default is not argparse.SUPPRESS and "(default" not in action.help
        if shown and (action.option_strings or action.nargs in ("?", "*")):
            action.help += " (default: %(default)s)"
        return action

    def add_subparsers(self, **kwargs: Any) -> argparse.Action:
        """argparse's, the action kept: its ``choices`` are the subcommands' parsers."""
        self.subcommands = super().add_subparsers(**kwargs)
        return self.subcommands

    def _add_dataclass_options(self) -> None:
        if self._pending_dataclass is not None:
            from transformers import HfArgumentParser

            target, dataclass_types, self._pending_dataclass = self, self._pending_dataclass, None

            class Options(HfArgumentParser):  # it adds each field with add_argument: here, to this parser
                def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
                    return target.add_argument(*args, **kwargs)

                def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
                    return target.add_argument_group(*args, **kwargs)

            Options(dataclass_types, add_help=False)

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._add_dataclass_options()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._add_dataclass_options()
        return super().format_usage()

    def format_help(self) -> str:
        self._add_dataclass_options()
        return super().format_help()

    def set_defaults(self, **kwargs: Any) -> None:
        self._add_dataclass_options()
        super().set_defaults(**kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def read_config_file(path: str) -> dict[str, Any]:
    """The settings in a JSON or YAML file, keyed by TrainConfig field (the Hugging Face names,
    such as ``learning_rate``, are accepted as in ``run_glue.py config.json``), each checked
    against its field's type and range, a bad one refused naming the file and the key."""
    import yaml

    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"config file {file} is a folder: give a .json or .yaml file")
    if not file.is_file():
        raise ConfigError(f"no config file {file}")
    try:
        text = file.read_text()
        values = yaml.safe_load(text) if file.suffix in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{file} is not valid {'YAML' if file.suffix in ('.yaml', '.yml') else 'JSON'}: {e}"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {file}: {e.strerror}") from None
    if not isinstance(values, dict):
        raise ConfigError(f'{file} must hold a mapping of settings, such as {{"learning_rate": 5e-5}}')
    names = {
        a.lstrip("-").replace("-", "_"): f.name for f in dataclasses.fields(TrainConfig) for a in f.metadata["aliases"]
    }
    names.update({f.name: f.name for f in dataclasses.fields(TrainConfig)})
    unknown = [k for k in values if not isinstance(k, str) or k.replace("-", "_") not in names]
    if unknown:
        raise ConfigError(f"{file}: unknown settings {', '.join(map(str, unknown))}: see finetune train --help")
    settings = {}
    for key, value in values.items():
        try:
            settings[names[key.replace("-", "_")]] = file_value(names[key.replace("-", "_")], value)
        except (ConfigError, UnknownTaskError) as e:
            raise ConfigError(f"{file}: {key}: {e}") from None
    return settings


def cmd_train(args: argparse.Namespace) -> int:
    from finetune.pipeline import train

    results = train(config_from_args(args))
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under a multi-process launcher only the main process reports
    summary = {k: results[k] for k in ("validation", "test", "trainable_params", "train_runtime_s")}
    print(json.dumps({"output_dir": results["config"]["output_dir"], **summary}, indent=2))
    return 0


def _read_run(checkpoint: Path) -> dict:
    """The run's results.json ({} for a model folder without one); a damaged one is refused, and so
    is a run that did not finish (named, with the command that resumes it) or a folder that is no run."""
    path = checkpoint / "results.json"
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"no checkpoint directory {checkpoint}")
    if not path.exists():
        from finetune.run.rundir import check_finished

        check_finished(checkpoint)
        if not (checkpoint / "config.json").is_file():
            raise ConfigError(
                f"{checkpoint} is not a run directory (no results.json, model or checkpoint-<step>/ in it): "
                "pass a folder finetune train wrote"
            )
        return {}
    try:
        run = json.loads(path.read_text())
        run["config"]["task"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ConfigError(f"{path} is damaged (not the JSON finetune train writes): train the run again") from None
    return run


def cmd_evaluate(args: argparse.Namespace) -> int:
    from finetune.predict import evaluate_checkpoint

    config = _read_run(Path(args.checkpoint)).get("config", {})
    trained_on = config.get("task")
    if args.task and trained_on and get_task(args.task).name != trained_on:
        raise ConfigError(
            f"{args.checkpoint} was trained on {trained_on}, not {args.task}: drop --task or pass another run"
        )
    task = args.task or trained_on
    if task is None:
        raise ConfigError(f"{args.checkpoint} has no results.json naming its task: pass --task")
    data_dir = args.data_dir or config.get("data_dir")
    max_samples = args.max_eval_samples if args.max_eval_samples is not None else config.get("max_eval_samples")
    metrics = evaluate_checkpoint(args.checkpoint, task, args.split, data_dir, max_samples)
    print(json.dumps({"checkpoint": args.checkpoint, "task": task, "split": args.split, **(metrics or {})}, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from finetune import predict

    run = _read_run(Path(args.checkpoint))
    task_name = run.get("config", {}).get("task")
    task = get_task(task_name) if task_name else None
    modes = [bool(args.sentences), args.input is not None, args.glue_submission is not None, args.split is not None]
    if sum(modes[:3]) != 1 and not (modes[3] and not any(modes[:2])):
        raise ConfigError(
            "give one of: SENTENCE [SENTENCE], --input FILE --output FILE, --split SPLIT --output FILE, "
            "or --glue-submission DIR"
        )
    if (args.glue_submission is not None or args.split is not None) and task is None:
        raise ConfigError(f"{args.checkpoint} has no results.json naming its task: predicting a split needs it")
    data_dir = args.data_dir or run.get("config", {}).get("data_dir")
    if args.glue_submission is not None:
        if args.split not in (None, "test"):
            raise ConfigError(f"--glue-submission predicts the test split, not {args.split}: drop --split")
        target = predict.write_glue_submission(
            args.checkpoint, task, Path(args.glue_submission), data_dir, progress=not args.no_progress
        )
        print(json.dumps({"task": task.name, "split": "test", "submission": str(target)}))
        return 0
    if args.split is not None:
        if args.output is None:
            raise ConfigError("--split needs --output FILE (.tsv, .csv or .jsonl) for the predictions")
        rows = predict.predict_split(
            args.checkpoint, task, args.split, Path(args.output), data_dir, progress=not args.no_progress
        )
        print(json.dumps({"split": args.split, "output": args.output, "rows": rows}))
        return 0
    if args.batch_size is not None and args.batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    if args.input is not None:
        if args.output is None:
            raise ConfigError("--input needs --output FILE (.tsv, .csv or .jsonl) for the predictions")
        rows = predict.predict_file(args.checkpoint, Path(args.input), Path(args.output), task, args.text_columns,
                                    args.batch_size, progress=not args.no_progress)  # fmt: skip
        print(json.dumps({"input": args.input, "output": args.output, "rows": rows}))
        return 0
    label, probability = predict.predict(args.checkpoint, args.sentences, task)
    print(json.dumps({"label": label, "probability": round(probability, 4)}))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from finetune.run.hub import check_hub_access, push_run

    run = _read_run(Path(args.checkpoint))
    if not run:
        raise ConfigError(f"{args.checkpoint} has no results.json: push a run directory written by finetune train")
    token = check_hub_access(args.hub_model_id, args.hub_token)
    url = push_run(Path(args.checkpoint), run, args.hub_model_id, token, args.private)
    print(json.dumps({"checkpoint": args.checkpoint, "hub_url": url}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from finetune.analysis.report import write_report

    text = write_report([Path(d) for d in args.run_dirs], Path(args.out))
    print(text)
    print(f"\nwrote report.md and its plots to {Path(args.out).absolute()}")
    return 0


def spread_in_points(text: str) -> float:
    """``--seed-sd``'s value: a standard deviation in points, finite and not negative."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is no spread: give points of the metric, 0 or more (1.4, say)")
    return value


def cmd_compare(args: argparse.Namespace) -> int:
    from finetune.analysis.compare import compare, load_group
    from finetune.analysis.report import find_runs, unfinished_note

    groups = [load_group(find_runs([Path(d) for d in dirs]), args.split) for dirs in (args.run_dirs, args.against)]
    left_out = unfinished_note([Path(d) for d in (*args.run_dirs, *args.against)])
    if left_out:
        print(left_out, file=sys.stderr)
    result = compare(*groups, metric=args.metric, seed_sd=args.seed_sd)
    print(json.dumps(result.to_json(), indent=2) if args.json else result.describe())
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from finetune.grid import run_grid

    folder = "search" if args.search else ""
    results_dir, runs_dir = Path(args.results_dir or f"results/{folder}"), Path(args.runs_dir or f"runs/grid/{folder}")
    run_grid(args.seeds, results_dir, runs_dir, args.data_dir, only=args.only, search=args.search)
    return 0


def build_parser() -> Parser:
    parser = Parser(prog="finetune", description="Reference GLUE fine-tuning (MRPC by default).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    t = sub.add_parser(
        "train",
        dataclass_types=GROUPS,
        help="fine-tune a pretrained model on a GLUE task",
        description="Fine-tune a pretrained model on a GLUE task. Options left unset take the strategy's recipe.",
    )
    t.add_argument(
        "config_file", nargs="?", help="a JSON or YAML file of these settings; flags override it (default: none)"
    )
    parser.train_parser = t
    e = sub.add_parser("evaluate", help="metrics of a saved run on a split")
    e.add_argument("--checkpoint", required=True, help="a run directory written by finetune train")
    e.add_argument("--split", choices=("validation", "test"), default="validation", help="which split")
    e.add_argument("--task", help="default: the task in the run's results.json")
    e.add_argument("--data-dir", help="GLUE root (default: the run's, else $GLUE_DIR)")
    e.add_argument("--max-eval-samples", type=int, help="use only the first N examples (default: as many as the run)")
    p = sub.add_parser(
        "predict",
        help="labels for a sentence (pair), a file of them, or the GLUE server's test file",
        description="Label one sentence or pair; every row of a .tsv/.csv/.jsonl file (--input, --output); or "
        "the task's test split in the GLUE server's format (--glue-submission DIR).",
    )
    p.add_argument("--checkpoint", required=True, help="a run directory written by finetune train")
    p.add_argument("sentences", nargs="*", metavar="SENTENCE", help="one sentence, or two for a pair task")
    p.add_argument("--input", help="a .tsv, .csv or .jsonl file with a header (or keys) naming its columns")
    p.add_argument("--output", help="where the predictions go: .tsv, .csv or .jsonl")
    p.add_argument("--text-columns", nargs="+", metavar="COLUMN",
                   help="the input's text columns (default: the task's, e.g. sentence1 sentence2)")  # fmt: skip
    p.add_argument("--batch-size", type=int, help="examples per forward pass (default: the run's evaluation batch)")
    p.add_argument("--glue-submission", metavar="DIR", help="write DIR/<TASK>.tsv for the GLUE server")
    p.add_argument(
        "--split",
        choices=("validation", "test"),
        help="predict every example of this split of the run's task (with --output; default: none)",
    )
    p.add_argument("--data-dir", help="GLUE root for --split, --glue-submission (default: the run's, else $GLUE_DIR)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    u = sub.add_parser("push", help="upload a finished run (model, tokenizer, results, model card) to the Hub")
    u.add_argument("--checkpoint", required=True, help="a run directory written by finetune train")
    u.add_argument("--hub-model-id", required=True, help="the repository: NAME or USER/NAME")
    u.add_argument("--hub-token", help="default: HF_TOKEN or the token of `hf auth login`")
    u.add_argument("--private", action="store_true", help="create the repository private")
    r = sub.add_parser("report", help="comparison table and plots across runs")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, or folders holding them")
    r.add_argument("--out", default="report", help="where the PNG plots and report.md go")
    c = sub.add_parser(
        "compare",
        help="is the difference between two groups of runs real? (paired over the same examples)",
        description="Group A's mean metric minus group B's, on the same examples of a split, from the runs' "
        "predictions files: a 95% t interval for the settings, counting both the seeds' spread and the "
        "examples' (the verdict), the interval of these runs only, McNemar's test for one run against one. "
        "See docs/finetune/reading-the-numbers.md.",
    )
    c.add_argument("run_dirs", nargs="+", metavar="A_RUN", help="group A: run directories, or folders holding them")
    c.add_argument("--against", nargs="+", required=True, metavar="B_RUN", help="group B, the same way (required)")
    c.add_argument("--metric", choices=("accuracy", "f1"), default="accuracy", help="what to compare")
    c.add_argument("--split", choices=("validation", "test"), default="validation", help="on which examples")
    c.add_argument(
        "--seed-sd",
        type=spread_in_points,
        metavar="POINTS",
        help="the seed-to-seed spread of one run, in points, for a side of a single run (default: the other "
        "side's, if it has several runs)",
    )
    c.add_argument("--json", action="store_true", help="print one JSON object (fractions, as in results.json)")
    g = sub.add_parser("grid", help="the reference runs on full MRPC, one results.json per finished run")
    g.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="one run of each setting per seed")
    g.add_argument("--search", action="store_true", help="the recipe search's runs instead (finetune/grid.py)")
    g.add_argument("--results-dir", help="where each run's results.json is kept (default results/, results/search/)")
    g.add_argument("--runs-dir", help="where the models go, not committed (default runs/grid/, runs/grid/search/)")
    g.add_argument("--data-dir", help="GLUE root (default $GLUE_DIR)")
    g.add_argument("--only", nargs="+", metavar="NAME", help="these runs only, e.g. native-full trainer-full")
    return parser


STACK = ("torch", "transformers", "datasets", "accelerate", "sklearn", "yaml")  # imported as; pyproject's [finetune]


def missing_stack() -> list[str]:
    """The libraries of finetune's stack that are not installed (``pip install .`` gives minigrad only)."""
    return [name for name in STACK if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    missing = missing_stack()
    if missing:
        print(
            f"finetune: its libraries are not installed (missing: {', '.join(missing)}); install them: "
            "pip install 'minigrad-finetune[finetune]' (in a checkout: pip install -e '.[finetune]')",
            file=sys.stderr,
        )
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "compare":  # compare reads prediction files only: no torch or transformers to load
        from finetune.pipeline import quiet_libraries

        quiet_libraries()
    commands = {
        "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "push": cmd_push, "report": cmd_report,
        "compare": cmd_compare, "grid": cmd_grid,
    }  # fmt: skip
    try:
        if args.command == "train" and args.config_file:  # the file's settings become the defaults
            parser.train_parser.set_defaults(**read_config_file(args.config_file))
            args = parser.parse_args(argv)
        return commands[args.command](args)
    except USER_ERRORS as e:
        print(f"finetune {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except RUN_ERRORS as e:
        print(f"finetune {args.command}: error: {e}", file=sys.stderr)
        return 1
    except TrainingInterruptedError as e:
        print(f"finetune {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("finetune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
