"""Model factories: ``"provider:name"`` for registered providers, ``"pkg.mod:Class"`` otherwise.

A factory string may come from a file someone else wrote (a manifest, a spec), so resolving
it must not become a way to call arbitrary functions: only registered providers and
``nn.Module`` subclasses are accepted, and well-known dangerous modules are refused before
they are imported.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from typing import Any, Callable

import torch.nn as nn

from .. import registry
from ..errors import SpecError

_MODULE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_REFUSED_MODULES = {
    "os", "posix", "nt", "sys", "subprocess", "shutil", "builtins", "importlib", "pickle",
    "marshal", "socket", "ctypes", "runpy", "code", "codeop", "pty", "pathlib", "io",
    "multiprocessing", "threading", "signal", "webbrowser", "antigravity", "this", "shlex",
    "tempfile", "glob", "urllib", "http", "ftplib", "smtplib", "telnetlib", "asyncio", "gc",
}
# Arguments that make constructors download weights; prunectl never downloads.
DOWNLOAD_ARGS = ("weights", "pretrained", "weights_backbone", "pretrained_backbone")

ModelFactory = Callable[..., nn.Module]


def resolve(factory: str) -> ModelFactory:
    """A callable ``(**args) -> nn.Module`` for a factory string, or SpecError."""
    if not isinstance(factory, str) or factory.count(":") < 1:
        raise SpecError(f"model factory {factory!r}: expected \"module:Class\" or \"provider:name\"")
    prefix, name = factory.split(":", 1)
    if registry.is_registered(registry.MODELS, prefix):
        provider = registry.load(registry.MODELS, prefix)
        return lambda **args: provider(name, **args)
    return _module_class(prefix, name, factory)


def project_importable() -> None:
    """Like `python -m` and uvicorn: modules of the current project directory import (factories,
    and the classes of a trusted pickle)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _module_class(module_path: str, qualname: str, factory: str) -> ModelFactory:
    if not _MODULE_PATH.match(module_path) or not all(part.isidentifier() for part in qualname.split(".")):
        raise SpecError(f"model factory {factory!r}: not a valid \"module:Class\" path")
    top = module_path.split(".")[0]
    # No model class lives in the standard library, and importing some of it runs code
    # (idlelib.idle starts a GUI, antigravity opens a browser): refuse it before importing.
    if top in sys.stdlib_module_names and top not in _REFUSED_MODULES:
        raise SpecError(f"model factory {factory!r}: refused without importing it; {top!r} is a standard-library "
                        "module, so this is not an nn.Module subclass or a registered provider "
                        f"({', '.join(registry.available(registry.MODELS))})")
    if top in _REFUSED_MODULES or top.startswith("_") or any(p.startswith("_") for p in qualname.split(".")):
        raise SpecError(f"model factory {factory!r}: refused; a factory must be an nn.Module subclass "
                        f"or a registered provider ({', '.join(registry.available(registry.MODELS))})")
    project_importable()
    try:
        obj: Any = importlib.import_module(module_path)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except ModuleNotFoundError as exc:
        raise SpecError(f"model factory {factory!r}: module {exc.name!r} not found") from None
    except AttributeError:
        raise SpecError(f"model factory {factory!r}: {module_path!r} has no attribute {qualname!r}") from None
    except Exception as exc:
        raise SpecError(f"model factory {factory!r}: importing {module_path!r} failed: {exc}") from None
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        raise SpecError(f"model factory {factory!r}: refused; it is {type(obj).__name__}, not an nn.Module subclass")
    return obj


def build(factory: str, args: dict[str, Any]) -> nn.Module:
    """Instantiate a model; constructor errors become SpecError naming the factory and args."""
    for key in DOWNLOAD_ARGS:
        if args.get(key) not in (None, False):
            raise SpecError(f"model factory {factory!r}: argument {key}={args[key]!r} would download weights; "
                            "prunectl never downloads: pass your own checkpoint instead")
    make = resolve(factory)
    try:
        model = make(**args)
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"model factory {factory!r} with args {args}: constructor failed: {exc}") from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"model factory {factory!r} returned {type(model).__name__}, not an nn.Module")
    return model


def accepts_argument(factory: str, arg: str) -> bool | None:
    """Whether the constructor takes ``arg`` (None when its signature can't tell)."""
    try:
        params = inspect.signature(resolve(factory)).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return arg in params
