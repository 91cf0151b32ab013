"""Building blocks for tests: prune an in-memory model description through the real pipeline."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from click.testing import CliRunner

import prunectl
from fixtures.make_checkpoints import FIXTURES
from prunectl.cli import cli
from prunectl.formats.seal import SEAL_KEY
from prunectl.models import factory as factories

ROOT = Path(__file__).resolve().parents[2]  # the repository
SPECS = ROOT / "fixtures" / "specs"
FIXTURE_NAMES = sorted(FIXTURES)


def write_case(tmp_path: Path, factory: str, layers: dict[str, Any], input_shape: list[int],
               args: dict[str, Any] | None = None, seed: int = 0, **spec_keys: Any) -> tuple[Path, Path]:
    """(checkpoint, spec) for ``factory(**args)`` with seeded random weights."""
    torch.manual_seed(seed)
    model = factories.build(factory, dict(args or {}))
    with torch.no_grad():  # non-trivial BN statistics, so that norm layers matter
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    ckpt = tmp_path / "model.pt"
    torch.save(model.state_dict(), ckpt)
    spec = {"prunectl_spec": 1, "model": {"factory": factory, "args": dict(args or {})},
            "input": {"shape": input_shape}, "layers": layers, **spec_keys}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    return ckpt, spec_path


def prune_case(tmp_path: Path, factory: str, layers: dict[str, Any], input_shape: list[int],
               args: dict[str, Any] | None = None, **options: Any) -> prunectl.PruneResult:
    ckpt, spec = write_case(tmp_path, factory, layers, input_shape, args)
    return prunectl.prune(ckpt, prunectl.PruneOptions(spec=spec, **options))


def invoke(*args: Any):
    """``prunectl ARGS`` through click's runner (arguments may be paths)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_clean_failure(result, code: int, *fragments: str, out: Path | None = None) -> None:
    """The CLI failed as docs/formats.md promises: exit ``code``, one ``error:`` line holding every
    fragment, no traceback, and (``out``) nothing left at the output path or beside it."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    if out is not None:
        assert not out.exists()
        assert not list(out.parent.glob(f".{out.name}.tmp-*"))


def manifest_without_source(bundle: Path) -> dict[str, Any]:
    """A bundle's manifest without what names where it came from (the source file and the seal
    over it): what two runs on the same model and options must agree on byte for byte."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.pop(SEAL_KEY)
    manifest.pop("source")
    return manifest


def machine_paths(tmp: Path) -> list[bytes]:
    """Paths of this machine that no file prunectl writes may hold (``tmp``: the test's tmp_path)."""
    candidates = {str(tmp), str(tmp.resolve()), str(Path.home()), os.getcwd(), str(ROOT), sys.prefix,
                  str(Path(torch.__file__).parent), str(Path(prunectl.__file__).parent)}
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    found = [p.encode() for p in candidates if p not in ("/", "")]
    if user and len(user) > 3:
        found.append(f"/{user}/".encode())
    return found
