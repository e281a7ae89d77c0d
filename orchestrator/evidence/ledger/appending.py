"""Events appended to the audit chain under its lock, in one round trip where the driver can."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import DBAPIError

from orchestrator.db.database import listed_without, remember_tables, run_batch
from orchestrator.evidence.ledger.audit_chain import chain_rows
from orchestrator.evidence.ledger.set_up import _ADDED_COLUMNS
from orchestrator.evidence.ledger.tables import (
    AUDIT_TABLE,
    CHAIN_LOCK_KEY,
    GENESIS,
    OWN_TABLES,
    audit,
)


def append_audit(
    connection: Connection, records: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """Append events to the chain, in order, inside the caller's transaction; the last
    row written (None for no records)."""
    if not records:
        return None
    if connection.dialect.name == "postgresql":
        written = _append_in_one_round_trip(connection, records)
        if written is not None:
            return written
    _lock_chain(connection)
    last = connection.execute(
        select(audit.c.id, audit.c.hash).order_by(audit.c.id.desc()).limit(1)
    ).first()
    rows = chain_rows(records, *((last.id, last.hash) if last else (0, GENESIS)))
    connection.execute(insert(audit), rows)
    return rows[-1]


# One row chained after the chain's last one, its hash computed by the server exactly as
# `chain_hash` does (the payload is canonical JSON: ASCII), so that a batch of events is
# written, under the chain's lock, in one round trip: no read of the tail first.
_PG_APPEND = f"""INSERT INTO {AUDIT_TABLE}
  (id, timestamp, event, run_id, env, actor, revision, outcome, payload, prev_hash, hash)
SELECT last.id + 1, %(timestamp)s, %(event)s, %(run_id)s, %(env)s, %(actor)s, %(revision)s,
  %(outcome)s, %(payload)s, last.hash, encode(sha256(convert_to(
    last.hash || '|' || (last.id + 1) || '|' || %(payload)s, 'UTF8')), 'hex')
FROM ((SELECT id, hash FROM {AUDIT_TABLE} ORDER BY id DESC LIMIT 1)
      UNION ALL SELECT 0, '{GENESIS}' ORDER BY id DESC LIMIT 1) AS last"""


def _append_in_one_round_trip(
    connection: Connection, records: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    done = run_batch(connection, append_statements(records))
    return None if done is None else appended(records, done[-1][0])


def append_statements(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, Any]]:
    """`records` appended in one batch (db.database.run_batch): the chain's lock, then one
    INSERT each, the last returning what `appended` needs."""
    rows = chain_rows(records, 0, GENESIS)  # the columns; id and hashes come from the server
    statements: list[tuple[str, Any]] = [
        ("SELECT pg_advisory_xact_lock(%(k)s)", {"k": CHAIN_LOCK_KEY})
    ]
    statements += [(_PG_APPEND, row) for row in rows]
    statements[-1] = (statements[-1][0] + " RETURNING id, prev_hash, hash", statements[-1][1])
    return statements


def appended(records: Sequence[Mapping[str, Any]], returned: Mapping[str, Any]) -> dict[str, Any]:
    """The last of `records` as written, from what its INSERT returned."""
    last = chain_rows(records[-1:], 0, GENESIS)[0]
    return {
        **last,
        "id": returned["id"],
        "prev_hash": returned["prev_hash"],
        "hash": returned["hash"],
    }


# Our tables listed, where they are all there in this release's shape; else an error (a
# malformed array; not a constant, which the server would cast on reading the query), which
# stops the statements sent after it in the same round trip.
_LISTED_IF_READY = f"""WITH t AS (
  SELECT c.oid, c.relname::text AS name FROM pg_catalog.pg_class c
  WHERE c.relkind IN ('r', 'p') AND c.relnamespace = current_schema()::regnamespace)
SELECT CASE WHEN
  (SELECT count(*) FROM t WHERE name IN ({", ".join(f"'{n}'" for n in sorted(OWN_TABLES))}))
    = {len(OWN_TABLES)}
  AND (SELECT count(*) FROM t JOIN pg_catalog.pg_attribute a
       ON a.attrelid = t.oid AND NOT a.attisdropped
       WHERE (t.name, a.attname::text) IN ({
    ", ".join(f"('{t}', '{c}')" for t, c, _ in _ADDED_COLUMNS)
})) = {len(_ADDED_COLUMNS)}
THEN (SELECT array_agg(name) FROM t)
ELSE ('orchestrator: our tables need setting up in ' || current_database())::text[]
END AS tables"""


def append_audit_if_ready(
    connection: Connection, records: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """`append_audit` outside a transaction, in the round trip that checks our tables are
    there in this release's shape (and lists the tables, for `has_table`); the last row
    written, or None where they may not be, or the driver cannot: nothing was written, and
    the caller sets up (ensure_tables) and appends."""
    if (
        not records
        or connection.dialect.driver != "psycopg"
        or connection.in_transaction()
        or listed_without(connection, OWN_TABLES)
    ):
        return None
    try:
        done = run_batch(connection, [(_LISTED_IF_READY, {}), *append_statements(records)])
    except DBAPIError:
        return None
    if done is None:
        return None
    remember_tables(connection, done[0][0]["tables"])
    return appended(records, done[-1][0])


def _lock_chain(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CHAIN_LOCK_KEY})
