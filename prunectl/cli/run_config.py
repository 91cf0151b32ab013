"""``--config FILE``: a command's options from a run-config file (formats/run_config.py); the command
line wins.

The file's values become click's ``default_map``, which click consults only for the options the
command line did not give, so precedence needs no code of its own. A key must be the long name of
one of the command's options (``round-to`` or ``round_to``; a flag's ``--no-`` side too, e.g.
``full-retrain: true``); anything else is a one-line error naming the file and the key, exit 3
(a bad options file is bad options, as a spec's unknown key is).
"""
from __future__ import annotations

from typing import Any

import click

from ..errors import PrunectlError
from .handling import one_line


def _read(ctx: click.Context, _param: click.Parameter, path: str | None) -> None:
    if path is None:
        return
    from ..formats.run_config import read_run_config

    try:
        ctx.default_map = {**(ctx.default_map or {}), **_defaults(ctx.command, read_run_config(path), path)}
    except PrunectlError as exc:  # parsing happens before handle_errors wraps the command: the same one line
        click.echo(f"error: {one_line(str(exc))}", err=True)
        ctx.exit(exc.exit_code)


def _defaults(command: click.Command, values: dict[str, Any], path: str) -> dict[str, Any]:
    from ..errors import SpecError

    by_name: dict[str, tuple[click.Option, bool]] = {}  # long name -> (option, the flag's "on" side)
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in ("config", "help"):
            continue
        for opts, on in ((param.opts, True), (param.secondary_opts, False)):
            for opt in opts:
                if opt.startswith("--"):
                    by_name[opt[2:]] = (param, on)
                    by_name[opt[2:].replace("-", "_")] = (param, on)
    defaults: dict[str, Any] = {}
    for key, value in values.items():
        if key not in by_name:
            names = sorted({n for n in by_name if "_" not in n})
            raise SpecError(f"{path}: unknown option {key!r} for `prunectl {command.name}` (options: "
                            f"{', '.join(names)})")
        param, on = by_name[key]
        if param.name in defaults:
            raise SpecError(f"{path}: {key}: option --{param.name.replace('_', '-')} is given twice")
        defaults[param.name] = _value(param, on, key, value, path)
    return defaults


def _value(param: click.Option, on: bool, key: str, value: Any, path: str) -> Any:
    """The value click would have parsed from the command line, checked now so that the error names the file."""
    from ..errors import SpecError

    if param.is_flag:
        if not isinstance(value, bool):
            raise SpecError(f"{path}: {key}: expected true or false, got {value!r}")
        return value if on else not value
    if param.multiple:
        value = list(value) if isinstance(value, (list, tuple)) else [value]
    elif isinstance(value, (list, tuple)):  # "rates: [0.2, 0.1, 0]" and "input-shape: [1, 3, 32, 32]"
        value = ",".join(str(v) for v in value)
    try:
        param.type_cast_value(click.Context(click.Command(None)), value)
    except click.BadParameter as exc:
        raise SpecError(f"{path}: {key}: {exc.format_message()}") from None
    return value


config_option = click.option("--config", type=click.Path(dir_okay=False, path_type=str), is_eager=True,
                             expose_value=False, callback=_read,
                             help="Options from a JSON or YAML file, by long name (round-to: 8); the command "
                             "line wins.")
