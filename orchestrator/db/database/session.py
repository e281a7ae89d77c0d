"""Session settings in no round trip of their own where the driver can: no idle timeouts,
`set_config` at the next BEGIN."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

# A run's sessions sit idle at times (the lock session for the whole run, pooled ones between
# events): an idle timeout set on the role or the database must not end them under it.
# Settings the server lacks (idle_session_timeout is PostgreSQL 14+) are skipped.
_IDLE = (
    "FROM pg_settings WHERE name IN ('idle_session_timeout', 'idle_in_transaction_session_timeout')"
)
NO_IDLE_TIMEOUTS = f"SELECT set_config(name, '0', false) {_IDLE}"
NO_IDLE_TIMEOUTS_COUNTED = f"SELECT count(set_config(name, '0', false)) {_IDLE}"  # one value


IDLE_OFF = (
    "orchestrator_idle_off"  # on a connection record: its startup packet (or first query) said so
)


def _no_idle_timeouts_at_startup(dialect: Any, record: Any, _cargs: Any, cparams: Any) -> None:
    """Where the engine knows the server (after its first connection), the settings go in
    the startup packet (libpq `options`), which outranks the role's and the database's: no
    round trip. idle_session_timeout is PostgreSQL 14+; before, the query below does it."""
    if (dialect.server_version_info or (0,)) < (14,) or "options" not in cparams:
        return
    off = " -c idle_session_timeout=0 -c idle_in_transaction_session_timeout=0"
    cparams["options"] = cparams["options"] + off
    record.info[IDLE_OFF] = True


def no_idle_timeouts(dbapi_connection: Any, record: Any) -> None:
    if getattr(dbapi_connection, IDLE_OFF, False) or (record and record.info.get(IDLE_OFF)):
        return
    _outside_transaction(dbapi_connection, NO_IDLE_TIMEOUTS)


def set_session(connection: Connection, settings: Mapping[str, str]) -> None:
    """PostgreSQL session parameters (`set_config`, not local to a transaction), in one round
    trip outside any transaction: not BEGIN, each setting and COMMIT."""
    if not settings:
        return
    if connection.in_transaction():
        connection.commit()
    calls = ", ".join(["set_config(%s, %s, false)"] * len(settings))
    params = [part for item in settings.items() for part in item]
    _outside_transaction(connection.connection.dbapi_connection, f"SELECT {calls}", params)


_BEFORE_BEGIN = "orchestrator_before_begin"


def set_session_at_begin(connection: Connection, settings: Mapping[str, str]) -> None:
    """`set_session`, sent with the connection's next BEGIN (no round trip of its own) where
    the driver can, and committed on its own before it: a first transaction that rolls
    back keeps them. Else at once."""
    dbapi: Any = connection.connection.dbapi_connection
    if not settings or connection.in_transaction() or not hasattr(dbapi, _BEFORE_BEGIN):
        set_session(connection, settings)
        return
    calls = ", ".join(["set_config(%s, %s, false)"] * len(settings))
    import psycopg

    with psycopg.ClientCursor(dbapi) as cursor:
        bound = cursor.mogrify(f"SELECT {calls}", [p for item in settings.items() for p in item])
    setattr(dbapi, _BEFORE_BEGIN, bound)


def _outside_transaction(dbapi_connection: Any, sql: str, params: Any = None) -> None:
    """`sql` on an idle DBAPI connection in autocommit mode (one round trip; a transaction
    would add its BEGIN and COMMIT), the connection's mode restored after."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(sql, params)
        finally:
            cursor.close()
    finally:
        dbapi_connection.autocommit = autocommit
