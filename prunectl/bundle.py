"""Atomic bundle directories: write beside the target, rename into place at the end.

On any failure the staging directory is removed and the output path is untouched. A killed
run (SIGKILL) leaves only a hidden ``.NAME.tmp-PID-*`` sibling, which the next run sweeps.
The final swap holds an flock on the parent directory, so two concurrent runs never mix
files: each writes its own staging directory and the last complete one wins.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .checkpoint import MANIFEST_NAME
from .errors import SpecError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale(parent: Path, name: str) -> None:
    for stale in parent.glob(f".{name}.tmp-*"):
        try:
            pid = int(stale.name.split(".tmp-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


def check_output_path(out: Path) -> None:
    """Refuse paths we must not replace, before any work is done."""
    if out.exists() and not out.is_dir():
        raise SpecError(f"output {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise SpecError(f"output {out}: is a non-empty directory that is not a prunectl bundle; refusing to replace it")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise SpecError(f"output {out}: parent directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpecError(f"output {out}: parent directory {parent} is not writable")


@contextmanager
def staged_directory(out: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory; on normal exit it becomes ``out`` atomically."""
    out = Path(out)
    check_output_path(out)
    parent = out.resolve().parent
    _sweep_stale(parent, out.name)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise SpecError(f"output {out}: cannot create a directory in {parent}: {exc.strerror}") from None
    try:
        yield staging
        _fsync_tree(staging)
        _swap_into_place(staging, out, parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _swap_into_place(staging: Path, out: Path, parent: Path) -> None:
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        check_output_path(out)  # it may have changed while we worked
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-old-", dir=parent))
            os.rename(out, retired / "bundle")
            os.rename(staging, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, out)
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
