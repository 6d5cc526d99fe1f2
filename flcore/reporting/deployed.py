"""The report of a deployed run (``flsuite serve``, ``flwr run``): the federated arm, round by round and per site.

A deployed coordinator never sees site data, so its results.json (kind
``federated-only``) has no centralised or local-only arm and no statistics over seeds:
what it has is every round as the sites answered it, each site's evaluation, the
privacy spent, the governance records and the exported model.
"""

from __future__ import annotations

from typing import Any

from flcore.experiment.seeds import RunFolder
from flcore.reporting.document import Bullets, Heading, Para, Table, num
from flcore.reporting.sections import site_noun

#: Per-site metrics shown beside the primary one, where the sites reported them.
_SECONDARY = ("pr_auc", "roc_auc", "sensitivity", "specificity")


def deployed_blocks(run: RunFolder) -> list[Any]:
    """The report blocks of a deployed run (see module docstring)."""
    doc = run.summary
    metric = str(doc["primary_metric"])
    noun = site_noun(str(doc["scenario"]))
    history = list(doc.get("history", []))
    last = history[-1] if history else {}
    final = (last.get("evaluate") or {}).get(metric)
    blocks: list[Any] = [
        Heading(2, "Deployed run"),
        Para(
            f"Run `{doc.get('run_id', 'unknown')}` of {doc['scenario']} on {len(doc.get('sites', []))} "
            f"{noun}s ({', '.join(doc.get('sites', []))}), {len(history)} rounds of {doc['config'].get('strategy')}. "
            f"A deployed coordinator sees no {noun}'s data, so there is no centralised or local-only arm here: "
            f"compare with `flsuite run` on data that may be pooled. After the last round, {metric} averaged over "
            f"the {noun}s' test splits (as Flower aggregates the evaluate round): **{num(final)}**."
        ),
        Heading(3, "Round by round"),
        _rounds_table(history, metric, noun),
    ]
    per_site = last.get("per_site_evaluate") or {}
    if per_site:
        blocks += [Heading(3, f"Per {noun}, after the last round"), _sites_table(per_site, metric, noun)]
    blocks += [Heading(3, "Governance and privacy"), Bullets(_governance(doc, noun))]
    blocks += [Heading(3, "Costs"), Bullets(_costs(doc, history))]
    return blocks


def _rounds_table(history: list[dict[str, Any]], metric: str, noun: str) -> Table:
    header = [
        "round",
        f"{noun}s answered",
        f"{noun}s missing",
        f"{noun}s absent",
        "train loss",
        metric,
        "MB exchanged",
        "wall time s",
    ]
    rows = [
        [
            str(r["round"]),
            f"{r.get('sites_replied', 0)} of {r.get('sites_sampled', 0)}",
            ", ".join(r.get("sites_missing") or []) or "none",
            ", ".join(r.get("sites_absent") or [])
            + (f" (back: {', '.join(r['sites_rejoined'])})" if r.get("sites_rejoined") else "")
            or "none",
            num((r.get("train") or {}).get("train-loss")),
            num((r.get("evaluate") or {}).get(metric)),
            num((r.get("bytes_sent", 0) + r.get("bytes_received", 0)) / 1e6, 2),
            num(r.get("wall_time_s"), 2),
        ]
        for r in history
    ]
    return Table(header, rows)


def _sites_table(per_site: dict[str, dict[str, Any]], metric: str, noun: str) -> Table:
    shown = [k for k in (metric, *_SECONDARY) if k != metric and any(k in m for m in per_site.values())]
    header = [noun, "test examples", metric, *shown]
    rows = [
        [name, str(int(m.get("num-examples", 0))), num(m.get(metric)), *[num(m.get(k)) for k in shown]]
        for name, m in sorted(per_site.items())
    ]
    return Table(header, rows)


def _governance(doc: dict[str, Any], noun: str) -> list[str]:
    privacy = doc.get("privacy") or {}
    items = [
        f"privacy: {doc['config'].get('privacy', 'none')}"
        + (f", epsilon spent {num(privacy.get('epsilon'), 4)}" if privacy.get("epsilon") is not None else ""),
    ]
    names = doc.get("site_names")
    if names:
        items.append(f"{noun} names from the {names.get('source')}")
        for registered, claimed in sorted((names.get("misnamed") or {}).items()):
            items.append(
                f"**{registered}** (its registered key) called itself '{claimed}'; it is reported as {registered}"
            )
    audit = doc.get("audit")
    if audit:
        items.append(f"audit trail `{audit['path']}`: {audit['entries']} entries, head `{audit['head']}`")
    prep = (doc.get("governance") or {}).get("preprocessing")
    if prep:
        cats = prep["result"].get("categories", {})
        items.append(
            f"preprocessing from {len(prep['disclosed'])} {noun}s' statistics (counts, sums, category sets; never "
            f"rows): {len(prep['result'].get('columns', []))} columns, {len(cats)} categorical"
        )
    model = (doc.get("models") or {}).get("federated")
    if model:
        items.append(f"federated model `{model['path']}`, manifest digest `{model['digest']}`")
    return items


def _costs(doc: dict[str, Any], history: list[dict[str, Any]]) -> list[str]:
    total = doc.get("bytes_sent", 0) + doc.get("bytes_received", 0)
    n = max(1, len(history))
    return [
        f"wall time {num(doc.get('wall_time_s'), 1)} s ({num((doc.get('wall_time_s') or 0) / n, 2)} s per round)",
        f"{num(total / 1e6, 2)} MB exchanged ({num(total / 1e6 / n, 2)} MB per round)",
    ]
