"""psycopg connections in fewer round trips: an engine's first connection asks the server
in one query, and statements ride with a transaction's COMMIT (and BEGIN)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from orchestrator.db.database.session import IDLE_OFF, NO_IDLE_TIMEOUTS_COUNTED

_SERVER_FACTS = (
    "SELECT current_schema(), current_setting('transaction_isolation'),"
    " current_setting('standard_conforming_strings')"
)


def _first_connect_in_one_round_trip(dialect: Any, idle_off: bool) -> None:
    """SQLAlchemy's first connection of an engine asks the server four things, each in its
    own round trip inside a transaction (six in all): the version (psycopg has it from the
    handshake), the schema, the default isolation level and standard_conforming_strings. One
    query outside a transaction answers the last three; SQLAlchemy's own set-up does the rest.
    With `idle_off`, it turns the session's idle timeouts off too (session.no_idle_timeouts:
    the first connection cannot have them in its startup packet, the version unknown yet)."""
    initialize = dialect.initialize

    def in_one(connection: Connection) -> None:
        dbapi: Any = connection.connection.dbapi_connection
        fold = idle_off and hasattr(dbapi, "__dict__")  # where it can say so on the connection
        query = f"{_SERVER_FACTS}, ({NO_IDLE_TIMEOUTS_COUNTED})" if fold else _SERVER_FACTS
        autocommit, dbapi.autocommit = dbapi.autocommit, True
        try:
            schema, isolation, conforming, *_ = dbapi.execute(query).fetchone()
        finally:
            dbapi.autocommit = autocommit
        if fold:
            setattr(dbapi, IDLE_OFF, True)
        number = dbapi.info.server_version  # 160002 for 16.2; 90624 for 9.6.24
        version = (
            (number // 10000, number % 10000)
            if number >= 100000
            else (number // 10000, number // 100 % 100, number % 100)
        )
        dialect._get_server_version_info = lambda _c: version
        dialect._get_default_schema_name = lambda _c: schema
        dialect.get_default_isolation_level = lambda _d: isolation.upper()
        dialect._set_backslash_escapes = lambda _c: setattr(
            dialect, "_backslash_escapes", conforming == "off"
        )
        initialize(connection)

    dialect.initialize = in_one


# -- statements that ride with a COMMIT (one round trip, not two) ---------------------------


def _connect_committing_with(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    return _committing_with_class().connect(*cargs, **cparams)


_COMMITTING_WITH: Any = None
_RIDING = "orchestrator_riding"
# given the raw connection, rolled back to before the statements that failed: the statements
# to send instead (it may read first), or it raises
Recover = Callable[[Any], Sequence[tuple[str, Mapping[str, Any]]]]


def _committing_with_class() -> Any:
    """psycopg's Connection, whose commit() can carry statements queued by `commit_with`
    (and open the next transaction) in the COMMIT's own round trip."""
    global _COMMITTING_WITH
    if _COMMITTING_WITH is None:
        import psycopg
        from psycopg import generators
        from psycopg.pq import ExecStatus, TransactionStatus

        INERROR, IDLE = TransactionStatus.INERROR, TransactionStatus.IDLE

        class CommittingWith(psycopg.Connection):  # type: ignore[type-arg]
            orchestrator_with_commit: list[tuple[str, Mapping[str, Any]]] | None = None
            orchestrator_held: list[str] | None = None  # sent first, before a savepoint
            orchestrator_begin_next = False
            orchestrator_recover: Recover | None = None
            orchestrator_before_begin: str | None = None

            def _start_query(self) -> Any:
                """The BEGIN of the next transaction, with what `before_next_begin` queued
                (committed on its own first) in the same round trip."""
                before = self.orchestrator_before_begin
                if before is None or self._pipeline:
                    return (yield from super()._start_query())
                if self.autocommit:  # no BEGIN to ride with (env.py's choice): on their own
                    self.orchestrator_before_begin = None
                    yield from self._exec_command(before)
                    return None
                if self.pgconn.transaction_status != IDLE:
                    return None
                self.orchestrator_before_begin = None
                begin = self._get_tx_start_command()
                self.pgconn.send_query(f"{before};\nCOMMIT;\n".encode() + begin)
                for result in (yield from generators.execute(self.pgconn)):
                    if result.status == ExecStatus.FATAL_ERROR:
                        raise psycopg.errors.error_from_result(
                            result, encoding=self.pgconn._encoding
                        )
                return None

            def commit(self) -> None:
                held, self.orchestrator_held = self.orchestrator_held or [], None
                queued, self.orchestrator_with_commit = self.orchestrator_with_commit, None
                recover, self.orchestrator_recover = self.orchestrator_recover, None
                begin_next, self.orchestrator_begin_next = self.orchestrator_begin_next, False
                if not queued and not held:
                    return super().commit()
                # each statement raises where it must stop the commit: then neither COMMIT
                # nor BEGIN runs, and the transaction is left failed, to roll back; or, with
                # `recover`, back to the savepoint before the queued ones, to try its way
                end = ["COMMIT", "BEGIN"] if begin_next else ["COMMIT"]
                script = [self._bind(sql, params) for sql, params in queued or []]
                if recover is not None:
                    script.insert(0, f"SAVEPOINT {_RIDING}")
                try:
                    self._run([*held, *script, *end])
                except psycopg.Error as failed:
                    if recover is None or self.info.transaction_status != INERROR:
                        raise
                    try:
                        self._run([f"ROLLBACK TO SAVEPOINT {_RIDING}"])
                    except psycopg.Error:  # a held statement failed, before the savepoint
                        raise failed from None
                    again = [self._bind(sql, params) for sql, params in recover(self)]
                    self._run([*again, *end])

            def orchestrator_hold(self, sql: str) -> None:
                """`sql` sent in the COMMIT's round trip, ahead of what rides with it."""
                self.orchestrator_held = [*(self.orchestrator_held or []), sql]

            def orchestrator_send_held(self) -> None:
                """What was held, sent now (another statement must come after it)."""
                held, self.orchestrator_held = self.orchestrator_held, None
                if held:
                    self._run(held)

            def _run(self, script: list[str]) -> None:
                with psycopg.ClientCursor(self) as cursor:
                    cursor.execute(";\n".join(script))

            def rollback(self) -> None:
                self.orchestrator_with_commit = self.orchestrator_recover = None
                self.orchestrator_held, self.orchestrator_begin_next = None, False
                return super().rollback()

            def _bind(self, sql: str, params: Mapping[str, Any]) -> str:
                if not params:
                    return sql
                with psycopg.ClientCursor(self) as cursor:
                    return cursor.mogrify(sql, params)

        _COMMITTING_WITH = CommittingWith
    return _COMMITTING_WITH


def commit_with(
    connection: Connection,
    statements: Sequence[tuple[str, Mapping[str, Any]]],
    begin_next: bool,
    recover: Recover | None = None,
) -> bool:
    """Send `statements` (psycopg's `%(name)s` parameters) in the round trip of the
    transaction's COMMIT, and with `begin_next`, open the next transaction in it too (what a
    run of many revisions, one transaction each, would otherwise pay a round trip for).
    Where one of them fails, `recover` (if given) gets the transaction back as it was before
    them and says what to send instead. False where the driver cannot: then the caller runs
    them itself."""
    if not rides_with_commit(connection):
        return False
    dbapi: Any = connection.connection.dbapi_connection
    queued = dbapi.orchestrator_with_commit or []
    dbapi.orchestrator_with_commit = [*queued, *statements]
    dbapi.orchestrator_begin_next = begin_next
    dbapi.orchestrator_recover = recover
    return True


def rides_with_commit(connection: Connection) -> bool:
    """Whether `commit_with` can send statements with this connection's COMMIT."""
    return hasattr(connection.connection.dbapi_connection, "orchestrator_with_commit")
