"""Ledger: one row per applied/reverted revision, written by the caller inside the revision's
own transaction; signed where the environment signs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, text

from orchestrator.core import trust
from orchestrator.core.planning import LedgerEntry
from orchestrator.db.database import has_table, prefetched, psycopg_style
from orchestrator.db.locks import FENCE_SQL, Fence
from orchestrator.evidence.ledger.audit_chain import canonical
from orchestrator.evidence.ledger.tables import LEDGER_TABLE, ledger

if TYPE_CHECKING:  # imported where something is signed: cryptography is slow to import
    from orchestrator.core import signing


def revision_row(
    *,
    revision: str,
    checksum: str,
    direction: str,
    run_id: str,
    env: str,
    actor: str,
    at: str,
    key: signing.PrivateKey | None = None,
    target: str | None = None,
    reads: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One ledger row, signed with `key` (for database `target` of `env`) when given.
    `reads`: the project files the revision read while it ran (path -> sha256)."""
    row: dict[str, Any] = {
        "revision": revision,
        "checksum": checksum,
        "direction": direction,
        "run_id": run_id,
        "env": env,
        "actor": actor,
        "at": at,
        "envelope": None,
        "reads": None if reads is None else canonical(dict(reads)),
    }
    if key is not None:
        row["envelope"] = _envelope(
            trust.LEDGER_TYPE, trust.ledger_payload(row, target or env), key
        )
    return row


def _envelope(payload_type: str, payload: bytes, key: signing.PrivateKey) -> str:
    """The DSSE envelope stored beside a row, as compact JSON."""
    from orchestrator.core import signing

    return canonical(signing.sign(payload_type, payload, key))


def record_revision(
    connection: Connection, row: Mapping[str, Any], fence: Fence | None = None
) -> bool:
    """Write a `revision_row` in the caller's transaction. With a `fence`, the row is written
    only while the fence's session still holds the migration lock, in the same statement (no
    extra round trip): False means it was not written and the caller must roll back."""
    # one statement object with bound parameters: compiled once per process, not per row
    if fence is None:
        connection.execute(_RECORD, row)
        return True
    return connection.execute(_FENCED_RECORD, {**row, **fence.params()}).rowcount == 1


def record_rows(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of `revision_row`, in the caller's transaction, in one round trip."""
    if rows:
        connection.execute(_RECORD, list(rows))


_RECORD = insert(ledger)
_FENCED_RECORD = text(
    f"INSERT INTO {LEDGER_TABLE}"
    " (revision, checksum, direction, run_id, env, actor, at, envelope, reads)"
    " SELECT :revision, :checksum, :direction, :run_id, :env, :actor, :at, :envelope, :reads"
    f" WHERE {FENCE_SQL}"
)


# The same fenced row, sent with its revision's COMMIT (db.database.commit_with): there a
# row that is not written cannot be noticed before the COMMIT, so the statement fails instead
# when the lock session no longer holds the lock, and the COMMIT after it never runs.
_LOST = (
    "('orchestrator: this run lost the migration lock before the revision could commit"
    " (backend ' || pg_backend_pid() || ')')::boolean"  # not constant: never folded early
)
_FENCED_AT_COMMIT = psycopg_style(
    f"INSERT INTO {LEDGER_TABLE}"
    " (revision, checksum, direction, run_id, env, actor, at, envelope, reads)"
    " SELECT :revision, :checksum, :direction, :run_id, :env, :actor, :at, :envelope, :reads"
    f" WHERE CASE WHEN {FENCE_SQL} THEN true ELSE {_LOST} END",
)


def fenced_at_commit(row: Mapping[str, Any], fence: Fence) -> tuple[str, dict[str, Any]]:
    """`record_revision`'s fenced row as a statement (psycopg parameters) that fails, rather
    than writes nothing, where the fence does not hold."""
    return _FENCED_AT_COMMIT, {**row, **fence.params()}


def ledger_table_rows(connection: Connection) -> list[dict[str, Any]]:
    """Every ledger row, oldest first, as plain dicts. `*`: a ledger made by an earlier
    release has fewer columns (no `envelope` key then), and asking which costs more than
    the rows."""
    if not has_table(connection, LEDGER_TABLE):
        return []
    found = prefetched(connection, "ledger")
    if found is not None:
        return list(found)
    rows = connection.exec_driver_sql(LEDGER_ROWS)
    return [dict(row._mapping) for row in rows]


LEDGER_ROWS = f"SELECT * FROM {LEDGER_TABLE} ORDER BY id"


def latest_ledger(connection: Connection) -> dict[str, LedgerEntry]:
    """Per revision, its most recent ledger row (empty when the ledger does not exist)."""
    return latest_of(ledger_table_rows(connection))


def latest_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, LedgerEntry]:
    """Pure: per revision, its most recent of `rows` (oldest first)."""
    # a `stamped` row records a stamp, not a run: it is no evidence of what ran
    return {
        row["revision"]: LedgerEntry(
            row["revision"],
            row["checksum"],
            row["direction"],
            row["run_id"],
            row["at"],
            env=row["env"],
            actor=row["actor"],
            envelope=row.get("envelope"),
            reads=row.get("reads"),
        )
        for row in rows
        if row["direction"] != "stamped"
    }


def history_of(rows: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, str, str], ...]:
    """Pure: every one of `rows` (oldest first) as (revision, direction, run_id)."""
    return tuple((r["revision"], r["direction"], r["run_id"]) for r in rows)
