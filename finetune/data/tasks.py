"""The GLUE tasks: their columns, labels, metrics and the files of the GLUE layout.

Names and features are the Hub's (``nyu-mll/glue`` config names), so a dataset built from local
files is interchangeable with one loaded from the Hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GlueTask:
    name: str
    folder: str  # the task's folder under the GLUE root
    text_columns: tuple[str, ...]  # the Hub's feature names, in model-input order
    label_names: tuple[str, ...] | None  # None: a regression task (STS-B)
    metric: str  # "accuracy_f1" | "matthews" | "pearson_spearman" | "accuracy"
    # split name -> file name in the folder; the Hub's split names
    files: dict[str, str] = field(default_factory=dict)
    # how to read the TSV: the file's column for each text column and for the label,
    # by header name, or by position for header-less files (CoLA's train/dev)
    file_text_columns: tuple[str | int, ...] = ()
    file_label_column: str | int | None = "label"
    header: bool = True

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def main_metric(self) -> str:
        return {"accuracy_f1": "accuracy", "matthews": "matthews", "pearson_spearman": "pearson"}.get(
            self.metric, "accuracy"
        )

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The names of the validation metrics an evaluation reports (``loss`` too)."""
        names = {
            "accuracy_f1": ("accuracy", "f1"),
            "matthews": ("matthews", "accuracy"),
            "pearson_spearman": ("pearson", "spearman"),
        }.get(self.metric, ("accuracy",))
        return (*names, "loss")


_STANDARD = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}

TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in [
        GlueTask(
            "cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), "matthews", _STANDARD,
            file_text_columns=(3,), file_label_column=1, header=False,
        ),
        GlueTask("sst2", "SST-2", ("sentence",), ("negative", "positive"), "accuracy", _STANDARD,
                 file_text_columns=("sentence",)),
        GlueTask(
            "mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "accuracy_f1",
            {"train": "msr_paraphrase_train.txt", "validation": "dev_ids.tsv", "test": "msr_paraphrase_test.txt"},
            file_text_columns=("#1 String", "#2 String"), file_label_column="Quality",
        ),
        GlueTask("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"), "accuracy_f1",
                 _STANDARD, file_text_columns=("question1", "question2"), file_label_column="is_duplicate"),
        GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), None, "pearson_spearman", _STANDARD,
                 file_text_columns=("sentence1", "sentence2"), file_label_column="score"),
        GlueTask(
            "mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), "accuracy",
            {
                "train": "train.tsv",
                "validation_matched": "dev_matched.tsv",
                "validation_mismatched": "dev_mismatched.tsv",
                "test_matched": "test_matched.tsv",
                "test_mismatched": "test_mismatched.tsv",
            },
            file_text_columns=("sentence1", "sentence2"), file_label_column="gold_label",
        ),
        GlueTask("qnli", "QNLI", ("question", "sentence"), ("entailment", "not_entailment"), "accuracy",
                 _STANDARD, file_text_columns=("question", "sentence")),
        GlueTask("rte", "RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment"), "accuracy",
                 _STANDARD, file_text_columns=("sentence1", "sentence2")),
        GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), ("not_entailment", "entailment"), "accuracy",
                 _STANDARD, file_text_columns=("sentence1", "sentence2")),
    ]
}  # fmt: skip


class UnknownTaskError(ValueError):
    """A task name that is not one of the GLUE config names."""


def get_task(name: str) -> GlueTask:
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}") from None


def validation_split(task: GlueTask) -> str:
    return "validation_matched" if task.name == "mnli" else "validation"


def test_split(task: GlueTask) -> str:
    return "test_matched" if task.name == "mnli" else "test"
