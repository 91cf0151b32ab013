"""The ``prunectl`` command group; each command lives in the file of its stage (prune, bundles, auto)."""
from __future__ import annotations

import click

from ..version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="prunectl")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Structured pruning for PyTorch: a checkpoint in, a smaller verified bundle out.

    Exit codes: 0 ok, 2 usage, 3 bad spec/options, 4 verification failed,
    5 bad checkpoint/bundle, 6 unsupported model or operator.
    """
