"""Conformance checks every domain adapter must pass: bad files become data errors naming the file, never crashes.

As scikit-learn's ``estimator_checks`` does for estimators, this module is public so
that a new adapter proves it fits: describe how to build one valid site and where its
data files are (:class:`AdapterCase`), then run every check on it, e.g. with pytest::

    @pytest.mark.parametrize(("case", "check"), adapter_checks([MY_CASE]), ids=check_id)
    def test_adapter(case, check, tmp_path):
        check(case, tmp_path)

Each check copies the valid site, damages one data file (empty, truncated, the wrong
type, unreadable, a header that claims more memory than exists, an identifier in it)
and reads it in strict and lenient mode. Strict mode must raise
:class:`~flcore.exceptions.DataValidationError` naming the file; lenient mode may skip
the file (and count it in ``info["skipped"]``) or refuse the same way. No other
exception may escape, and no message may echo a planted value.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from flcore.data.site import DomainAdapter, SiteData
from flcore.exceptions import AdapterCheckError, DataValidationError

#: A distinctive value planted in files; it must never appear in an error message.
PLANTED = "Zebediah Quuxworth"


@dataclass(frozen=True)
class AdapterCase:
    """What the checks need to know about one adapter.

    Parameters
    ----------
    name : str
        Shown in test ids.
    adapter : DomainAdapter
        The adapter under test.
    make_site : callable
        ``make_site(folder)`` writes one valid site into ``folder`` (which does not exist yet).
    data_file : callable
        ``data_file(site)`` names a data file of the site that a read must open.
    plant_identifier : callable, optional
        ``plant_identifier(site) -> Path`` writes :data:`PLANTED` where the domain's
        identifiers live (a DICOM name, a table column named like an identifier) and
        returns the file; None for domains without personal data.
    plant_huge : callable, optional
        ``plant_huge(site) -> Path`` makes a data file whose header claims far more
        memory than exists; None where the format has no such header.
    """

    name: str
    adapter: DomainAdapter
    make_site: Callable[[Path], None]
    data_file: Callable[[Path], Path]
    plant_identifier: Callable[[Path], Path] | None = None
    plant_huge: Callable[[Path], Path] | None = None


Check = Callable[[AdapterCase, Path], None]


def _fail(message: str) -> None:
    raise AdapterCheckError(message)


def _site(case: AdapterCase, tmp_path: Path) -> Path:
    """A fresh copy of the case's valid site."""
    cache = tmp_path.parent / f".adapter-check-{case.name}"  # made once per test session, copied per check
    if not cache.is_dir():
        partial = cache.with_name(cache.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        case.make_site(partial)
        partial.rename(cache)
    site = tmp_path / "site"
    shutil.copytree(cache, site)
    return site


def _read(case: AdapterCase, site: Path, strict: bool) -> SiteData | DataValidationError:
    """Read ``site``; a DataValidationError is returned, any other exception fails the check."""
    try:
        return case.adapter.read(site, strict=strict)
    except DataValidationError as err:
        return err
    except Exception as err:  # the whole point of the check: report what escaped, with its type
        _fail(f"{case.name}: reading {site} (strict={strict}) raised {type(err).__name__}: {err}")
        raise


def _refused_or_skipped(case: AdapterCase, site: Path, bad: Path, what: str) -> None:
    """Strict mode refuses naming ``bad``; lenient mode skips it (counted) or refuses naming it."""
    for strict in (True, False):
        out = _read(case, site, strict)
        if isinstance(out, DataValidationError):
            if bad.name not in str(out):
                _fail(f"{case.name}: {what}: the error does not name {bad.name}: {out}")
            if PLANTED in str(out):
                _fail(f"{case.name}: {what}: the error echoes a planted value: {out}")
            continue
        if strict:
            _fail(f"{case.name}: {what}: strict mode read the site instead of refusing {bad.name}")
        counts = out.info.get("skipped", {})
        skipped = sum(int(v) for v in counts.values()) if isinstance(counts, dict) else 0
        if skipped < 1:
            _fail(f"{case.name}: {what}: lenient mode neither refused nor counted {bad.name} as skipped")


def check_valid_site(case: AdapterCase, tmp_path: Path) -> None:
    """The valid site reads in strict mode into float32 features and 0/1 int64 labels."""
    out = _read(case, _site(case, tmp_path), strict=True)
    if isinstance(out, DataValidationError):
        _fail(f"{case.name}: the valid site was refused: {out}")
        return
    if out.x.dtype.name != "float32" or out.y.dtype.name != "int64" or len(out) < 1:
        _fail(f"{case.name}: expected float32 x and int64 y, got {out.x.dtype} and {out.y.dtype}")
    if not set(out.y.tolist()) <= {0, 1}:
        _fail(f"{case.name}: labels other than 0 and 1")


def check_missing_and_empty_folder(case: AdapterCase, tmp_path: Path) -> None:
    """A folder that does not exist, or holds nothing, is a data error naming it."""
    for folder in (tmp_path / "nowhere", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
        out = _read(case, folder, strict=True)
        if not isinstance(out, DataValidationError) or folder.name not in str(out):
            _fail(f"{case.name}: reading {folder} gave {out!r}, expected a DataValidationError naming it")


def check_empty_file(case: AdapterCase, tmp_path: Path) -> None:
    """A 0-byte data file."""
    site = _site(case, tmp_path)
    bad = case.data_file(site)
    bad.write_bytes(b"")
    _refused_or_skipped(case, site, bad, "an empty file")


def check_truncated_file(case: AdapterCase, tmp_path: Path) -> None:
    """A data file cut to its first third (a copy that stopped half-way)."""
    site = _site(case, tmp_path)
    bad = case.data_file(site)
    data = bad.read_bytes()
    bad.write_bytes(data[: max(1, len(data) // 3)])
    _refused_or_skipped(case, site, bad, "a truncated file")


def check_wrong_type(case: AdapterCase, tmp_path: Path) -> None:
    """A data file holding something else entirely (bytes of another format, with a planted value)."""
    site = _site(case, tmp_path)
    bad = case.data_file(site)
    bad.write_bytes(b"%PDF-1.4\n" + PLANTED.encode() + bytes(range(256)) * 8)
    _refused_or_skipped(case, site, bad, "a file of the wrong type")


def check_unreadable(case: AdapterCase, tmp_path: Path) -> None:
    """A data file that cannot be opened: a link to nothing (permissions would not stop root)."""
    site = _site(case, tmp_path)
    bad = case.data_file(site)
    bad.unlink()
    bad.symlink_to(tmp_path / "gone" / bad.name)
    _refused_or_skipped(case, site, bad, "an unreadable file")


def check_huge_header(case: AdapterCase, tmp_path: Path) -> None:
    """A header claiming far more memory than exists is refused before anything is allocated."""
    if case.plant_huge is None:
        return
    site = _site(case, tmp_path)
    bad = case.plant_huge(site)
    _refused_or_skipped(case, site, bad, "a header claiming terabytes")


def check_identifier(case: AdapterCase, tmp_path: Path) -> None:
    """An identifier where the domain keeps them is refused or reported, never echoed."""
    if case.plant_identifier is None:
        return
    site = _site(case, tmp_path)
    bad = case.plant_identifier(site)
    out = _read(case, site, strict=True)
    if isinstance(out, DataValidationError):
        if bad.name not in str(out) or PLANTED in str(out):
            _fail(f"{case.name}: the identifier refusal must name {bad.name} without its value: {out}")
        return
    reported = out.info.get("identifier_findings", [])
    findings = list(reported) if isinstance(reported, list) else []
    if not any(bad.name in str(f) for f in findings):
        _fail(f"{case.name}: the identifier in {bad.name} was neither refused nor reported")
    if any(PLANTED.split()[0] in str(f) for f in findings):
        _fail(f"{case.name}: a finding echoes the identifier's value")


CHECKS: tuple[Check, ...] = (
    check_valid_site,
    check_missing_and_empty_folder,
    check_empty_file,
    check_truncated_file,
    check_wrong_type,
    check_unreadable,
    check_huge_header,
    check_identifier,
)


def adapter_checks(cases: list[AdapterCase]) -> Iterator[tuple[AdapterCase, Check]]:
    """Every (case, check) pair, for ``pytest.mark.parametrize``."""
    for case in cases:
        for check in CHECKS:
            yield case, check


def check_id(value: object) -> str:
    """Readable pytest ids: the case's name, the check's name."""
    return value.name if isinstance(value, AdapterCase) else getattr(value, "__name__", str(value))
