"""Training plans: what a site's data office approves, its hash, and recording an approval in a policy file."""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flcore.governance.policy import GovernancePolicy, load_policy, parse_policy
from flcore.outputs import write_text_atomic

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
