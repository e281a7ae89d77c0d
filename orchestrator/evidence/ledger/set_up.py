"""Our tables brought to this release's shape: created, completed, made append-only."""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text
from sqlalchemy.schema import CreateIndex, CreateTable

from orchestrator.db.database import (
    PG_TABLES,
    add_tables,
    commit_with,
    forget_tables,
    remember_tables,
    run_batch,
    table_names,
)
from orchestrator.evidence.ledger.tables import (
    ACTOR_WIDTH,
    AUDIT_TABLE,
    CHAIN_TABLE,
    CHECKPOINT_TABLE,
    LEDGER_TABLE,
    OWN_TABLES,
    SCHEMA_TABLE,
    SETUP_LOCK_KEY,
    metadata,
)

_APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION orchestrator_audit_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION USING
    MESSAGE = TG_TABLE_NAME || ' is append-only: ' || TG_OP || ' is not allowed';
END $$ LANGUAGE plpgsql;
"""


def _pg_append_only(table: str, prefix: str) -> str:
    return f"""
DROP TRIGGER IF EXISTS {prefix}_no_change ON {table};
CREATE TRIGGER {prefix}_no_change BEFORE UPDATE OR DELETE ON {table}
  FOR EACH ROW EXECUTE FUNCTION orchestrator_audit_append_only();
DROP TRIGGER IF EXISTS {prefix}_no_truncate ON {table};
CREATE TRIGGER {prefix}_no_truncate BEFORE TRUNCATE ON {table}
  FOR EACH STATEMENT EXECUTE FUNCTION orchestrator_audit_append_only();
"""


_APPEND_ONLY_TRIGGER = (
    _APPEND_ONLY_FUNCTION
    + _pg_append_only(AUDIT_TABLE, "orchestrator_audit")
    + _pg_append_only(CHECKPOINT_TABLE, "orchestrator_checkpoint")
    + _pg_append_only(CHAIN_TABLE, "orchestrator_chain")
)


def _sqlite_append_only(table: str) -> list[str]:
    return [
        f"""CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table}
        BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"""
        for op in ("UPDATE", "DELETE")
    ]


# (the audit triggers keep the names the first release gave them)
_SQLITE_TRIGGERS = [
    *_sqlite_append_only(AUDIT_TABLE),
    *_sqlite_append_only(CHECKPOINT_TABLE),
    *_sqlite_append_only(CHAIN_TABLE),
]


def tables_exist(connection: Connection) -> bool:
    """Our tables exist, in this release's shape."""
    if not table_names(connection) >= OWN_TABLES:
        return False
    return not _missing_columns(connection)


# Columns added after the first release, (table, column, SQL type): databases created before
# get them in place.
_ADDED_COLUMNS = (
    (LEDGER_TABLE, "envelope", "TEXT"),
    (SCHEMA_TABLE, "envelope", "TEXT"),
    (LEDGER_TABLE, "reads", "TEXT"),
)


def _missing_columns(connection: Connection) -> list[tuple[str, str, str]]:
    """Added columns that tables made by an earlier release lack (of the tables there are)."""
    names = sorted({table for table, _, _ in _ADDED_COLUMNS})
    found = inspect(connection).get_multi_columns(filter_names=names)  # one catalog query
    present = {(table, c["name"]) for (_, table), columns in found.items() for c in columns}
    tables = {table for table, _ in present}
    return [c for c in _ADDED_COLUMNS if c[0] in tables and c[:2] not in present]


def ensure_tables(connection: Connection) -> None:
    """Create the ledger, audit and checkpoint tables once, and bring tables made by an
    earlier release up to date in place; safe when several runs start together. On
    PostgreSQL they are there once the caller's transaction committed."""
    if tables_exist(connection):
        return
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        # the tables listed again now that we hold the set-up lock, in its round trip
        lock = ("SELECT pg_advisory_xact_lock(%(k)s)", {"k": SETUP_LOCK_KEY})
        done = run_batch(connection, [lock, (PG_TABLES, {})])
        if done is not None:
            remember_tables(connection, (row["relname"] for row in done[-1]))
        else:
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), lock[1])
            forget_tables(connection)
        # Another run may have created them while we waited: then leave them alone. Re-doing
        # the triggers would lock the audit table against runs appending to it (a deadlock).
        if tables_exist(connection):
            return
        # the whole set-up in one round trip, the caller's COMMIT's where the driver can, not
        # one per table, index and trigger
        setup = ";\n".join(_pg_setup(connection))
        if not commit_with(connection, [(setup, {})], begin_next=False):
            connection.exec_driver_sql(setup)
        # there once the caller commits (its one caller commits next): no need to list again
        add_tables(connection, OWN_TABLES)
        return
    metadata.create_all(connection, checkfirst=True)
    for table, name, kind in _missing_columns(connection):
        exists = " IF NOT EXISTS" if postgres else ""
        connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN{exists} {name} {kind}")
    # pattern ops: `--revision` is a prefix (LIKE 'abc%'), which a plain btree serves only
    # under the C collation; these serve = and the prefix under any collation. Written as SQL,
    # not `postgresql_ops=` on the Table: that would load the PostgreSQL dialect on SQLite.
    connection.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS ix_orchestrator_audit_revision ON "
        f"{AUDIT_TABLE} (revision{' varchar_pattern_ops' if postgres else ''})"
    )
    if postgres:
        connection.exec_driver_sql(_APPEND_ONLY_TRIGGER)
    else:
        for statement in _SQLITE_TRIGGERS:
            connection.exec_driver_sql(statement)


def _pg_setup(connection: Connection) -> list[str]:
    """Every statement that brings our tables to this release's shape on PostgreSQL, each
    one a no-op where its part is there already."""
    dialect = connection.dialect
    statements = []
    for table in metadata.sorted_tables:
        statements.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        statements += [
            str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
            for index in sorted(table.indexes, key=lambda i: i.name or "")
        ]
    statements += [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind}"
        for table, name, kind in _ADDED_COLUMNS
    ]
    statements.append(
        "CREATE INDEX IF NOT EXISTS ix_orchestrator_audit_revision ON "
        f"{AUDIT_TABLE} (revision varchar_pattern_ops)"
    )
    statements.append(_APPEND_ONLY_TRIGGER.strip().rstrip(";"))
    return [s.strip() for s in statements]


def widen_actor(connection: Connection) -> None:
    """Tables created by versions that allowed 256 characters for the actor: widen them, so
    that a long actor (up to 4096) never makes the audit trail unwritable. PostgreSQL only
    (SQLite does not enforce lengths); a catalog change, no table rewrite."""
    if connection.dialect.name != "postgresql":
        return
    narrow = connection.execute(
        text(
            "SELECT table_name FROM information_schema.columns WHERE table_schema ="
            " current_schema() AND column_name = 'actor' AND table_name IN (:a, :l, :s)"
            " AND character_maximum_length < :w"
        ),
        {"a": AUDIT_TABLE, "l": LEDGER_TABLE, "s": SCHEMA_TABLE, "w": ACTOR_WIDTH},
    ).scalars()
    for table in sorted(narrow):
        connection.execute(
            text(f"ALTER TABLE {table} ALTER COLUMN actor TYPE VARCHAR({ACTOR_WIDTH})")
        )
