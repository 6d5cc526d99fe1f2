"""Federated preprocessing on the wire: sites send their table summaries, the coordinator sends back the encoding.

For tables read through a schema (:mod:`flcore.data.preprocess`), a query before the
statistics round asks every site for the summary of its training rows (counts, sums,
missing counts, category sets: never rows). The coordinator fits the federation's
:class:`~flcore.data.preprocess.Preprocessing` from them and every later message of
the run carries it (``keys.PREPROCESSING``), so each site encodes its rows exactly
as the others do. A site whose rows are already encoded (simulation: the
coordinator prepared them) answers with an empty summary.
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from flcore import keys
from flcore.data.preprocess import Preprocessing, SiteSummary, is_raw, summarise
from flcore.data.site import SiteSplit
from flcore.exceptions import DataValidationError, FlsuiteError
from flcore.federation.plan import refusals_in, site_record
from flcore.governance.rules import refusal_error


def needs_preprocessing(scenario: Any, params: Any) -> bool:
    """Whether the scenario reads its sites' tables through a schema (so their rows need the federation's encoding)."""
    return getattr(scenario.adapter_for(params, None), "schema", None) is not None


def summary_reply(split: SiteSplit, msg: Message) -> Message:
    """A site's answer to the summary query: its training rows' summary, or "" if its rows need no encoding."""
    text = ""
    if is_raw(split.train):
        info = split.train.info
        text = json.dumps(
            {
                "summary": summarise(split.train).to_json(),
                "columns": list(info["raw_columns"]),  # type: ignore[call-overload]
                "missing": str(info["missing_rule"]),
            }
        )
    content = RecordDict({keys.CONFIG: ConfigRecord({keys.SUMMARY_JSON: text}), keys.SITE: site_record(split.name)})
    return Message(content=content, reply_to=msg)


def collect_preprocessing(
    grid: Grid, node_ids: list[int], config: ConfigRecord, timeout: float
) -> tuple[Preprocessing | None, list[SiteSummary]]:
    """Ask every site for its summary and fit the federation's preprocessing (None when no site needs one).

    Raises
    ------
    GovernanceError
        When a site refuses the run (its gate runs first).
    DataValidationError
        When the sites' tables do not have the same columns.
    """
    content = RecordDict({keys.CONFIG: config})
    kind = f"{keys.QUERY_KIND}.{keys.QUERY_TABLE_SUMMARY}"
    messages = [Message(content=content, message_type=kind, dst_node_id=n) for n in node_ids]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    refusals = [r for reply in replies for r in refusals_in(reply)]
    if refusals:
        raise refusal_error(refusals)
    found: list[dict[str, Any]] = []
    for reply in replies:
        if reply.has_error():
            raise FlsuiteError(f"A site failed while summarising its table: {reply.error.reason}")
        text = str(reply.content.config_records[keys.CONFIG][keys.SUMMARY_JSON])
        if text:
            found.append(json.loads(text))
    if len(replies) < len(node_ids):
        raise FlsuiteError(f"Only {len(replies)} of {len(node_ids)} sites returned their table summaries.")
    if not found:
        return None, []
    first = found[0]
    for other in found[1:]:
        if other["columns"] != first["columns"]:
            raise DataValidationError(
                other["summary"]["site"],
                f"its table's feature columns differ from those of site '{first['summary']['site']}' "
                f"({len(other['columns'])} against {len(first['columns'])}).",
                "Every site must export the same columns (the schema's features).",
            )
    summaries = [SiteSummary.from_json(f["summary"]) for f in found]
    return Preprocessing.fit(summaries, first["columns"], str(first["missing"])), summaries
