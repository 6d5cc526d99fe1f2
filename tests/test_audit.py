"""Tests of the tamper-evident audit trail (flcore.governance.audit)."""

from __future__ import annotations

import itertools
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from flcore.exceptions import FlsuiteUserError
from flcore.governance.audit import GENESIS, AuditError, AuditTrail, digest, digest_bytes, format_report, verify


def make_trail(path: Path, n: int = 4) -> AuditTrail:
    trail = AuditTrail(path)
    trail.append("run-start", scenario="finance-five-banks", seed=0)
    for i in range(1, n - 1):
        trail.append("round", round=i, loss=np.float32(0.5) / i, sites=["bank_1", "bank_2"])
    if n > 1:
        trail.append("run-end", rounds=n - 2, out=Path("runs") / "x")
    return trail


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_chain_of_six_verifies(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "audit.jsonl"
    trail = make_trail(path, 6)
    report = verify(path)
    assert report.ok and report.entries == 6 and report.first_bad is None and report.problem is None
    assert report.head == trail.head()
    entries = [json.loads(line) for line in lines_of(path)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(entries))
    assert entries[0]["time"].endswith("Z")
    assert entries[-1]["out"] == str(Path("runs") / "x")
    text = format_report(report, path)
    assert text == f"audit trail {path}: 6 entries, chain intact, head {entries[-1]['hash'][:12]}"


def test_empty_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    assert AuditTrail(path).head() == (0, GENESIS)
    assert not verify(path).ok
    path.write_bytes(b"")
    assert verify(path).head == (0, GENESIS)


def test_reopen_continues_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = make_trail(path, 3)
    _seq, head = first.head()
    again = AuditTrail(path)
    assert again.head() == (3, head)
    entry = again.append("gate", passed=True)
    assert entry["seq"] == 4 and entry["prev"] == head
    first.append("round", round=9)  # the first object notices the other writer
    report = verify(path)
    assert report.ok and report.entries == 5


def test_append_returns_written_entry(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "a.jsonl")
    entry = trail.append("refusal", site="bank_3", reason="too few rows", counts=np.arange(3))
    assert json.loads(lines_of(trail.path)[0]) == entry
    assert entry["counts"] == [0, 1, 2] and trail.head() == (1, entry["hash"])


def line_of_offset(data: bytes, offset: int) -> int:
    """1-based line holding byte ``offset``; a line's ending newline belongs to that line."""
    return data[:offset].count(b"\n") + 1


def test_every_single_byte_edit_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    make_trail(path, 4)
    original = path.read_bytes()
    for offset, byte in enumerate(original):
        candidates = [b for b in b'x1 "' if b != byte][:3]
        if offset % 7 == 0:  # control and non-ASCII bytes on a sample
            candidates += [b for b in b"\x00\n\r\xff" if b != byte]
        for new in candidates:
            path.write_bytes(original[:offset] + bytes([new]) + original[offset + 1 :])
            report = verify(path)
            assert not report.ok, (offset, chr(byte), new)
            assert report.first_bad == line_of_offset(original, offset), (offset, chr(byte), report)
            assert report.problem and f"line {report.first_bad}" in report.problem


def test_edited_value_names_entry_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    make_trail(path, 4)
    lines = lines_of(path)
    lines[2] = lines[2].replace(b'"round":2', b'"round":3')
    path.write_bytes(b"".join(lines))
    report = verify(path)
    assert report.first_bad == 3
    assert report.problem == "entry 3 (line 3) was altered: its content no longer matches its hash"
    assert "is NOT intact: entry 3 (line 3)" in format_report(report, path)


def test_deleted_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    make_trail(path, 5)
    lines = lines_of(path)
    path.write_bytes(b"".join(lines[:1] + lines[2:]))
    report = verify(path)
    assert report.first_bad == 2 and report.entries == 1
    assert report.problem is not None
    assert report.problem.startswith("entry 3 (line 2): an entry was removed before it")
    assert "expected seq 2, found 3; its 'prev' does not match entry 1" in report.problem


def test_inserted_copy(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    make_trail(path, 5)
    lines = lines_of(path)
    path.write_bytes(b"".join([*lines[:3], lines[1], *lines[3:]]))
    report = verify(path)
    assert report.first_bad == 4
    assert report.problem is not None and "entry 2 (line 4): it is a duplicate or out of place" in report.problem


def test_swapped_entries(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    make_trail(path, 5)
    lines = lines_of(path)
    lines[1], lines[3] = lines[3], lines[1]
    path.write_bytes(b"".join(lines))
    assert verify(path).first_bad == 2


def test_forged_entry_with_recomputed_hash_breaks_next_link(tmp_path: Path) -> None:
    from flcore.governance.audit import _entry_hash, canonical

    path = tmp_path / "audit.jsonl"
    make_trail(path, 4)
    lines = lines_of(path)
    entry = json.loads(lines[1])
    entry["loss"] = 0.0
    entry["hash"] = _entry_hash(entry)
    lines[1] = canonical(entry) + b"\n"
    path.write_bytes(b"".join(lines))
    report = verify(path)
    assert report.first_bad == 3 and report.problem is not None and "does not match entry 2" in report.problem


def test_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    make_trail(path, 4)
    data = path.read_bytes()
    for cut in (1, 10):
        path.write_bytes(data[:-cut])
        report = verify(path)
        assert report.first_bad == 4
        assert report.problem is not None and "does not end with a line break" in report.problem


def test_expected_head_detects_removed_last_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = make_trail(path, 4)
    _, head = trail.head()
    assert verify(path, expected_head=head).ok
    assert verify(path, expected_head="sha256:" + head).ok
    lines = lines_of(path)
    path.write_bytes(b"".join(lines[:-1]))
    assert verify(path).ok  # the chain alone cannot see it
    report = verify(path, expected_head=head)
    assert not report.ok and report.first_bad == 4
    assert report.problem is not None and "removed from the end" in report.problem
    earlier = json.loads(lines[1])["hash"]
    assert verify(path, expected_head=earlier).ok  # extended after the recorded head: allowed


def test_append_to_tampered_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    make_trail(path, 4)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"bank_1", b"bank_9", 1))
    with pytest.raises(AuditError, match=r"not intact \(entry 2 \(line 2\) was altered") as info:
        AuditTrail(path).append("round", round=5)
    assert isinstance(info.value, FlsuiteUserError)
    assert path.read_bytes() == data.replace(b"bank_1", b"bank_9", 1)  # nothing was appended


def test_writer_refuses_after_truncation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = make_trail(path, 4)
    path.write_bytes(b"".join(lines_of(path)[:-1]))
    with pytest.raises(AuditError, match="shrank"):
        trail.append("round", round=5)


@pytest.mark.parametrize("name", ["seq", "time", "kind", "prev", "hash"])
def test_reserved_field_names(tmp_path: Path, name: str) -> None:
    trail = AuditTrail(tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match=f"'{name}'.*reserved"):
        trail.append("round", **{name: 1})
    assert not trail.path.exists()


def test_bad_kind_and_unserialisable_value(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match="non-empty string"):
        trail.append("")
    with pytest.raises(TypeError, match=r"JSON-serialisable.*got set"):
        trail.append("round", ids={1, 2})


def test_nan_becomes_null(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "a.jsonl")
    entry = trail.append("round", loss=float("nan"), auc=np.float64("inf"), xs=np.array([1.0, np.nan]))
    assert entry["loss"] is None and entry["auc"] is None and entry["xs"] == [1.0, None]
    assert b"null" in trail.path.read_bytes() and verify(trail.path).ok


def test_digest_is_canonical() -> None:
    assert digest({"b": 1, "a": [1.0, 2]}) == digest({"a": [np.float64(1.0), np.int64(2)], "b": 1})
    assert digest({"a": 1}).startswith("sha256:") and len(digest({"a": 1})) == 7 + 64
    assert digest_bytes(b"abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _writer(path: str, tag: int) -> None:
    trail = AuditTrail(path)
    for i in range(50):
        trail.append("round", writer=tag, i=i)


def test_two_processes_share_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), tag)) for tag in (1, 2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    report = verify(path)
    assert report.ok and report.entries == 100, report
    entries = [json.loads(line) for line in lines_of(path)]
    assert sorted((e["writer"], e["i"]) for e in entries) == [(t, i) for t in (1, 2) for i in range(50)]
