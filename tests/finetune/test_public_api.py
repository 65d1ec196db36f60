"""finetune uses other libraries through their public names only, so a new release of transformers,
argparse or torch cannot break it by renaming an internal. A name with one leading underscore is
private to whoever defines it; this reads finetune's source (``ast``) and finds every use of such a
name that finetune does not own:

- an attribute ``x._name`` (read, written or deleted), or ``getattr(x, "_name")`` and its kin,
  where no finetune module defines ``_name``;
- ``from library import _name``;
- a finetune class that defines (``def _name``, ``_name = ...``, ``self._name = ...``) a private
  name its library base class already has: overriding ``Trainer._save_checkpoint`` or writing
  ``Trainer._tr_loss`` is using the library's internals even though finetune's source defines it.

Dunder names (``__init__``) are Python's protocol, not private, and are not counted.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
import textwrap
from pathlib import Path

import finetune

PRIVATE = re.compile(r"^_[^_]")
ATTRIBUTE_FUNCTIONS = {"getattr", "setattr", "hasattr", "delattr"}


def imported_names(tree: ast.Module) -> dict[str, str]:
    """Each name a module imports (at any depth, functions' local imports included) -> its dotted origin."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:  # import a.b binds a; import a.b as c binds c to a.b
                bound = alias.asname or alias.name.split(".")[0]
                names[bound] = alias.name if alias.asname else bound
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := dotted(node.value)):
        return f"{base}.{node.attr}"
    return None


def resolve(path: str) -> object:
    """The object a dotted path names: the longest importable module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    return getattr(builtins, path)


def library_privates(cls: type, package: str) -> set[str]:
    """The private names of ``cls``'s bases outside ``package``: their attributes, and the
    ``self._name`` their source writes or reads (instance attributes such as ``Trainer._tr_loss``)."""
    names = set()
    for base in cls.__mro__:
        if base.__module__.split(".")[0] == package or base is object:
            continue
        names |= {n for n in vars(base) if PRIVATE.match(n)}
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):  # a class written in C: its attributes are all there is
            continue
        names |= set(re.findall(r"\bself\.(_[A-Za-z0-9]\w*)", source))
    return {n for n in names if PRIVATE.match(n)}


def defined_in_class(node: ast.ClassDef) -> set[str]:
    """Private names a class defines: methods, class attributes, and ``self._name = ...`` in its methods."""
    names = set()
    for child in node.body:
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(child.name)
        elif isinstance(child, (ast.Assign, ast.AnnAssign)):
            targets = child.targets if isinstance(child, ast.Assign) else [child.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    for inner in ast.walk(node):
        if isinstance(inner, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = inner.targets if isinstance(inner, ast.Assign) else [inner.target]
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        names.add(t.attr)
    return {n for n in names if PRIVATE.match(n)}


def private_uses(root: Path, package: str) -> list[str]:
    """Every use of another library's private name in the package at ``root`` (``file:line: what``)."""
    paths = sorted(root.rglob("*.py"))
    trees = {path.relative_to(root.parent): ast.parse(path.read_text(), str(path)) for path in paths}
    # package classes by name, with their module's imports, to follow a base inside the package
    classes = {n.name: (n, imported_names(tree)) for tree in trees.values() for n in ast.walk(tree)
               if isinstance(n, ast.ClassDef)}  # fmt: skip
    found: list[tuple[Path, int, str]] = []
    taken: set[str] = set()  # private names of a library base that a package class defines
    for where, tree in trees.items():
        for node in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            names = defined_in_class(node) & inherited_privates(node, classes, package)
            found += [(where, node.lineno, f"class {node.name} defines its base's {n}") for n in sorted(names)]
            taken |= names
    owned = set().union(*(defined_in_class(c) for c, _ in classes.values()))
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and PRIVATE.match(node.name):
                owned.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and PRIVATE.match(node.id):
                owned.add(node.id)
    owned -= taken
    for where, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and PRIVATE.match(node.attr) and node.attr not in owned:
                found.append((where, node.lineno, f".{node.attr}"))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ATTRIBUTE_FUNCTIONS:
                name = node.args[1] if len(node.args) > 1 else None
                if isinstance(name, ast.Constant) and isinstance(name.value, str) and PRIVATE.match(name.value):
                    if name.value not in owned:
                        found.append((where, node.lineno, f"{node.func.id}(..., {name.value!r})"))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] != package:
                found += [(where, node.lineno, f"from {node.module} import {a.name}") for a in node.names
                          if PRIVATE.match(a.name)]  # fmt: skip
    return [f"{where}:{line}: {what}" for where, line, what in sorted(found)]


def inherited_privates(node: ast.ClassDef, classes: dict[str, tuple[ast.ClassDef, dict]], package: str) -> set[str]:
    """The private names of the library classes ``node`` inherits from (through package classes too)."""
    names: set[str] = set()
    imports = classes[node.name][1]
    for base in node.bases:
        path = dotted(base.value if isinstance(base, ast.Subscript) else base)  # Sampler[int]: Sampler
        assert path, f"class {node.name}: cannot read its base {ast.unparse(base)}"
        head, _, rest = path.partition(".")
        if head in imports:
            origin = imports[head] + (f".{rest}" if rest else "")
            if origin.split(".")[0] == package:
                names |= inherited_privates(classes[origin.split(".")[-1]][0], classes, package)
            else:
                names |= library_privates(resolve(origin), package)
        elif head in classes:  # a class of the same module
            names |= inherited_privates(classes[head][0], classes, package)
        else:
            names |= library_privates(resolve(path), package)  # a builtin: Exception, dict ...
    return names


def test_finetune_uses_no_private_name_of_another_library():
    found = private_uses(Path(finetune.__file__).parent, "finetune")
    assert not found, "private names of other libraries (use a public route):\n" + "\n".join(found)


def write_package(root: Path, source: str) -> Path:
    package = root / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(textwrap.dedent(source))
    return package


def test_the_scan_finds_each_kind_of_private_use(tmp_path):
    # names every transformers 5 release has, and argparse's
    package = write_package(
        tmp_path,
        """
        import argparse
        from transformers import Trainer
        from transformers.trainer import _is_peft_model

        class Adapter(Trainer):
            def _save_checkpoint(self, model, trial):
                self._globalstep_last_logged = 0

        class Parser(argparse.ArgumentParser):
            def reset(self):
                self._defaults = {}

        def add(parser: argparse.ArgumentParser, other):
            parser._add_container_actions(other)
            return getattr(other, "_actions")

        class Later(Adapter):
            def _get_train_sampler(self, dataset=None):
                return None
        """,
    )
    found = private_uses(package, "fakepkg")
    assert found == [
        "fakepkg/mod.py:4: from transformers.trainer import _is_peft_model",
        "fakepkg/mod.py:6: class Adapter defines its base's _globalstep_last_logged",
        "fakepkg/mod.py:6: class Adapter defines its base's _save_checkpoint",
        "fakepkg/mod.py:8: ._globalstep_last_logged",
        "fakepkg/mod.py:10: class Parser defines its base's _defaults",
        "fakepkg/mod.py:12: ._defaults",
        "fakepkg/mod.py:15: ._add_container_actions",
        "fakepkg/mod.py:16: getattr(..., '_actions')",
        "fakepkg/mod.py:18: class Later defines its base's _get_train_sampler",
    ], found


def test_the_scan_leaves_a_packages_own_private_names_alone(tmp_path):
    package = write_package(
        tmp_path,
        """
        import argparse
        from transformers import Trainer

        _CACHE = {}

        def _helper():
            return _CACHE

        class Parser(argparse.ArgumentParser):
            def __init__(self):
                super().__init__()
                self._pending = None

            def parse(self):
                return self._pending, _helper(), self.__class__

        class Adapter(Trainer):
            def train(self):
                self._window = 0
                return getattr(self, "_window")
        """,
    )
    assert private_uses(package, "fakepkg") == []
