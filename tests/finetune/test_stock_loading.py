"""A run directory is a stock Hugging Face model directory: a Python that cannot import finetune
loads it with ``AutoTokenizer``, ``AutoModelForSequenceClassification`` and ``pipeline``
(``trust_remote_code=True``: the mean head's code, ``mean_pooling.py``, is saved beside the
weights), with the task's label names and no question asked, and gets the probabilities
``finetune predict`` gives. A client that leaves ``trust_remote_code`` out gets an error, never
another head."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import finetune
from finetune.cli import main
from finetune.config import TrainConfig

PAIRS = [
    ("The cat sat on the mat.", "A cat was sitting on the mat."),
    ('He said "no" twice, then left.', "The stock fell 5% on Monday."),
    ("Short.", "A much longer second sentence that pads the batch with many more tokens than the others."),
]

PROMPT = "Do you wish to run the custom code?"  # what transformers asks on stdin when unsure

# Run with `python -I` (no current directory, no PYTHONPATH, no user site); the venv's
# site-packages stay, and with them the editable install's finder for this project: drop it.
WITHOUT_FINETUNE = """
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
try:
    import finetune
except ImportError:
    pass
else:
    raise SystemExit(f"finetune is importable here: {finetune.__file__}")
"""

STOCK_CLIENT = (
    WITHOUT_FINETUNE
    + """
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

run, pairs = sys.argv[1], json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(run, trust_remote_code=True)
model = AutoModelForSequenceClassification.from_pretrained(run, trust_remote_code=True)
classifier = pipeline("text-classification", model=run, trust_remote_code=True, device=-1)
rows = classifier([{"text": a, "text_pair": b} for a, b in pairs], top_k=None)
with torch.no_grad():
    direct = [model(**tokenizer(a, b, return_tensors="pt")).logits.softmax(-1)[0].tolist() for a, b in pairs]
print(json.dumps({"module": type(model).__module__, "id2label": model.config.id2label, "direct": direct,
                  "scores": [{s["label"]: s["score"] for s in row} for row in rows]}))
"""
)

# Each way of opening the run, without trust_remote_code: what it gets (a class, or an error)
FORGETFUL_CLIENT = (
    WITHOUT_FINETUNE
    + """
from transformers import AutoModelForSequenceClassification, pipeline

run, got = sys.argv[1], {}
for name, load in [("model", lambda: AutoModelForSequenceClassification.from_pretrained(run)),
                   ("pipeline", lambda: pipeline("text-classification", model=run, device=-1).model)]:
    try:
        got[name] = type(load()).__name__
    except ValueError as e:
        got[name] = str(e)
print("RESULT", json.dumps(got))  # after any question, which ends without a newline
"""
)


def without_finetune(script: str, args: list[str], modules_cache: Path, answer: str | None = None):
    """Run ``script`` in a fresh Python without finetune. Its stdin is a pipe that stays open:
    a question on stdin would show in the output (and, unanswered, wait for transformers' 15 s
    timeout); ``answer`` is what to type if asked."""
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(modules_cache), "PATH": "/usr/bin:/bin"}
    with subprocess.Popen(
        [sys.executable, "-I", "-c", script, *args],
        env=env,
        cwd=modules_cache.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = proc.communicate(answer, timeout=600)  # fmt: skip
    return proc.returncode, out, err


def load_without_finetune(run: Path, pairs: list[tuple[str, str]], modules_cache: Path) -> dict:
    """What a fresh Python without finetune gets from ``run`` (the model's class module, labels, scores)."""
    code, out, err = without_finetune(STOCK_CLIENT, [str(run), json.dumps(pairs)], modules_cache)
    assert code == 0, err[-3000:]
    assert PROMPT not in out + err, "a line of the client asked on stdin"
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run_dir(tiny_models, glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("stock") / "run"
    # float32: what pipeline computes (a run evaluated under bf16 autocast: see docs/finetune/ecosystem.md)
    finetune.train(TrainConfig(model=tiny_models["bert"], data_dir=glue_dir, output_dir=str(out), epochs=1,
                               max_train_samples=16, max_eval_samples=16, disable_tqdm=True,
                               mixed_precision="no"))  # fmt: skip
    return out


def test_a_run_loads_without_finetune_and_gives_predicts_probabilities(run_dir, tmp_path, capsys):
    import finetune.model.mean_pooling

    assert (run_dir / "mean_pooling.py").read_bytes() == Path(finetune.model.mean_pooling.__file__).read_bytes()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "mean_pooling.MeanPoolingConfig",
        "AutoModelForSequenceClassification": "mean_pooling.MeanPoolingClassifier",
    }
    stock = load_without_finetune(run_dir, PAIRS, tmp_path / "modules")
    assert stock["module"].startswith("transformers_modules.")  # the run's own copy of the code
    assert stock["id2label"] == {"0": "not_equivalent", "1": "equivalent"}

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sentence1\tsentence2\n" + "".join(f"{a}\t{b}\n" for a, b in PAIRS))
    assert main(["predict", "--checkpoint", str(run_dir), "--input", str(pairs), "--output",
                 str(tmp_path / "p.jsonl"), "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    predicted = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    for row, scores, direct in zip(predicted, stock["scores"], stock["direct"], strict=True):
        assert max(scores, key=scores.get) == row["label_name"]
        assert scores[row["label_name"]] == pytest.approx(row["probability"], abs=1e-4)
        assert direct[row["label"]] == pytest.approx(row["probability"], abs=1e-4)  # tokenizer + model by hand


def test_a_client_without_trust_remote_code_gets_an_error_not_another_head(run_dir, tmp_path):
    # stdin answers no, as a user at a terminal would to transformers' question; without a terminal
    # (stdin closed) transformers raises the same error without asking
    code, out, err = without_finetune(FORGETFUL_CLIENT, [str(run_dir)], tmp_path / "modules", answer="n\nn\n")
    assert code == 0, err[-3000:]
    got = json.loads(out.rpartition("RESULT ")[2])
    for name in ("model", "pipeline"):
        assert "pass the argument `trust_remote_code=True`" in got[name], (name, got[name])


def test_the_tokenizer_line_needs_trust_remote_code_too(run_dir, tmp_path):
    """Why the snippet passes trust_remote_code=True to AutoTokenizer as well: transformers reads the
    run's config (the head's own class) to find the tokenizer, and asks about its code otherwise."""
    script = WITHOUT_FINETUNE + "from transformers import AutoTokenizer\nAutoTokenizer.from_pretrained(sys.argv[1])"
    code, out, err = without_finetune(script, [str(run_dir)], tmp_path / "modules", answer="n\n")
    assert code == 0, err[-3000:]
    assert PROMPT in out + err  # the question the client's snippet avoids (and the check above looks for)


def test_finetune_loads_a_run_with_its_installed_class(run_dir):
    from finetune.predict import load_classifier

    model, _ = load_classifier(str(run_dir))
    assert type(model).__module__ == "finetune.model.mean_pooling"  # never the run directory's copy
