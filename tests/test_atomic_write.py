"""One atomic writer for every file the suite writes: whole or not at all, unique temporary names, permissions."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from flcore.outputs import atomic_write, write_text_atomic


def test_written_whole_with_the_requested_permissions(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "sub" / "a.json", "{}\n")
    assert path.read_text() == "{}\n" and stat.S_IMODE(path.stat().st_mode) == 0o644
    with atomic_write(tmp_path / "b.bin", "wb", permissions=0o600) as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o600


def test_a_failure_half_way_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError, match="half-way"), atomic_write(path) as handle:
        handle.write("new, but not all of it")
        raise RuntimeError("half-way")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_two_writers_never_share_a_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    with atomic_write(path) as first, atomic_write(path) as second:
        assert first.name != second.name  # both open at once, each on its own temporary file
        first.write("first")
        second.write("second")
    assert path.read_text() == "first"  # the last to finish wins, whole
