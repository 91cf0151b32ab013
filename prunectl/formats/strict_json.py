"""Strict JSON reading and canonical writing shared by the spec and the manifest.

Python's json module silently keeps the last of duplicate keys and accepts NaN/Infinity;
both hide mistakes in hand-edited files, so both are errors here.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import PrunectlError

MAX_JSON_BYTES = 64 * 1024 * 1024


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str | bytes) -> Any:
    """Parse JSON, refusing duplicate keys and NaN/Infinity; raises ValueError."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ValueError("nesting too deep") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason})") from exc


def read_json_bytes(path: str | Path, error: type[PrunectlError]) -> bytes:
    """The bytes of a JSON file, size-checked; any problem becomes ``error`` naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise error(f"{path}: file is {size} bytes, larger than the {MAX_JSON_BYTES} allowed for JSON")
        return path.read_bytes()
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected a JSON file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_json(path: str | Path, error: type[PrunectlError]) -> Any:
    """Read a JSON file; any problem becomes ``error`` with a message naming the file."""
    data = read_json_bytes(path, error)
    try:
        return parse_json(data)
    except ValueError as exc:
        raise error(f"{path}: not valid JSON: {exc}") from None


def dump_json(obj: Any) -> bytes:
    """Canonical bytes: same object, same bytes (determinism of bundles depends on it).

    Objects are indented; lists of scalars (kept indices, shapes) stay on one line so a
    manifest of a large model remains readable."""
    return (_render(obj, 0) + "\n").encode("utf-8")


def _render(obj: Any, depth: int) -> str:
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{_scalar(str(k))}: {_render(v, depth + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in obj):
            # one json.dumps call renders "[a, b]" as the per-item join did, ~20x faster on the
            # tens of thousands of kept indices of a large model
            return json.dumps(list(obj), ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
        return "[\n" + ",\n".join(inner + _render(v, depth + 1) for v in obj) + "\n" + pad + "]"
    return _scalar(obj)


def _scalar(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def is_finite_number(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # JSON integers are unbounded: 10**400 has no float
        return False
