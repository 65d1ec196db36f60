"""pytest options for ``minigrad.testing.check_gradients``: a quick pass locally, a thorough one in CI::

    pytest --gradients-max-examples 1000 --gradients-seed 7

Registered by the ``pytest11`` entry point (or load it with ``-p minigrad.pytest_plugin``). It
sets the defaults that ``check_gradients`` reads; arguments given in a call still win. It imports
neither torch nor hypothesis, so it stays silent where hypothesis is not installed.
"""

from __future__ import annotations

from typing import Any

defaults = {"max_examples": 100, "seed": 0}
_BUILT_IN = dict(defaults)


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("minigrad", "minigrad.testing.check_gradients")
    group.addoption("--gradients-max-examples", type=int, metavar="N", help="examples per check_gradients call (100)")
    group.addoption("--gradients-seed", type=int, metavar="S", help="hypothesis seed of check_gradients (0)")


def pytest_configure(config: Any) -> None:
    for key in defaults:
        value = config.getoption("--gradients-" + key.replace("_", "-"))
        if value is not None:
            defaults[key] = value


def pytest_unconfigure(config: Any) -> None:
    defaults.update(_BUILT_IN)
