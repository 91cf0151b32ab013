"""The manifest's own checksum: ``manifest_sha256``, its last member, seals the bytes before it.

``files`` in the manifest protects every other file of a bundle; this protects the manifest
itself, so that a flipped byte anywhere in a bundle is a checksum failure (exit 4) naming the
file, rather than a silently different ``kept`` list or ``rebuild.args``.

The seal is checked on the raw bytes: the manifest is written in canonical form
(``strict_json.dump_json``), the seal line is appended as the last member, and the digest covers
the canonical text without that line. ``load_bundle`` checks it last, so that a manifest
edited into something invalid reports the invalid key (exit 3/5, naming manifest.json), and
one that is still valid but not what was written fails here (exit 4). Manifests written
before the seal existed (no seal line, ending with the ``versions`` object) are still read.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, VerificationError
from .strict_json import MAX_JSON_BYTES, dump_json, parse_json

SEAL_KEY = "manifest_sha256"
_SEAL_LINE = re.compile(rb',\n  "manifest_sha256": "([0-9a-f]{64})"\n}\n\Z')
# what is left of a damaged seal line: its key, or a long hex run near the end of the file
_SEAL_TRACE = re.compile(rb'manifest_|_sha256|[0-9a-f]{32,}')
_TAIL = 120


def sealed_bytes(manifest_json: dict[str, Any]) -> bytes:
    """Canonical manifest bytes with the seal appended as the last member."""
    body = dump_json({key: value for key, value in manifest_json.items() if key != SEAL_KEY})
    digest = hashlib.sha256(body).hexdigest()
    return body[: -len(b"\n}\n")] + f',\n  "{SEAL_KEY}": "{digest}"\n}}\n'.encode()


def check_seal(path: Path) -> bool:
    """True if the manifest is sealed and intact, False if it predates seals; VerificationError
    if the seal or the bytes it covers were changed."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path}: larger than the {MAX_JSON_BYTES} bytes allowed for a manifest")
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    match = _SEAL_LINE.search(raw)
    if match:
        body = raw[: match.start()] + b"\n}\n"
        if hashlib.sha256(body).hexdigest() != match.group(1).decode():
            raise VerificationError(f"{path}: content does not match its {SEAL_KEY} (file modified or corrupted)")
        return True
    if _SEAL_TRACE.search(raw[-_TAIL:]):
        raise VerificationError(f"{path}: its {SEAL_KEY} seal is damaged (file modified or corrupted)")
    return False


def seal_manifest_file(path: str | Path) -> None:
    """Re-seal a manifest after a deliberate edit (tests and tools; prunectl never edits bundles)."""
    path = Path(path)
    data = parse_json(path.read_bytes())
    path.write_bytes(sealed_bytes(data) if isinstance(data, dict) else path.read_bytes())
