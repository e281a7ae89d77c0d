"""The audit rows since a signing database's last end entry, proven before anything is
signed over them (SPEC Part 3, "The audit trail is covered")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, text

from orchestrator.core import chain
from orchestrator.db.database import has_table, prefetched
from orchestrator.evidence import ledger
from orchestrator.evidence.chain import Evidence


@dataclass(frozen=True)
class AuditProof:
    problem: str | None  # forged or altered rows: nothing may be signed over them
    head: tuple[int, str] | None  # the audit chain's last row (id, hash)
    killed: tuple[str, ...] = ()  # runs that died before their end (reported, not forged)
    open: tuple[str, ...] = ()  # runs still going


# The row the newest pinning entry (an end, a repair, a move) names, read by the server from
# its payload (not believed: `prove_audit` reads again unless these rows start no later than
# the verified pin); a payload that does not decode fails the read-ahead, and it reads then.
_PINNED = (
    "SELECT greatest(coalesce((SELECT (convert_from(decode(envelope::json->>'payload',"
    " 'base64'), 'UTF8')::json->'content'->>'audit_id')::bigint"
    f" FROM {ledger.CHAIN_TABLE} WHERE kind IN ('end', 'repair', 'moved')"
    " ORDER BY seq DESC LIMIT 1), 0), 1)"
)
AUDIT_SINCE_PIN = [
    f"SELECT ({_PINNED}) AS start",
    f"SELECT * FROM {ledger.AUDIT_TABLE} WHERE id >= ({_PINNED}) ORDER BY id",
]


def prove_audit(
    connection: Connection,
    evidence: Evidence,
    own_run: str | None,
    live: set[str] | None,
    stored: tuple[int, Sequence[dict[str, Any]]] | None = None,
) -> AuditProof:
    """Check the audit rows written since the newest entry that pinned the audit chain:
    linked to the pinned row, and each run in them accounted for (its own end entry, alive,
    or dead before its end). A run that ended (a terminal event) without a signed end entry
    did not happen: its rows are forged, or its end entry was deleted. `stored`: (n, the
    audit rows with id >= n) where the caller read them already (in a batch of reads), used
    where they reach back to the pinned row; else the rows are read here."""
    pin = chain.last_end(evidence.verdict)
    pinned_id = int(pin.content.get("audit_id") or 0) if pin else 0
    pinned_hash = str(pin.content.get("audit_hash") or ledger.GENESIS) if pin else ledger.GENESIS
    if not has_table(connection, ledger.AUDIT_TABLE):
        if pinned_id:
            return AuditProof(
                f"the audit table is gone: entry {pin.seq if pin else '?'} pinned its row "
                f"{pinned_id}",
                None,
            )
        return AuditProof(None, None)
    else:
        start = max(pinned_id, 1)
        found = stored if stored is not None else prefetched(connection, "audit")
        if found is not None and found[0] <= start:  # read ahead from no later a row
            rows_ = [dict(row) for row in found[1] if row["id"] >= start]
        else:
            rows = connection.execute(
                text(f"SELECT * FROM {ledger.AUDIT_TABLE} WHERE id >= :a ORDER BY id"),
                {"a": start},
            ).all()
            rows_ = [dict(r._mapping) for r in rows]
    prev, expected = pinned_hash, pinned_id + 1
    if pinned_id:
        first = rows_[0] if rows_ else None
        if first is None or first["id"] != pinned_id or first["hash"] != pinned_hash:
            return AuditProof(
                f"audit row {pinned_id}, which entry {pin.seq if pin else '?'} signed, is gone "
                "or altered (rows deleted, or edited and re-hashed)",
                None,
            )
        rows_ = rows_[1:]
    ended_in_chain = {
        str(e.content.get("run_id")) for e in evidence.verdict.entries if e.kind == "end"
    }
    runs: dict[str, set[str]] = {}
    for row in rows_:
        problem = None
        if row["id"] != expected:
            problem = f"audit row {expected} is missing"
        elif row["prev_hash"] != prev:
            problem = f"audit row {row['id']}'s link to the previous row does not match"
        elif ledger.chain_hash(prev, row["id"], row["payload"]) != row["hash"]:
            problem = f"audit row {row['id']}'s content does not match its hash"
        if problem:
            return AuditProof(problem + " (audit rows deleted, inserted or edited)", None)
        runs.setdefault(row["run_id"], set()).add(row["event"])
        prev, expected = row["hash"], row["id"] + 1
    # runs the last pin saw still going are judged again now, on all their rows: a session
    # named like a run (forgeable) must not get forged rows signed over for good
    carried = [str(r) for r in pin.content.get("open") or []] if pin else []
    earlier = [r for r in carried if r not in runs and r not in ended_in_chain]
    if earlier:
        found = connection.execute(
            text(f"SELECT run_id, event FROM {ledger.AUDIT_TABLE} WHERE run_id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": earlier},
        )
        for run_id, event in found:
            runs.setdefault(run_id, set()).add(event)
    killed: list[str] = []
    still: list[str] = []
    for run_id, events in runs.items():
        if run_id == own_run or run_id in ended_in_chain:
            continue
        if live is not None and run_id in live:
            still.append(run_id)
        elif events & set(ledger.TERMINAL_EVENTS) - {"run.interrupted"}:
            return AuditProof(
                f"the audit rows of run {run_id} record its end but no signed end entry "
                "does: they were forged, or its end entry was deleted",
                None,
            )
        else:
            (still if live is None else killed).append(run_id)
    head = (expected - 1, prev) if expected > 1 else None
    return AuditProof(None, head, tuple(killed), tuple(still))
