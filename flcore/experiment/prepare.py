"""Reading (or generating) the sites, checking them, and splitting each into train, validation and test."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from flcore.config import RunConfig
from flcore.data.partition import repartition
from flcore.data.preprocess import Preprocessing, SiteSummary, federated_preprocessing, is_raw
from flcore.data.site import DomainAdapter, SiteData, SiteSplit, list_site_dirs
from flcore.exceptions import ConfigError, DataValidationError, GovernanceError
from flcore.experiment.progress import Progress
from flcore.governance.policy import GovernancePolicy
from flcore.governance.rules import check_min_cohort, site_facts
from flcore.governance.siteguard import SiteGovernance
from flcore.scenario import Scenario, synthetic_data


@dataclass
class PreparedData:
    """Sites after loading, validation, partitioning and splitting."""

    source: str
    splits: list[SiteSplit]
    left_out: list[dict[str, str]] = field(default_factory=list)
    governance: list[SiteGovernance] = field(default_factory=list)
    #: The domain parameters the sites were read with (a table schema settled as JSON:
    #: :meth:`flcore.scenario.Scenario.with_table_schema`); None for generic callers.
    params: Any = None
    #: For tables read through a schema: the federation's preprocessing, and what each site disclosed for it.
    preprocessing: Preprocessing | None = None
    disclosures: list[SiteSummary] = field(default_factory=list)
    schema: dict[str, Any] | None = None


def load_sites(
    scenario: Scenario,
    data_dir: Path,
    strict: bool = True,
    progress: Progress | None = None,
    left_out: list[dict[str, str]] | None = None,
    adapter: DomainAdapter | None = None,
) -> list[SiteData]:
    """Read and validate every site folder of ``data_dir`` through the scenario's adapter.

    Every site is read before any training starts, so a bad file stops the run
    before anything is written; the governance gate (:func:`flcore.experiment.gate.gate`) then checks the
    sites. In lenient mode, scenarios that allow it (``leave_out_unusable``, fleets)
    leave out a site whose data cannot be used at all, or that is under the minimum
    cohort.
    """
    adapter = adapter or scenario.adapter
    sites = []
    dropped: list[dict[str, str]] = []
    for d in list_site_dirs(data_dir, adapter):
        try:
            site = adapter.read(d, strict=strict)
            site.info["site_dir"] = str(d)  # adapters may name a file as the source; policies live in the folder
            if scenario.leave_out_unusable and not strict:
                check_min_cohort([site], scenario.policy, scenario.site_noun)
            sites.append(site)
        except (DataValidationError, GovernanceError) as err:
            if strict or not scenario.leave_out_unusable:
                raise
            dropped.append({"name": d.name, "reason": str(err)})
    for item in dropped[:5]:
        (progress or print)(f"  left out {scenario.site_noun} {item['name']}: {item['reason']}")
    if len(dropped) > 5:
        (progress or print)(f"  ... and {len(dropped) - 5} more {scenario.site_noun}(s) left out")
    if left_out is not None:
        left_out.extend(dropped)
    if len(sites) < 2:
        raise DataValidationError(
            data_dir,
            f"found {len(sites)} usable site folder; a federation needs at least 2.",
            "Add one sub-folder per site.",
        )
    _check_same_features(sites)
    return sites


def _check_same_features(sites: list[SiteData]) -> None:
    """Every site must name the same features in the same order, or models would mix them up."""
    ref = sites[0]
    for site in sites[1:]:
        a = cast(list[str] | None, ref.info.get("feature_names"))
        b = cast(list[str] | None, site.info.get("feature_names"))
        if a is not None and b is not None and a != b:
            first = next((i for i, (p, q) in enumerate(zip(a, b, strict=False)) if p != q), min(len(a), len(b)))
            raise DataValidationError(
                site.source,
                f"its feature columns differ from those of site '{ref.name}' ({ref.source}) "
                f"from column {first + 1} on ({b[first] if first < len(b) else 'missing'!r} instead of "
                f"{a[first] if first < len(a) else 'missing'!r}).",
                "Every site must export the same feature columns in the same order.",
            )


#: How the reasons adapters count skipped records read in progress messages.
_SKIP_REASONS = {
    "no_consent": "no consent",
    "invalid": "invalid values (lenient mode)",
    "not_dicom": "not DICOM (lenient mode)",
    "no_pixel_data": "no pixel data (lenient mode)",
    "missing_file": "file missing (lenient mode)",
    "undecodable": "pixel data undecodable (lenient mode)",
    "duplicate": "listed twice (lenient mode)",
    "unreadable": "file unreadable (lenient mode)",
    "no_signal": "no signal column or array (lenient mode)",
    "bad_rate": "sampling rate missing, non-positive or too low (lenient mode)",
    "too_short": "shorter than one window (lenient mode)",
    "non_finite": "NaN or infinite samples (lenient mode)",
    "flatline": "sensor flat-lined (lenient mode)",
    "clipped": "sensor clipped (lenient mode)",
    "machine_mismatch": "another machine's recording (lenient mode)",
    "not_image": "not an image of the patient: mask, dose grid, report (lenient mode)",
    "constant": "constant image (lenient mode)",
    "too_large": "header claims more memory than the limit (lenient mode)",
    "truncated": "file shorter than its header says (lenient mode)",
}


def prepare_data(
    scenario: Scenario,
    cfg: RunConfig,
    data_dir: Path | None,
    progress: Progress,
    params: Any = None,
    policy: GovernancePolicy | None = None,
) -> PreparedData:
    """Load (or generate) the sites, form them per ``cfg.partition`` and split train/test.

    Without ``data_dir`` the scenario's synthetic sites for ``cfg.seed`` are used,
    generated once into the per-user cache (:func:`flcore.scenario.synthetic_data`).

    Each site's governance comes with it: its own ``policy.toml`` (in its folder)
    over ``policy`` (the federation's, by default the domain's), and its privacy
    ledger. Generated data have no ledger: nobody's privacy is spent on them.
    """
    policy = policy or scenario.policy
    left_out: list[dict[str, str]] = []
    root = synthetic_data(scenario, cfg.seed, params, progress) if data_dir is None else Path(data_dir)
    if data_dir is not None:
        progress(f"reading {data_dir} ...")
    params = scenario.with_table_schema(params if params is not None else scenario.params, root)
    adapter = scenario.adapter_for(params, None)
    strict = cfg.data_mode == "strict"
    sites = load_sites(scenario, root, strict=strict, progress=progress, left_out=left_out, adapter=adapter)
    source = "synthetic" if data_dir is None else str(data_dir)
    governance = [
        SiteGovernance.of(
            site.name, Path(str(site.info["site_dir"])) if data_dir is not None else None, policy, site_facts(site)
        )
        for site in sites
    ]
    for site in sites:
        skipped = {k: v for k, v in dict(site.info.get("skipped", {})).items() if v}  # type: ignore[call-overload]
        if skipped:
            progress(
                f"  {scenario.site_noun} '{site.name}' left out "
                + ", ".join(f"{v} record(s): {_SKIP_REASONS.get(k, k)}" for k, v in skipped.items())
            )
        for example in list(site.info.get("skipped_examples", []))[:5]:  # type: ignore[call-overload]
            progress(f"    skipped {example}")
    if cfg.partition != "natural":
        if not scenario.repartition or is_raw(sites[0]):
            raise ConfigError(
                f"partition={cfg.partition} does not apply to {scenario.name}: its {scenario.site_noun}s are "
                "natural units whose data cannot be pooled and re-dealt. Use partition=natural."
            )
        own = [g for g in governance if g.policy != policy or (g.ledger and Path(g.ledger).exists())]
        if data_dir is not None and (own or cfg.privacy != "none"):
            raise ConfigError(
                f"partition={cfg.partition} pools the {scenario.site_noun}s' data and deals it out again, but "
                + (
                    f"{own[0].site} has its own policy or privacy ledger, which cannot follow its records."
                    if own
                    else "re-dealt sites have no privacy ledger to charge."
                )
                + " Use partition=natural with real sites."
            )
        consent = [g.facts.get("consent_recorded") for g in governance]
        sites = repartition(sites, cfg.partition, cfg.num_sites, cfg.partition_alpha, cfg.seed)
        for site in sites:  # every record was consented if every source site recorded consent
            site.info["consent_recorded"] = all(c is True for c in consent) if None not in consent else None
        governance = [SiteGovernance(site.name, policy, None, site_facts(site)) for site in sites]
    schema = sites[0].info.get("schema")
    splits, preprocessing, disclosures = federated_preprocessing([scenario.split(s, cfg) for s in sites])
    if preprocessing is not None:
        progress(
            f"preprocessing from the {scenario.site_noun}s' statistics: {len(preprocessing.columns)} columns -> "
            f"{len(preprocessing.feature_names)} features ({len(preprocessing.categories)} categorical; "
            f"{sum(1 for c in preprocessing.columns if any(d.missing.get(c) for d in disclosures))} with missing "
            "values, filled from the federation's statistics)"
        )
    return PreparedData(
        source,
        splits,
        left_out,
        governance,
        params,
        preprocessing,
        disclosures,
        schema if isinstance(schema, dict) else None,
    )
