"""How every command fails and shows progress: one line and the documented exit code, a spinner."""
from __future__ import annotations

import functools
import logging
import sys
import warnings
from typing import Any, Callable

import click
from rich.console import Console

from ..errors import PrunectlError, first_line


def one_line(message: str, limit: int = 2000) -> str:
    """Messages quote names from user files; newlines and control characters in them must not
    break the one-line error contract, and a 20,000-character layer name must not flood it."""
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """PrunectlError -> one line on stderr and its exit code; --debug shows the traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        debug = debug or (click.get_current_context().find_root().params.get("debug") or False)
        try:
            with warnings.catch_warnings():
                if not debug:  # torch's UserWarnings and transformers' log advice are noise to a CLI user
                    warnings.simplefilter("ignore")
                    logging.getLogger("transformers").setLevel(logging.ERROR)
                return command(*args, **kwargs)
        except PrunectlError as exc:
            if debug:
                raise
            click.echo(f"error: {one_line(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit):
            raise  # usage errors keep click's own message and exit code 2
        except KeyboardInterrupt:
            click.echo("interrupted; nothing was written", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug of ours: still one line, with a way to see more
            if debug:
                raise
            click.echo(f"error: internal error ({type(exc).__name__}: {one_line(first_line(exc))}); rerun with "
                       "--debug and report it", err=True)
            sys.exit(1)

    return click.option("--debug", is_flag=True, help="Show tracebacks.")(wrapper)


def progress(quiet: bool) -> tuple[Console, Callable[[str], None] | None, Callable[[], None]]:
    """A stderr spinner naming the current stage; (console, on_stage, stop)."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        return console, None, lambda: None
    status = console.status("")
    status.start()
    return console, lambda stage: status.update(f"[bold]{stage}[/bold]…"), status.stop
