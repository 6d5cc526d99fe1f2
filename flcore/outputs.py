"""Outputs: every file the suite writes is written whole or not at all; a bad ``--out`` is refused before any work."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from flcore.exceptions import OutputFolderError

#: The file whose presence marks a finished run (written last, when every arm has ended).
RESULTS = "results.json"


def check_output_dir(path: Path | str, *, what: str, option: str = "--out") -> Path:
    """Check that ``path`` can hold outputs: an existing writable folder, or one that can be created.

    Nothing is created: a folder that does not exist yet passes when its nearest existing
    parent is a folder this user may write to.

    Parameters
    ----------
    path : Path or str
        The output folder.
    what : str
        What goes there, for the message (e.g. ``"the run's results"``).
    option : str
        The command-line option that named the folder, for the message.

    Returns
    -------
    Path
        ``path`` as a Path.

    Raises
    ------
    OutputFolderError
        If ``path`` is a file (or a broken link), a folder this user cannot write to, or cannot be
        created because a parent is a file or not writable.
    """
    path = Path(path)
    expected = f"Expected a folder for {what}: a new one, or one this user may write to"
    full = _existing(path, expected, option)
    if full is not None:
        if not full.is_dir():
            kind = "a link to nothing" if full.is_symlink() and not full.exists() else "a file, not a folder"
            raise OutputFolderError(
                f"{option} {path} is {kind}. {expected}. Choose another {option}, or move {path} out of the way."
            )
        if not _writable(full):
            raise OutputFolderError(
                f"{option} {path} is a folder this user cannot write to. {expected}. Choose another {option}, "
                f"or make it writable (chmod u+w {path})."
            )
    return path


def check_output_file(path: Path | str, *, what: str, option: str, name: str = "out.txt") -> Path:
    """Check that ``path`` can be written or appended to: an existing writable file, or one that can be created.

    Nothing is created.

    Parameters
    ----------
    path : Path or str
        The output file.
    what : str
        What it holds, for the message (e.g. ``"the audit trail"``).
    option : str
        The command-line option that named the file, for the message.
    name : str
        A file name to suggest inside ``path`` when ``path`` is a folder.

    Returns
    -------
    Path
        ``path`` as a Path.

    Raises
    ------
    OutputFolderError
        If ``path`` is a folder, a file this user cannot write to, or cannot be created because a
        parent is a file or not writable.
    """
    path = Path(path)
    expected = f"Expected a file for {what}: a new one, or one this user may write to"
    full = _existing(path, expected, option)
    if full is not None:
        if full.is_dir():
            raise OutputFolderError(
                f"{option} {path} is a folder, not a file. {expected}. Name a file, e.g. {option} {path / name}."
            )
        if not os.access(full, os.W_OK):
            raise OutputFolderError(
                f"{option} {path} is a file this user cannot write to. {expected}. Choose another {option}, "
                f"or make it writable (chmod u+w {path})."
            )
    return path


def finished_run(folder: Path | str) -> str | None:
    """How the finished run in ``folder`` is described to the user, or None when it holds none.

    Parameters
    ----------
    folder : Path or str
        An output folder of ``flsuite run`` or ``flsuite serve``.

    Returns
    -------
    str or None
        ``"results.json, written <time>"`` (the time when the file can be read), or None when
        ``folder/results.json`` does not exist.
    """
    file = Path(folder) / RESULTS
    if not file.is_file():
        return None
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{RESULTS}, unreadable"
    written = doc.get("created_utc") if isinstance(doc, dict) else None
    return f"{RESULTS}, written {written}" if isinstance(written, str) and written else RESULTS


def refuse_finished_run(folder: Path | str, *, force: bool, option: str = "--out") -> None:
    """Refuse to write a run into ``folder`` when it holds a finished run's results, unless ``force``.

    Parameters
    ----------
    folder : Path or str
        The output folder of the run about to start.
    force : bool
        True when the user passed ``--force`` to overwrite finished results.
    option : str
        The command-line option that named the folder, for the message.

    Raises
    ------
    OutputFolderError
        If ``folder/results.json`` exists and ``force`` is False.
    """
    found = finished_run(folder)
    if found is None or force:
        return
    raise OutputFolderError(
        f"{folder} holds the results of a finished run ({found}); a new run there would overwrite them. "
        f"Expected a new folder, or one without {RESULTS}: choose another {option}, or pass --force to overwrite it."
    )


def _existing(path: Path, expected: str, option: str) -> Path | None:
    """``path`` made absolute if it exists (the caller checks what it is); None once checked that it can be created."""
    full = Path(os.path.abspath(path))
    found = _nearest_existing(full)
    if found == full:
        return full
    _check_creatable(path, found, expected, option)
    return None


def _nearest_existing(full: Path) -> Path:
    """``full`` itself or its nearest parent that exists (links count, even broken ones)."""
    for candidate in (full, *full.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(full.anchor)


def _writable(folder: Path) -> bool:
    """Whether this user may create entries in ``folder``."""
    return os.access(folder, os.W_OK | os.X_OK)


def _check_creatable(path: Path, found: Path, expected: str, option: str) -> None:
    """``path`` does not exist: its nearest existing parent ``found`` must be a writable folder."""
    if not found.is_dir():
        raise OutputFolderError(
            f"{option} {path} cannot be created: {found} is a file, not a folder. {expected}. "
            f"Choose another {option}, or move {found} out of the way."
        )
    if not _writable(found):
        raise OutputFolderError(
            f"{option} {path} cannot be created: this user cannot write to {found}, its nearest existing folder. "
            f"{expected}. Choose another {option} under a folder you can write to, or make {found} writable."
        )


def cache_root() -> Path:
    """The per-user cache (synthetic sites, decoded images): ``$FLSUITE_CACHE``, else ``~/.cache/flsuite``."""
    return Path(os.environ.get("FLSUITE_CACHE", Path.home() / ".cache" / "flsuite"))


# -- writing ------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "w", *, permissions: int = 0o644) -> Iterator[IO[Any]]:
    """Write ``path`` whole or not at all: what a reader (or a crash) sees is the old file or the new one.

    The content goes to a temporary file with a unique name beside ``path`` (two
    writers never share one), is flushed and synced to disk, gets ``permissions``,
    and is renamed over ``path``; the folder is synced so the rename survives a crash.
    On any error the temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : Path or str
        The file to write (its folder is created if missing).
    mode : {"w", "wb"}
        Text (UTF-8) or binary.
    permissions : int
        The new file's mode bits (0o600 for files only their owner should read).

    Yields
    ------
    file object
        Open for writing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def write_text_atomic(path: Path | str, text: str, *, permissions: int = 0o644) -> Path:
    """Write ``text`` to ``path`` with :func:`atomic_write`; returns the path."""
    with atomic_write(path, "w", permissions=permissions) as handle:
        handle.write(text)
    return Path(path)


def _sync_folder(folder: Path) -> None:
    """Sync a folder's entries to disk (a rename is durable only then); best effort where it is not supported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename itself is still atomic
    finally:
        os.close(fd)
