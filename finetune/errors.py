"""What can go wrong, as exception types the CLI maps to exit codes (kept light: ``finetune
--help`` must not import torch to know them).

Bad input (exit 2): ConfigError, DataError, ModelError, and the task module's UnknownTaskError.
A run that went wrong (exit 1): NonFiniteError. A run stopped on request: TrainingInterruptedError
(``finetune.run.interrupt``, exit 128 + signal).
"""


class ConfigError(ValueError):
    """A configuration value that cannot work (the message says which and why)."""


class DataError(ValueError):
    """Data that is missing or not in the expected GLUE format."""


class ModelError(ValueError):
    """A model that cannot be found, loaded or frozen as asked."""


class NonFiniteError(FloatingPointError):
    """The loss, the gradients or the weights stopped being finite numbers."""


def one_line(e: BaseException) -> str:
    """A library's error message on one line, for wrapping in ours: its first line, or all of it
    joined where the first line ends in a colon (a list follows that the message needs)."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
    return " ".join(lines) if lines[0].endswith(":") else lines[0]
