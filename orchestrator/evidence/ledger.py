"""The ledger and the audit table inside each target database: write, read, verify.

Ledger: one row per applied/reverted revision, written by the caller inside the revision's
own transaction. Audit: append-only, each row chained to the previous one by a sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable

from orchestrator.core import trust
from orchestrator.core.planning import LedgerEntry
from orchestrator.db.database import (
    PG_TABLES,
    VERSION_TABLE,
    add_tables,
    commit_with,
    forget_tables,
    has_table,
    listed_without,
    prefetched,
    psycopg_style,
    remember_tables,
    run_batch,
    table_names,
)
from orchestrator.db.locks import FENCE_SQL, Fence
from orchestrator.schema.description import fingerprint as schema_fingerprint

if TYPE_CHECKING:  # imported where something is signed: cryptography is slow to import
    from orchestrator.core import signing

LEDGER_TABLE = "orchestrator_ledger"
AUDIT_TABLE = "orchestrator_audit"
SCHEMA_TABLE = "orchestrator_schema"
CHECKPOINT_TABLE = "orchestrator_checkpoint"
CHAIN_TABLE = "orchestrator_chain"  # the signed evidence chain (SPEC Part 3, evidence/chain.py)
OWN_TABLES = frozenset({LEDGER_TABLE, AUDIT_TABLE, SCHEMA_TABLE, CHECKPOINT_TABLE, CHAIN_TABLE})
GENESIS = "0" * 64
# Serialises appends to the audit chain (PostgreSQL); SQLite writers are serialised anyway.
CHAIN_LOCK_KEY = 0x6F72636861696E  # "orchain"
SETUP_LOCK_KEY = 0x6F72736574757000

ACTOR_WIDTH = 4096  # was 256: `widen_actor` brings older tables up to this
metadata = MetaData()

ledger = Table(
    LEDGER_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("revision", String(64), nullable=False, index=True),
    Column("checksum", String(64), nullable=False),
    Column("direction", String(8), nullable=False),  # up | down | baseline
    Column("run_id", String(32), nullable=False),
    Column("env", String(128), nullable=False),
    Column("actor", String(ACTOR_WIDTH), nullable=False),
    Column("at", String(32), nullable=False),
    # DSSE envelope (JSON) over trust.ledger_payload, where the environment signs
    Column("envelope", Text),
    # the project files the revision's code opened while it ran: canonical JSON of
    # {path: sha256}; NULL for rows written before reads were observed (signed with the row)
    Column("reads", Text),
)

# Signed audit checkpoints: the chain's head at the end of each run of a signing environment.
checkpoint = Table(
    CHECKPOINT_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("audit_id", Integer, nullable=False),
    Column("audit_hash", String(64), nullable=False),
    Column("at", String(32), nullable=False),
    Column("envelope", Text, nullable=False),
)

# One entry per ledger row and run end of a signing environment: core/chain.py says what
# an entry is; `seq` is the primary key, so two writers can never both take the same place.
chain_entries = Table(
    CHAIN_TABLE,
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("run_id", String(32), nullable=False),
    Column("envelope", Text, nullable=False),
)

audit = Table(
    AUDIT_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("timestamp", String(32), nullable=False),
    Column("event", String(64), nullable=False),
    Column("run_id", String(32), nullable=False),
    Column("env", String(128), nullable=False),
    Column("actor", String(ACTOR_WIDTH), nullable=False),
    Column("revision", String(64)),
    Column("outcome", String(16)),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_orchestrator_audit_timestamp", "timestamp"),
    Index("ix_orchestrator_audit_run_id", "run_id"),
    Index("ix_orchestrator_audit_env_timestamp", "env", "timestamp"),
    Index("ix_orchestrator_audit_event", "event"),
    Index("ix_orchestrator_audit_actor", "actor"),
    Index("ix_orchestrator_audit_outcome", "outcome"),
)

# The schema each successful run left behind, at the revision(s) it left: the fingerprint, and
# the description it was computed from, so that `drift` can say what changed since.
schema = Table(
    SCHEMA_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("heads", String(512), nullable=False),  # sorted, comma-separated; "" for base
    Column("fingerprint", String(64), nullable=False),
    Column("description", Text, nullable=False),  # canonical JSON
    # schema_reader.catalog_stamp at the same moment: unchanged stamp, unchanged schema
    Column("stamp", String(64)),
    Column("run_id", String(32), nullable=False),
    Column("env", String(128), nullable=False),
    Column("actor", String(ACTOR_WIDTH), nullable=False),
    Column("at", String(32), nullable=False),
    Column("envelope", Text),  # DSSE envelope over trust.schema_payload, where the env signs
    Index("ix_orchestrator_schema_heads", "heads", "id"),
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


# -- ledger ------------------------------------------------------------------------------


def revision_row(
    *,
    revision: str,
    checksum: str,
    direction: str,
    run_id: str,
    env: str,
    actor: str,
    at: str,
    key: signing.PrivateKey | None = None,
    target: str | None = None,
    reads: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One ledger row, signed with `key` (for database `target` of `env`) when given.
    `reads`: the project files the revision read while it ran (path -> sha256)."""
    row: dict[str, Any] = {
        "revision": revision,
        "checksum": checksum,
        "direction": direction,
        "run_id": run_id,
        "env": env,
        "actor": actor,
        "at": at,
        "envelope": None,
        "reads": None if reads is None else canonical(dict(reads)),
    }
    if key is not None:
        row["envelope"] = _envelope(
            trust.LEDGER_TYPE, trust.ledger_payload(row, target or env), key
        )
    return row


def _envelope(payload_type: str, payload: bytes, key: signing.PrivateKey) -> str:
    """The DSSE envelope stored beside a row, as compact JSON."""
    from orchestrator.core import signing

    return canonical(signing.sign(payload_type, payload, key))


def record_revision(
    connection: Connection, row: Mapping[str, Any], fence: Fence | None = None
) -> bool:
    """Write a `revision_row` in the caller's transaction. With a `fence`, the row is written
    only while the fence's session still holds the migration lock, in the same statement (no
    extra round trip): False means it was not written and the caller must roll back."""
    # one statement object with bound parameters: compiled once per process, not per row
    if fence is None:
        connection.execute(_RECORD, row)
        return True
    return connection.execute(_FENCED_RECORD, {**row, **fence.params()}).rowcount == 1


def record_rows(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of `revision_row`, in the caller's transaction, in one round trip."""
    if rows:
        connection.execute(_RECORD, list(rows))


_RECORD = insert(ledger)
_FENCED_RECORD = text(
    f"INSERT INTO {LEDGER_TABLE}"
    " (revision, checksum, direction, run_id, env, actor, at, envelope, reads)"
    " SELECT :revision, :checksum, :direction, :run_id, :env, :actor, :at, :envelope, :reads"
    f" WHERE {FENCE_SQL}"
)


# The same fenced row, sent with its revision's COMMIT (db.database.commit_with): there a
# row that is not written cannot be noticed before the COMMIT, so the statement fails instead
# when the lock session no longer holds the lock, and the COMMIT after it never runs.
_LOST = (
    "('orchestrator: this run lost the migration lock before the revision could commit"
    " (backend ' || pg_backend_pid() || ')')::boolean"  # not constant: never folded early
)
_FENCED_AT_COMMIT = psycopg_style(
    f"INSERT INTO {LEDGER_TABLE}"
    " (revision, checksum, direction, run_id, env, actor, at, envelope, reads)"
    " SELECT :revision, :checksum, :direction, :run_id, :env, :actor, :at, :envelope, :reads"
    f" WHERE CASE WHEN {FENCE_SQL} THEN true ELSE {_LOST} END",
)


def fenced_at_commit(row: Mapping[str, Any], fence: Fence) -> tuple[str, dict[str, Any]]:
    """`record_revision`'s fenced row as a statement (psycopg parameters) that fails, rather
    than writes nothing, where the fence does not hold."""
    return _FENCED_AT_COMMIT, {**row, **fence.params()}


def ledger_table_rows(connection: Connection) -> list[dict[str, Any]]:
    """Every ledger row, oldest first, as plain dicts. `*`: a ledger made by an earlier
    release has fewer columns (no `envelope` key then), and asking which costs more than
    the rows."""
    if not has_table(connection, LEDGER_TABLE):
        return []
    found = prefetched(connection, "ledger")
    if found is not None:
        return list(found)
    rows = connection.exec_driver_sql(LEDGER_ROWS)
    return [dict(row._mapping) for row in rows]


LEDGER_ROWS = f"SELECT * FROM {LEDGER_TABLE} ORDER BY id"


def latest_ledger(connection: Connection) -> dict[str, LedgerEntry]:
    """Per revision, its most recent ledger row (empty when the ledger does not exist)."""
    return latest_of(ledger_table_rows(connection))


def latest_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, LedgerEntry]:
    """Pure: per revision, its most recent of `rows` (oldest first)."""
    # a `stamped` row records a stamp, not a run: it is no evidence of what ran
    return {
        row["revision"]: LedgerEntry(
            row["revision"],
            row["checksum"],
            row["direction"],
            row["run_id"],
            row["at"],
            env=row["env"],
            actor=row["actor"],
            envelope=row.get("envelope"),
            reads=row.get("reads"),
        )
        for row in rows
        if row["direction"] != "stamped"
    }


# -- schema fingerprints ---------------------------------------------------------------


@dataclass(frozen=True)
class RecordedSchema:
    heads: tuple[str, ...]
    fingerprint: str
    description: dict[str, Any] | None  # None when only the fingerprint was asked for
    stamp: str | None
    run_id: str
    at: str


def heads_key(heads: Iterable[str]) -> str:
    return ",".join(sorted(heads))


def record_schema(
    connection: Connection,
    *,
    heads: Iterable[str],
    fingerprint: str,
    description: Mapping[str, Any],
    stamp: str | None,
    run_id: str,
    env: str,
    actor: str,
    at: str,
    key: signing.PrivateKey | None = None,
    target: str | None = None,
) -> None:
    """Record the schema at `heads`, signed with `key` (for database `target` of `env`)
    when given."""
    if not has_table(connection, SCHEMA_TABLE):  # a database of an older version
        schema.create(connection, checkfirst=True)
        forget_tables(connection)
    row = {
        "heads": heads_key(heads),
        "fingerprint": fingerprint,
        "description": canonical(description),
        "stamp": stamp,
        "run_id": run_id,
        "env": env,
        "actor": actor,
        "at": at,
        "envelope": None,
    }
    if key is not None:
        row["envelope"] = _envelope(
            trust.SCHEMA_TYPE, trust.schema_payload(row, target or env), key
        )
    connection.execute(insert(schema), row)


# Why a recorded schema's row is not evidence (None: it is); see trust.schema_row_problem.
RowCheck = Callable[[Mapping[str, Any]], str | None]
# Rows read at one heads when looking for one that verifies: a signing environment skips rows
# written by hand after the last run's (they cannot hide it), up to this many.
SIGNED_LOOKBACK = 20


def recorded_schema(
    connection: Connection,
    heads: Iterable[str],
    with_description: bool = True,
    check: RowCheck | None = None,
) -> RecordedSchema | None:
    """The schema the last run that left the database at `heads` recorded, if any. With
    `check` (a signing environment), the last one whose signature verifies, and whose
    description is the one its signed fingerprint names."""
    if not has_table(connection, SCHEMA_TABLE):
        return None
    rows = _newest_rows(connection, heads_key(heads), with_description, check is not None)
    return first_recorded(rows, with_description, check)


def first_recorded(
    rows: Iterable[Mapping[str, Any]], with_description: bool, check: RowCheck | None
) -> RecordedSchema | None:
    """Pure: `recorded_schema`'s choice among the rows recorded at one heads, newest first
    (read by `_newest_rows`, or in a batch: SIGNED_LOOKBACK of them, each with an
    `envelope` key where the table has that column)."""
    for fields in rows:
        if check is not None and check(fields) is not None:
            continue
        description = json.loads(fields["description"]) if with_description else None
        if (
            check
            and description is not None
            and schema_fingerprint(description) != fields["fingerprint"]
        ):
            continue  # the description was rewritten under a signed fingerprint
        return RecordedSchema(
            tuple(h for h in fields["heads"].split(",") if h),
            fields["fingerprint"],
            description,
            fields["stamp"],
            fields["run_id"],
            fields["at"],
        )
    return None


def _newest_rows(
    connection: Connection, key: str, with_description: bool, signed: bool
) -> Iterator[dict[str, Any]]:
    """The rows recorded at heads `key`, newest first: the newest alone, or where they must be
    signed, up to SIGNED_LOOKBACK of them, read one at a time (most often one is enough)."""
    columns = [schema.c.heads, schema.c.fingerprint, schema.c.stamp, schema.c.run_id]
    columns += [schema.c.env, schema.c.actor, schema.c.at]
    columns += [schema.c.description] if with_description else []
    first = 0
    found = prefetched(connection, "recorded_schema")
    if found is not None and found[:3] == (key, with_description, signed):
        if not found[3]:
            return
        yield dict(found[3][0])  # read ahead: the newest, and that the table is as expected
        first = 1
    elif signed:
        # a table made by an earlier release has no envelope column: nothing in it is signed
        named = connection.execute(text(f"SELECT * FROM {SCHEMA_TABLE} WHERE 1 = 0")).keys()
        if "envelope" not in named:
            return
    if signed:
        columns.append(schema.c.envelope)
    query = select(*columns).where(schema.c.heads == key).order_by(schema.c.id.desc())
    for n in range(first, SIGNED_LOOKBACK if signed else 1):
        row = connection.execute(query.limit(1).offset(n)).first()
        if row is None:
            return
        yield dict(row._mapping)


def newest_schema_sql(signed: bool, versioned: bool = True) -> list[str]:
    """The newest recorded schema at the heads the database is at now (`versioned`: as its
    version table says; else at none), without its description (what a run's drift check
    reads first), as SQL to read ahead; its first statement gives the heads' key."""
    columns = "heads, fingerprint, stamp, run_id, env, actor, at" + (", envelope" if signed else "")
    key = (
        f"SELECT coalesce(string_agg(version_num, ',' ORDER BY version_num COLLATE \"C\"), '')"
        f" FROM {VERSION_TABLE}"
        if versioned
        else "SELECT ''"
    )
    return [
        f"SELECT ({key}) AS key",
        f"SELECT {columns} FROM {SCHEMA_TABLE} WHERE heads = ({key}) ORDER BY id DESC LIMIT 1",
    ]


def history_of(rows: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, str, str], ...]:
    """Pure: every one of `rows` (oldest first) as (revision, direction, run_id)."""
    return tuple((r["revision"], r["direction"], r["run_id"]) for r in rows)


# -- audit -------------------------------------------------------------------------------


def canonical(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


# the scanner `json.loads` ends in (set by JSONDecoder.__init__; typeshed does not declare it)
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def decode_payload(payload: Any) -> dict[str, Any] | None:
    """Pure: the event an audit row's payload records, or None when it is not a JSON object
    (a row written by hand need not be). On the compact JSON the trail writes, the decoder's
    scanner alone: twice as fast as `json.loads`, whose whitespace checks cost as much as
    the parsing. Anything it does not consume whole goes through `json.loads`."""
    if not isinstance(payload, str):
        return None
    try:
        value, end = _scan_json(payload, 0)
    except (StopIteration, ValueError, RecursionError):
        end = -1
    if end != len(payload):  # whitespace around it, extra data, or no JSON at all
        try:
            value = json.loads(payload)
        except (ValueError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def record_of(row: Mapping[Any, Any]) -> dict[str, Any]:
    """An audit row's event: its payload, completed by the row's columns where it lacks
    them (all there is when the payload is not a JSON object), so that every reader finds
    the indexed fields the row has, as text."""
    record = decode_payload(row["payload"]) or {}
    for column in _INDEXED:
        value = record.get(column)
        if value is not None and not isinstance(value, str):  # by hand: the column is text
            record[column] = row.get(column)
        elif value is None and row.get(column) is not None:
            record[column] = row[column]
    return record


def chain_hash(prev_hash: str, row_id: int, payload: str) -> str:
    return hashlib.sha256(f"{prev_hash}|{row_id}|{payload}".encode()).hexdigest()


def chain_rows(
    records: Sequence[Mapping[str, Any]], last_id: int, last_hash: str
) -> list[dict[str, Any]]:
    """Pure: the audit rows for `records`, chained after the row (`last_id`, `last_hash`)."""
    rows = []
    row_id, prev_hash = last_id, last_hash
    for record in records:
        row_id += 1
        payload = canonical(record)
        digest = chain_hash(prev_hash, row_id, payload)
        rows.append(
            {
                "id": row_id,
                "timestamp": record["timestamp"],
                "event": record["event"],
                "run_id": record["run_id"],
                "env": record["env"],
                "actor": record["actor"],
                "revision": record.get("revision"),
                "outcome": record.get("outcome"),
                "payload": payload,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        prev_hash = digest
    return rows


def append_audit(
    connection: Connection, records: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """Append events to the chain, in order, inside the caller's transaction; the last
    row written (None for no records)."""
    if not records:
        return None
    if connection.dialect.name == "postgresql":
        written = _append_in_one_round_trip(connection, records)
        if written is not None:
            return written
    _lock_chain(connection)
    last = connection.execute(
        select(audit.c.id, audit.c.hash).order_by(audit.c.id.desc()).limit(1)
    ).first()
    rows = chain_rows(records, *((last.id, last.hash) if last else (0, GENESIS)))
    connection.execute(insert(audit), rows)
    return rows[-1]


# One row chained after the chain's last one, its hash computed by the server exactly as
# `chain_hash` does (the payload is canonical JSON: ASCII), so that a batch of events is
# written, under the chain's lock, in one round trip: no read of the tail first.
_PG_APPEND = f"""INSERT INTO {AUDIT_TABLE}
  (id, timestamp, event, run_id, env, actor, revision, outcome, payload, prev_hash, hash)
SELECT last.id + 1, %(timestamp)s, %(event)s, %(run_id)s, %(env)s, %(actor)s, %(revision)s,
  %(outcome)s, %(payload)s, last.hash, encode(sha256(convert_to(
    last.hash || '|' || (last.id + 1) || '|' || %(payload)s, 'UTF8')), 'hex')
FROM ((SELECT id, hash FROM {AUDIT_TABLE} ORDER BY id DESC LIMIT 1)
      UNION ALL SELECT 0, '{GENESIS}' ORDER BY id DESC LIMIT 1) AS last"""


def _append_in_one_round_trip(
    connection: Connection, records: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    done = run_batch(connection, _append_statements(records))
    return None if done is None else _written(records, done[-1][0])


def _append_statements(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, Any]]:
    rows = chain_rows(records, 0, GENESIS)  # the columns; id and hashes come from the server
    statements: list[tuple[str, Any]] = [
        ("SELECT pg_advisory_xact_lock(%(k)s)", {"k": CHAIN_LOCK_KEY})
    ]
    statements += [(_PG_APPEND, row) for row in rows]
    statements[-1] = (statements[-1][0] + " RETURNING id, prev_hash, hash", statements[-1][1])
    return statements


def _written(records: Sequence[Mapping[str, Any]], returned: Mapping[str, Any]) -> dict[str, Any]:
    last = chain_rows(records[-1:], 0, GENESIS)[0]
    return {
        **last,
        "id": returned["id"],
        "prev_hash": returned["prev_hash"],
        "hash": returned["hash"],
    }


# Our tables listed, where they are all there in this release's shape; else an error (a
# malformed array; not a constant, which the server would cast on reading the query), which
# stops the statements sent after it in the same round trip.
_LISTED_IF_READY = f"""WITH t AS (
  SELECT c.oid, c.relname::text AS name FROM pg_catalog.pg_class c
  WHERE c.relkind IN ('r', 'p') AND c.relnamespace = current_schema()::regnamespace)
SELECT CASE WHEN
  (SELECT count(*) FROM t WHERE name IN ({", ".join(f"'{n}'" for n in sorted(OWN_TABLES))}))
    = {len(OWN_TABLES)}
  AND (SELECT count(*) FROM t JOIN pg_catalog.pg_attribute a
       ON a.attrelid = t.oid AND NOT a.attisdropped
       WHERE (t.name, a.attname::text) IN ({
    ", ".join(f"('{t}', '{c}')" for t, c, _ in _ADDED_COLUMNS)
})) = {len(_ADDED_COLUMNS)}
THEN (SELECT array_agg(name) FROM t)
ELSE ('orchestrator: our tables need setting up in ' || current_database())::text[]
END AS tables"""


def append_audit_if_ready(
    connection: Connection, records: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """`append_audit` outside a transaction, in the round trip that checks our tables are
    there in this release's shape (and lists the tables, for `has_table`); the last row
    written, or None where they may not be, or the driver cannot: nothing was written, and
    the caller sets up (ensure_tables) and appends."""
    if (
        not records
        or connection.dialect.driver != "psycopg"
        or connection.in_transaction()
        or listed_without(connection, OWN_TABLES)
    ):
        return None
    try:
        done = run_batch(connection, [(_LISTED_IF_READY, {}), *_append_statements(records)])
    except DBAPIError:
        return None
    if done is None:
        return None
    remember_tables(connection, done[0][0]["tables"])
    return _written(records, done[-1][0])


def _lock_chain(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CHAIN_LOCK_KEY})


# -- checkpoints -------------------------------------------------------------------------


def write_checkpoint(
    connection: Connection,
    *,
    key: signing.PrivateKey,
    env: str,
    target: str,
    run_id: str,
    at: str,
) -> dict[str, Any] | None:
    """Sign the audit chain's head and the ledger's extent, inside the caller's transaction
    (the chain lock held, so no row slips in between reading the head and signing it)."""

    _lock_chain(connection)
    head = connection.execute(_CHECKPOINT_HEAD).first()  # one round trip for the three
    if head is None:
        return None
    row = checkpoint_row(
        key=key,
        env=env,
        target=target,
        run_id=run_id,
        at=at,
        audit=(head.id, head.hash),
        ledger_id=head.ledger_id or 0,
        signed_from=head.signed_from,
    )
    connection.execute(insert(checkpoint), row)
    return row


def checkpoint_row(
    *,
    key: signing.PrivateKey,
    env: str,
    target: str,
    run_id: str,
    at: str,
    audit: tuple[int, str],
    ledger_id: int,
    signed_from: int | None,
) -> dict[str, Any]:
    """The signed checkpoint over the audit chain's head `audit` (id, hash) and the ledger's
    extent (its last row, its first signed row)."""
    payload = trust.checkpoint_payload(
        env=env,
        target=target,
        run_id=run_id,
        audit_id=audit[0],
        audit_hash=audit[1],
        ledger_id=ledger_id,
        ledger_signed_from=signed_from,
        at=at,
    )
    return {
        "run_id": run_id,
        "audit_id": audit[0],
        "audit_hash": audit[1],
        "at": at,
        "envelope": _envelope(trust.CHECKPOINT_TYPE, payload, key),
    }


# the same row as a statement of its own (psycopg parameters), for a script
INSERT_CHECKPOINT = (
    f"INSERT INTO {CHECKPOINT_TABLE} (run_id, audit_id, audit_hash, at, envelope)"
    " VALUES (%(run_id)s, %(audit_id)s, %(audit_hash)s, %(at)s, %(envelope)s)"
)
# the ledger's extent a checkpoint signs (its last row, its first signed row)
LEDGER_EXTENT = (
    f"SELECT max(id) AS ledger_id, min(id) FILTER (WHERE envelope IS NOT NULL) AS signed_from"
    f" FROM {LEDGER_TABLE}"
)


_CHECKPOINT_HEAD = (
    select(
        audit.c.id,
        audit.c.hash,
        select(func.max(ledger.c.id)).scalar_subquery().label("ledger_id"),
        select(func.min(ledger.c.id))
        .where(ledger.c.envelope.is_not(None))
        .scalar_subquery()
        .label("signed_from"),
    )
    .order_by(audit.c.id.desc())
    .limit(1)
)


def read_checkpoints(connection: Connection) -> list[dict[str, Any]]:
    if not has_table(connection, CHECKPOINT_TABLE):
        return []
    rows = connection.execute(select(checkpoint).order_by(checkpoint.c.id))
    return [dict(row._mapping) for row in rows]


def audited_revisions(connection: Connection, run_id: str) -> set[str]:
    """Revisions whose migration.applied/reverted event of `run_id` is in the table."""
    rows = connection.execute(
        select(audit.c.revision).where(
            audit.c.run_id == run_id,
            audit.c.event.in_(("migration.applied", "migration.reverted")),
        )
    )
    return {row.revision for row in rows}


def ledger_rows(connection: Connection, run_id: str) -> list[dict[str, Any]]:
    rows = connection.execute(
        text(f"SELECT * FROM {LEDGER_TABLE} WHERE run_id = :run_id ORDER BY id"),
        {"run_id": run_id},
    )
    return [dict(row._mapping) for row in rows]


@dataclass(frozen=True)
class AuditFilter:
    env: str | None = None
    since: str | None = None  # ISO timestamps, compared as text (fixed-width UTC)
    until: str | None = None
    actor: str | None = None
    event: str | None = None
    revision: str | None = None
    outcome: str | None = None
    run_id: str | None = None
    limit: int | None = None


def query_audit(connection: Connection, flt: AuditFilter) -> list[dict[str, Any]]:
    """Matching events, oldest first; `limit` keeps the most recent ones."""
    if not has_table(connection, AUDIT_TABLE):
        return []
    rows = connection.execute(audit_select(flt)).all()
    return [{"id": row.id, **record_of(row._mapping)} for row in reversed(rows)]


def recent_ends(connection: Connection, limit: int = 200) -> list[dict[str, Any]]:
    """The most recent run ends (TERMINAL_EVENTS), oldest first: what `status` shows."""
    if not has_table(connection, AUDIT_TABLE):
        return []
    rows = connection.execute(
        select(audit.c.id, audit.c.payload, *_INDEXED_COLUMNS)
        .where(audit.c.event.in_(TERMINAL_EVENTS))
        .order_by(audit.c.id.desc())
        .limit(limit)
    ).all()
    return [{"id": row.id, **record_of(row._mapping)} for row in reversed(rows)]


def audit_select(flt: AuditFilter) -> Select[Any]:
    """The statement behind `query_audit`: newest first, each filter on an indexed column."""
    query = select(audit.c.id, audit.c.payload, *_INDEXED_COLUMNS)
    for column, value in (
        (audit.c.env, flt.env),
        (audit.c.actor, flt.actor),
        (audit.c.event, flt.event),
        (audit.c.outcome, flt.outcome),
        (audit.c.run_id, flt.run_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if flt.revision is not None:
        query = query.where(audit.c.revision.startswith(flt.revision, autoescape=True))
    if flt.since is not None:
        query = query.where(audit.c.timestamp >= flt.since)
    if flt.until is not None:
        query = query.where(audit.c.timestamp <= flt.until)
    query = query.order_by(audit.c.id.desc())
    if flt.limit is not None:
        query = query.limit(flt.limit)
    return query


def last_env_py(connection: Connection) -> str | None:
    """The env.py checksum the database's last successful run recorded (None: none did)."""
    last = query_audit(connection, AuditFilter(event="run.succeeded", limit=1))
    value = last[0].get("env_py") if last else None
    return value if isinstance(value, str) else None


def runs_without_end(connection: Connection) -> list[dict[str, Any]]:
    """`run.started` events with no terminal event: runs still going, or dead."""
    if not has_table(connection, AUDIT_TABLE):
        return []
    found = prefetched(connection, "open_runs")
    if found is not None:
        return [record_of(row) for row in found]
    rows = connection.execute(_open_runs())
    return [record_of(row._mapping) for row in rows]


def _open_runs() -> Select[Any]:
    ended = select(audit.c.run_id).where(audit.c.event.in_(TERMINAL_EVENTS))
    return (
        select(audit.c.payload, *_INDEXED_COLUMNS)
        .where(audit.c.event == "run.started", audit.c.run_id.not_in(ended))
        .order_by(audit.c.id)
    )


def open_runs_sql(connection: Connection) -> str:
    """What runs_without_end reads, as SQL to read ahead (values inline)."""
    compiled = _open_runs().compile(connection, compile_kwargs={"literal_binds": True})
    return str(compiled)


def acquired_runs(connection: Connection, run_ids: Iterable[str]) -> set[str]:
    ids = list(run_ids)
    if not ids:
        return set()
    rows = connection.execute(
        select(audit.c.run_id).where(audit.c.event == "lock.acquired", audit.c.run_id.in_(ids))
    )
    return {row.run_id for row in rows}


TERMINAL_EVENTS = ("run.succeeded", "run.failed", "run.refused", "run.interrupted")


@dataclass(frozen=True)
class BrokenRow:
    id: int | None
    timestamp: str | None
    problem: str
    kind: str = "row"  # row (of the audit table) | checkpoint | ledger row | database


def verify_chain(rows: Sequence[Mapping[str, Any]]) -> BrokenRow | None:
    """Recompute the chain over rows ordered by id; the first row that does not fit."""
    return check_chain(rows, decode_all=False)[0]


_INDEXED = ("timestamp", "event", "run_id", "env", "actor", "revision", "outcome")
_INDEXED_COLUMNS = [audit.c[name] for name in _INDEXED]  # read beside a payload: see record_of


def check_chain(
    rows: Sequence[Mapping[str, Any]], decode_all: bool = True
) -> tuple[BrokenRow | None, list[dict[str, Any]]]:
    """`verify_chain`, and each row's event as recorded (its payload), in order: every row's
    with `decode_all` (those after a broken row too), else those checked before a break."""
    expected_prev, expected_id = GENESIS, 1
    broken: BrokenRow | None = None
    records: list[dict[str, Any]] = []
    for row in rows:
        if broken is not None:
            if not decode_all:
                break
            records.append(record_of(row))
            continue
        problem = None
        record = None
        if row["id"] != expected_id:
            problem = f"expected row {expected_id} here (rows missing or inserted)"
        elif row["prev_hash"] != expected_prev:
            problem = "its link to the previous row does not match"
        elif chain_hash(row["prev_hash"], row["id"], row["payload"]) != row["hash"]:
            problem = "its content does not match its hash"
        elif (record := decode_payload(row["payload"])) is None:
            problem = "its payload is not a JSON object"
        else:
            get = record.get
            if (
                get("timestamp") != row["timestamp"]
                or get("event") != row["event"]
                or get("run_id") != row["run_id"]
                or get("env") != row["env"]
                or get("actor") != row["actor"]
                or get("revision") != row["revision"]
                or get("outcome") != row["outcome"]
            ):
                column = next(c for c in _INDEXED if get(c) != row[c])
                problem = f"column {column} differs from the hashed record"
        if problem:
            broken = BrokenRow(row["id"], row["timestamp"], problem)
            if decode_all:
                records.append(record if record is not None else record_of(row))
            continue
        records.append(record)  # type: ignore[arg-type]
        expected_prev, expected_id = row["hash"], row["id"] + 1
    return broken, records


def event_matches(flt: AuditFilter, record: Mapping[str, Any]) -> bool:
    """Pure: whether an event passes `flt`'s filters (not its limit), as `audit_select` does."""
    for key, value in (
        ("env", flt.env),
        ("actor", flt.actor),
        ("event", flt.event),
        ("outcome", flt.outcome),
        ("run_id", flt.run_id),
    ):
        if value is not None and record.get(key) != value:
            return False
    if flt.revision is not None:
        revision = record.get("revision")
        if revision is None or not str(revision).startswith(flt.revision):
            return False
    if flt.since is not None and not str(record.get("timestamp")) >= flt.since:
        return False
    return flt.until is None or str(record.get("timestamp")) <= flt.until


_CHAIN_COLUMNS = tuple(column.name for column in audit.columns)


def read_chain(connection: Connection) -> list[dict[str, Any]]:
    """Every audit row, oldest first, as plain dicts: the columns the chain hashes, whatever
    else the table may have gained."""
    if not has_table(connection, AUDIT_TABLE):
        return []
    sql = str(select(audit).order_by(audit.c.id).compile(dialect=connection.dialect))
    # The driver's own cursor, one fetch: these columns need no conversion, and 100,000
    # rows through SQLAlchemy's result objects took a second more than through the driver.
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    # the select names every column, in this order; `strict` would cost a tenth of the time
    return [dict(zip(_CHAIN_COLUMNS, row, strict=False)) for row in rows]
