"""The layout is the architecture (the map in ``finetune/__init__.py``): each folder imports only
from the floors below it, and no loop imports another loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import finetune

PACKAGE = Path(finetune.__file__).parent

# Floors, lowest first: a module may import from its own floor and the ones below.
FLOORS = (
    ("errors",),
    ("data",),
    ("model",),
    ("config",),
    ("run",),
    ("analysis",),
    ("loops",),
    ("pipeline", "predict", "grid"),
    ("cli", "__main__", "__init__"),
)
LOOPS = {"finetune.loops.native", "finetune.loops.accelerated", "finetune.loops.trainer"}


def floor(module: str) -> int:
    """The floor of ``finetune.<part>[.<module>]``: its folder's, or its own at the top level."""
    part = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, parts in enumerate(FLOORS) if part in parts)


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)
        found[name] = path
    return found


def imports_of(path: Path) -> set[str]:
    """Every finetune module ``path`` imports, at the top or inside a function (a lazy import is
    still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("finetune"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("finetune"))
    return found


def test_every_module_has_a_floor():
    for name in modules():
        floor(name)  # StopIteration names a module outside the map


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_go_down_only(module):
    path = modules()[module]
    upward = [m for m in imports_of(path) if m != "finetune" and floor(m) > floor(module)]
    assert not upward, f"{module} (floor {floor(module)}) imports from a floor above: {upward}"


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_no_loop_imports_another(loop):
    assert not (imports_of(modules()[loop]) & (LOOPS - {loop}))


def test_the_check_finds_an_upward_import(tmp_path):
    """The checks can fail: a model module importing a loop is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from finetune.loops.native import train_native\n")
    assert [m for m in imports_of(bad) if floor(m) > floor("finetune.model.bad")] == ["finetune.loops.native"]


TOP = {"finetune", "finetune.cli", "finetune.pipeline", "finetune.grid", "finetune.config"}


def takes_the_whole_config(path: Path) -> list[str]:
    """The functions in ``path`` with a parameter annotated ``TrainConfig``."""
    return [
        node.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for arg in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)
        if arg.annotation is not None and "TrainConfig" in ast.unparse(arg.annotation)
    ]


@pytest.mark.parametrize("module", sorted(set(modules()) - TOP))
def test_parts_receive_their_settings_not_the_whole_config(module):
    """Only the top (the CLI, ``finetune.train``, the grid) holds a TrainConfig; each part below is
    handed the groups it uses (``finetune.config.LoopSettings`` for a loop) or plain arguments."""
    assert not takes_the_whole_config(modules()[module])


def test_the_config_check_finds_a_part_taking_the_whole_config(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def build(optimizer, cfg: 'TrainConfig', n: int): ...\n")
    assert takes_the_whole_config(bad) == ["build"]
