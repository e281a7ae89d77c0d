"""The schema each successful run left behind, recorded at its heads, and read back."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, text

from orchestrator.core import trust
from orchestrator.db.database import VERSION_TABLE, forget_tables, has_table, prefetched
from orchestrator.evidence.ledger.audit_chain import canonical
from orchestrator.evidence.ledger.rows import _envelope
from orchestrator.evidence.ledger.tables import SCHEMA_TABLE, schema
from orchestrator.schema.description import fingerprint as schema_fingerprint

if TYPE_CHECKING:  # imported where something is signed: cryptography is slow to import
    from orchestrator.core import signing


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
