"""The GGUF memory guard: the weight count read from the header alone (the same as the gguf
package's own reader), a file too big to dequantise refused in one line before transformers
allocates anything, and a header cut short or corrupt named as such."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from prunectl.cli import cli
from prunectl.errors import CheckpointError, UnsupportedError
from prunectl.loading import gguf_header
from tests.support.tiny_gguf import write_tiny_gguf

gguf = pytest.importorskip("gguf")
pytest.importorskip("transformers")


def test_the_weight_count_is_the_gguf_readers(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    expected = sum(int(tensor.n_elements) for tensor in gguf.GGUFReader(str(path)).tensors)
    assert gguf_header.weight_count(path) == expected > 0


def test_a_gguf_too_big_to_dequantise_is_refused_before_loading(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    needed = gguf_header.weight_count(path) * 4 * gguf_header.LOAD_COPIES
    gguf_header.check_dequantised_fits(path, limit=needed)  # exactly enough: fine
    with pytest.raises(UnsupportedError, match=r"tiny\.gguf: dequantising its weights to float32 needs about"):
        gguf_header.check_dequantised_fits(path, limit=needed - 1)
    # the machine's own limit, made small: the CLI's one line, exit 6, nothing written
    monkeypatch.setattr(gguf_header, "default_limit", lambda: needed // 2)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["prune", str(path), "--rate", "0.3", "-q", "-o", str(out)])
    assert result.exit_code == 6, result.output
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert "more than the limit" in result.output and not out.exists()


def test_a_header_cut_short_or_corrupt_is_a_checkpoint_error(tmp_path: Path) -> None:
    whole = write_tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    for size in (10, 24, 200):
        (tmp_path / "cut.gguf").write_bytes(whole[:size])
        with pytest.raises(CheckpointError, match=r"cut\.gguf: the GGUF header is truncated"):
            gguf_header.weight_count(tmp_path / "cut.gguf")
    corrupt = whole[:8] + struct.pack("<QQ", 1 << 40, 3) + whole[24:]
    (tmp_path / "corrupt.gguf").write_bytes(corrupt)
    with pytest.raises(CheckpointError, match=r"corrupt\.gguf: header declares .* a corrupt file"):
        gguf_header.weight_count(tmp_path / "corrupt.gguf")
