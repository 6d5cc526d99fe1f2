"""De-identification check of DICOM headers against the PS3.15 profile, as the site applies it.

For every element at any depth, the check applies the action the profile and the
options in force give it (:mod:`domains.medical.adapters.deid_profile`: the site's
declared ``deid_options`` and the options a file declares in its De-identification
Method Code Sequence (0012,0064)):

* X: the element must be absent or empty; Z: empty or a dummy value; D: a dummy
  value or a pseudonym matching the policy's ``pseudonym_patterns``;
* C (a clean option): the value may stay but is scanned for names, dates, record
  numbers, addresses, e-mail and phone numbers;
* K and U: not checked (a replaced UID cannot be told from an original one).

In addition, whatever the table says: every element of VR PN holding a real
value; every private element, unless its private creator is in the policy's
``safe_private_creators`` (PS3.15's Retain Safe Private option); every other text
element naming a person or contact by its form; and ``BurnedInAnnotation = YES``.

A finding names the file and the element's full path (``ReferencedPatientSequence[0]
> PatientID (0010,0020)``, private creator and element for private tags), never its
value, so that a report or a log does not spread the identifier it warns about.
Each element is reported once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from domains.medical.adapters.deid_profile import declared_options, effective_action, options_keeping
from flcore.data.files import describe_error
from flcore.governance.policy import GovernancePolicy
from flcore.governance.rules import Finding

_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC"})

#: Values de-identification tools write in place of an identifier (compared lower-case, without ^ = and spaces).
PLACEHOLDERS = frozenset(
    {
        "", "0", "anonymized", "anonymised", "anonymous", "anon", "removed", "deidentified", "de-identified",
        "none", "unknown", "n/a", "na", "redacted", "x", "xx", "xxx", "00000000", "00010101", "19000101",
        "000000", "000000.00", "000000.000000", "00010101010101.000000+0000", "000y", "000d", "000m", "000w",
        "http://anonymized.invalid",
    }
)  # fmt: skip

# -- free text -------------------------------------------------------------------------------
_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
#: What a text value may reveal by its form alone (checked everywhere text may stay).
_CONTACT_PATTERNS = (
    ("a person's name in DICOM form (family^given)", re.compile(r"[A-Za-z][A-Za-z'\-]*\^[A-Za-z]")),
    (
        "a person's name after a title",
        re.compile(r"\b(?:mr|mrs|ms|miss|mx|dr|prof|herr|frau|mme|mlle|sr|sra)\.?\s+[A-Z][a-z]", re.IGNORECASE),
    ),
    (
        "a labelled identifier (name, patient, MRN, date of birth, ...)",
        re.compile(
            r"\b(?:name|patient|pt|mrn|dob|d\.o\.b|born|birth\s*date|ssn|address|tel|phone|e-?mail)\b\s*[:#=]\s*\w",
            re.IGNORECASE,
        ),
    ),
    (
        "a person's name after a role",
        re.compile(
            r"\b(?:patient|pt|referred by|physician|doctor|nurse|operator|technologist|radiologist)\s+"
            r"[A-Z][a-z]+\s+[A-Z][a-z]+"
        ),
    ),
    ("an e-mail address", re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")),
    (
        "a phone number",  # international (+...), North American (555) 123-4567, national with a trunk 0
        re.compile(r"\+\d[\d ()-]{7,}\d|\(?\b\d{3}\)?[ -]\d{3}[ -]\d{4}\b|\b0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}\b"),
    ),
)
#: What a cleaned descriptor must not hold either (dates and record numbers are fine elsewhere, e.g. versions).
_DESCRIPTOR_PATTERNS = (
    *_CONTACT_PATTERNS,
    (
        "a date",
        re.compile(
            rf"\b(?:(?:19|20)\d\d[-/.]\d{{1,2}}[-/.]\d{{1,2}}|\d{{1,2}}[-/.]\d{{1,2}}[-/.](?:19|20)?\d\d"
            rf"|(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])|\d{{1,2}}\s+{_MONTHS}\s+\d{{2,4}}"
            rf"|{_MONTHS}\s+\d{{1,2}},?\s+\d{{4}})\b",
            re.IGNORECASE,
        ),
    ),
    ("a record number (6 or more digits)", re.compile(r"\b\d{6,}\b")),
)


def text_problem(text: str, descriptor: bool = True) -> str | None:
    """What identifying content a free-text value seems to hold (None if nothing), without the value."""
    for what, pattern in _DESCRIPTOR_PATTERNS if descriptor else _CONTACT_PATTERNS:
        if pattern.search(text):
            return what
    return None


# -- rules -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeidRules:
    """What a site declared about its de-identification (from its policy)."""

    options: frozenset[str] = frozenset()
    pseudonyms: tuple[re.Pattern[str], ...] = ()
    safe_private_creators: frozenset[str] = frozenset()

    @classmethod
    def of(cls, policy: GovernancePolicy) -> DeidRules:
        return cls(
            frozenset(policy.deid_options),
            tuple(re.compile(p) for p in policy.pseudonym_patterns),
            frozenset(c.strip() for c in policy.safe_private_creators),
        )


# -- the check ---------------------------------------------------------------------------------------


@dataclass
class _Walk:
    path: str
    rules: DeidRules
    options: frozenset[str]
    out: dict[str, Finding] = field(default_factory=dict)

    def add(self, where: str, reason: str, tag: int | None = None, creator: str = "") -> None:
        keep = tuple(o for o in options_keeping(tag) if o not in self.options) if tag is not None else ()
        hint = f' (if your de-identification keeps it on purpose, declare deid_options = ["{keep[0]}"])' if keep else ""
        self.out.setdefault(where, Finding(self.path, where, reason + hint, creator=creator, allowed_by=keep))


def identifier_findings(ds: Dataset, path: Path | str, rules: DeidRules | None = None) -> list[Finding]:
    """Every element of one file's header that the profile, as the site applies it, does not allow.

    Parameters
    ----------
    ds : pydicom.Dataset
        The file's dataset (pixel data need not be read).
    path : Path or str
        The file, named in each finding.
    rules : DeidRules, optional
        The site's declared options, pseudonym patterns and safe private creators
        (default: none, the basic profile as it stands).
    """
    rules = rules or DeidRules()
    walk = _Walk(str(path), rules, rules.options | declared_options(ds))
    _check_dataset(ds, "", walk)
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        walk.add("BurnedInAnnotation (0028,0301)", "is YES: identifiers may be burned into the pixels")
    return list(walk.out.values())


def unreadable_finding(path: Path | str, err: BaseException) -> Finding:
    """A file the identifier scan could not read: it may hold identifiers nobody checked."""
    return Finding(
        str(path),
        "file",
        f"could not be read as DICOM ({describe_error(err)}), so its header was not "
        "checked for identifiers; remove it from the folder or replace it with a readable, de-identified copy",
    )


def _name(tag: int, keyword: str) -> str:
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})" if keyword else f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _check_dataset(ds: Dataset, prefix: str, walk: _Walk) -> None:
    for elem in _elements(ds, prefix, walk):
        tag = int(elem.tag)
        if elem.tag.element == 0 or elem.tag.group == 0x0002:  # group lengths; file meta
            continue
        if elem.tag.is_private:
            _check_private(ds, elem, prefix, walk)
            continue
        where = prefix + _name(tag, elem.keyword or keyword_for_tag(tag))
        action = effective_action(tag, walk.options)
        if elem.VR == "SQ":
            _check_sequence(elem, where, action, walk)
        elif action not in ("K", "U") or elem.VR == "PN":
            _check_value(elem, where, action, walk)


def _elements(ds: Dataset, prefix: str, walk: _Walk) -> Iterable[DataElement]:
    """The dataset's elements; one that cannot be decoded is a finding (it may hold anything)."""
    for tag in list(ds.keys()):
        try:
            yield ds[tag]
        except (ValueError, TypeError, KeyError, OverflowError, UnicodeError, NotImplementedError) as err:
            t = int(tag)
            walk.add(
                prefix + _name(t, keyword_for_tag(t)),
                f"could not be decoded ({type(err).__name__}), so it was not checked for identifiers",
            )


def _check_sequence(elem: DataElement, where: str, action: str | None, walk: _Walk) -> None:
    items = list(elem.value or [])
    before = len(walk.out)
    for i, item in enumerate(items):
        _check_dataset(item, f"{where.rsplit(' (', 1)[0]}[{i}] > ", walk)
    if items and action is not None and action.startswith("X") and len(walk.out) == before and action != "X/Z/U*":
        walk.add(where, f"holds {len(items)} item(s); the basic profile removes it (action {action})", int(elem.tag))


def _values(elem: DataElement) -> list[Any]:
    value = elem.value
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        return [bytes(value)]
    if elem.VM > 1 or isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _is_placeholder(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).strip(b"\x00 ").decode("latin-1").lower()
    elif isinstance(value, (int, float)):
        return value == 0
    else:
        text = str(value).replace("^", " ").replace("=", " ").strip().lower()
    return " ".join(text.split()) in PLACEHOLDERS


def _check_value(elem: DataElement, where: str, action: str | None, walk: _Walk) -> None:
    tag = int(elem.tag)
    values = [v for v in _values(elem) if not _is_placeholder(v)]
    if not values:
        return
    length = sum(len(v) if isinstance(v, (bytes, str)) else len(str(v)) for v in values)
    size = f"{length} character{'s' if length != 1 else ''}"
    pseudonym = all(any(p.fullmatch(str(v).strip()) for p in walk.rules.pseudonyms) for v in values)
    if action == "C" or (action in ("K", "U", None) and elem.VR != "PN"):
        if elem.VR in _TEXT_VRS or elem.VR == "PN":
            problem = next((p for v in values if (p := text_problem(str(v), descriptor=action == "C"))), None)
            if problem:
                walk.add(where, f"holds text that looks like {problem} ({size})", tag)
        return
    if pseudonym:
        return
    if action is None or action in ("K", "U"):  # a person name the table does not list (or keeps)
        walk.add(where, f"names a person ({size}); every person name must be removed or replaced")
    elif action.startswith("X") and "D" not in action and "Z" not in action:
        walk.add(where, f"holds a value ({size}); the basic profile removes it (action X)", tag)
    elif "D" in action:
        walk.add(
            where,
            f"holds a value that is neither a dummy nor a declared pseudonym ({size}); the basic "
            f"profile replaces it (action {action})",
            tag,
        )
    else:
        walk.add(where, f"holds a value ({size}); the basic profile empties it (action {action})", tag)


def _check_private(ds: Dataset, elem: DataElement, prefix: str, walk: _Walk) -> None:
    tag = elem.tag
    if tag.is_private_creator:
        return  # the reservation names a vendor's block, not a person; its elements are checked
    creator_elem = ds.get((tag.group << 16) | (tag.element >> 8))
    creator = str(creator_elem.value).strip() if creator_elem is not None and creator_elem.value else ""
    if creator and creator in walk.rules.safe_private_creators:
        return
    if elem.is_empty:
        return
    where = f"{prefix}({tag.group:04X},{tag.element:04X}) private, creator '{creator or 'none'}'"
    if elem.VR == "SQ":
        size = f"{len(elem.value)} item(s)"
    elif isinstance(elem.value, (bytes, str)):
        size = f"{len(elem.value)} {'bytes' if isinstance(elem.value, bytes) else 'characters'}"
    else:
        size = f"{elem.VM} value(s)"
    walk.add(
        where,
        f"is a private element holding a value ({size}); "
        "PS3.15 removes private elements unless the site's policy names their creator in safe_private_creators",
        creator=creator,
    )
