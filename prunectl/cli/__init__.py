"""The ``prunectl`` command: option parsing and printing only; the work is in ``prunectl.api``."""
from __future__ import annotations

from . import auto_commands, bundle_commands, finetune_command, prune_commands  # noqa: F401  (they register the commands)
from .app import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="prunectl")
