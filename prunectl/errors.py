"""The exception hierarchy; each class carries the CLI exit code of design.md.

Library code raises these with a message a user can act on (naming the file and key);
only ``cli.py`` catches them, prints one line and exits.
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
