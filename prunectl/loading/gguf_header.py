"""How many weights a GGUF file holds, from its header alone: the memory guard before dequantising.

transformers dequantises every tensor of a GGUF file to float32 while it loads it, so a 4-bit
file becomes about 6x its size in memory, twice over while the model is filled. A file too big
for this machine must be refused before that starts, in one line, not by the kernel's OOM killer.
The header is read here with nothing but ``struct`` (the ``gguf`` package's reader parses every
metadata array into numpy, ~3 s for SmolLM2's 49k-token vocabulary): magic, version, counts,
the key/value metadata skipped over, then each tensor's dimensions.
Layout (GGUF v2/v3, little-endian): ``b"GGUF"``, u32 version, u64 tensor count, u64 metadata
count; each metadata entry a string key, a u32 value type and the value (strings are a u64
length and bytes; arrays a u32 element type, a u64 count and the elements); then per tensor a
string name, u32 dimension count, u64 dimensions, u32 type and u64 offset.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import BinaryIO

from ..errors import CheckpointError, UnsupportedError
from .memory import default_limit, format_size

# value type -> size in bytes of the fixed-size ones (8: string, 9: array are read by length)
_FIXED_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_MAX_COUNT = 1 << 24  # more tensors or metadata entries than any model has: a corrupt header
_MAX_DIMS = 8  # GGML_MAX_DIMS is 4
LOAD_COPIES = 2  # the dequantised tensors and the model they are copied into
FLOAT32_BYTES = 4


def weight_count(path: Path) -> int:
    """Total number of weights (elements of every tensor) the GGUF file at ``path`` declares."""
    try:
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise CheckpointError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
            version, tensors, entries = struct.unpack("<IQQ", _exactly(handle, 20))
            if version < 2:
                raise CheckpointError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
            if tensors > _MAX_COUNT or entries > _MAX_COUNT:
                raise CheckpointError(f"{path}: header declares {tensors} tensors and {entries} metadata "
                                      "entries: a corrupt file")
            for _ in range(entries):
                _skip_string(handle)
                _skip_value(handle, _u32(handle))
            total = 0
            for _ in range(tensors):
                _skip_string(handle)
                dims = _u32(handle)
                if dims > _MAX_DIMS:
                    raise CheckpointError(f"{path}: a tensor with {dims} dimensions: a corrupt file")
                total += math.prod(struct.unpack(f"<{dims}Q", _exactly(handle, 8 * dims)))
                _exactly(handle, 12)  # type and offset
            return total
    except (struct.error, EOFError):
        raise CheckpointError(f"{path}: the GGUF header is truncated") from None


def check_dequantised_fits(path: Path, limit: int | None = None) -> None:
    """UnsupportedError when dequantising ``path`` to float32 needs more than ``limit`` bytes
    (default: 80% of the memory available now, as every memory guard of prunectl's)."""
    limit = default_limit() if limit is None else limit
    if limit is None:
        return
    needed = weight_count(path) * FLOAT32_BYTES * LOAD_COPIES
    if needed > limit:
        raise UnsupportedError(f"{path}: dequantising its weights to float32 needs about {format_size(needed)}, "
                               f"more than the limit of {format_size(limit)} (80% of available memory)")


def _exactly(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _u32(handle: BinaryIO) -> int:
    return struct.unpack("<I", _exactly(handle, 4))[0]


def _skip_string(handle: BinaryIO) -> None:
    _skip(handle, struct.unpack("<Q", _exactly(handle, 8))[0])


def _skip(handle: BinaryIO, size: int) -> None:
    # seek past data that must be there: a length beyond the end of the file is a truncated header
    position = handle.tell() + size
    handle.seek(0, 2)
    if position > handle.tell():
        raise EOFError
    handle.seek(position)


def _skip_value(handle: BinaryIO, value_type: int) -> None:
    if value_type == _STRING:
        _skip_string(handle)
    elif value_type == _ARRAY:
        element_type, count = struct.unpack("<IQ", _exactly(handle, 12))
        if element_type in _FIXED_SIZES:
            _skip(handle, count * _FIXED_SIZES[element_type])
        elif element_type in (_STRING, _ARRAY) and count <= _MAX_COUNT * 4:
            for _ in range(count):
                _skip_value(handle, element_type)
        else:
            raise CheckpointError(f"{handle.name}: unknown GGUF array element type {element_type} "
                                  f"or {count} elements: a corrupt file")
    elif value_type in _FIXED_SIZES:
        _skip(handle, _FIXED_SIZES[value_type])
    else:
        raise CheckpointError(f"{handle.name}: unknown GGUF metadata value type {value_type}: a corrupt file")
