"""Engines from database URLs, and the URLs and errors as they may be shown."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from orchestrator.core.errors import OrchestratorError, UsageError
from orchestrator.core.secrets import redact, register_url
from orchestrator.db.database.ahead import hand_over
from orchestrator.db.database.committing import (
    _connect_committing_with,
    _first_connect_in_one_round_trip,
)
from orchestrator.db.database.session import _no_idle_timeouts_at_startup, no_idle_timeouts

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
        if parsed.get_driver_name() in ("psycopg", "psycopg2"):
            # SQLAlchemy's own hstore handling (it works the same for a revision's hstore
            # column): no look-up of the type, three round trips, on each engine's first connection
            options.setdefault("use_native_hstore", False)
    try:
        engine = create_engine(parsed, connect_args=connect_args, pool_pre_ping=False, **options)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise UsageError(
            f"Cannot use the database URL {safe_url(url)}: {exc}. Is its driver installed? "
            "SQLAlchemy URLs start with the dialect: postgresql://, postgresql+psycopg://, "
            "sqlite:///path."
        ) from None
    event.listen(engine, "handle_error", _ours_unwrapped)
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        _first_connect_in_one_round_trip(engine.dialect, idle_off=writer)
    if writer and parsed.get_backend_name() == "postgresql":
        event.listen(engine, "do_connect", _no_idle_timeouts_at_startup)
        event.listen(engine, "connect", no_idle_timeouts)
        event.listen(engine, "do_connect", hand_over)  # a connection opened ahead, if any
        if engine.dialect.driver == "psycopg":
            event.listen(engine, "do_connect", _connect_committing_with)
    return engine


def _ours_unwrapped(context: Any) -> BaseException | None:
    """An error of ours raised while SQLAlchemy ran a statement (a SIGTERM's `Cancelled`, from
    the signal handler; a lost fence) stays ours, with its exit code: not a StatementError."""
    error = context.original_exception
    return error if isinstance(error, OrchestratorError) else None


def _sqlite_engine(url: Any, writer: bool) -> Engine:
    database = url.database
    if database and database != ":memory:":
        from pathlib import Path

        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "handle_error", _ours_unwrapped)

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
