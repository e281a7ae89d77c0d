"""Engines and the few queries every command needs (SQLAlchemy Core only)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from orchestrator.core.errors import UsageError
from orchestrator.core.secrets import redact, register_url

VERSION_TABLE = "alembic_version"
PRODUCT_SCHEMA = "public"  # where our tables and alembic_version live on PostgreSQL


def safe_url(url: str) -> str:
    """The URL as it may be shown: password and secret query values (`?password=`,
    `sslpassword`, `token`...) hidden."""
    register_url(url)
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(a URL that does not parse)"
    return redact(shown)


def make_engine(
    url: str, application_name: str = "orchestrator", writer: bool = True, **options: Any
) -> Engine:
    register_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError("A database URL does not parse as a SQLAlchemy URL.") from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, writer)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        # search_path pinned in the startup packet (no round trip; it outranks ALTER DATABASE
        # / ALTER ROLE ... SET): a same-named table in a `"$user"` schema or one the database
        # default puts first changes nothing we read or write (SPEC Part 3)
        connect_args = {
            "application_name": application_name[:63],
            "connect_timeout": 10,
            "options": f"-c search_path={PRODUCT_SCHEMA}",
        }
    try:
        engine = create_engine(parsed, connect_args=connect_args, pool_pre_ping=False, **options)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise UsageError(
            f"Cannot use the database URL {safe_url(url)}: {exc}. Is its driver installed? "
            "SQLAlchemy URLs start with the dialect: postgresql://, postgresql+psycopg://, "
            "sqlite:///path."
        ) from None
    if writer and parsed.get_backend_name() == "postgresql":
        event.listen(engine, "connect", _no_idle_timeouts)
    return engine


# A run's sessions sit idle at times (the lock session for the whole run, pooled ones between
# events): an idle timeout set on the role or the database must not end them under it.
# Settings the server lacks (idle_session_timeout is PostgreSQL 14+) are skipped.
NO_IDLE_TIMEOUTS = (
    "SELECT set_config(name, '0', false) FROM pg_settings"
    " WHERE name IN ('idle_session_timeout', 'idle_in_transaction_session_timeout')"
)


def _no_idle_timeouts(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(NO_IDLE_TIMEOUTS)
    finally:
        cursor.close()
    dbapi_connection.commit()


# Reads go through one engine per server: a fleet of 500 databases on one server pays for
# SQLAlchemy's dialect set-up (its queries on a first connection) once, not 500 times. No pool
# (each connection is for one database, closed after use); the database is chosen when the
# connection is opened, from this variable.
_readers: dict[tuple[str, str], Engine] = {}
_readers_lock = threading.Lock()
_database: ContextVar[str | None] = ContextVar("orchestrator_read_database", default=None)


@contextmanager
def read_only(url: str, application_name: str) -> Iterator[Connection]:
    """A connection for reading one database; safe to use from several threads at once."""
    register_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError("A database URL does not parse as a SQLAlchemy URL.") from None
    if parsed.get_backend_name() != "postgresql":
        engine = make_engine(url, application_name, writer=False)
        try:
            with engine.connect() as connection:
                connection.info[_TABLES] = None
                yield connection
        finally:
            engine.dispose()
        return
    engine = _server_engine(parsed, application_name)
    token = _database.set(parsed.database)
    try:
        connection = engine.connect()
    finally:
        _database.reset(token)
    with connection:
        connection.info[_TABLES] = None  # a fresh session that creates nothing: may memoise
        yield connection


def _server_engine(url: Any, application_name: str) -> Engine:
    key = (url._replace(database=None).render_as_string(hide_password=False), application_name)
    with _readers_lock:
        if key not in _readers:
            engine = make_engine(
                url.render_as_string(hide_password=False),
                application_name,
                writer=False,
                poolclass=NullPool,
            )
            event.listen(engine, "do_connect", _choose_database)
            _readers[key] = engine
        return _readers[key]


def _choose_database(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
    database = _database.get()
    if database is not None:
        params["dbname"] = database


def _sqlite_engine(url: Any, writer: bool) -> Engine:
    database = url.database
    if database and database != ":memory:":
        from pathlib import Path

        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    # pysqlite's own transaction handling skips DDL; take it over so that DDL, the
    # version row and the ledger row of a revision commit or roll back together.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    # A writer takes the write lock at BEGIN; a read (`execution_options(read_only=True)`)
    # does not, so that it never waits for another run's migration to commit.
    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        read_only = not writer or connection.get_execution_options().get("read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def describe_error(exc: BaseException) -> str:
    """A database error in one line: the driver's own first line, passwords masked."""
    origin = getattr(exc, "orig", None) or exc
    lines = [line for line in str(origin).strip().splitlines() if line.strip()]
    return redact(lines[0] if lines else type(origin).__name__)


def is_postgresql(connection_or_engine: Connection | Engine) -> bool:
    return connection_or_engine.dialect.name == "postgresql"


_TABLES = "orchestrator_tables"


def has_table(connection: Connection, name: str) -> bool:
    """Whether the table exists in the connection's default schema. A read-only connection
    (`read_only`) lists them all with its first question and answers the next from that
    list: a status or fleet read asks five of these per database."""
    if _TABLES not in connection.info:
        return inspect(connection).has_table(name)
    tables = connection.info[_TABLES]
    if tables is None:
        listing = (  # pg_class, not the pg_tables view: half the cost in a new session
            "SELECT relname FROM pg_catalog.pg_class WHERE relkind IN ('r', 'p')"
            " AND relnamespace = current_schema()::regnamespace"
            if connection.dialect.name == "postgresql"
            else "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
        tables = connection.info[_TABLES] = {r[0] for r in connection.exec_driver_sql(listing)}
    return name in tables


def current_heads(connection: Connection) -> tuple[str, ...]:
    if not has_table(connection, VERSION_TABLE):
        return ()
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
    return tuple(sorted(row[0] for row in rows))
