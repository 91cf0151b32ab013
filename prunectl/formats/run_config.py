"""Run-config files: every option of ``prune``, ``auto`` or ``finetune`` in one JSON or YAML file
(``--config run.yaml``), as the NetAdapt-style tool keeps its run in Pruning.yaml.

The file is one mapping from an option's long name (``round-to`` or ``round_to``) to its value::

    {"spec": "mlp.json", "task": "digits", "max-drop": 1.0, "exclude": ["fc3"], "onnx": true}

This module reads the file; which names a command takes, and that its command line wins, is the
CLI's (``cli/run_config.py``). JSON is read as strictly as every prunectl file (duplicate keys,
NaN are errors); YAML (``.yaml``/``.yml``) needs PyYAML, the ``yaml`` extra, and is read with
``safe_load`` (no tags, no objects).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import SpecError, first_line
from .strict_json import parse_json, read_json_bytes

YAML_SUFFIXES = (".yaml", ".yml")


def read_run_config(path: str | Path) -> dict[str, Any]:
    """The file's ``{name: value}``; SpecError naming the file for anything but a flat mapping."""
    path = Path(path)
    data = read_json_bytes(path, SpecError)  # the size and read checks are JSON's, for YAML too
    if path.suffix.lower() in YAML_SUFFIXES:
        try:
            import yaml
        except ImportError:
            raise SpecError(f"{path}: reading a YAML run config needs PyYAML: pip install 'prunectl[yaml]' "
                            "(or write it as JSON)") from None
        try:
            loaded = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML: {first_line(exc)}") from None
    else:
        try:
            loaded = parse_json(data)
        except ValueError as exc:
            raise SpecError(f"{path}: not valid JSON: {exc} (YAML files end in .yaml or .yml)") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise SpecError(f"{path}: a run config is a mapping of option names to values, got {type(loaded).__name__}")
    for key, value in loaded.items():
        if not isinstance(key, str):
            raise SpecError(f"{path}: option names are strings, got {key!r}")
        if isinstance(value, dict):
            raise SpecError(f"{path}: {key}: expected a value, got a mapping (the file is flat: one key per option)")
    return loaded
