"""The exception hierarchy; each class carries its CLI exit code (docs/formats.md, "Exit codes").

Library code raises these with a message a user can act on (naming the file and key);
only ``prunectl.cli`` catches them, prints one line and exits.
"""
from __future__ import annotations


class PrunectlError(Exception):
    """Base class; never raised directly."""

    exit_code = 1


class SpecError(PrunectlError):
    """Bad spec, options or factory (exit 3)."""

    exit_code = 3


class VerificationError(PrunectlError):
    """Soft != hard, ONNX != torch, or a checksum mismatch (exit 4)."""

    exit_code = 4


class CheckpointError(PrunectlError):
    """Unreadable checkpoint or bundle, or one that does not fit the model (exit 5)."""

    exit_code = 5


class UnsupportedError(PrunectlError):
    """A model, module or operator prunectl cannot handle (exit 6)."""

    exit_code = 6


def first_line(exc: BaseException, prefer: str | None = None, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, at most ``limit`` characters (the
    exception's class name when it has no message): how a library error is quoted inside ours.

    ``prefer``: the first line containing this text, when there is one (torch's pickle errors put
    the offending global on a later line)."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if prefer:
        for line in lines:
            if prefer in line:
                return line[:limit]
    return lines[0][:limit] if lines else type(exc).__name__
