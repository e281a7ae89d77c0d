"""Read-only connections: one engine per server, one connection per database kept while
`keep_reads` lasts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from orchestrator.core.errors import UsageError
from orchestrator.core.secrets import register_url
from orchestrator.db.database.engines import make_engine
from orchestrator.db.database.tables import _TABLES, _Tables

# Reads go through one engine per server: a fleet of 500 databases on one server pays for
# SQLAlchemy's dialect set-up (its queries on a first connection) once, not 500 times. No pool
# (each connection is for one database, closed after use); the database is chosen when the
# connection is opened, from this variable.
_readers: dict[tuple[str, str], Engine] = {}
_readers_lock = threading.Lock()
_database: ContextVar[str | None] = ContextVar("orchestrator_read_database", default=None)


# Within `keep_reads()`, one connection per database serves every `read_only` of it: a run
# reads its predecessor before the lock, again under it, and its schema after, over one.
_kept: ContextVar[dict[str, Connection] | None] = ContextVar("orchestrator_kept", default=None)


@contextmanager
def keep_reads() -> Iterator[None]:
    """`read_only` keeps its connections open until the block ends (this thread only)."""
    kept: dict[str, Connection] = {}
    ahead: dict[tuple[str, str], Future[Connection]] = {}
    tokens = _kept.set(kept), _ahead.set(ahead)
    try:
        yield
    finally:
        _kept.reset(tokens[0])
        _ahead.reset(tokens[1])
        for connection in kept.values():
            with suppress(Exception):
                connection.close()
        for opened in ahead.values():  # opened for a read that did not come (a refusal first)
            opened.add_done_callback(_close)


# Within `keep_reads()`, the connections `open_read_ahead` is opening for `read_only`, by
# (url, application_name): this thread's block only.
_ahead: ContextVar[dict[tuple[str, str], Future[Connection]] | None] = ContextVar(
    "orchestrator_ahead", default=None
)


def open_read_ahead(url: str, application_name: str) -> None:
    """Within `keep_reads()`: the connection `read_only(url, application_name)` will open,
    opened now in a thread, SQLAlchemy's first-connection query included: the round trips
    of connecting go by while this thread works (PostgreSQL; not where one is kept open)."""
    kept, ahead = _kept.get(), _ahead.get()
    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # read_only says so, when it comes
    key = (url, application_name)
    if kept is None or ahead is None or url in kept or key in ahead:
        return
    if parsed.get_backend_name() != "postgresql":
        return
    register_url(url)
    opened: Future[Connection] = Future()
    ahead[key] = opened

    def open_one() -> None:
        try:
            opened.set_result(_connect(parsed, application_name))
        except BaseException as exc:  # noqa: BLE001 -- read_only connects anew, and says why
            opened.set_exception(exc)

    threading.Thread(target=open_one, daemon=True, name="orchestrator-read-ahead").start()


def _opened_ahead(url: str, application_name: str) -> Connection | None:
    ahead = _ahead.get()
    opened = ahead.pop((url, application_name), None) if ahead is not None else None
    if opened is None:
        return None
    try:
        return opened.result()
    except Exception:  # noqa: BLE001 -- connect as usual: its error is the one to report
        return None


def _connect(parsed: Any, application_name: str) -> Connection:
    engine = _server_engine(parsed, application_name)
    token = _database.set(parsed.database)
    try:
        # autocommit: under READ COMMITTED each statement reads its own snapshot anyway,
        # and a read needs no BEGIN and ROLLBACK round trips around it
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    finally:
        _database.reset(token)


def _close(opened: Future[Connection]) -> None:
    with suppress(Exception):
        opened.result().close()


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
                connection.info[_TABLES] = _Tables()
                yield connection
        finally:
            engine.dispose()
        return
    kept = _kept.get()
    found = kept.get(url) if kept is not None else None
    if found is None:
        found = _opened_ahead(url, application_name) or _connect(parsed, application_name)
        if kept is not None:
            kept[url] = found
    connection = found
    connection.info[_TABLES] = _Tables()  # a session that creates nothing: may memoise
    try:
        yield connection
    finally:
        if kept is None:
            connection.close()


def _server_engine(url: Any, application_name: str) -> Engine:
    key = (url._replace(database=None).render_as_string(hide_password=False), application_name)
    with _readers_lock:
        if key not in _readers:
            engine = make_engine(
                url.render_as_string(hide_password=False),
                application_name,
                writer=False,
                poolclass=NullPool,
                use_native_hstore=False,  # a read binds no hstore: no look-up of its type
            )
            event.listen(engine, "do_connect", _choose_database)
            _readers[key] = engine
        return _readers[key]


def _choose_database(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
    database = _database.get()
    if database is not None:
        params["dbname"] = database
