"""What a run hangs on its migration connection while revisions run: the fence each COMMIT
must pass, the boundary between revisions where a signal stops the run, and the note that a
revision entered an autocommit block (which a failure cannot roll back)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, event

from orchestrator.core.config import SessionConfig
from orchestrator.core.errors import LockLost
from orchestrator.db.database import is_postgresql, set_session_at_begin
from orchestrator.db.locks import FENCE_SQL
from orchestrator.running import cancel

# Keys of the migration connection's `info` while a run applies revisions on it.
FENCE = "orchestrator.fence"  # the Fence every commit on this connection must satisfy
FENCED = "orchestrator.fenced"  # this transaction's ledger insert already proved the fence
AUTOCOMMITTED = "orchestrator.autocommitted"  # the current revision ran an autocommit block
BETWEEN = "orchestrator.between"  # a revision just ended: the next BEGIN starts another
# the version table's (name, schema): Alembic's statements on it ride with the COMMIT
VERSION_RIDES = "orchestrator.version_rides"


def watch(engine: Engine) -> None:
    """Hang the hooks below on every connection of `engine` (inert until `FENCE` is set)."""
    event.listen(engine, "begin", _revision_boundary, insert=True)
    event.listen(engine, "commit", _fence_commit)
    event.listen(engine, "set_connection_execution_options", _note_autocommit)
    event.listen(engine, "do_execute", _version_rides_with_commit)


def _version_rides_with_commit(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    """Alembic's UPDATE (or DELETE) of the version table at a revision's end, held and
    sent in the round trip of that revision's COMMIT (ahead of the ledger row riding there):
    a revision costs Alembic's round trips and no more. Alembic's check that an UPDATE or
    DELETE matched one row is then made in SQL, where a mismatch fails the transaction. Any
    other statement sends what is held first: the order of statements never changes."""
    connection = context.root_connection
    version_table = connection.info.get(VERSION_RIDES)
    if version_table is None:
        return False
    dbapi = connection.connection.dbapi_connection
    table = getattr(getattr(context.compiled, "statement", None), "table", None)  # DML's
    ours = (getattr(table, "name", None), getattr(table, "schema", None)) == version_table
    # (an INSERT, a revision's first from base, may return its key: it goes as it comes)
    if not ours or parameters or not (context.isupdate or context.isdelete):
        dbapi.orchestrator_send_held()
        return False
    dbapi.orchestrator_hold(_one_row(statement))
    context._rowcount = 1  # what Alembic checks; `_one_row` makes it so, or fails
    return True


def _one_row(statement: str) -> str:
    """`statement` (an UPDATE or DELETE) failing unless it changed exactly one row."""
    return (
        f"WITH changed AS ({statement} RETURNING 1) SELECT CASE WHEN count(*) = 1 THEN true"
        " ELSE ('orchestrator: the version table has ' || count(*) || ' rows where Alembic"
        " expected to change one')::boolean END FROM changed"
    )


def _fence_commit(connection: Connection) -> None:
    """Before a commit on the migration connection that no fenced ledger insert covers (the
    work before an autocommit block, the block itself, the one COMMIT of a per-run
    transaction), prove the lock is still held."""
    fence = connection.info.get(FENCE)
    if fence is None or connection.info.pop(FENCED, False):
        return
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(_FENCE_CHECK_RAW, fence.params())
        row = cursor.fetchone()
    finally:
        cursor.close()
    if not (row and row[0]):
        dbapi.rollback()
        raise LockLost("the migration lock was lost before this transaction could commit")


_FENCE_CHECK_RAW = "SELECT " + re.sub(r":(fence_\w+)", r"%(\1)s", FENCE_SQL)  # DBAPI style


def _revision_boundary(connection: Connection) -> None:
    """The first BEGIN after a revision ended (or before the first): a SIGTERM or SIGINT
    received meanwhile stops the run here, with nothing half-done."""
    if connection.info.pop(BETWEEN, False):
        cancel.check()


def _note_autocommit(connection: Connection, options: Mapping[str, Any]) -> None:
    """Remember that the current revision entered an autocommit block: a failure after it
    cannot roll back what the block ran."""
    if options.get("isolation_level") == "AUTOCOMMIT" and FENCE in connection.info:
        connection.info[AUTOCOMMITTED] = True


def session_settings(connection: Connection, session: SessionConfig) -> None:
    """The migration session's settings, sent with its first BEGIN (PostgreSQL)."""
    if not is_postgresql(connection):
        return
    # Each revision commits on its own; none of those commits waits for the disk. The
    # run's last audit row is committed durably on another session, which flushes the
    # WAL, theirs included, before we report success. A server crash mid-run can lose
    # only whole revisions, ledger rows with them: never a half, never a reported one.
    settings = {"synchronous_commit": "off"}
    for name, value in (
        ("lock_timeout", session.lock_timeout),
        ("statement_timeout", session.statement_timeout),
    ):
        if value is not None:
            settings[name] = value
    # A runner killed mid-statement frees the lock at once (its lock session sees EOF), but
    # the backend of its migration would go on running the statement, holding its locks,
    # until it next talks to the dead client. Have it notice the dead client (PG >= 14).
    if (connection.dialect.server_version_info or (0,)) >= (14,):
        settings["client_connection_check_interval"] = "1s"
    set_session_at_begin(connection, settings)  # in the first revision's BEGIN round trip
