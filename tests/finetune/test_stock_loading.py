"""A run directory is a stock Hugging Face model directory: a Python that cannot import finetune
loads it with ``AutoModelForSequenceClassification`` and ``pipeline`` (``trust_remote_code=True``:
the mean head's code, ``mean_pooling.py``, is saved beside the weights), with the task's label
names, and gets the probabilities ``finetune predict`` gives."""

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

# Run with `python -I` (no current directory, no PYTHONPATH, no user site); the venv's
# site-packages stay, and with them the editable install's finder for this project: drop it.
STOCK_LOADER = """
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
try:
    import finetune
except ImportError:
    pass
else:
    raise SystemExit(f"finetune is importable here: {finetune.__file__}")
from transformers import AutoModelForSequenceClassification, pipeline

run, pairs = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForSequenceClassification.from_pretrained(run, trust_remote_code=True)
classifier = pipeline("text-classification", model=run, trust_remote_code=True, device=-1)
rows = classifier([{"text": a, "text_pair": b} for a, b in pairs], top_k=None)
print(json.dumps({"module": type(model).__module__, "id2label": model.config.id2label,
                  "scores": [{s["label"]: s["score"] for s in row} for row in rows]}))
"""


def load_without_finetune(run: Path, pairs: list[tuple[str, str]], modules_cache: Path) -> dict:
    """What a fresh Python without finetune gets from ``run`` (the model's class module, labels, scores)."""
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(modules_cache), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-I", "-c", STOCK_LOADER, str(run), json.dumps(pairs)], env=env,
                          cwd=modules_cache.parent, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run_dir(tiny_models, glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("stock") / "run"
    # float32: what pipeline computes (a run evaluated under bf16 autocast: see docs/finetune/ecosystem.md)
    finetune.train(TrainConfig(model=tiny_models["bert"], data_dir=glue_dir, output_dir=str(out), epochs=1,
                               max_train_samples=16, max_eval_samples=16, disable_tqdm=True,
                               mixed_precision="no"))  # fmt: skip
    return out


def test_a_run_loads_without_finetune_and_gives_predicts_probabilities(run_dir, tmp_path, capsys):
    import finetune.mean_pooling

    assert (run_dir / "mean_pooling.py").read_bytes() == Path(finetune.mean_pooling.__file__).read_bytes()
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
    for row, scores in zip(predicted, stock["scores"], strict=True):
        assert max(scores, key=scores.get) == row["label_name"]
        assert scores[row["label_name"]] == pytest.approx(row["probability"], abs=1e-4)


def test_finetune_loads_a_run_with_its_installed_class(run_dir):
    from finetune.predict import load_classifier

    model, _ = load_classifier(str(run_dir))
    assert type(model).__module__ == "finetune.mean_pooling"  # never the run directory's copy
