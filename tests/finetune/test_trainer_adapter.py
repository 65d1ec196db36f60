"""finetune/trainer_adapter.py touches private members of the Trainer: it holds only with the
transformers releases it was tested with, which pyproject.toml pins. These tests fail, saying
what to do, when the installed transformers is outside that range or lacks one of the members."""

import inspect
from pathlib import Path

import pytest
import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from finetune.trainer_adapter import TESTED_TRANSFORMERS

PRIVATE_MEMBERS = ("_get_train_sampler", "_save_checkpoint", "_tr_loss", "_globalstep_last_logged")


def test_the_installed_transformers_is_in_the_tested_range():
    installed = Version(transformers.__version__)
    if installed not in SpecifierSet(TESTED_TRANSFORMERS):
        pytest.fail(
            f"transformers {installed} is outside {TESTED_TRANSFORMERS}, the range finetune/trainer_adapter.py "
            f"was tested with (it uses the Trainer's private {', '.join(PRIVATE_MEMBERS)}): install "
            f"'transformers{TESTED_TRANSFORMERS}', or run tests/finetune/test_resume.py with this version and "
            "widen the range in trainer_adapter.py and pyproject.toml"
        )


def test_pyproject_pins_the_tested_range():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert f"transformers{TESTED_TRANSFORMERS}" in project["optional-dependencies"]["finetune"]  # finetune's stack


def test_the_trainer_has_the_private_members_the_adapter_uses():
    source = inspect.getsource(transformers.Trainer)
    missing = [m for m in PRIVATE_MEMBERS if m not in source]
    assert not missing, f"transformers {transformers.__version__}'s Trainer has no {missing}: update trainer_adapter.py"
