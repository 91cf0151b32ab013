"""Atomic bundle directories: write beside the target, rename into place at the end.

On any failure the staging directory is removed and the output path is untouched. A killed
run (SIGKILL) leaves only a hidden ``.NAME.tmp-PID-*`` sibling, which the next run sweeps.
The final swap holds an flock on the parent directory, so two concurrent runs never mix
files: each writes its own staging directory and the last complete one wins. Replacing an
existing bundle is one atomic exchange (renameat2) where the kernel offers it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import SpecError
from ..formats.manifest import MANIFEST_NAME


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
        if _pid_alive(pid):
            continue
        retired = stale / "bundle"
        if "-old-" in stale.name and retired.is_dir() and not (parent / name).exists():
            # killed between the two renames of the fallback swap: put the old bundle back
            os.rename(retired, parent / name)
        shutil.rmtree(stale, ignore_errors=True)


def check_output_path(out: Path) -> None:
    """Refuse paths we must not replace, before any work is done."""
    if out.exists() and not out.is_dir():
        raise SpecError(f"output {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise SpecError(f"output {out}: is a non-empty directory that is not a prunectl bundle; refusing to replace it")
    parent = _existing_ancestor(out.resolve().parent)  # missing parents are created (mkdir -p), so this one
    if not parent.is_dir():
        raise SpecError(f"output {out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpecError(f"output {out}: parent directory {parent} is not writable")


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _make_parents(parent: Path) -> list[Path]:
    """``mkdir -p`` of ``parent``; the directories it created, deepest first (removed again if the
    run fails: nothing is left behind)."""
    created = []
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    for directory in reversed(created):
        try:
            directory.mkdir()
        except FileExistsError:
            pass
    return created


@contextmanager
def staged_directory(out: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory; on normal exit it becomes ``out`` atomically."""
    out = Path(out)
    check_output_path(out)
    parent = out.resolve().parent
    created: list[Path] = []
    try:
        created = _make_parents(parent)
        _sweep_stale(parent, out.name)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would make the bundle private
    except OSError as exc:
        _remove_empty(created)
        raise SpecError(f"output {out}: cannot create a directory in {parent}: {exc.strerror}") from None
    try:
        yield staging
        _fsync_tree(staging)
        _swap_into_place(staging, out, parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:  # deepest first
        try:
            directory.rmdir()
        except OSError:
            return  # someone else put something there


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE): at every instant
    the output path holds one complete bundle. False where unsupported; the caller falls
    back to two renames, whose gap ``_sweep_stale`` repairs."""
    try:
        import ctypes

        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(b))


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_dir():  # hf/
            _fsync_tree(path)
            continue
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _swap_into_place(staging: Path, out: Path, parent: Path) -> None:
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        check_output_path(out)  # it may have changed while we worked
        if out.exists() and _exchange(staging, out):
            shutil.rmtree(staging, ignore_errors=True)  # now holds the previous bundle
        elif out.exists():
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
