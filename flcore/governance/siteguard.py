"""What a site enforces by itself, inside its ClientApp: its policy, its privacy ledger, its DP noise.

The coordinator runs the same gate before training, but a site does not rely on
it: before it answers the first message of a run, and again before it trains, it
recomputes the training plan's hash from the run configuration it received and its
own copy of the code, checks its own policy, and reserves the run's epsilon in its
own ledger. Under ``privacy=dp`` it calibrates its own DP-SGD noise from the plan,
so a coordinator cannot ask for less.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flcore.config import RunConfig, to_dict
from flcore.data.site import SiteSplit
from flcore.governance.ledger import PrivacyLedger
from flcore.governance.plan import plan_hash, training_plan
from flcore.governance.policy import GovernancePolicy, ledger_path, load_policy, site_policy
from flcore.governance.rules import Refusal, RunFacts, check_site
from flcore.learning.privacy import DpSgd


@dataclass
class SiteGovernance:
    """One site's policy, the place of its ledger, and the facts of its data the gate looks at."""

    site: str
    policy: GovernancePolicy
    ledger: str | None
    facts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls, name: str, site_dir: Path | None, base: GovernancePolicy, facts: dict[str, Any], policy_file: str = ""
    ) -> SiteGovernance:
        """Site ``name`` in ``site_dir`` (None for generated data), with its policy and ledger.

        The policy is ``policy_file`` if given, else the ``policy.toml`` in the site's
        folder, over ``base``; the ledger is where that policy says.
        """
        policy = load_policy(policy_file, base) if policy_file else site_policy(site_dir, base)
        ledger = ledger_path(site_dir, policy)
        return cls(name, policy, str(ledger) if ledger else None, facts)


def task_kind(scenario: Any) -> str:
    """``binary-classification`` or ``anomaly-detection`` (what ``allowed_tasks`` may name)."""
    name = type(scenario.make_task(scenario.params)).__name__.removesuffix("Task")
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def resolve_privacy(cfg: RunConfig, policy: GovernancePolicy) -> RunConfig:
    """Fill ``dp-epsilon`` and ``dp-delta`` left at 0 from the policy (epsilon 1 where it sets none)."""
    if cfg.privacy == "none":
        return cfg
    eps = cfg.dp_epsilon or policy.max_epsilon_per_run or 1.0
    delta = cfg.dp_delta or policy.delta
    return dataclasses.replace(cfg, dp_epsilon=eps, dp_delta=delta)


def run_facts(scenario: Any, cfg: RunConfig, params: Any) -> RunFacts:
    """The planned run as the gate sees it (the plan hash included)."""
    plan = training_plan(scenario, to_dict(cfg), to_dict(params))
    dp = cfg.privacy != "none"
    return RunFacts(
        domain=scenario.domain,
        scenario=scenario.name,
        task=task_kind(scenario),
        plan_hash=plan_hash(plan),
        privacy=cfg.privacy,
        epsilon=cfg.dp_epsilon if dp else None,
        delta=cfg.dp_delta if dp else None,
        secure_aggregation=cfg.secure_aggregation != "none",
    )


def ledger_of(gov: SiteGovernance) -> PrivacyLedger | None:
    """The site's privacy ledger (None for generated data)."""
    return PrivacyLedger(gov.ledger, gov.site) if gov.ledger else None


def admit(gov: SiteGovernance, run: RunFacts, run_id: str, site_noun: str = "site") -> list[Refusal]:
    """The site's own gate; when it passes and the run spends epsilon, reserve it in the ledger.

    A run already reserved in the ledger (a second check of the same run) is not
    charged again, and its own reservation does not count against it.
    """
    ledger = ledger_of(gov)
    spent = None
    mine = None
    if ledger is not None and run.epsilon is not None:
        entries = ledger.entries()
        mine = next((e for e in entries if e["run"] == run_id), None)
        spent = ledger.spent() - (mine["reserved"] if mine and mine["status"] != "spent" else 0.0)
    refusals = check_site(run, gov.policy, gov.site, spent_epsilon=spent, site_noun=site_noun, **gov.facts)
    if mine is not None and mine["plan"] != run.plan_hash:
        refusals.append(plan_changed(gov, run_id, mine["plan"], run.plan_hash))
    if not refusals and ledger is not None and run.epsilon is not None and mine is None:
        budget = gov.policy.max_epsilon_total
        if not ledger.reserve(run_id, run.epsilon, run.delta or 0.0, run.plan_hash, run.privacy, budget):
            refusals.append(
                Refusal(
                    "max-epsilon-total",
                    gov.site,
                    gov.policy.source,
                    f"another run reserved the budget first: epsilon {run.epsilon:g} no longer fits in {budget:g}.",
                    "Wait for the other run to settle, then plan within what is left.",
                )
            )
    return refusals


def plan_changed(gov: SiteGovernance, run_id: str, pinned: str, plan: str) -> Refusal:
    """The refusal of a message that asks for another plan than the one its run started under."""
    return Refusal(
        "plan-changed",
        gov.site,
        gov.policy.source,
        f"run {run_id} started under plan {pinned}, this message asks for {plan}.",
        "A plan cannot change during a run; start a new run under the new plan.",
    )


def split_facts(split: SiteSplit) -> dict[str, Any]:
    """Gate facts of a site known only by its split (records = train + validation + test)."""
    parts = [p for p in (split.train, split.val, split.test) if p is not None]
    info = split.train.info
    consent = info.get("consent_recorded")
    return {
        "records": sum(len(p) for p in parts),
        "positives": int(sum(int(p.y.sum()) for p in parts)),
        "consent_recorded": bool(consent) if consent is not None else None,
        "findings": list(info.get("identifier_findings", [])),  # type: ignore[call-overload]
    }


@functools.lru_cache(maxsize=64)
def calibrated_dp(n: int, batch_size: int, epochs: int, epsilon: float, delta: float, clip: float) -> DpSgd:
    """The site's DP-SGD noise for its training data, from the plan alone (cached per process)."""
    return DpSgd.calibrate(
        n, batch_size=batch_size, epochs=epochs, target_epsilon=epsilon, delta=delta, max_grad_norm=clip
    )


def site_dp(cfg: RunConfig, n_train: int, steps_so_far: int) -> DpSgd:
    """A fresh DP-SGD state for this site, continuing from ``steps_so_far`` steps of this run."""
    base = calibrated_dp(
        n_train,
        cfg.batch_size,
        cfg.num_server_rounds * cfg.local_epochs,
        cfg.dp_epsilon,
        cfg.dp_delta,
        cfg.dp_max_grad_norm,
    )
    return dataclasses.replace(base, steps=steps_so_far)
