"""``--exclude PATTERN`` / ``--only PATTERN``: the one matcher of layer globs, for structured and
unstructured pruning."""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable

from ..errors import SpecError


def is_excluded(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def check_patterns(patterns: Iterable[str], names: Iterable[str], option: str = "--exclude") -> None:
    """Every pattern matches at least one listed layer (a typo must not silently exclude nothing)."""
    listed = sorted(names)
    for pattern in patterns:
        if not any(fnmatchcase(name, pattern) for name in listed):
            raise SpecError(f"{option} {pattern!r}: matches no listed layer (layers: {', '.join(listed[:12])}"
                            f"{', ...' if len(listed) > 12 else ''})")
