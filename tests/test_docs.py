"""The documentation runs as pasted: every Python snippet in README.md and docs/ is executed in a
fresh interpreter (in an empty folder, GLUE_DIR set as the set-up says), and the numbers quoted
from the examples are the ones the examples print."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SNIPPET = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)


def snippets() -> list:
    found = []
    for page in PAGES:
        text = page.read_text()
        for n, match in enumerate(SNIPPET.finditer(text), start=1):
            name = f"{page.relative_to(ROOT)}#{n}"
            found.append(pytest.param(textwrap.dedent(match[2]), id=name))
    return found


def test_the_docs_have_snippets():
    assert len(snippets()) >= 7  # the pattern finds them (an empty list would pass every test)


@pytest.mark.parametrize("code", snippets())
def test_snippet_runs_as_pasted(code, glue_dir, tmp_path):
    env = {**os.environ, "GLUE_DIR": os.path.abspath(glue_dir), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def run_example(module: str) -> str:
    done = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_rnn_cell_numbers_quoted_are_printed():
    out = run_example("minigrad.examples.rnn_cell")
    w_h, w_x = re.findall(r"for W_[hx]\.grad \S+ \S+: (\S+)", out)
    assert f"`{w_h}` for `W_h` and `{w_x}` for `W_x`" in (ROOT / "README.md").read_text()


def test_the_mlp_numbers_quoted_are_printed():
    out = run_example("minigrad.examples.train_mlp")
    difference = re.search(r"largest per-step loss difference: \S+", out)[0]
    accuracy = re.search(r"test accuracy \(minigrad model\): \S+", out)[0]
    page = (ROOT / "docs" / "minigrad" / "training.md").read_text()
    assert f"`{difference}`" in page and f"`{accuracy}`" in page
