"""Tamper-evident, append-only audit trail: JSON lines, each entry chained to the previous one by SHA-256."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from flcore.exceptions import AuditError

GENESIS = "0" * 64
RESERVED = frozenset({"seq", "time", "kind", "prev", "hash"})


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """Outcome of :func:`verify`.

    Parameters
    ----------
    ok : bool
        True when every entry is intact and correctly chained.
    entries : int
        Number of intact entries (before the first bad one when ``ok`` is False).
    first_bad : int or None
        1-based line number of the first bad entry.
    problem : str or None
        What is wrong, in plain words.
    head : tuple of (int, str) or None
        Seq and hash of the last entry when ``ok``; ``(0, GENESIS)`` for an empty trail.
    """

    ok: bool
    entries: int
    first_bad: int | None = None
    problem: str | None = None
    head: tuple[int, str] | None = None


def _jsonable(obj: Any) -> Any:
    """Convert numpy values, paths, dataclasses and dates to strict-JSON values (NaN/inf become None)."""
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    raise TypeError(
        f"Expected a JSON-serialisable value (str, number, bool, None, list, dict, numpy value, Path), "
        f"got {type(obj).__name__}: {obj!r:.80}. Convert it first, e.g. to a list or a string."
    )


def canonical(obj: Any) -> bytes:
    """The canonical JSON bytes of ``obj``: sorted keys, no spaces, ASCII only, no NaN."""
    text = json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii")


def digest(obj: Any) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of ``obj`` (configs, metrics, small arrays)."""
    return digest_bytes(canonical(obj))


def digest_bytes(data: bytes) -> str:
    """``"sha256:<hex>"`` of raw bytes (e.g. ``array.tobytes()`` for large arrays)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _entry_hash(entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def _check_line(raw: bytes, line: int, prev: str) -> tuple[str, str | None]:
    """Check one line against the chain so far; return its hash and the problem (None when intact)."""
    if not raw.endswith(b"\n"):
        return "", (
            f"line {line}, the last line, is incomplete: the file does not end with a line break, "
            "so the last entry was cut off or altered"
        )
    body = raw[:-1]
    if not body.strip():
        return "", f"line {line} is empty: a blank line was inserted or an entry was erased"
    try:
        entry = json.loads(body)
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Extra data"):
            return "", (
                f"line {line} was altered: it holds text after the end of an entry "
                "(the line break between two entries was removed or replaced)"
            )
        return "", f"line {line} was altered: it can no longer be read as an entry ({exc.msg})"
    except ValueError:  # bytes that are not valid UTF-8
        return "", f"line {line} was altered: it contains bytes that cannot appear in an entry"
    fields = {"seq": int, "time": str, "kind": str, "prev": str, "hash": str}
    if not isinstance(entry, dict) or any(
        not isinstance(entry.get(k), t) or isinstance(entry.get(k), bool) for k, t in fields.items()
    ):
        return "", f"line {line} was altered: it lacks the fields every entry has (seq, time, kind, prev, hash)"
    seq, name = entry["seq"], f"entry {entry['seq']} (line {line})"
    if canonical(entry) != body:
        return "", f"{name} was altered: its text differs from the exact form in which it was written"
    if _entry_hash(entry) != entry["hash"]:
        return "", f"{name} was altered: its content no longer matches its hash"
    before = f"entry {line - 1}" if line > 1 else "the start of the trail"
    prev_note = "" if entry["prev"] == prev else f"; its 'prev' does not match {before}"
    if seq > line:
        what = "an entry was removed before it, or the entries were reordered"
    elif seq < line:
        what = "it is a duplicate or out of place: an entry was inserted, or the entries were reordered"
    elif prev_note:
        return "", f"{name}: the entry before it was replaced or removed (its 'prev' does not match {before})"
    else:
        return entry["hash"], None
    return "", f"{name}: {what} (expected seq {line}, found {seq}{prev_note})"


def _scan(lines: Iterable[bytes], seq: int, prev: str) -> tuple[int, str, int | None, str | None]:
    """Check ``lines`` continuing a chain at (``seq``, ``prev``); return the new head and the first problem."""
    for raw in lines:
        digest_hex, problem = _check_line(raw, seq + 1, prev)
        if problem is not None:
            return seq, prev, seq + 1, problem
        seq, prev = seq + 1, digest_hex
    return seq, prev, None, None


def verify(path: Path | str, expected_head: str | None = None) -> VerifyReport:
    """Check that an audit trail is intact and find the first bad entry.

    Detects any altered byte (inside values, keys, hashes or line breaks), removed, inserted and
    reordered entries, and a last line cut off before its line break. Removing whole entries from the
    end cannot be detected by the chain alone (the shorter file is a valid chain): pass the head hash
    recorded elsewhere, e.g. in a run's results.json, as ``expected_head``.

    Parameters
    ----------
    path : Path or str
        The JSON-lines trail.
    expected_head : str, optional
        Hash (hex, optionally prefixed ``sha256:``) that the trail must contain. If it is absent,
        entries were removed from the end. If it belongs to an earlier entry, the trail was extended
        after it, which an append-only trail allows.

    Returns
    -------
    VerifyReport
        ``ok`` with the head, or the 1-based line of the first bad entry and the problem.
    """
    path = Path(path)
    if not path.is_file():
        return VerifyReport(False, 0, None, f"the audit trail file {path} does not exist")
    with path.open("rb") as fh:
        seq, prev, bad, problem = _scan(fh, 0, GENESIS)
    if bad is not None:
        return VerifyReport(False, seq, bad, problem)
    want = expected_head.removeprefix("sha256:") if expected_head else prev
    if want not in (prev, GENESIS):
        with path.open("rb") as fh:  # an earlier head is fine: append-only trails grow
            if not any(json.loads(raw)["hash"] == want for raw in fh):
                problem = (
                    f"entries were removed from the end: the trail stops at entry {seq} (hash {prev[:12]}), "
                    f"but the recorded head {want} is not in it"
                )
                return VerifyReport(False, seq, seq + 1, problem)
    return VerifyReport(True, seq, None, None, (seq, prev))


def format_report(report: VerifyReport, path: Path | str) -> str:
    """The one-line verdict printed by the CLI."""
    if report.ok and report.head is not None:
        return f"audit trail {path}: {report.entries} entries, chain intact, head {report.head[1][:12]}"
    return f"audit trail {path} is NOT intact: {report.problem}"


class AuditTrail:
    """Append-only audit trail in a JSON-lines file; each entry carries the hash of the previous one.

    Every append takes an exclusive ``flock`` on the file, checks entries written since its last look
    (the whole file on first use), then writes one line with a single write, flush and fsync, so
    concurrent writers in several processes extend one unbroken chain.

    Parameters
    ----------
    path : Path or str
        The trail file; it and its folder are created on first append. An existing file is continued.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._offset = 0  # bytes of the file already checked
        self._seq, self._prev = 0, GENESIS

    def head(self) -> tuple[int, str]:
        """Seq and hash of the last entry, ``(0, GENESIS)`` when empty.

        Raises
        ------
        AuditError
            If the file is not an intact trail.
        """
        if not self.path.exists():
            return 0, GENESIS
        with self.path.open("rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
            self._catch_up()
        return self._seq, self._prev

    def append(self, kind: str, /, **fields: Any) -> dict[str, Any]:
        """Write one entry and return it (with ``seq``, ``time``, ``prev`` and ``hash`` filled in).

        Raises
        ------
        ValueError
            If ``kind`` is empty or a field uses a reserved name (seq, time, kind, prev, hash).
        AuditError
            If the existing file is not an intact trail.
        """
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"Expected 'kind' to be a non-empty string such as 'round', got {kind!r}.")
        clash = sorted(RESERVED & fields.keys())
        if clash:
            raise ValueError(
                f"Field name(s) {clash} are reserved by the audit trail ({', '.join(sorted(RESERVED))}); "
                f"rename them, e.g. '{clash[0]}_value'."
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._catch_up()
            time = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            entry = {**_jsonable(fields), "seq": self._seq + 1, "time": time, "kind": kind, "prev": self._prev}
            entry["hash"] = _entry_hash(entry)
            line = canonical(entry) + b"\n"
            written = os.write(fd, line)
            if written != len(line):  # pragma: no cover - regular files are written whole
                raise OSError(f"short write to audit trail {self.path}: {written} of {len(line)} bytes")
            os.fsync(fd)
            self._offset += len(line)
            self._seq, self._prev = entry["seq"], entry["hash"]
        finally:
            os.close(fd)  # closing the file releases the lock
        return entry

    def _catch_up(self) -> None:
        """Check the entries written since the last look (caller holds the lock)."""
        with self.path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < self._offset:
                self._fail(f"the file shrank from {self._offset} to {size} bytes: entries were removed")
            fh.seek(self._offset)
            seq, prev, bad, problem = _scan(fh, self._seq, self._prev)
            if bad is not None:
                self._fail(problem or "")
            self._offset, self._seq, self._prev = fh.tell(), seq, prev

    def _fail(self, problem: str) -> None:
        raise AuditError(
            f"Cannot extend the audit trail {self.path}: it is not intact ({problem}). "
            "Expected an unbroken chain of entries. Keep the damaged file as evidence, and restore it "
            "from a backup or start a new trail at another path."
        )
