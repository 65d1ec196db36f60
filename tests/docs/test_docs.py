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

ROOT = Path(__file__).resolve().parents[2]
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
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]


EXCERPT = re.compile(r"^```py\n(.*?)^```", re.S | re.M)  # a ```py block quotes the source
OP_CLASS = re.compile(r"^class \w+\(Function\):\n.*?(?=\n\n\n|\Z)", re.S | re.M)


def test_the_code_shown_is_the_real_code():
    """Every ```py excerpt, and every op class a snippet defines, is minigrad's own source, letter
    for letter: the engine the docs walk through is the one that runs."""
    source = "\n".join(path.read_text() for path in (ROOT / "minigrad").rglob("*.py"))
    shown = [block for page in PAGES for block in EXCERPT.findall(page.read_text())]
    shown += [cls for page in PAGES for _, code in SNIPPET.findall(page.read_text()) for cls in OP_CLASS.findall(code)]
    assert len(shown) >= 3  # the engine, apply and an op
    for block in shown:
        assert block in source, f"not minigrad's code:\n{block}"


def run_example(module: str) -> str:
    done = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_rnn_cell_numbers_quoted_are_printed():
    out = run_example("minigrad.examples.rnn_cell")
    differences = [float(d) for d in re.findall(r"for W_[hx]\.grad \S+ \S+: (\S+)", out)]
    bound = re.search(r"below `(\S+)` for both `W_h` and `W_x`", (ROOT / "README.md").read_text())
    assert len(differences) == 2 and bound, out
    assert max(differences) < float(bound[1])  # the last bits depend on the CPU: the README quotes a bound


def test_the_mlp_numbers_quoted_are_printed():
    out = run_example("minigrad.examples.train_mlp")
    difference = float(re.search(r"largest per-step loss difference: (\S+)", out)[1])
    accuracy = re.search(r"test accuracy \(minigrad model\): \S+", out)[0]
    page = (ROOT / "docs" / "minigrad" / "training.md").read_text()
    bound = re.search(r"largest per-step loss difference\s+stays below `(\S+)`", page)
    assert bound and difference < float(bound[1])  # the last bits depend on the CPU: the page quotes a bound
    assert f"`{accuracy}`" in page
