"""Entry-point registries: criteria, tasks and model factories.

Built-ins register through the same entry points as plugins (see pyproject.toml), so the
core never imports an implementation by name.
"""
from __future__ import annotations

from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import SpecError

CRITERIA = "prunectl.criteria"
TASKS = "prunectl.tasks"
MODELS = "prunectl.models"
_WHAT = {CRITERIA: "criterion", TASKS: "task", MODELS: "model factory"}


@lru_cache(maxsize=None)
def _entry_points(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in sorted(entry_points(group=group), key=lambda ep: (ep.name, ep.value)):
        found.setdefault(ep.name, ep)
    return found


def available(group: str) -> list[str]:
    return sorted(_entry_points(group))


def is_registered(group: str, name: str) -> bool:
    return name in _entry_points(group)


def load(group: str, name: str) -> Any:
    """The object registered as ``name`` in ``group``; unknown names list the available ones."""
    eps = _entry_points(group)
    if name not in eps:
        names = ", ".join(sorted(eps)) or "none installed"
        raise SpecError(f"unknown {_WHAT.get(group, group)} {name!r}; available: {names}")
    try:
        return eps[name].load()
    except Exception as exc:  # a broken plugin must not look like a prunectl bug
        raise SpecError(f"{_WHAT.get(group, group)} {name!r} ({eps[name].value}) failed to load: {exc}") from exc


def refresh() -> None:
    """Forget cached entry points (after installing a plugin in the same process)."""
    _entry_points.cache_clear()
