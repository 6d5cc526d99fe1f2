"""Data files at the boundary: checked (size, header, claimed memory) before any memory is allocated."""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa

from flcore.data.site import Problem

#: Largest file an adapter loads into memory unless told otherwise (512 MiB).
DEFAULT_MAX_BYTES = 512 * 2**20

#: What reading a data file can raise that is the file's fault, not a bug: I/O errors (a directory,
#: a permission, a vanished file), malformed content (numpy's and pandas' parse errors are
#: ValueErrors, text that is not UTF-8 a UnicodeDecodeError), a file that ends early, a claim on
#: more memory than there is, and pyarrow's errors for a corrupt Parquet file.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    MemoryError,
    UnicodeDecodeError,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
    pa.ArrowException,
)

_NPY_MAGIC = np.lib.format.MAGIC_PREFIX
_REEXPORT = "Copy or export the file again from its source, or remove it."


def memory_limit(max_bytes: int | None = DEFAULT_MAX_BYTES) -> int:
    """The most bytes one file may claim: ``max_bytes``, but never more than half the memory available now.

    Parameters
    ----------
    max_bytes : int or None
        The configured limit; None leaves only the memory bound.

    Returns
    -------
    int
        The limit in bytes.
    """
    half = int(psutil.virtual_memory().available) // 2
    return half if max_bytes is None else min(int(max_bytes), half)


def format_bytes(n: float) -> str:
    """A byte count for people: ``512 bytes``, ``1.5 MiB``, ``8.0 TiB``."""
    if n < 1024:
        return f"{int(n)} bytes"
    unit = "bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):  # noqa: B007 (the unit reached is the one shown)
        n /= 1024
        if n < 1024:
            break
    return f"{n:.1f} {unit}"


def describe_error(err: BaseException) -> str:
    """``Type: first line of the message`` for an error raised while reading, without repeating the path."""
    if isinstance(err, OSError) and err.strerror:
        return f"{type(err).__name__}: {err.strerror}"
    text = str(err).splitlines()[0] if str(err) else ""
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def regular_file(path: Path) -> Problem | None:
    """A ``unreadable`` :class:`~flcore.data.site.Problem` unless ``path`` is a regular file this process may read.

    A directory, a pipe or a device named like a data file is refused here, before
    anything tries to open it (opening a pipe would wait forever).
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as err:
        return Problem(
            str(path),
            "unreadable",
            f"the file could not be opened ({describe_error(err)}).",
            "Check that it exists (a broken link?) and that this user may read it.",
        )
    if not stat.S_ISREG(info.st_mode):
        found = "a directory" if stat.S_ISDIR(info.st_mode) else "a pipe, socket or device"
        return Problem(
            str(path),
            "unreadable",
            f"expected a regular file, found {found} with a data file's name.",
            "Rename it or move it out of the data folder.",
        )
    if not os.access(path, os.R_OK):
        return Problem(
            str(path),
            "unreadable",
            "the file exists but this user may not read it (permission denied).",
            "Give the user running flsuite read permission on the file (e.g. chmod a+r).",
        )
    return None


def check_claimed_size(path: Path, claimed: int, limit: int, *, what: str, fix: str) -> Problem | None:
    """A ``too_large`` :class:`~flcore.data.site.Problem` when ``claimed`` bytes exceed ``limit``.

    Parameters
    ----------
    path : Path
        The file, named in the problem.
    claimed : int
        Bytes the file would take in memory, as its header or metadata claims.
    limit : int
        The most bytes allowed (see :func:`memory_limit`).
    what : str
        What makes the claim, e.g. "its header" or "its Parquet metadata".
    fix : str
        How to fix it (split the file, raise the limit).
    """
    if claimed <= limit:
        return None
    return Problem(
        str(path),
        "too_large",
        f"{what} claims {format_bytes(claimed)} once loaded, more than the {format_bytes(limit)} allowed "
        "(the configured limit, or half of the memory available if that is less).",
        fix,
    )


@dataclass(frozen=True)
class NpyHeader:
    """What an ``.npy`` file's header says, and how many bytes the file really holds.

    Parameters
    ----------
    shape : tuple of int
        The array's shape.
    dtype : numpy.dtype
        Its element type.
    fortran_order : bool
        Whether the data are stored column-major.
    data_offset : int
        Where the data start (the header's length).
    file_bytes : int
        The file's size.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int
    file_bytes: int

    @property
    def claimed_bytes(self) -> int:
        """Bytes the data take, as the header claims (exact integers: no overflow for absurd shapes)."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def data_bytes(self) -> int:
        """Bytes that follow the header in the file."""
        return self.file_bytes - self.data_offset


def read_npy_header(path: Path) -> NpyHeader | Problem:
    """Read an ``.npy`` file's header (numpy's public format API) without reading its data.

    Returns
    -------
    NpyHeader or Problem
        The header, or why the file is not a readable ``.npy`` array: ``unreadable`` (not a
        regular file, permission, not .npy, bad header, object dtype) or ``truncated``
        (empty, or it ends inside the header).
    """
    path = Path(path)
    problem = regular_file(path)
    if problem is not None:
        return problem
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = fh.read(len(_NPY_MAGIC))
            if size == 0 or len(start) < len(_NPY_MAGIC):
                return Problem(
                    str(path),
                    "truncated",
                    f"the file holds {format_bytes(size)}, too few for an .npy header (an interrupted copy?).",
                    _REEXPORT,
                )
            if start != _NPY_MAGIC:
                # Say what it is not, without echoing its first bytes (they could be anyone's data).
                return Problem(
                    str(path),
                    "unreadable",
                    "the file is not an .npy array: it does not start with the .npy signature.",
                    "Save recordings with numpy.save, or give other formats their own suffix (.csv, .parquet).",
                )
            fh.seek(0)
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, fortran_order, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran_order, dtype = fmt.read_array_header_2_0(fh)
            else:
                return Problem(
                    str(path),
                    "unreadable",
                    f"the file is an .npy file of format version {version[0]}.{version[1]}; versions 1.0 and 2.0 "
                    "are read.",
                    "Save plain numeric arrays with numpy.save, which writes version 1.0.",
                )
            offset = fh.tell()
    except READ_ERRORS as err:
        if "EOF" in str(err):  # numpy's words for a file that ends inside the header
            return Problem(
                str(path), "truncated", "the file could not be read: it ends inside its .npy header.", _REEXPORT
            )
        return Problem(
            str(path), "unreadable", f"the file's .npy header could not be read ({describe_error(err)}).", _REEXPORT
        )
    if dtype.hasobject:
        return Problem(
            str(path),
            "unreadable",
            "the array holds Python objects, which are never unpickled from data files.",
            "Save the samples as a numeric array (float32 or float64).",
        )
    if any(d < 0 for d in shape):
        return Problem(str(path), "unreadable", f"the header gives an impossible shape {shape}.", _REEXPORT)
    return NpyHeader(tuple(shape), dtype, bool(fortran_order), offset, size)


def load_npy(path: Path, limit: int, *, too_large_fix: str) -> np.ndarray | Problem:
    """Load an ``.npy`` array only if its header is sound, the data are all there and they fit ``limit``.

    Parameters
    ----------
    path : Path
        The file.
    limit : int
        The most bytes the array may take (see :func:`memory_limit`).
    too_large_fix : str
        The fix given when the array is larger than ``limit``.

    Returns
    -------
    numpy.ndarray or Problem
        The array, or a ``truncated``, ``too_large`` or ``unreadable`` problem naming the file.
    """
    header = read_npy_header(path)
    if isinstance(header, Problem):
        return header
    claimed = header.claimed_bytes
    if claimed > header.data_bytes:
        return Problem(
            str(path),
            "truncated",
            f"its header describes a {header.dtype} array of shape {header.shape} ({format_bytes(claimed)}) but "
            f"only {format_bytes(header.data_bytes)} follow the header: the file is truncated or its header "
            "corrupt.",
            _REEXPORT,
        )
    too_large = check_claimed_size(path, claimed, limit, what="its .npy header", fix=too_large_fix)
    if too_large is not None:
        return too_large
    try:
        with open(path, "rb") as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    except MemoryError:
        return Problem(
            str(path),
            "too_large",
            f"there is not enough memory to load its {format_bytes(claimed)}.",
            too_large_fix,
        )
    except READ_ERRORS as err:
        return Problem(str(path), "unreadable", f"the array could not be read ({describe_error(err)}).", _REEXPORT)


def table_claimed_bytes(path: Path) -> int:
    """Bytes a CSV or Parquet table would take once loaded, as far as can be told without loading it.

    A CSV is taken at its file size (numbers as text take about as many bytes as in
    memory). A Parquet file is taken at its metadata's uncompressed size, and at least 8
    bytes a cell: dictionary and run-length encodings can make a huge table's pages small.

    Raises
    ------
    OSError, pyarrow.ArrowException
        When the file or its Parquet footer cannot be read.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return os.stat(path).st_size
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    uncompressed = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return max(int(uncompressed), int(meta.num_rows) * int(meta.num_columns) * 8)


def preflight_table(path: Path, limit: int, *, too_large_fix: str) -> Problem | None:
    """Check a CSV or Parquet file before reading it: a regular, readable file whose claimed size fits ``limit``.

    Returns
    -------
    Problem or None
        ``unreadable`` (not a regular file, permission, a Parquet footer that cannot be
        read), ``too_large``, or None when the file may be read.
    """
    path = Path(path)
    problem = regular_file(path)
    if problem is not None:
        return problem
    kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
    try:
        claimed = table_claimed_bytes(path)
    except READ_ERRORS as err:
        return Problem(
            str(path),
            "unreadable",
            f"the file could not be read as {kind} ({describe_error(err)}).",
            f"Check that it is a complete {kind} file, or export it again from its source.",
        )
    what = "the file" if kind == "CSV" else "its Parquet metadata"
    return check_claimed_size(path, claimed, limit, what=what, fix=too_large_fix)
