"""``finetune predict`` on files (.tsv, .csv, .jsonl) and for the GLUE server: the same answers as
one pair at a time, in the input's order; bad files refused with their line, nothing written."""

import csv
import json

import numpy as np
import pytest

import finetune
from finetune.cli import main
from finetune.config import TrainConfig

PAIRS = [
    ("The cat sat on the mat.", "A cat was sitting on the mat."),
    ('He said "no" twice, then left.', "The stock fell 5% on Monday."),
    ("Revenue rose, as expected.", "Revenue went up, as analysts had predicted."),
    ("Short.", "A much longer second sentence that pads the batch with many more tokens than the others."),
]


@pytest.fixture(scope="module")
def run_dir(tiny_models, glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "run"
    finetune.train(TrainConfig(model=tiny_models["bert"], data_dir=glue_dir, output_dir=str(out), epochs=1,
                               max_train_samples=16, max_eval_samples=16, disable_tqdm=True))  # fmt: skip
    return out


def _cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _one_at_a_time(capsys, run_dir):
    answers = []
    for a, b in PAIRS:
        code, out, _ = _cli(capsys, "predict", "--checkpoint", str(run_dir), a, b)
        assert code == 0
        answers.append(json.loads(out.strip().splitlines()[-1]))
    return answers


def _write(path, pairs, columns=("sentence1", "sentence2")):
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(columns, p))) + "\n" for p in pairs))
    elif suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(pairs)
    else:
        path.write_text("\t".join(columns) + "\n" + "".join("\t".join(p) + "\n" for p in pairs))


@pytest.mark.parametrize(("source", "target"), [(".tsv", ".tsv"), (".csv", ".jsonl"), (".jsonl", ".csv")])
def test_a_file_gets_the_answers_of_one_pair_at_a_time_in_its_order(capsys, run_dir, tmp_path, source, target):
    expected = _one_at_a_time(capsys, run_dir)
    src, dst = tmp_path / f"pairs{source}", tmp_path / f"predictions{target}"
    _write(src, PAIRS)
    code, out, err = _cli(capsys, "predict", "--checkpoint", str(run_dir), "--input", str(src), "--output", str(dst),
                          "--batch-size", "3", "--no-progress")  # fmt: skip
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["rows"] == len(PAIRS)
    if target == ".jsonl":
        rows = [json.loads(line) for line in dst.read_text().splitlines()]
    else:
        with open(dst, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if target == ".tsv" else ","))
    assert [int(r["index"]) for r in rows] == list(range(len(PAIRS)))
    for row, answer in zip(rows, expected):
        assert row["label_name"] == answer["label"]
        assert float(row["probability"]) == pytest.approx(answer["probability"], abs=1e-3)
        assert {"0": "not_equivalent", "1": "equivalent"}[str(row["label"])] == row["label_name"]


def test_other_column_names_are_given_with_text_columns(capsys, run_dir, tmp_path):
    src, dst = tmp_path / "q.tsv", tmp_path / "out.tsv"
    _write(src, PAIRS, columns=("left", "right"))
    code, _, err = _cli(capsys, "predict", "--checkpoint", str(run_dir), "--input", str(src), "--output", str(dst))
    assert code == 2 and "q.tsv, line 2: no column 'sentence1' (it has left, right)" in err and not dst.exists()
    code, _, err = _cli(capsys, "predict", "--checkpoint", str(run_dir), "--input", str(src), "--output", str(dst),
                        "--text-columns", "left", "right")  # fmt: skip
    assert code == 0, err and len(dst.read_text().splitlines()) == len(PAIRS) + 1


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.tsv", "sentence1\tsentence2\na\tb\nc\n", "bad.tsv, line 3: 1 fields, but the header has 2"),
        ("bad.tsv", "sentence1\tsentence2\na\t \n", "bad.tsv, line 2: column 'sentence2' is empty or not text"),
        ("bad.jsonl", '{"sentence1": "a", "sentence2": "b"}\n{"sentence1": "a",\n', "bad.jsonl, line 2: not JSON"),
        ("bad.jsonl", '["a", "b"]\n', "bad.jsonl, line 1: a JSON object is needed, got list"),
        ("bad.jsonl", '{"sentence1": "a", "sentence2": 3}\n', "line 1: column 'sentence2' is empty or not text"),
        ("empty.csv", "", "empty.csv is empty: it needs a header line"),
        ("header.csv", "sentence1,sentence2\n", "header.csv holds no rows to predict"),
        ("pairs.txt", "x", "unknown format .txt: give a .tsv, .csv or .jsonl file"),
        ("latin1.tsv", b"sentence1\tsentence2\ncaf\xe9\tb\n", "latin1.tsv:2: bytes that are not UTF-8 text"),
    ],
)
def test_bad_input_files_exit_2_naming_file_and_line(capsys, run_dir, tmp_path, name, content, message):
    src, dst = tmp_path / name, tmp_path / "out.tsv"
    src.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, _, err = _cli(capsys, "predict", "--checkpoint", str(run_dir), "--input", str(src), "--output", str(dst))
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not dst.exists() and not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{src}"], "--input needs --output FILE"),
        (["--input", "{src}", "--output", "{src}"], "is the input file: write the predictions elsewhere"),
        (["--input", "{src}", "--output", "{tmp}/nowhere/out.tsv"], "no directory"),
        (["--input", "{src}", "--output", "{tmp}/out.xlsx"], "give a .tsv, .csv or .jsonl file name"),
        (["A cat.", "--input", "{src}", "--output", "{tmp}/o.tsv"], "give one of: SENTENCE [SENTENCE], --input"),
        ([], "give one of"),
    ],
)
def test_bad_predict_options_exit_2(capsys, run_dir, tmp_path, args, message):
    src = tmp_path / "pairs.tsv"
    _write(src, PAIRS)
    before = src.read_bytes()
    args = [a.format(src=src, tmp=tmp_path) for a in args]
    code, _, err = _cli(capsys, "predict", "--checkpoint", str(run_dir), *args)
    assert code == 2 and message in err, err
    assert src.read_bytes() == before


def test_glue_submission_for_mrpc_matches_the_test_metrics(capsys, run_dir, tmp_path, glue_dir):
    out = tmp_path / "submission"
    code, _, err = _cli(capsys, "predict", "--checkpoint", str(run_dir), "--split", "test", "--glue-submission",
                        str(out), "--data-dir", glue_dir, "--no-progress")  # fmt: skip
    assert code == 0, err
    lines = (out / "MRPC.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 1 + 1725  # every MRPC test pair, GLUE's order
    rows = [line.split("\t") for line in lines[1:]]
    assert [int(i) for i, _ in rows] == list(range(1725)) and {p for _, p in rows} <= {"0", "1"}

    from finetune.data.glue import load_glue

    labels = np.array(load_glue("mrpc", glue_dir)["test"]["label"])
    accuracy = float((np.array([int(p) for _, p in rows]) == labels).mean())
    code, out_eval, err = _cli(capsys, "evaluate", "--checkpoint", str(run_dir), "--split", "test", "--data-dir",
                               glue_dir, "--max-eval-samples", "1725")  # fmt: skip
    assert code == 0, err
    assert accuracy == json.loads(out_eval[out_eval.index("{") :])["accuracy"]  # the same computation: exactly


def test_a_byte_order_mark_is_not_part_of_the_header(capsys, run_dir, tmp_path):
    src, dst = tmp_path / "excel.tsv", tmp_path / "out.tsv"
    src.write_bytes(b"\xef\xbb\xbf" + ("sentence1\tsentence2\n" + "\t".join(PAIRS[0]) + "\n").encode())
    code, _, err = _cli(capsys, "predict", "--checkpoint", str(run_dir), "--input", str(src), "--output", str(dst))
    assert code == 0, err
    assert len(dst.read_text().splitlines()) == 2
