"""sha256 digests of the files a bundle lists and of the inputs it records (checkpoint, spec)."""
from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_soon(path: str | Path) -> Future:
    """``file_sha256`` on a worker thread. hashlib and file reads release the GIL, so the digest
    of a large checkpoint (ViT-B: 350 MB, ~0.4 s) is computed while the model is loaded, traced
    and pruned instead of adding to the run; ``Loaded.sha256`` waits for it."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prunectl-sha256")
    try:
        return executor.submit(file_sha256, path)
    finally:
        executor.shutdown(wait=False)
