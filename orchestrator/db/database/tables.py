"""Which tables the default schema has: listed once and memoised where the caller knows
when that changes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection, Engine, event, inspect, text

from orchestrator.db.database.engines import VERSION_TABLE

_TABLES = "orchestrator_tables"


class _Tables:
    """What `has_table` listed (None: list again at the next question)."""

    names: set[str] | None = None


# pg_class, not the pg_tables view: half the cost in a new session
PG_TABLES = (
    "SELECT relname FROM pg_catalog.pg_class WHERE relkind IN ('r', 'p')"
    " AND relnamespace = current_schema()::regnamespace"
)


def listed_tables(connection: Connection, names: set[str]) -> None:
    """The default schema's tables, listed by the caller just now: `has_table` answers
    from them (where the connection memoises)."""
    memo = connection.info.get(_TABLES)
    if memo is not None:
        memo.names = set(names)


def has_table(connection: Connection, name: str) -> bool:
    """Whether the table exists in the connection's default schema. A connection that
    memoises (`read_only`, or an engine given to `memoise_tables`) lists them all with its
    first question and answers the next from that list: a run or a status read asks a
    dozen of these, one round trip each over the network otherwise."""
    memo = connection.info.get(_TABLES)
    if memo is None:
        return inspect(connection).has_table(name)
    if memo.names is None:
        listing = (
            PG_TABLES
            if connection.dialect.name == "postgresql"
            else "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
        memo.names = {r[0] for r in connection.exec_driver_sql(listing)}
    return name in memo.names


def table_names(connection: Connection) -> set[str]:
    """The tables of the connection's default schema, in one catalog query (or none, where
    the connection memoises and has listed them already)."""
    memo = connection.info.get(_TABLES)
    if memo is None:
        return set(inspect(connection).get_table_names())
    has_table(connection, VERSION_TABLE)  # lists them, once
    return set(memo.names)


def memoise_tables(engine: Engine) -> Callable[[], None]:
    """`has_table` on every connection of `engine` answers from one listing, until the
    function returned is called (tables were created, or another run may have created
    some: after waiting for the lock). Only for an engine whose user knows when that is."""
    memo = _Tables()

    def checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        record.info[_TABLES] = memo

    def forget() -> None:
        memo.names = None

    event.listen(engine, "checkout", checkout)
    return forget


def version_table_known(engine: Engine) -> None:
    """SQLAlchemy's `has_table` of the version table (Alembic asks it before it runs) on
    `engine` says yes from the tables `memoise_tables` listed, where they list it: no round
    trip. Any other question, or a listing without it, goes to the server as before."""
    dialect: Any = engine.dialect
    ask = dialect.has_table

    def has_table(connection: Connection, name: str, schema: str | None = None, **kw: Any) -> bool:
        memo = connection.info.get(_TABLES)
        listed = memo is not None and memo.names is not None and VERSION_TABLE in memo.names
        if name == VERSION_TABLE and schema is None and listed:
            return True
        return bool(ask(connection, name, schema=schema, **kw))

    dialect.has_table = has_table


def listed_without(connection: Connection, tables: Iterable[str]) -> bool:
    """The connection listed its tables already (it memoises), and one of `tables` is not
    there."""
    memo = connection.info.get(_TABLES)
    return memo is not None and memo.names is not None and not memo.names.issuperset(tables)


def remember_tables(connection: Connection, names: Iterable[str]) -> None:
    """The tables of the connection's default schema, listed by the caller: where the
    connection memoises, its next `has_table` answers from them."""
    memo = connection.info.get(_TABLES)
    if memo is not None:
        memo.names = set(names)


def add_tables(connection: Connection, names: Iterable[str]) -> None:
    """Tables the caller created: where the connection memoises and has listed them, its
    next `has_table` knows them without listing again."""
    memo = connection.info.get(_TABLES)
    if memo is not None and memo.names is not None:
        memo.names |= set(names)


def forget_tables(connection: Connection) -> None:
    """Tables were created on `connection`: its next `has_table` lists them again."""
    memo = connection.info.get(_TABLES)
    if memo is not None:
        memo.names = None


def current_heads(connection: Connection) -> tuple[str, ...]:
    if not has_table(connection, VERSION_TABLE):
        return ()
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
    return tuple(sorted(row[0] for row in rows))
