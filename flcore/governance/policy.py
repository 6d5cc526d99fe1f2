"""Governance: site and federation policies (TOML), the gate that runs before training, training plans.

A policy says what a site (or the whole federation) allows: a minimum cohort after
consent filtering, consent per record, de-identified files, differential privacy
with a budget per run and in total, the domains and tasks it takes part in, and
the training plans its data office approved. Domains ship defaults
(``domains/<d>/governance.py``); a TOML file overrides them. The gate
(:func:`check_site`) applies one policy to one site and returns the refusals; it
runs at the coordinator before any training and again inside each site's
ClientApp, so that a coordinator cannot skip it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flcore.data.site import SiteData
from flcore.exceptions import GovernanceError
from flcore.outputs import write_text_atomic

#: File a site keeps next to its data (in its folder) to state its own policy.
SITE_POLICY_FILE = "policy.toml"

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
        Refuse a site whose files carry direct identifiers (see :class:`Finding`).
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
    return site_dir / ".flsuite" / "privacy-ledger.json" if site_dir is not None else None


@dataclass(frozen=True)
class Finding:
    """A direct identifier found in a site's data (reported without its value).

    Parameters
    ----------
    path : str
        The file holding it.
    tag : str
        Where in the file, e.g. ``ReferencedPatientSequence[0] > PatientID (0010,0020)``.
    reason : str
        What was found, e.g. ``holds a value (12 characters)``; never the value
        itself, so that reports and logs do not spread the identifier.
    creator : str
        The private creator of a private element ('' otherwise).
    allowed_by : tuple of str
        The de-identification options (:data:`DEID_OPTIONS`) under which the
        element may stay; a policy declaring one of them excuses the finding.
    """

    path: str
    tag: str
    reason: str
    creator: str = ""
    allowed_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_by", tuple(self.allowed_by))  # a list when read back from JSON

    def __str__(self) -> str:
        return f"{self.path}: {self.tag} {self.reason}"


def open_findings(findings: Sequence[Finding], policy: GovernancePolicy) -> list[Finding]:
    """The findings ``policy`` does not excuse.

    Its ``deid_options`` keep some elements, its ``safe_private_creators`` some private blocks.
    """
    options = set(policy.deid_options)
    creators = {c.strip() for c in policy.safe_private_creators}
    return [f for f in findings if not (options & set(f.allowed_by)) and not (f.creator and f.creator in creators)]


def check_min_cohort(sites: list[SiteData], policy: GovernancePolicy, site_noun: str = "site") -> None:
    """Refuse the run if any site holds fewer records (or positives) than the policy allows."""
    for site in sites:
        if len(site) < policy.min_cohort:
            raise GovernanceError(
                f"Governance rule 'min-cohort' refuses {site_noun} '{site.name}' ({site.source}): it holds "
                f"{len(site)} records, the policy requires at least {policy.min_cohort}. Add data to this "
                f"{site_noun}, leave it out of the federation, or lower min_cohort in the policy."
            )
        positives = int(site.y.sum())
        if positives < policy.min_positives:
            raise GovernanceError(
                f"Governance rule 'min-positives' refuses {site_noun} '{site.name}' ({site.source}): it holds "
                f"{positives} positive records, the policy requires at least {policy.min_positives}."
            )


# --------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """One governance rule a run breaks at one site.

    Parameters
    ----------
    rule : str
        The rule's name (``min-cohort``, ``max-epsilon-total``, ...).
    site : str
        The site it refuses (or ``federation``).
    policy : str
        Which policy holds the rule (a file, or the domain's defaults).
    problem : str
        What was found against what the rule requires.
    fix : str
        How to make the run acceptable.
    """

    rule: str
    site: str
    policy: str
    problem: str
    fix: str

    def text(self, site_noun: str = "site") -> str:
        who = f"{site_noun} '{self.site}'" if self.site != "federation" else "the federation"
        return f"Governance rule '{self.rule}' refuses {who} (policy: {self.policy}): {self.problem} {self.fix}"

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunFacts:
    """What the gate needs to know about a planned run.

    Parameters
    ----------
    domain, scenario, task : str
        The scenario's domain, name and task kind.
    plan_hash : str
        Hash of the training plan (:func:`plan_hash`).
    privacy : str
        ``none``, ``dp`` (sample-level) or ``client-dp`` (client-level).
    epsilon : float or None
        Epsilon the run plans to spend at a site (None without DP).
    delta : float or None
        Its delta.
    secure_aggregation : bool
        Whether individual updates are hidden from the coordinator.
    """

    domain: str
    scenario: str
    task: str
    plan_hash: str
    privacy: str
    epsilon: float | None
    delta: float | None
    secure_aggregation: bool


def check_site(
    run: RunFacts,
    policy: GovernancePolicy,
    site: str,
    *,
    records: int | None = None,
    positives: int | None = None,
    consent_recorded: bool | None = None,
    findings: Sequence[Finding] = (),
    spent_epsilon: float | None = None,
    site_noun: str = "site",
) -> list[Refusal]:
    """Every rule of ``policy`` the planned ``run`` breaks at ``site`` (empty: the site may train).

    Parameters
    ----------
    records, positives : int, optional
        The site's records after consent filtering, and how many are positive
        (None: not known here, rule not checked).
    consent_recorded : bool, optional
        Whether the site's data record consent per record (None: the format has no
        consent field).
    findings : sequence of Finding
        Direct identifiers found in the site's files.
    spent_epsilon : float, optional
        Epsilon the site's ledger already holds (None: no ledger, rule not checked).
    """
    out: list[Refusal] = []

    def refuse(rule: str, problem: str, fix: str) -> None:
        out.append(Refusal(rule, site, policy.source, problem, fix))

    if policy.allowed_domains and run.domain not in policy.allowed_domains:
        refuse(
            "allowed-domains",
            f"the run is in domain '{run.domain}', the policy allows only {', '.join(policy.allowed_domains)}.",
            "Run a scenario of an allowed domain, or add the domain to allowed_domains.",
        )
    if policy.allowed_tasks and not {run.scenario, run.task} & set(policy.allowed_tasks):
        refuse(
            "allowed-tasks",
            f"the run trains '{run.scenario}' ({run.task}), the policy allows only {', '.join(policy.allowed_tasks)}.",
            "Run an allowed task, or add it to allowed_tasks.",
        )
    if policy.require_approved_plan and run.plan_hash not in policy.approved_plans:
        shown = ", ".join(p[:19] for p in policy.approved_plans) or "none"
        refuse(
            "approved-plan",
            f"the training plan {run.plan_hash} is not approved (approved: {shown}).",
            f"Review it with `flsuite plan {run.scenario}` (same settings) and, if the {site_noun}'s data office "
            f"agrees, approve it with `flsuite plan {run.scenario} --approve POLICY_FILE`.",
        )
    if policy.require_secure_aggregation and not run.secure_aggregation:
        refuse(
            "secure-aggregation",
            "the coordinator would see this site's individual updates; the policy requires secure aggregation.",
            "Run with --set secure-aggregation=secagg+.",
        )
    if policy.require_dp and run.privacy == "none":
        refuse(
            "require-dp",
            "the run has no differential privacy; the policy requires it.",
            "Run with --set privacy=dp (sample-level DP-SGD).",
        )
    if run.privacy != "none" and not (run.epsilon and run.epsilon > 0 and run.delta and 0 < run.delta < 1):
        refuse(
            "dp-parameters",
            f"the run asks for {run.privacy} with epsilon {run.epsilon} and delta {run.delta}; both must be "
            "positive (and delta below 1).",
            "Set dp-epsilon and dp-delta, or leave them at 0 so that the policy's values apply.",
        )
    if run.epsilon is not None:
        if policy.max_epsilon_per_run is not None and run.epsilon > policy.max_epsilon_per_run * (1 + 1e-9):
            refuse(
                "max-epsilon-per-run",
                f"the run plans epsilon {run.epsilon:.4g}, the policy allows at most {policy.max_epsilon_per_run:g} "
                "per run.",
                f"Lower it with --set dp-epsilon={policy.max_epsilon_per_run:g} (or less).",
            )
        if run.delta is not None and run.delta > policy.delta * (1 + 1e-9):
            refuse(
                "delta",
                f"the run plans delta {run.delta:g}, the policy allows at most {policy.delta:g}.",
                f"Lower it with --set dp-delta={policy.delta:g}.",
            )
        if policy.max_epsilon_total is not None and spent_epsilon is not None:
            left = policy.max_epsilon_total - spent_epsilon
            if run.epsilon > left + 1e-9:
                refuse(
                    "max-epsilon-total",
                    f"the run plans epsilon {run.epsilon:.4g} but the {site_noun}'s privacy budget has "
                    f"{max(left, 0.0):.4g} left ({spent_epsilon:.4g} of {policy.max_epsilon_total:g} already spent).",
                    (
                        f"Plan at most what is left (--set dp-epsilon={math.floor(left * 1000) / 1000:g}), "
                        "or ask the data office whether to raise max_epsilon_total."
                        if left >= 0.001
                        else "The budget is spent: no further DP run may use this data unless the data office "
                        "raises max_epsilon_total."
                    ),
                )
    if records is not None and records < policy.min_cohort:
        refuse(
            "min-cohort",
            f"it holds {records} usable records after consent filtering, the policy requires at least "
            f"{policy.min_cohort}.",
            f"Add consented data to this {site_noun}, leave it out of the federation, or lower min_cohort.",
        )
    if positives is not None and positives < policy.min_positives:
        refuse(
            "min-positives",
            f"it holds {positives} positive records, the policy requires at least {policy.min_positives}.",
            f"Add data with positive cases, or leave the {site_noun} out.",
        )
    if policy.require_consent and consent_recorded is not True:
        refuse(
            "consent",
            "its data record no consent per record; the policy requires consent.",
            "Add a consent column (yes/no) from the consent register; records without consent are never loaded.",
        )
    findings = open_findings(findings, policy)
    if policy.require_deidentified and findings:
        files = len({f.path for f in findings})
        shown = "; ".join(str(f) for f in findings[:5])
        more = f"; and {len(findings) - 5} more" if len(findings) > 5 else ""
        refuse(
            "de-identified",
            f"{len(findings)} direct identifier(s) in {files} file(s): {shown}{more}.",
            "De-identify the files (DICOM PS3.15 basic confidentiality profile, e.g. with your PACS export's "
            "anonymiser) and run `flsuite site check` on the folder until it reports none.",
        )
    return out


def refusal_error(refusals: Sequence[Refusal], site_noun: str = "site") -> GovernanceError:
    """One error for the first refusal, with a count of the others."""
    first = refusals[0]
    more = f" ({len(refusals) - 1} more refusal(s) in the audit trail.)" if len(refusals) > 1 else ""
    return GovernanceError(first.text(site_noun) + more, refusals)


def site_facts(site: SiteData) -> dict[str, Any]:
    """The keyword arguments of :func:`check_site` that come from a site's loaded data."""
    consent = site.info.get("consent_recorded")
    return {
        "records": len(site),
        "positives": int(site.y.sum()),
        "consent_recorded": bool(consent) if consent is not None else None,
        "findings": list(site.info.get("identifier_findings", [])),  # type: ignore[call-overload]
    }


# --------------------------------------------------------------------------------------
# Training plans
# --------------------------------------------------------------------------------------

#: Settings that do not change what is trained (where it runs, which seed draws the split).
# Settings that do not change what a round trains (how long to wait, how few sites may answer, CPUs).
PLAN_EXEMPT = ("seed", "num-cpus-per-client", "data-mode", "reply-timeout", "min-sites")


def code_digest(modules: Sequence[str]) -> str:
    """SHA-256 over the source of the given packages (every ``.py`` file under them, sorted)."""
    return _code_digest(tuple(sorted(set(modules))))


@functools.lru_cache(maxsize=8)
def _code_digest(modules: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name in modules:
        module = importlib.import_module(name)
        root = Path(module.__file__ or "").parent
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root.parent)).encode())
            h.update(b"\0")
            h.update(path.read_bytes())
    return "sha256:" + h.hexdigest()


def training_plan(scenario: Any, run_config: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """What a site approves: the scenario, every setting that shapes training, and the code's hash.

    The code covered is ``flcore`` and the scenario's domain package (found from the
    module of its ``make_task``), so a change to the model, the training loop or the
    aggregation changes the plan.
    """
    domain_package = scenario.make_task.__module__.rsplit(".", 1)[0]
    return {
        "scenario": scenario.name,
        "domain": scenario.domain,
        "run_config": {k: v for k, v in sorted(run_config.items()) if k not in PLAN_EXEMPT},
        "params": dict(sorted(params.items())),
        "code": code_digest(["flcore", domain_package]),
    }


def plan_hash(plan: Mapping[str, Any]) -> str:
    """``sha256:...`` of the canonical JSON of a training plan."""
    blob = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def approve_plan(policy_file: Path, digest: str) -> bool:
    """Add ``digest`` to the ``approved_plans`` of a policy file (created if missing); False if already there.

    The rest of the file is kept as written; the ``approved_plans`` line is
    rewritten (or appended) and ``require_approved_plan = true`` added if the
    file does not set it. The file is replaced atomically.
    """
    text = policy_file.read_text(encoding="utf-8") if policy_file.exists() else ""
    current = load_policy(policy_file) if text else GovernancePolicy()
    if digest in current.approved_plans:
        return False
    plans = [*current.approved_plans, digest]
    line = "approved_plans = [\n" + "".join(f'    "{p}",\n' for p in plans) + "]\n"
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    skipping = False
    for ln in lines:
        key = ln.split("=", 1)[0].strip().replace("-", "_")
        if key == "approved_plans" and "=" in ln:
            skipping = "]" not in ln
            continue
        if skipping:
            skipping = "]" not in ln
            continue
        out.append(ln)
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    first_table = next((i for i, ln in enumerate(out) if ln.lstrip().startswith("[")), len(out))
    sets_rule = any(
        "=" in ln and ln.split("=", 1)[0].strip().replace("-", "_") == "require_approved_plan"
        for ln in out
        if not ln.lstrip().startswith("#")
    )
    extra = line if sets_rule else "require_approved_plan = true\n" + line
    new = "".join(out[:first_table]) + extra + "".join(out[first_table:])
    parse_policy(new, policy_file)  # never leave a policy that no longer parses
    write_text_atomic(policy_file, new)
    return True


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
