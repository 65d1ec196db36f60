"""How many processes a launcher (torchrun, accelerate launch) started and which one this is,
read from its environment before any process group exists, so that every part of a run can ask.
"""

from __future__ import annotations

import os

from finetune.errors import ConfigError


def launched_world_size() -> int:
    """How many processes the launcher (torchrun / accelerate launch) started; 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_launch_main_process() -> bool:
    """True in the launcher's process of rank 0 (or without a launcher): the one that owns the run directory."""
    return int(os.environ.get("RANK", "0")) == 0


def check_single_process_loop(loop: str) -> None:
    """The native loop is one process; under a multi-process launcher it would silently run N copies."""
    if launched_world_size() > 1 and loop == "native":  # (the Trainer joins the process group itself)
        raise ConfigError(
            f"--loop {loop} runs one process, but the launcher started {launched_world_size()}: "
            "use --loop accelerate (or --loop trainer) under torchrun / accelerate launch"
        )
