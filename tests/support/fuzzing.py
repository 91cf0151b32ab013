"""Shared helpers of the fuzz, security and crash-safety tests (not a test module itself).

Every fuzz case drives the real CLI through click's ``CliRunner`` (exceptions are *not*
re-raised: a bug must show up the way a user would see it) and then checks the contract of
docs/formats.md ("Exit codes"): a documented exit code, at most a one-line ``error: ...``
message, no traceback, no hang, and nothing left at the output path after a failure.

Environment:
- ``PRUNECTL_FUZZ_EXAMPLES=N`` raises every fuzz test's example count to N (``make fuzz``);
  without it the suite runs a small fixed-seed sample so that it stays fast and repeatable.
- ``PRUNECTL_FUZZ_TALLY=FILE`` appends one JSON line per case (category, command, exit code,
  traceback seen) so that ``benchmarks/reliability.py`` can report the figures.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from click.testing import CliRunner, Result
from hypothesis import HealthCheck, settings

from prunectl.cli import cli

DOCUMENTED_EXIT_CODES = {0, 3, 4, 5, 6}
HANG_SECONDS = 120  # far above any single small-fixture run; a case this slow is a hang

_EXAMPLES = int(os.environ.get("PRUNECTL_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(default_examples: int) -> settings:
    """Bounded and derandomised in the normal suite; ``PRUNECTL_FUZZ_EXAMPLES`` for long runs."""
    return settings(
        max_examples=_EXAMPLES or default_examples,
        deadline=None,
        derandomize=not _EXAMPLES,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


class Hang(Exception):
    pass


@contextmanager
def no_hang(seconds: int = HANG_SECONDS) -> Iterator[None]:
    def on_alarm(_signum, _frame):
        raise Hang(f"no result after {seconds}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def record(category: str, command: str, exit_code: int, traceback_seen: bool, **extra) -> None:
    """Append one case to the tally file, if one is configured (concurrent xdist workers: flock)."""
    tally = os.environ.get("PRUNECTL_FUZZ_TALLY")
    if not tally:
        return
    line = json.dumps({"category": category, "command": command, "exit_code": exit_code,
                       "traceback": traceback_seen, **extra}) + "\n"
    with open(tally, "a", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.write(line)


def invoke(args: Sequence[str], category: str, output: Path | None = None,
           allowed: set[int] = DOCUMENTED_EXIT_CODES) -> Result:
    """Run ``prunectl ARGS`` in-process and assert the error contract; returns the result."""
    runner = CliRunner()
    with no_hang():
        result = runner.invoke(cli, list(args))
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    unexpected = result.exception is not None and not isinstance(result.exception, SystemExit)
    traceback_seen = "Traceback" in text or unexpected
    record(category, args[0], result.exit_code, traceback_seen, message=result.stderr.strip()[:300])
    detail = f"prunectl {' '.join(map(str, args))}\nexit {result.exit_code}\n{text}"
    if unexpected:
        detail += "".join(traceback.format_exception(result.exception))
    assert not traceback_seen, f"traceback:\n{detail}"
    assert result.exit_code in allowed, f"undocumented exit code:\n{detail}"
    if result.exit_code != 0:
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), f"not a one-line error:\n{detail}"
        if output is not None:
            assert not output.exists(), f"failure left {output} behind:\n{detail}"
    return result


def error_line(result: Result) -> str:
    return result.stderr.strip()


def flip_byte(path: Path, position: int, mask: int) -> None:
    """XOR one byte of ``path`` with ``mask`` (1..255): a single-byte corruption."""
    data = bytearray(path.read_bytes())
    data[position % len(data)] ^= (mask % 255) + 1
    path.write_bytes(bytes(data))


def json_paths(value, prefix=()):
    """Every location in a JSON value (root included), down to depth 20."""
    yield prefix
    if len(prefix) >= 20:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            yield from json_paths(child, prefix + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from json_paths(child, prefix + (i,))


def json_get(value, path):
    for part in path:
        value = value[part]
    return value
