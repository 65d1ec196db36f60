"""minigrad needs NumPy (and SciPy) only: it imports and runs the README's seed example where
torch and transformers cannot be imported, and ``finetune`` without its stack says in one line
what to install. (A bare ``pip install .`` in a fresh virtual environment is the real check; these
tests block the imports instead, so that they run inside the developers' environment.)"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = """
    import importlib.abc
    import sys

    class NotInstalled(importlib.abc.MetaPathFinder):
        \"\"\"As if these were not installed: importing them raises ModuleNotFoundError.\"\"\"

        blocked = ("torch", "transformers", "datasets", "accelerate", "finetune")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
"""


def seed_example() -> str:
    """The README's minigrad snippet, as the README shows it."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(import minigrad as mg\n.*?)```", readme, re.S)[1]
    assert "W_h.grad" in code
    return code


def run(code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_minigrad_runs_the_seed_example_without_torch_or_transformers():
    code = (
        textwrap.dedent(BLOCKER)
        + seed_example()
        + textwrap.dedent("""
        import sys
        assert not any(name.split(".")[0] in ("torch", "transformers") for name in sys.modules), "imported torch"
        try:
            import torch  # noqa: F401
        except ModuleNotFoundError:
            print("torch blocked")
    """)
    )
    done = run(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("torch blocked") and "tensor(" in done.stdout


def test_finetune_without_its_stack_says_what_to_install():
    """``-S``: no site-packages at all (none of torch, transformers, ...); the repository on the path."""
    code = f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from finetune.cli import main
        sys.exit(main(["train", "--output-dir", "runs/never"]))
    """
    done = run(code, "-S")
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing: torch, transformers" in lines[0]
    assert "pip install 'minigrad-finetune[finetune]'" in lines[0]


def test_minigrad_depends_on_numpy_and_scipy_only_and_dev_installs_finetunes_stack():
    """``pip install .`` gives minigrad; the README's set-up (``.[dev]``) still installs everything."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(re.match(r"[\w-]+", d)[0] for d in project["dependencies"]) == ["numpy", "scipy"]
    extras = project["optional-dependencies"]
    assert "minigrad-finetune[finetune]" in extras["dev"]
    assert any(d.startswith("torch") for d in extras["finetune"])
