"""Engines and the few queries every command needs (SQLAlchemy Core only).
In parts: engines, committing, batches, session, readers, tables."""

from orchestrator.db.database.ahead import close_ahead, open_ahead
from orchestrator.db.database.batches import (
    as_rows,
    memoise_reads,
    prefetched,
    psycopg_style,
    read_all,
    read_at_once,
    reads_kept,
    run_batch,
    run_script,
)
from orchestrator.db.database.committing import (
    Recover,
    commit_with,
    rides_with_commit,
)
from orchestrator.db.database.engines import (
    PRODUCT_SCHEMA,
    VERSION_TABLE,
    describe_error,
    is_postgresql,
    make_engine,
    safe_url,
)
from orchestrator.db.database.readers import (
    _readers,
    keep_reads,
    open_read_ahead,
    read_only,
)
from orchestrator.db.database.session import (
    NO_IDLE_TIMEOUTS,
    no_idle_timeouts,
    set_session,
    set_session_at_begin,
)
from orchestrator.db.database.tables import (
    PG_TABLES,
    add_tables,
    current_heads,
    forget_tables,
    has_table,
    listed_tables,
    listed_without,
    memoise_tables,
    remember_tables,
    table_names,
    version_table_known,
)

__all__ = [
    "NO_IDLE_TIMEOUTS",
    "PG_TABLES",
    "PRODUCT_SCHEMA",
    "Recover",
    "VERSION_TABLE",
    "_readers",
    "add_tables",
    "close_ahead",
    "as_rows",
    "commit_with",
    "open_ahead",
    "open_read_ahead",
    "current_heads",
    "describe_error",
    "forget_tables",
    "has_table",
    "is_postgresql",
    "keep_reads",
    "listed_tables",
    "listed_without",
    "make_engine",
    "memoise_reads",
    "memoise_tables",
    "no_idle_timeouts",
    "prefetched",
    "reads_kept",
    "psycopg_style",
    "read_all",
    "read_at_once",
    "read_only",
    "remember_tables",
    "rides_with_commit",
    "run_batch",
    "run_script",
    "safe_url",
    "set_session",
    "set_session_at_begin",
    "table_names",
    "version_table_known",
]
