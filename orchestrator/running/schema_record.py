"""The schema a run left, recorded under its lock at the revision it left (what `status`
and `drift` compare with later): read in one round trip on PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from orchestrator.core.logging import utc_now
from orchestrator.db.database import current_heads, describe_error
from orchestrator.evidence import ledger
from orchestrator.running import read_ahead

if TYPE_CHECKING:
    from orchestrator.running.run import TargetRun


def record_schema(run: TargetRun) -> str | None:
    """Under the lock, after a run that changed the database: record the schema it left
    at the revision it left (what `status` and `drift` compare with later)."""
    if run.schema_fingerprint is not None:
        return run.schema_fingerprint
    from orchestrator.schema.description import fingerprint
    from orchestrator.schema.reader import catalog_stamp, read_schema

    # PostgreSQL: outside a transaction (we hold the lock; a transaction would give these
    # reads no common snapshot under READ COMMITTED): no BEGIN and COMMIT round trips
    postgres = run.engine.dialect.name == "postgresql"
    try:
        with run.reading() if postgres else run.engine.begin() as connection:
            # PostgreSQL: the catalogs, the heads and the stamp in one round trip
            try:
                ahead = read_ahead.after_run(connection, run.read_ahead, run.env.schemas)
                description = read_schema(connection, run.env.schemas)
            finally:
                run.read_ahead.clear()
            run.schema_fingerprint = fingerprint(description)
            heads, stamp = ahead or (current_heads(connection), None)
            run.schema_heads = heads
            ledger.record_schema(
                connection,
                heads=heads,
                fingerprint=run.schema_fingerprint,
                description=description,
                stamp=stamp or catalog_stamp(connection, run.env.schemas),
                run_id=run.run_id,
                env=run.env.name,
                actor=run.app.actor,
                at=utc_now(),
                key=run.key,
                target=run.target.name,
            )
    except SQLAlchemyError as exc:  # the run itself succeeded: say so, and why not this
        run.schema_fingerprint = None
        run.audit.emit("schema.not_recorded", error=describe_error(exc))
    return run.schema_fingerprint
