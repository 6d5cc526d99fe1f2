"""`flsuite site check`: what a site's data office runs before joining a federation.

It reads the site's data through its domain's adapter, exactly as training would,
applies the domain's governance policy (minimum cohort, de-identification), and
lists every problem and every direct identifier with its file and tag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flcore import scenario as scenario_registry
from flcore.data.site import DomainAdapter
from flcore.exceptions import DataValidationError, FlsuiteUserError, GovernanceError, UnknownNameError
from flcore.governance.ledger import PrivacyLedger
from flcore.governance.policy import GovernancePolicy, ledger_path, load_policy, site_policy
from flcore.governance.rules import Finding, check_min_cohort, open_findings


@dataclass
class SiteReport:
    """The outcome of checking one site folder."""

    name: str
    path: str
    records: int | None = None
    positives: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """Every site's report; ``ok`` when nothing blocks training."""

    domain: str
    strict: bool
    sites: list[SiteReport]

    @property
    def ok(self) -> bool:
        return not any(s.errors or s.findings for s in self.sites)

    def text(self) -> str:
        lines = []
        for s in self.sites:
            head = f"{s.name} ({s.path}): "
            if s.records is not None:
                head += f"{s.records} usable records, {s.positives} positive"
                skipped = {k: v for k, v in s.skipped.items() if v}
                if skipped:
                    head += "; left out: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items())
            else:
                head += "not readable"
            lines.append(head)
            lines += [f"  skipped: {p}" for p in s.problems]
            lines += [f"  identifier: {f}" for f in s.findings]
            lines += [f"  error: {e}" for e in s.errors]
            lines += [f"  note: {n}" for n in s.notes]
        n_find = sum(len(s.findings) for s in self.sites)
        n_err = sum(len(s.errors) for s in self.sites)
        if self.ok:
            lines.append(f"ok: {len(self.sites)} site(s) checked, no identifier found, nothing blocks training.")
        else:
            parts = []
            if n_find:
                files = len({f.path for s in self.sites for f in s.findings})
                parts.append(f"{n_find} direct identifier(s) in {files} file(s): de-identify before training")
            if n_err:
                parts.append(f"{n_err} error(s)")
            lines.append("refused: " + "; ".join(parts) + ".")
        return "\n".join(lines)


def _adapters(domain: str, data: Path, schema: Path | None) -> list[tuple[DomainAdapter, GovernancePolicy, str]]:
    """The domain's adapters, as its scenarios would read ``data`` (tables through ``schema`` or DATA/schema.toml)."""
    found = [
        (s.adapter_for(_with_schema(s.params, schema), data), s.policy, s.site_noun)
        for s in scenario_registry.available().values()
        if s.domain == domain
    ]
    if not found:
        domains = sorted({s.domain for s in scenario_registry.available().values()})
        raise UnknownNameError(f"Unknown domain '{domain}'. Domains with scenarios: {', '.join(domains)}.")
    unique: dict[type, tuple[DomainAdapter, GovernancePolicy, str]] = {}
    for item in found:
        unique.setdefault(type(item[0]), item)
    return list(unique.values())


def _with_schema(params: Any, schema: Path | None) -> Any:
    """A scenario's default settings, reading tables through ``schema`` where the scenario reads any table."""
    if schema is None:
        return params
    if not any(f.name == "schema" for f in dataclasses.fields(params)):
        return params  # a scenario of this domain that reads no tables (DICOM, recordings)
    return dataclasses.replace(params, schema=str(Path(schema).resolve()))


def _site_dirs(data: Path, adapters: list[Any]) -> list[tuple[Path, Any]]:
    def reader(folder: Path) -> Any:
        return next((a for a in adapters if a[0].can_read(folder)), None)

    if not data.is_dir():
        raise DataValidationError(data, "the folder does not exist.", "Pass a site folder or a folder of sites.")
    if (own := reader(data)) is not None:
        return [(data, own)]
    sites = [(d, r) for d in sorted(data.iterdir()) if d.is_dir() and (r := reader(d)) is not None]
    if not sites:
        layouts = "; or ".join(a[0].layout for a in adapters)
        raise DataValidationError(
            data,
            "neither the folder nor any sub-folder looks like a site of this domain.",
            f"Expected: {layouts}.",
        )
    return sites


def check_sites(
    domain: str, data: Path, strict: bool = True, policy_file: Path | None = None, schema: Path | None = None
) -> CheckReport:
    """Check a site folder, or every site folder under ``data``, for the given domain.

    The policy applied is ``policy_file`` when given (a deployed site's ``policy``),
    else each site's own ``policy.toml``, over the domain's defaults. Tables are read
    through ``schema`` when given, or ``DATA/schema.toml`` when present
    (:func:`flcore.data.schema.find_schema`), as a run would read them.
    """
    adapters = _adapters(domain, Path(data), schema)
    reports = []
    for folder, (adapter, policy, noun) in _site_dirs(Path(data), adapters):
        report = SiteReport(folder.name, str(folder))
        try:
            # the site's policy over the domain's defaults
            own = load_policy(policy_file, policy) if policy_file is not None else site_policy(folder, policy)
        except GovernanceError as err:
            report.errors.append(str(err))
            reports.append(report)
            continue
        scan = getattr(adapter, "scan_identifiers", None)
        if scan is not None:
            report.findings = open_findings(scan(folder, own), own)
        try:
            site = adapter.read(folder, strict=strict)
        except FlsuiteUserError as err:
            report.errors.append(str(err))
        else:
            report.records, report.positives = len(site), int(site.y.sum())
            if "vocab" in site.info:  # a table read through a schema: what preprocessing will meet
                report.notes += _schema_notes(site)
            report.skipped = {str(k): int(v) for k, v in dict(site.info.get("skipped", {})).items()}  # type: ignore[call-overload]
            report.problems = [str(p) for p in site.info.get("skipped_examples", [])]  # type: ignore[attr-defined]
            if scan is None:
                found = list(site.info.get("identifier_findings", []))  # type: ignore[call-overload]
                report.findings = open_findings(found, own)
            try:
                check_min_cohort([site], own, noun)
                if own.require_consent and site.info.get("consent_recorded") is False:
                    report.errors.append(
                        f"Governance rule 'consent' ({own.source}): the data record no consent per record; "
                        "add a consent column (yes/no) from the consent register."
                    )
                ledger = ledger_path(folder, own)
                if ledger is not None and ledger.exists() and own.max_epsilon_total is not None:
                    spent = PrivacyLedger(ledger, folder.name).spent()
                    report.notes.append(
                        f"privacy budget: {spent:.4g} of {own.max_epsilon_total:g} epsilon spent ({ledger})"
                    )
            except GovernanceError as err:
                report.errors.append(str(err))
        reports.append(report)
    return CheckReport(domain, strict, reports)


def _schema_notes(site: Any) -> list[str]:
    """What a schema table holds beyond its counts: features, categories, missing values."""
    columns = list(site.info["raw_columns"])
    vocab = dict(site.info["vocab"])
    missing = {c: int(n) for c, n in zip(columns, (site.x != site.x).sum(axis=0), strict=True) if n}
    notes = [
        f"schema: {len(columns)} feature column(s), {len(vocab)} categorical"
        + (f" ({', '.join(f'{c}: {len(v)} categories' for c, v in vocab.items())})" if vocab else "")
    ]
    if missing:
        notes.append(
            "missing values (numbers take the federation's means, categories '<missing>'): "
            + ", ".join(f"{c} {n}" for c, n in sorted(missing.items()))
        )
    return notes
