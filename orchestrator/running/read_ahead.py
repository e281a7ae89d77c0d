"""What a run reads under its lock before it writes, read ahead in one round trip.

Once it holds the lock, a run waits for the ledger commits in flight, then reads its
evidence (the chain, the ledger, the audit rows since the last pin, the live sessions, the
database's identity), the runs left open, the database's state and its recorded schema,
each a round trip of its own on a real network. All of them go in the round trip of that
wait instead; each step then takes what was read for it (`db.database.prefetched`) and
checks it is what it would have read (the same pin, the same heads, the same schemas), else
reads for itself. Where anything is missing or does not decode, nothing is read ahead and
every step reads as before: the read ahead never decides anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection

from orchestrator.db.database import (
    PG_TABLES,
    VERSION_TABLE,
    listed_tables,
    read_all,
    reads_kept,
    table_names,
)
from orchestrator.evidence import ledger
from orchestrator.evidence.audit_proof import AUDIT_SINCE_PIN
from orchestrator.evidence.chain import ALL_ROWS, IDENTITY
from orchestrator.running.liveness import LIVE_SESSIONS
from orchestrator.running.predecessor_batch import STATE_QUERIES
from orchestrator.schema.stamp import pg_stamp_read, stamp_of

# what only the evidence check reads: dropped once it ran, used or not
EVIDENCE = ("live", "identity", "chain", "ledger", "audit")


def under_lock(
    connection: Connection,
    memo: MutableMapping[str, Any],
    lock: str | None,
    *,
    evidence: bool,
    migrate: bool,
    versioned: bool,
    drift: bool,
    signed: bool,
    schemas: Sequence[str] | None,
    ends: bool = False,
) -> bool:
    """`lock` (the wait for commits in flight), then the reads of the steps that follow, in
    one round trip outside any transaction; False where that cannot be (nothing is kept)."""
    statements: list[tuple[str, Mapping[str, Any]]] = [(lock, {})] if lock else []
    statements.append((PG_TABLES, {}))
    if evidence:
        statements += [(LIVE_SESSIONS, {}), (IDENTITY, {}), ALL_ROWS]
        statements += [(ledger.LEDGER_ROWS, {}), *((sql, {}) for sql in AUDIT_SINCE_PIN)]
    # where the version table may not be there (nothing was at a version), not its reads
    # (one missing table and nothing is read ahead): what holds where it is not there, which
    # the listing read with them says
    if migrate:
        statements += [(ledger.open_runs_sql(connection), {})]
        statements += [(sql, {}) for sql in STATE_QUERIES[0 if versioned else 1 :]]
        if drift:
            statements += [(sql, {}) for sql in ledger.newest_schema_sql(signed, versioned)]
            statements += [pg_stamp_read(connection, schemas)]
    if ends:  # the last runs' ends (what `status` shows)
        statements += [(ledger.recent_ends_sql(connection), {})]
    found = read_all(connection, statements)
    if found is None:
        return False
    results = iter(found)  # one result per SELECT (the LOCK has none)
    tables = {row["relname"] for row in next(results)}
    listed_tables(connection, tables)
    known = versioned or VERSION_TABLE not in tables  # else what was read assumed no version
    memo.clear()
    if evidence:
        memo["live"], memo["identity"], memo["chain"], rows = (next(results) for _ in range(4))
        memo["ledger"] = rows
        start, since = next(results), next(results)
        memo["audit"] = (start[0]["start"], since)
    if migrate:
        memo["open_runs"] = next(results)
        versions = next(results) if versioned else []
        rows = next(results)
        if known:
            memo["state"] = [versions, rows]
        if drift:
            key, newest = next(results), next(results)
            if known:
                memo["recorded_schema"] = (key[0]["key"], False, signed, newest)
            stamped = next(results)
            memo["stamp"] = (
                pg_stamp_read(connection, schemas)[1]["schemas"],
                stamp_of(next(iter(stamped[0].values()))),
            )
    if ends:
        memo["recent_ends"] = next(results)
    return True


@contextmanager
def looking(
    connection: Connection,
    *,
    evidence: bool,
    drift: bool,
    signed: bool,
    schemas: Sequence[str] | None,
    ends: bool,
) -> Iterator[None]:
    """A read-only look at one database (a fleet's test for work, `status`): what a run reads
    under its lock (and the last runs' ends, where `ends`), read in the look's first round
    trip; each step takes its part as in a run. Where the batch fails (a database without
    our tables: never migrated) the tables are listed instead, and each step reads what is
    there, step by step."""
    with reads_kept(connection) as memo:
        read = under_lock(
            connection,
            memo,
            None,
            evidence=evidence,
            migrate=True,
            versioned=True,
            drift=drift,
            signed=signed,
            schemas=schemas,
            ends=ends,
        )
        if not read:
            table_names(connection)  # one listing answers every step's "is it there?"
        yield


def after_run(
    connection: Connection, memo: MutableMapping[str, Any], schemas: Sequence[str] | None
) -> tuple[tuple[str, ...], str] | None:
    """The schema a run left, to record: the catalogs `read_schema` reads (kept in `memo`
    for it), the tables, the heads and the catalog stamp, in one round trip; the heads and
    the stamp. None where that cannot be: each is read on its own."""
    from orchestrator.schema import reader  # only a run that changed the schema needs it

    statements, keep = reader.reads(connection, schemas)
    if not statements:
        return None
    stamp = pg_stamp_read(connection, schemas)
    found = read_all(connection, [*statements, (PG_TABLES, {}), (STATE_QUERIES[0], {}), stamp])
    if found is None:
        return None
    memo.update(keep(found[: len(statements)]))
    tables, versions, stamped = found[len(statements) :]
    listed_tables(connection, {row["relname"] for row in tables})
    heads = tuple(sorted(row["version_num"] for row in versions))
    return heads, stamp_of(next(iter(stamped[0].values())))
