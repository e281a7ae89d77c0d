"""What the commands read from the audit table and the ledger: events by filter, run ends,
runs without an end."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, select, text

from orchestrator.db.database import has_table, prefetched
from orchestrator.evidence.ledger.audit_chain import _INDEXED, record_of
from orchestrator.evidence.ledger.tables import AUDIT_TABLE, LEDGER_TABLE, audit


def audited_revisions(connection: Connection, run_id: str) -> set[str]:
    """Revisions whose migration.applied/reverted event of `run_id` is in the table."""
    rows = connection.execute(
        select(audit.c.revision).where(
            audit.c.run_id == run_id,
            audit.c.event.in_(("migration.applied", "migration.reverted")),
        )
    )
    return {row.revision for row in rows}


def ledger_rows(connection: Connection, run_id: str) -> list[dict[str, Any]]:
    rows = connection.execute(
        text(f"SELECT * FROM {LEDGER_TABLE} WHERE run_id = :run_id ORDER BY id"),
        {"run_id": run_id},
    )
    return [dict(row._mapping) for row in rows]


@dataclass(frozen=True)
class AuditFilter:
    env: str | None = None
    since: str | None = None  # ISO timestamps, compared as text (fixed-width UTC)
    until: str | None = None
    actor: str | None = None
    event: str | None = None
    revision: str | None = None
    outcome: str | None = None
    run_id: str | None = None
    limit: int | None = None


def query_audit(connection: Connection, flt: AuditFilter) -> list[dict[str, Any]]:
    """Matching events, oldest first; `limit` keeps the most recent ones."""
    if not has_table(connection, AUDIT_TABLE):
        return []
    rows = connection.execute(audit_select(flt)).all()
    return [{"id": row.id, **record_of(row._mapping)} for row in reversed(rows)]


RECENT_ENDS = 200


def recent_ends(connection: Connection) -> list[dict[str, Any]]:
    """The most recent run ends (TERMINAL_EVENTS), oldest first: what `status` shows."""
    if not has_table(connection, AUDIT_TABLE):
        return []
    found = prefetched(connection, "recent_ends")
    if found is not None:
        return [{"id": row["id"], **record_of(row)} for row in reversed(found)]
    rows = connection.execute(_recent_ends()).all()
    return [{"id": row.id, **record_of(row._mapping)} for row in reversed(rows)]


def _recent_ends() -> Select[Any]:
    return (
        select(audit.c.id, audit.c.payload, *_INDEXED_COLUMNS)
        .where(audit.c.event.in_(TERMINAL_EVENTS))
        .order_by(audit.c.id.desc())
        .limit(RECENT_ENDS)
    )


def recent_ends_sql(connection: Connection) -> str:
    """What recent_ends reads, as SQL to read ahead (values inline)."""
    return _literal_sql(connection, _recent_ends)


def audit_select(flt: AuditFilter) -> Select[Any]:
    """The statement behind `query_audit`: newest first, each filter on an indexed column."""
    query = select(audit.c.id, audit.c.payload, *_INDEXED_COLUMNS)
    for column, value in (
        (audit.c.env, flt.env),
        (audit.c.actor, flt.actor),
        (audit.c.event, flt.event),
        (audit.c.outcome, flt.outcome),
        (audit.c.run_id, flt.run_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if flt.revision is not None:
        query = query.where(audit.c.revision.startswith(flt.revision, autoescape=True))
    if flt.since is not None:
        query = query.where(audit.c.timestamp >= flt.since)
    if flt.until is not None:
        query = query.where(audit.c.timestamp <= flt.until)
    query = query.order_by(audit.c.id.desc())
    if flt.limit is not None:
        query = query.limit(flt.limit)
    return query


def last_env_py(connection: Connection) -> str | None:
    """The env.py checksum the database's last successful run recorded (None: none did)."""
    last = query_audit(connection, AuditFilter(event="run.succeeded", limit=1))
    value = last[0].get("env_py") if last else None
    return value if isinstance(value, str) else None


def runs_without_end(connection: Connection) -> list[dict[str, Any]]:
    """`run.started` events with no terminal event: runs still going, or dead."""
    if not has_table(connection, AUDIT_TABLE):
        return []
    found = prefetched(connection, "open_runs")
    if found is not None:
        return [record_of(row) for row in found]
    rows = connection.execute(_open_runs())
    return [record_of(row._mapping) for row in rows]


def _open_runs() -> Select[Any]:
    ended = select(audit.c.run_id).where(audit.c.event.in_(TERMINAL_EVENTS))
    return (
        select(audit.c.payload, *_INDEXED_COLUMNS)
        .where(audit.c.event == "run.started", audit.c.run_id.not_in(ended))
        .order_by(audit.c.id)
    )


def open_runs_sql(connection: Connection) -> str:
    """What runs_without_end reads, as SQL to read ahead (values inline)."""
    return _literal_sql(connection, _open_runs)


_LITERAL_SQL: dict[tuple[str, str], str] = {}  # compiled once per process, not per database


def _literal_sql(connection: Connection, statement: Callable[[], Select[Any]]) -> str:
    key = (statement.__name__, connection.dialect.name)
    if key not in _LITERAL_SQL:
        compiled = statement().compile(connection, compile_kwargs={"literal_binds": True})
        _LITERAL_SQL[key] = str(compiled)
    return _LITERAL_SQL[key]


def acquired_runs(connection: Connection, run_ids: Iterable[str]) -> set[str]:
    ids = list(run_ids)
    if not ids:
        return set()
    rows = connection.execute(
        select(audit.c.run_id).where(audit.c.event == "lock.acquired", audit.c.run_id.in_(ids))
    )
    return {row.run_id for row in rows}


TERMINAL_EVENTS = ("run.succeeded", "run.failed", "run.refused", "run.interrupted")


_INDEXED_COLUMNS = [audit.c[name] for name in _INDEXED]  # read beside a payload: see record_of


def event_matches(flt: AuditFilter, record: Mapping[str, Any]) -> bool:
    """Pure: whether an event passes `flt`'s filters (not its limit), as `audit_select` does."""
    for key, value in (
        ("env", flt.env),
        ("actor", flt.actor),
        ("event", flt.event),
        ("outcome", flt.outcome),
        ("run_id", flt.run_id),
    ):
        if value is not None and record.get(key) != value:
            return False
    if flt.revision is not None:
        revision = record.get("revision")
        if revision is None or not str(revision).startswith(flt.revision):
            return False
    if flt.since is not None and not str(record.get("timestamp")) >= flt.since:
        return False
    return flt.until is None or str(record.get("timestamp")) <= flt.until
