"""Signed checkpoints: the audit chain's head and the ledger's extent at the end of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, insert, select

from orchestrator.core import trust
from orchestrator.db.database import has_table
from orchestrator.evidence.ledger.appending import _lock_chain
from orchestrator.evidence.ledger.rows import _envelope
from orchestrator.evidence.ledger.tables import (
    CHECKPOINT_TABLE,
    LEDGER_TABLE,
    audit,
    checkpoint,
    ledger,
)

if TYPE_CHECKING:  # imported where something is signed: cryptography is slow to import
    from orchestrator.core import signing


def write_checkpoint(
    connection: Connection,
    *,
    key: signing.PrivateKey,
    env: str,
    target: str,
    run_id: str,
    at: str,
) -> dict[str, Any] | None:
    """Sign the audit chain's head and the ledger's extent, inside the caller's transaction
    (the chain lock held, so no row slips in between reading the head and signing it)."""

    _lock_chain(connection)
    head = connection.execute(_CHECKPOINT_HEAD).first()  # one round trip for the three
    if head is None:
        return None
    row = checkpoint_row(
        key=key,
        env=env,
        target=target,
        run_id=run_id,
        at=at,
        audit=(head.id, head.hash),
        ledger_id=head.ledger_id or 0,
        signed_from=head.signed_from,
    )
    connection.execute(insert(checkpoint), row)
    return row


def checkpoint_row(
    *,
    key: signing.PrivateKey,
    env: str,
    target: str,
    run_id: str,
    at: str,
    audit: tuple[int, str],
    ledger_id: int,
    signed_from: int | None,
) -> dict[str, Any]:
    """The signed checkpoint over the audit chain's head `audit` (id, hash) and the ledger's
    extent (its last row, its first signed row)."""
    payload = trust.checkpoint_payload(
        env=env,
        target=target,
        run_id=run_id,
        audit_id=audit[0],
        audit_hash=audit[1],
        ledger_id=ledger_id,
        ledger_signed_from=signed_from,
        at=at,
    )
    return {
        "run_id": run_id,
        "audit_id": audit[0],
        "audit_hash": audit[1],
        "at": at,
        "envelope": _envelope(trust.CHECKPOINT_TYPE, payload, key),
    }


# the same row as a statement of its own (psycopg parameters), for a script
INSERT_CHECKPOINT = (
    f"INSERT INTO {CHECKPOINT_TABLE} (run_id, audit_id, audit_hash, at, envelope)"
    " VALUES (%(run_id)s, %(audit_id)s, %(audit_hash)s, %(at)s, %(envelope)s)"
)
# the ledger's extent a checkpoint signs (its last row, its first signed row)
LEDGER_EXTENT = (
    f"SELECT max(id) AS ledger_id, min(id) FILTER (WHERE envelope IS NOT NULL) AS signed_from"
    f" FROM {LEDGER_TABLE}"
)


_CHECKPOINT_HEAD = (
    select(
        audit.c.id,
        audit.c.hash,
        select(func.max(ledger.c.id)).scalar_subquery().label("ledger_id"),
        select(func.min(ledger.c.id))
        .where(ledger.c.envelope.is_not(None))
        .scalar_subquery()
        .label("signed_from"),
    )
    .order_by(audit.c.id.desc())
    .limit(1)
)


def read_checkpoints(connection: Connection) -> list[dict[str, Any]]:
    if not has_table(connection, CHECKPOINT_TABLE):
        return []
    rows = connection.execute(select(checkpoint).order_by(checkpoint.c.id))
    return [dict(row._mapping) for row in rows]
