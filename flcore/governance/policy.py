"""Governance policies: what a site or the federation allows, read from TOML over the domain's defaults.

A policy says what a site (or the whole federation) allows: a minimum cohort after
consent filtering, consent per record, de-identified files, differential privacy
with a budget per run and in total, the domains and tasks it takes part in, and
the training plans its data office approved. Domains ship defaults
(``domains/<d>/governance.py``); a TOML file overrides them. The rules that apply
a policy to a run are in :mod:`flcore.governance.rules`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flcore.data.site import SITE_POLICY_FILE, SITE_STATE
from flcore.exceptions import GovernanceError

#: File a site keeps next to its data (in its folder) to state its own policy.

#: The options of DICOM PS3.15's Basic Application Level Confidentiality Profile (Table E.1-1's
#: columns; codes 113101-113112 of CID 7050) a policy's ``deid_options`` may name.
DEID_OPTIONS = (
    "clean-pixel-data",
    "clean-recognizable-visual-features",
    "clean-graphics",
    "clean-structured-content",
    "clean-descriptors",
    "retain-longitudinal-full-dates",
    "retain-longitudinal-modified-dates",
    "retain-patient-characteristics",
    "retain-device-identity",
    "retain-uids",
    "retain-safe-private",
    "retain-institution-identity",
)


@dataclass(frozen=True)
class GovernancePolicy:
    """Rules a site (or the federation) imposes on every run.

    Parameters
    ----------
    min_cohort : int
        Fewest records a site must hold after consent filtering (small cohorts leak more).
    min_positives : int
        Fewest positive records a site must hold (0 disables).
    require_consent : bool
        Records need recorded consent; those without it are never loaded, and a site
        whose data record no consent at all is refused.
    max_epsilon_per_run : float or None
        Most differential-privacy epsilon one run may spend (None: no limit). It
        binds runs with differential privacy; ``require_dp`` refuses runs without.
    max_epsilon_total : float or None
        Most epsilon a site spends over all runs, kept in its privacy ledger.
    delta : float
        DP delta per run.
    require_dp : bool
        Refuse runs without differential privacy.
    require_secure_aggregation : bool
        Refuse runs in which the coordinator would see individual updates.
    require_deidentified : bool
        Refuse a site whose files carry direct identifiers (see :class:`~flcore.governance.rules.Finding`).
    deid_options : tuple of str
        DICOM PS3.15 confidentiality profile options the site's de-identification
        applied, which the check then honours (:data:`DEID_OPTIONS`): e.g.
        ``retain-longitudinal-full-dates`` lets dates stay, ``clean-descriptors``
        lets cleaned free-text descriptions stay (they are still scanned). Options a
        file declares in its De-identification Method Code Sequence count as well.
    pseudonym_patterns : tuple of str
        Regular expressions (matched against the whole value) of the pseudonyms the
        site's de-identification writes in place of names and record numbers, e.g.
        ``SUBJ-[0-9]{4}``; a value matching one is accepted where the profile
        replaces an identifier.
    safe_private_creators : tuple of str
        Private creators (the LO value of a private block's reservation) whose
        private elements hold no identifier (PS3.15's Retain Safe Private option);
        every other private element is a finding.
    drop_columns : tuple of str
        Columns of the site's tables that are never read: identifiers the export
        keeps for the site's own records (``mrn``, ``patient_name``). Any other
        column that looks like a direct identifier is refused.
    allowed_domains, allowed_tasks : tuple of str
        Domains and tasks (scenario names or task kinds such as
        ``binary-classification``) the site takes part in; empty allows any.
    require_approved_plan : bool
        Train only under a training plan whose hash is in ``approved_plans``.
    approved_plans : tuple of str
        Hashes (``sha256:...``) of the plans the site's data office approved
        (``flsuite plan SCENARIO --approve POLICY``).
    audit_trail : bool
        Whether every run is written to the audit trail.
    ledger : str
        Where the site's privacy ledger lives (default: ``.flsuite/privacy-ledger.json``
        in the site folder); relative paths are relative to the policy file.
    source : str
        Where the policy came from (a file, or the domain's defaults); for messages.
    """

    min_cohort: int = 1
    min_positives: int = 0
    require_consent: bool = False
    max_epsilon_per_run: float | None = None
    max_epsilon_total: float | None = None
    delta: float = 1e-5
    require_dp: bool = False
    require_secure_aggregation: bool = False
    require_deidentified: bool = False
    deid_options: tuple[str, ...] = ()
    pseudonym_patterns: tuple[str, ...] = ()
    safe_private_creators: tuple[str, ...] = ()
    drop_columns: tuple[str, ...] = ()
    allowed_domains: tuple[str, ...] = ()
    allowed_tasks: tuple[str, ...] = ()
    require_approved_plan: bool = False
    approved_plans: tuple[str, ...] = ()
    audit_trail: bool = True
    ledger: str = ""
    source: str = "defaults"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> GovernancePolicy:
        data = dict(values)
        for f in dataclasses.fields(cls):
            if f.name in data and isinstance(getattr(_DEFAULTS, f.name), tuple):
                data[f.name] = tuple(data[f.name])
        return cls(**data)


_DEFAULTS = GovernancePolicy()

#: Keys a policy file may set (everything but ``source``).
POLICY_KEYS = tuple(f.name for f in dataclasses.fields(GovernancePolicy) if f.name != "source")


def load_policy(path: Path | str, base: GovernancePolicy | None = None) -> GovernancePolicy:
    """Read a TOML policy; keys it sets replace those of ``base`` (the domain's defaults).

    Keys may sit at the top level or in any table (``[privacy]``, ``[cohort]``);
    dashes and underscores are equivalent.

    Raises
    ------
    GovernanceError
        Naming the file and the key, for a missing or malformed file, an unknown key
        or a value of the wrong type.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GovernanceError(f"Policy file {path} does not exist. Pass an existing TOML file.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise GovernanceError(f"Policy file {path} cannot be read ({err}). Save it as UTF-8 text.") from None
    return parse_policy(text, path, base)


def parse_policy(text: str, path: Path, base: GovernancePolicy | None = None) -> GovernancePolicy:
    """A policy from TOML ``text`` (from ``path``, named in errors), over ``base``; see :func:`load_policy`."""
    base = base or GovernancePolicy()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise GovernanceError(
            f"Policy file {path} is not valid TOML ({err}). Fix the file; `flsuite policy show --domain D` prints a "
            "valid one."
        ) from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            flat[k.replace("-", "_")] = v
    changes: dict[str, Any] = {}
    for key, value in flat.items():
        if key not in POLICY_KEYS:
            raise GovernanceError(f"Policy file {path}: unknown key '{key}'. Valid keys: {', '.join(POLICY_KEYS)}.")
        changes[key] = _policy_value(path, key, value)
    if changes.get("ledger"):
        ledger = Path(changes["ledger"])
        changes["ledger"] = str(ledger if ledger.is_absolute() else (path.parent / ledger).resolve())
    return dataclasses.replace(base, **changes, source=str(path))


def _policy_value(path: Path, key: str, value: Any) -> Any:
    default = getattr(GovernancePolicy(), key)
    if isinstance(default, bool):
        ok, out, expected = isinstance(value, bool), value, "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        out, expected = value, "a non-negative integer"
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        out, expected = (tuple(value) if ok else value), "a list of strings"
    elif isinstance(default, str):
        ok, out, expected = isinstance(value, str), value, "a string"
    else:  # float, or None meaning no limit
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")
        out, expected = (float(value) if ok else value), "a positive number"
        if key == "delta":
            ok, expected = ok and out < 1, "a number in (0, 1)"
    if not ok:
        raise GovernanceError(f"Policy file {path}: '{key}' must be {expected}. Got {value!r} instead.")
    if key == "deid_options":
        unknown = [v for v in out if v not in DEID_OPTIONS]
        if unknown:
            raise GovernanceError(
                f"Policy file {path}: deid_options names {unknown[0]!r}, which is not a PS3.15 option. "
                f"Valid options: {', '.join(DEID_OPTIONS)}."
            )
    if key == "pseudonym_patterns":
        for pattern in out:
            try:
                re.compile(pattern)
            except re.error as err:
                raise GovernanceError(
                    f"Policy file {path}: pseudonym pattern {pattern!r} is not a valid regular expression ({err}). "
                    "Write it as a Python regular expression matching a whole pseudonym, e.g. 'SUBJ-[0-9]{4}'."
                ) from None
    return out


def site_policy(site_dir: Path | None, base: GovernancePolicy) -> GovernancePolicy:
    """A site's own policy: ``policy.toml`` in its folder over the domain's defaults, or the defaults."""
    if site_dir is not None and (site_dir / SITE_POLICY_FILE).is_file():
        return load_policy(site_dir / SITE_POLICY_FILE, base)
    return base


def ledger_path(site_dir: Path | None, policy: GovernancePolicy) -> Path | None:
    """Where a site's privacy ledger lives (None for generated data, which has no one to protect)."""
    if policy.ledger:
        return Path(policy.ledger)
    return site_dir / SITE_STATE / "privacy-ledger.json" if site_dir is not None else None


def policy_toml(policy: GovernancePolicy, title: str = "") -> str:
    """A policy as a TOML file a site can edit (keys with no value, such as no epsilon limit, commented out)."""
    lines = [
        f"# {title}" if title else "# flsuite governance policy",
        "# Every key is described in the README (Governance and privacy) and in flcore/governance/policy.py.",
    ]
    for key in POLICY_KEYS:
        value = getattr(policy, key)
        if value is None or (key == "ledger" and not value):
            lines.append(f"# {key} = ...")
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, tuple):
            lines.append(f"{key} = [{', '.join(json.dumps(v) for v in value)}]")
        elif isinstance(value, str):
            lines.append(f"{key} = {json.dumps(value)}")
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"


def site_drop_columns(site_dir: Path) -> tuple[str, ...]:
    """The columns a site's own ``policy.toml`` declares never to read (its ``drop_columns``)."""
    return site_policy(Path(site_dir), GovernancePolicy()).drop_columns
