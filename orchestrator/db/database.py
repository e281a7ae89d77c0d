"""Engines and the few queries every command needs (SQLAlchemy Core only)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from orchestrator.core.errors import OrchestratorError, UsageError
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
        _first_connect_in_one_round_trip(engine.dialect)
    if writer and parsed.get_backend_name() == "postgresql":
        event.listen(engine, "do_connect", _no_idle_timeouts_at_startup)
        event.listen(engine, "connect", no_idle_timeouts)
        if engine.dialect.driver == "psycopg":
            event.listen(engine, "do_connect", _connect_committing_with)
    return engine


def _ours_unwrapped(context: Any) -> BaseException | None:
    """An error of ours raised while SQLAlchemy ran a statement (a SIGTERM's `Cancelled`, from
    the signal handler; a lost fence) stays ours, with its exit code: not a StatementError."""
    error = context.original_exception
    return error if isinstance(error, OrchestratorError) else None


_SERVER_FACTS = (
    "SELECT current_schema(), current_setting('transaction_isolation'),"
    " current_setting('standard_conforming_strings')"
)


def _first_connect_in_one_round_trip(dialect: Any) -> None:
    """SQLAlchemy's first connection of an engine asks the server four things, each in its
    own round trip inside a transaction (six in all): the version (psycopg has it from the
    handshake), the schema, the default isolation level and standard_conforming_strings. One
    query outside a transaction answers the last three; SQLAlchemy's own set-up does the rest."""
    initialize = dialect.initialize

    def in_one(connection: Connection) -> None:
        dbapi: Any = connection.connection.dbapi_connection
        autocommit, dbapi.autocommit = dbapi.autocommit, True
        try:
            schema, isolation, conforming = dbapi.execute(_SERVER_FACTS).fetchone()
        finally:
            dbapi.autocommit = autocommit
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
                queued, self.orchestrator_with_commit = self.orchestrator_with_commit, None
                recover, self.orchestrator_recover = self.orchestrator_recover, None
                if not queued:
                    return super().commit()
                # each queued statement raises where it must stop the commit: then neither
                # COMMIT nor BEGIN runs, and the transaction is left failed, to roll back;
                # or, with `recover`, back to the savepoint before them, to try its way
                script = [self._bind(sql, params) for sql, params in queued]
                if recover is not None:
                    script.insert(0, f"SAVEPOINT {_RIDING}")
                try:
                    self._run([*script, *self._commit()])
                except psycopg.Error:
                    if recover is None or self.info.transaction_status != INERROR:
                        raise
                    self._run([f"ROLLBACK TO SAVEPOINT {_RIDING}"])
                    again = [self._bind(sql, params) for sql, params in recover(self)]
                    self._run([*again, *self._commit()])

            def _commit(self) -> list[str]:
                return ["COMMIT", "BEGIN"] if self.orchestrator_begin_next else ["COMMIT"]

            def _run(self, script: list[str]) -> None:
                with psycopg.ClientCursor(self) as cursor:
                    cursor.execute(";\n".join(script))

            def rollback(self) -> None:
                self.orchestrator_with_commit = self.orchestrator_recover = None
                return super().rollback()

            def _bind(self, sql: str, params: Mapping[str, Any]) -> str:
                if not params:
                    return sql
                with psycopg.ClientCursor(self) as cursor:
                    return cursor.mogrify(sql, params)

        _COMMITTING_WITH = CommittingWith
    return _COMMITTING_WITH


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


def psycopg_style(sql: str) -> str:
    """SQLAlchemy's `:name` parameters as psycopg's `%(name)s` (casts `::type` kept)."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)


# A run's sessions sit idle at times (the lock session for the whole run, pooled ones between
# events): an idle timeout set on the role or the database must not end them under it.
# Settings the server lacks (idle_session_timeout is PostgreSQL 14+) are skipped.
NO_IDLE_TIMEOUTS = (
    "SELECT set_config(name, '0', false) FROM pg_settings"
    " WHERE name IN ('idle_session_timeout', 'idle_in_transaction_session_timeout')"
)


_IDLE_OFF = "orchestrator_idle_off"  # on a connection record: its startup packet said so


def _no_idle_timeouts_at_startup(dialect: Any, record: Any, _cargs: Any, cparams: Any) -> None:
    """Where the engine knows the server (after its first connection), the settings go in
    the startup packet (libpq `options`), which outranks the role's and the database's: no
    round trip. idle_session_timeout is PostgreSQL 14+; before, the query below does it."""
    if (dialect.server_version_info or (0,)) < (14,) or "options" not in cparams:
        return
    off = " -c idle_session_timeout=0 -c idle_in_transaction_session_timeout=0"
    cparams["options"] = cparams["options"] + off
    record.info[_IDLE_OFF] = True


def no_idle_timeouts(dbapi_connection: Any, record: Any) -> None:
    if record is not None and record.info.get(_IDLE_OFF):
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
    token = _kept.set(kept)
    try:
        yield
    finally:
        _kept.reset(token)
        for connection in kept.values():
            with suppress(Exception):
                connection.close()


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
        engine = _server_engine(parsed, application_name)
        token = _database.set(parsed.database)
        try:
            # autocommit: under READ COMMITTED each statement reads its own snapshot anyway,
            # and a read needs no BEGIN and ROLLBACK round trips around it
            found = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        finally:
            _database.reset(token)
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
