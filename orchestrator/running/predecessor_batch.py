"""A predecessor database read in one round trip (PostgreSQL): its state, its env.py record,
where it signs its chain from the entry the successor witnessed and the audit rows from that
entry's pin, its live runs, and for the schema check its recorded schema and catalog stamp,
for the gate's code (running/predecessor.py) to judge as it judges rows read one by one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import ProgrammingError

from orchestrator.core import trust
from orchestrator.core.config import Target
from orchestrator.db.database import PG_TABLES, VERSION_TABLE, read_at_once, remember_tables
from orchestrator.evidence import ledger
from orchestrator.running.liveness import LIVE_SESSIONS, run_ids_of
from orchestrator.schema.stamp import pg_stamp_read, stamp_of

# a database's state: its heads, its ledger
STATE_QUERIES = [f"SELECT version_num FROM {VERSION_TABLE}", ledger.LEDGER_ROWS]

# The database's identity (evidence/chain.py's identity_of) as SQL: the batch's other
# queries choose by it what the successor witnessed of this database
_IDENTITY = (
    "(SELECT 'postgresql:' || system_identifier::text || '/' || current_database()"
    " FROM pg_catalog.pg_control_system())"
)
# per database identity, a number the successor knows of it (NULL for another database)
_KNOWN = (
    "(SELECT w.n FROM unnest(CAST(%(databases)s AS text[]), CAST(%(ns)s AS bigint[]))"
    f" AS w(database, n) WHERE w.database = {_IDENTITY})"
)
_CHAIN_AFTER = (
    f"SELECT seq, kind, run_id, envelope FROM {ledger.CHAIN_TABLE}"
    f" WHERE seq > coalesce({_KNOWN}, 0) ORDER BY seq"
)
_AUDIT_FROM = f"SELECT * FROM {ledger.AUDIT_TABLE} WHERE id >= {_KNOWN} ORDER BY id"
# what ledger.recorded_schema chooses from, at the heads alembic_version holds (sorted as
# ledger.heads_key sorts them: by code point, as the "C" collation does), without the
# descriptions; every column the table has (one of an earlier release has no envelope)
_RECORDED = (
    f"SELECT to_jsonb(s) - 'description' AS row FROM {ledger.SCHEMA_TABLE} s WHERE s.heads ="
    f" (SELECT coalesce(string_agg(version_num, ',' ORDER BY version_num COLLATE \"C\"), '')"
    f" FROM {VERSION_TABLE}) ORDER BY s.id DESC LIMIT {ledger.SIGNED_LOOKBACK}"
)


_RECORDED_KEYS = {*trust.SCHEMA_FIELDS, "id"}


@dataclass(frozen=True)
class Batch:
    """One predecessor database as read in one round trip (PostgreSQL): the rows `read_state`,
    `believed` (chain, audit proof, live runs), `last_env_py` and the successor's schema
    check ask for, for the same code to judge."""

    heads: tuple[str, ...]
    ledger: list[dict[str, Any]]
    env_py: str | None
    identity: str | None = None
    chain: tuple[int, list[dict[str, Any]]] | None = None  # (n, entries with seq > n)
    live: set[str] | None = None
    audit: tuple[int, list[dict[str, Any]]] | None = None  # (n, rows with id >= n)
    recorded: list[dict[str, Any]] | None = None  # schema rows at `heads`, newest first
    stamp: str | None = None

    def schema(
        self, keys: Sequence[Any] | None, target: Target
    ) -> tuple[tuple[str, ...], str, str] | None:
        """The live schema's (heads, dialect, fingerprint) where it is the one recorded at
        its heads (commands/drift.py's live_fingerprint without reflecting); else None."""
        if self.recorded is None or not self.stamp:
            return None
        if any(
            row.get("heads") != ledger.heads_key(self.heads) or not _RECORDED_KEYS.issubset(row)
            for row in self.recorded
        ):
            # alembic_version moved between two reads, or a table not as we made it: the
            # schema check reads it again if it asks
            return None
        check = (
            partial(trust.schema_row_problem, keys=keys, env=target.env, target=target.name)
            if keys
            else None
        )
        recorded = ledger.first_recorded(self.recorded, False, check)
        if recorded is None or recorded.stamp != self.stamp:
            return None
        return self.heads, "postgresql", recorded.fingerprint


def read_batch(
    connection: Connection,
    keys: Sequence[Any] | None,
    seen: Mapping[str, Any],
    with_schema: bool = False,
    schemas: Sequence[str] | None = None,
) -> Batch | None:
    """A predecessor database's reads in one round trip: its state and env.py, where it signs
    its chain from the newest entry its successor witnessed (and the audit rows from that
    entry's pin on: a superset of what the proof reads), `with_schema` its recorded schema
    and the catalog stamp of `schemas`. None where it cannot be one (SQLite, another
    driver, a table not there): then the caller reads step by step."""
    if connection.dialect.name != "postgresql":
        return None
    after: dict[str, int] = {}
    pins: dict[str, int] = {}
    for database, head in seen.items():
        if head.snapshot:  # read_evidence reads on from the witnessed entry, else all
            after[database] = head.seq - 1
            pin = head.snapshot.get("pin")
            audit_id = pin.get("audit_id") if isinstance(pin, dict) else 0
            if isinstance(audit_id, int) or audit_id is None:
                pins[database] = max(audit_id or 0, 1)
    env_py = ledger.audit_select(ledger.AuditFilter(event="run.succeeded", limit=1))
    queries: list[str | tuple[str, dict[str, Any]]] = [
        PG_TABLES,
        *STATE_QUERIES,
        str(env_py.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})),
    ]
    tables = [VERSION_TABLE, ledger.LEDGER_TABLE, ledger.AUDIT_TABLE]
    if keys:
        queries += [
            f"SELECT {_IDENTITY} AS database",
            (_CHAIN_AFTER, {"databases": list(after), "ns": list(after.values())}),
            LIVE_SESSIONS,
            (_AUDIT_FROM, {"databases": list(pins), "ns": list(pins.values())}),
        ]
        tables.append(ledger.CHAIN_TABLE)
    if with_schema:
        queries += [_RECORDED, pg_stamp_read(connection, schemas)]
        tables.append(ledger.SCHEMA_TABLE)
    try:
        found = read_at_once(connection, queries, tables)
    except ProgrammingError:
        # what the batch cannot read (a column gone, a permission): the step-by-step reads
        # meet it where they would without the batch, and say so as they would
        return None
    if found is None:
        return None
    remember_tables(connection, {row["relname"] for row in found[0]})
    last = found[3]
    value = ledger.record_of(last[0]).get("env_py") if last else None
    batch = Batch(
        tuple(sorted(row["version_num"] for row in found[1])),
        found[2],
        value if isinstance(value, str) else None,
    )
    rest = found[4:]
    if keys:
        identity = str(rest[0][0]["database"])
        audit = pins.get(identity)
        batch = replace(
            batch,
            identity=identity,
            chain=(after.get(identity, 0), rest[1]),
            live=run_ids_of(row["application_name"] for row in rest[2]),
            audit=(audit, rest[3]) if audit is not None else None,
        )
        rest = rest[4:]
    if with_schema:
        recorded = [row["row"] for row in rest[0]]
        (stamp,) = rest[1][0].values()
        batch = replace(batch, recorded=recorded, stamp=stamp_of(stamp))
    return batch
