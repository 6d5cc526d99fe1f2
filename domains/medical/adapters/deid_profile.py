"""DICOM PS3.15 Table E.1-1 and its option columns: the action the profile takes on each tag.

Which attributes the Basic Application Level Confidentiality Profile removes (X),
empties (Z), replaces with a dummy (D) or replaces as a UID (U) comes from the
tables of ``dicom-anonymizer`` (Kitware, BSD licence). We chose it over ``deid``
(a site recipe, not the standard's table) and ``dicognito`` (a pseudonymiser with
its own rules): it is the standard's own Table E.1-1 as data, regenerated at each
DICOM edition (its newest module is used), with every action and the repeating
overlay and curve groups, and importing it runs no anonymisation. The table's
option columns (retain dates, device identity, ..., clean descriptors) are not in
it: they come from ``ps315_options.json`` beside this file (see its ``about``),
and attributes newer than that file follow the options' own definitions (every
date and time, every UID).
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
from collections.abc import Iterable
from pathlib import Path

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from flcore.governance.policy import DEID_OPTIONS

#: CID 7050 codes (scheme DCM) of the profile and its options, as files declare them in (0012,0064).
OPTION_CODES = {
    "113100": "basic-profile",
    "113101": "clean-pixel-data",
    "113102": "clean-recognizable-visual-features",
    "113103": "clean-graphics",
    "113104": "clean-structured-content",
    "113105": "clean-descriptors",
    "113106": "retain-longitudinal-full-dates",
    "113107": "retain-longitudinal-modified-dates",
    "113108": "retain-patient-characteristics",
    "113109": "retain-device-identity",
    "113110": "retain-uids",
    "113111": "retain-safe-private",
    "113112": "retain-institution-identity",
}

_DATE_VRS = frozenset({"DA", "DT", "TM"})
_BIRTH = frozenset({0x00100030, 0x00100032})  # birth date and time: no longitudinal option keeps them
_OVERLAY_OR_CURVE = 0xFF00


@functools.lru_cache(maxsize=1)
def basic_profile() -> tuple[dict[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    """Action of the basic profile per tag (``X``, ``Z``, ``D``, ``U``, ``X/Z``, ...), and the masked rows.

    Masked rows (overlay and curve groups ``60xx``/``50xx``) are ``(group, element,
    group mask, element mask, action)``.
    """
    package = importlib.import_module("dicomanonymizer.dicom_anonymization_databases")
    newest = max(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("dicomfields_"))
    table = importlib.import_module(f"{package.__name__}.{newest}")
    actions, masked = {}, []
    for attr in dir(table):
        if not attr.endswith("_TAGS") or attr == "ALL_TAGS":
            continue
        action = attr.removesuffix("_TAGS").replace("_STAR", "*").replace("_", "/")
        for row in getattr(table, attr):
            if len(row) == 2:
                actions[(row[0] << 16) | row[1]] = action
            else:
                masked.append((row[0], row[1], row[2], row[3], action))
    return actions, tuple(masked)


@functools.lru_cache(maxsize=1)
def option_columns() -> dict[str, dict[int, str]]:
    """Per option, the action it sets per tag (``K``, ``C`` or ``X``), from ``ps315_options.json``."""
    raw = json.loads((Path(__file__).with_name("ps315_options.json")).read_text(encoding="utf-8"))
    columns = {name: {int(tag, 16): act for tag, act in col.items()} for name, col in raw["options"].items()}
    # Attributes newer than that file: the longitudinal options keep every date and time (but the birth date),
    # retain-uids every UID, as the options define them.
    actions, _ = basic_profile()
    for tag in actions:
        vr = _vr(tag)
        if vr in _DATE_VRS and tag not in _BIRTH:
            columns["retain-longitudinal-full-dates"].setdefault(tag, "K")
            columns["retain-longitudinal-modified-dates"].setdefault(tag, "C")
        elif vr == "UI":
            columns["retain-uids"].setdefault(tag, "K")
    return columns


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def profile_action(tag: int) -> str | None:
    """The basic profile's action for ``tag`` (None when the profile keeps it)."""
    actions, masked = basic_profile()
    if tag in actions:
        return actions[tag]
    group, element = tag >> 16, tag & 0xFFFF
    for g, e, gm, em, action in masked:
        if (group & gm) == g and (element & em) == e:
            return action
    return None


def _normalised(tag: int) -> int:
    group = tag >> 16
    if (group & _OVERLAY_OR_CURVE) in (0x5000, 0x6000):  # repeating groups: the table lists 5000 and 6000
        return ((group & _OVERLAY_OR_CURVE) << 16) | (tag & 0xFFFF)
    return tag


def declared_options(ds: Dataset) -> frozenset[str]:
    """The PS3.15 options a file says it applied (De-identification Method Code Sequence)."""
    found = set()
    for item in ds.get("DeidentificationMethodCodeSequence", None) or []:
        code = str(item.get("CodeValue", "")).strip()
        if code in OPTION_CODES and str(item.get("CodingSchemeDesignator", "DCM")).strip() in ("DCM", ""):
            found.add(OPTION_CODES[code])
    return frozenset(found & set(DEID_OPTIONS))


def effective_action(tag: int, options: Iterable[str]) -> str | None:
    """The action for ``tag`` once ``options`` apply: an option's K or C wins over the profile's action."""
    columns = option_columns()
    norm = _normalised(tag)
    chosen = [columns[o][norm] for o in options if o in columns and norm in columns[o]]
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        return "C"
    return "X" if "X" in chosen else profile_action(tag)


def options_keeping(tag: int) -> list[str]:
    """The options under which ``tag`` may stay (for the fix in a finding)."""
    norm = _normalised(tag)
    return [o for o, col in option_columns().items() if col.get(norm) in ("K", "C")]
