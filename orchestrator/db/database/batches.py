"""Several statements or reads in one round trip (psycopg), and reads made ahead for the
steps that follow."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError

from orchestrator.db.database.tables import listed_without


def run_script(
    connection: Connection, statements: Sequence[tuple[str, Mapping[str, Any]]]
) -> list[tuple[Any, ...]] | None:
    """Several statements (psycopg's `%(name)s` parameters, bound on the client) in one round
    trip, inside the connection's transaction, or outside any as one implicit transaction
    (all or nothing); the rows of the last one. None where the driver cannot: then the caller
    runs them one by one."""
    results = _script(connection, statements)
    if results is None:
        return None
    return [tuple(row.values()) for row in results[-1]] if results else []


def read_at_once(
    connection: Connection,
    queries: Sequence[str | tuple[str, Mapping[str, Any]]],
    tables: Sequence[str],
) -> list[list[dict]] | None:
    """Reads of `tables`, most likely there, in one round trip, outside any transaction:
    each query's rows (as dicts); a query with parameters is given as (sql, psycopg's
    `%(name)s` parameters), bound on the client. None where the driver cannot, the
    connection is in a transaction, or a table is missing: then the caller reads step by
    step."""
    if connection.in_transaction() or connection.dialect.driver != "psycopg":
        return None
    if listed_without(connection, tables):
        return None  # no need to try
    import psycopg

    try:
        return _script(connection, [(q, {}) if isinstance(q, str) else q for q in queries])
    except DBAPIError as exc:
        if isinstance(exc.orig, psycopg.errors.UndefinedTable):
            return None
        raise


def run_batch(
    connection: Connection, statements: Sequence[tuple[str, Mapping[str, Any]]]
) -> list[list[dict]] | None:
    """Several statements (psycopg's `%(name)s` parameters, bound on the client) in one round
    trip: the rows (as dicts) of each one that returns rows, in order. Outside a transaction
    they are one implicit transaction, unless they say BEGIN (and COMMIT in a later batch).
    None where the driver cannot."""
    return _script(connection, statements)


def read_all(
    connection: Connection, statements: Sequence[tuple[str, Mapping[str, Any]]]
) -> list[list[Any]] | None:
    """Several statements (psycopg's `%(name)s` parameters) in one round trip outside any
    transaction (one implicit one): each SELECT's rows, as dicts. None where the driver
    cannot, the connection is in a transaction, or one of them fails (a table missing, a row
    that does not cast): then the caller reads step by step, as it would have anyway."""
    if connection.in_transaction() or connection.dialect.driver != "psycopg":
        return None
    try:
        return _script(connection, statements)
    except DBAPIError:
        return None


def as_rows(found: list[Any]) -> list[tuple[Any, ...]]:
    """`read_all`'s rows as tuples, every column in order (several may share a name)."""
    return [row.in_order for row in found]


class _Row(dict):  # type: ignore[type-arg]
    """A row by column name; `in_order`: all its values, in the order of the columns."""

    __slots__ = ("in_order",)

    def __init__(self, names: Sequence[str], row: Sequence[Any]) -> None:
        super().__init__(zip(names, row, strict=True))
        self.in_order = tuple(row)


# Reads made ahead, in one round trip, for the steps that follow (a run under its lock):
# each step takes its own once (`prefetched`), or reads for itself where nothing was made.
_PREFETCHED = "orchestrator_prefetched"


def memoise_reads(engine: Engine) -> dict[str, Any]:
    """A dict every connection of `engine` sees as its reads made ahead: the caller fills it
    and clears it when what it holds may no longer be true."""
    memo: dict[str, Any] = {}

    def checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        record.info[_PREFETCHED] = memo

    event.listen(engine, "checkout", checkout)
    return memo


@contextmanager
def reads_kept(connection: Connection) -> Iterator[dict[str, Any]]:
    """A dict this connection's steps take their reads made ahead from (`prefetched`) while
    the block lasts: a read-only look, whose connection outlives it (`keep_reads`)."""
    memo: dict[str, Any] = {}
    connection.info[_PREFETCHED] = memo
    try:
        yield memo
    finally:
        memo.clear()  # what no step took is not kept for a later look
        connection.info.pop(_PREFETCHED, None)


def prefetched(connection: Connection, name: str) -> Any:
    """What was read ahead under `name` for this step (taken: a second ask reads), or None."""
    memo = connection.info.get(_PREFETCHED)
    return memo.pop(name, None) if memo else None


def _script(
    connection: Connection, statements: Sequence[tuple[str, Mapping[str, Any]]]
) -> list[list[dict]] | None:
    if connection.dialect.driver != "psycopg":
        return None
    import psycopg

    dbapi: Any = connection.connection.dbapi_connection
    # outside a transaction: in autocommit mode (set only where it is not: psycopg refuses
    # to touch it while a batch's own BEGIN holds a transaction open)
    switch = not connection.in_transaction() and not dbapi.autocommit
    if switch:
        dbapi.autocommit = True
    script = ""
    try:
        with psycopg.ClientCursor(dbapi) as cursor:
            script = ";\n".join(
                cursor.mogrify(sql, params) if params else sql for sql, params in statements
            )
            cursor.execute(script)
            results: list[list[dict]] = []
            while True:
                if cursor.description is not None:
                    names = [column.name for column in cursor.description]
                    results.append([_Row(names, row) for row in cursor])
                if not cursor.nextset():
                    return results
    except psycopg.Error as exc:  # what every caller catches: SQLAlchemy's error
        raise DBAPIError.instance(script, None, exc, psycopg.Error) from None
    finally:
        if switch:
            dbapi.autocommit = False


def psycopg_style(sql: str) -> str:
    """SQLAlchemy's `:name` parameters as psycopg's `%(name)s` (casts `::type` kept)."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)
