"""The package's shape, checked (docs/architecture.md): files stay small and private names stay
private, so that the tree keeps reading as the pipeline; and the repository stands alone.

The import layers themselves are import-linter's contracts in pyproject.toml (``make lint``).
Every assertion lists all its offenders, not the first.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import ROOT

PACKAGE = ROOT / "prunectl"
MAX_LINES = 400
MAX_TOP_LEVEL_MODULES = 10
# documents outside the repository that a file must not cite (spelled in two parts so that this
# file does not cite them itself)
OUTSIDE_DOCUMENTS = ("design" + ".md", "../" + "shared")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _private_uses(path: Path, text: str | None = None) -> list[str]:
    """``from x import _name``, ``import x._mod``, and ``mod._name`` on a prunectl module bound by an
    import (``from ..layers import kinds as L``; ``L._helper``). ``text``: the source, if not the file's."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    where = path.relative_to(ROOT)
    found, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                if _private(alias.name) or any(_private(part) for part in source.split(".")):
                    found.append((node.lineno, f"{where}:{node.lineno}: from {'.' * node.level}{node.module or ''} "
                                 f"import {alias.name}"))
                elif source.split(".")[0] == "prunectl" and _is_module(f"{source}.{alias.name}"):
                    modules[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(_private(part) for part in alias.name.split(".")):
                    found.append((node.lineno, f"{where}:{node.lineno}: import {alias.name}"))
                elif alias.name.split(".")[0] == "prunectl":
                    modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and _private(node.attr)):
            use = f"{node.value.id}.{node.attr} ({modules[node.value.id]})"
            found.append((node.lineno, f"{where}:{node.lineno}: {use}"))
    return [message for _, message in sorted(found)]


def test_no_module_uses_another_modules_private_names() -> None:
    offenders = [use for path in _modules() for use in _private_uses(path)]
    assert not offenders, "private names used across modules (make them public or move the caller):\n" + \
        "\n".join(offenders)


def test_the_private_name_check_sees_each_form() -> None:
    """The check above is only as good as its parser: each form it forbids is caught, dunders are not."""
    source = ("from .params import _hidden\nfrom ..formats import spec as S\nimport prunectl._secret\n"
              "from . import kinds\nS._parse()\nkinds._helper\nfrom .attention import __all__\n"
              "S.read_spec\nS.__name__\n")
    found = _private_uses(PACKAGE / "layers" / "resize.py", source)  # a real path: it sets the package
    assert [line.split(": ", 1)[1] for line in found] == [
        "from .params import _hidden", "import prunectl._secret",
        "S._parse (prunectl.formats.spec)", "kinds._helper (prunectl.layers.kinds)"]


def test_no_file_is_over_400_lines() -> None:
    sizes = {path: len(path.read_text().splitlines()) for path in _modules()}
    offenders = [f"{path.relative_to(ROOT)}: {n} lines" for path, n in sizes.items() if n > MAX_LINES]
    assert not offenders, f"files over {MAX_LINES} lines (split them by job):\n" + "\n".join(offenders)


def test_few_modules_at_the_top_of_the_package() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, \
        f"{len(top)} modules at the top of prunectl/ (at most {MAX_TOP_LEVEL_MODULES}; a stage goes in its " \
        f"folder): {', '.join(top)}"


def _text_files(where: Path) -> list[Path]:
    if where.is_file():
        return [where]
    return sorted(p for p in where.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".pyc", ".png", ".pt", ".safetensors", ".onnx"))


@pytest.mark.parametrize("where", ["prunectl", "tests", "README.md"])
def test_no_file_cites_a_document_outside_the_repository(where: str) -> None:
    offenders = []
    for path in _text_files(ROOT / where):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for needle in OUTSIDE_DOCUMENTS:
                if needle in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {needle!r} in {line.strip()[:100]!r}")
    assert not offenders, "citations of documents outside the repository (cite docs/ instead):\n" + \
        "\n".join(offenders)
