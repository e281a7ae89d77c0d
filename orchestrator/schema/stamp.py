"""The catalog stamp: one cheap query that says whether a schema may have changed since a
description was recorded with it."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

from orchestrator.db.database import prefetched, psycopg_style
from orchestrator.schema.catalog import home_schema

# One cheap statement over the catalog rows a description comes from: each row's identity and
# the transaction that last wrote it. DDL rewrites those rows, so when the stamp is the one
# recorded with a description, the schema is that description and need not be reflected again
# (a no-op migrate and `status` stay cheap on a 1,000-table schema). A stamp that moved for
# another reason (TRUNCATE, VACUUM FULL, a dropped and re-created index) only costs the full
# read and comparison: it can never hide a change. Stamps of an earlier release's format
# (which watched fewer catalogs) never equal one of this format. Owners and column grants
# live in rows already stamped (pg_class, pg_proc, pg_attribute); default privileges in
# pg_default_acl (format 3).
STAMP_FORMAT = "3"
# Shaped for a fresh session (a fleet reads each database in one): each catalog is read by
# the index on the column that ties it to the listed schemas' relations or namespaces, not
# joined (a join plans, and scans, the whole catalog). Objects a user creates have OIDs from
# 16384 (FirstNormalObjectId) up; the catalogs' own, below, are read by a scan only where a
# system schema is listed (`sys`). The rows, and so the stamps, are those of the join form.
_PG_STAMP = text(
    """
    WITH ns AS MATERIALIZED (
      SELECT oid, xmin FROM pg_namespace WHERE nspname = ANY(CAST(:schemas AS text[]))),
    sys AS MATERIALIZED (SELECT oid FROM ns WHERE oid < 16384 AND oid <> 2200),
    rels AS MATERIALIZED (
      SELECT oid, xmin FROM pg_class WHERE relnamespace = ANY(ARRAY(SELECT oid FROM ns))),
    types AS MATERIALIZED (
      SELECT oid, xmin FROM pg_type
        WHERE oid >= 16384 AND typnamespace = ANY(ARRAY(SELECT oid FROM ns))
      UNION ALL
      SELECT oid, xmin FROM pg_type WHERE EXISTS (SELECT FROM sys) AND oid < 16384
        AND typnamespace = ANY(ARRAY(SELECT oid FROM sys))),
    procs AS MATERIALIZED (
      SELECT oid, xmin FROM pg_proc
        WHERE oid >= 16384 AND pronamespace = ANY(ARRAY(SELECT oid FROM ns))
      UNION ALL
      SELECT oid, xmin FROM pg_proc WHERE EXISTS (SELECT FROM sys) AND oid < 16384
        AND pronamespace = ANY(ARRAY(SELECT oid FROM sys)))
    SELECT count(*)::text || ' ' || coalesce(sum(hashtextextended(x, 0)), 0)::text FROM (
      SELECT 's' || array_to_string(CAST(:schemas AS text[]), ',') AS x
      UNION ALL
      SELECT 'n' || oid::text || ' ' || xmin::text FROM ns
      UNION ALL
      SELECT 'r' || oid::text || ' ' || xmin::text FROM rels
      UNION ALL
      SELECT 'a' || attrelid::text || ' ' || attnum::text || ' ' || xmin::text
        FROM pg_attribute WHERE attrelid = ANY(ARRAY(SELECT oid FROM rels)) AND attnum > 0
      UNION ALL
      SELECT 'd' || oid::text || ' ' || xmin::text
        FROM pg_attrdef WHERE adrelid = ANY(ARRAY(SELECT oid FROM rels))
      UNION ALL
      SELECT 'i' || indexrelid::text || ' ' || xmin::text
        FROM pg_index WHERE indrelid = ANY(ARRAY(SELECT oid FROM rels))
      UNION ALL
      SELECT 'c' || oid::text || ' ' || xmin::text
        FROM pg_constraint WHERE connamespace = ANY(ARRAY(SELECT oid FROM ns))
      UNION ALL
      SELECT 't' || oid::text || ' ' || xmin::text FROM types
      UNION ALL
      SELECT 'e' || oid::text || ' ' || xmin::text
        FROM pg_enum WHERE enumtypid = ANY(ARRAY(SELECT oid FROM types))
      UNION ALL
      SELECT 'p' || oid::text || ' ' || xmin::text FROM procs
      UNION ALL
      SELECT 'g' || oid::text || ' ' || xmin::text
        FROM pg_trigger WHERE tgrelid = ANY(ARRAY(SELECT oid FROM rels))
      UNION ALL
      SELECT 'o' || oid::text || ' ' || xmin::text
        FROM pg_policy WHERE polrelid = ANY(ARRAY(SELECT oid FROM rels))
      UNION ALL
      SELECT 'q' || seqrelid::text || ' ' || xmin::text
        FROM pg_sequence WHERE seqrelid = ANY(ARRAY(SELECT oid FROM rels))
      UNION ALL
      SELECT 'w' || oid::text || ' ' || xmin::text
        FROM pg_rewrite WHERE ev_class = ANY(ARRAY(SELECT oid FROM rels))
      UNION ALL
      SELECT 'x' || oid::text || ' ' || xmin::text FROM pg_extension
      UNION ALL
      SELECT 'v' || oid::text || ' ' || xmin::text FROM pg_default_acl
      UNION ALL  -- comments, ownership of sequences, membership of extensions: user objects'
      SELECT 'm' || objoid::text || ' ' || objsubid::text || ' ' || xmin::text
        FROM pg_description WHERE objoid >= 16384
      UNION ALL
      SELECT 'y' || objid::text || ' ' || refobjid::text || ' ' || xmin::text
        FROM pg_depend WHERE objid >= 16384 AND deptype IN ('a', 'i', 'e')
    ) AS catalog
    """
)
_SQLITE_STAMP = text(
    "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
    "ORDER BY type, name"
)


def stamped_schemas(connection: Connection, schemas: Sequence[str] | None) -> list[Any]:
    home = home_schema(connection, schemas)
    return list(dict.fromkeys([home, *(schemas or [])]))


def pg_stamp_read(
    connection: Connection, schemas: Sequence[str] | None
) -> tuple[str, dict[str, Any]]:
    """The stamp's statement to read ahead (psycopg's parameters): `stamp_of` its row."""
    return _pg_stamp_sql(), {"schemas": stamped_schemas(connection, schemas)}


@functools.cache
def _pg_stamp_sql() -> str:
    return psycopg_style(str(_PG_STAMP))


def stamp_of(found: Any) -> str:
    return f"{STAMP_FORMAT}:{found}"


def catalog_stamp(connection: Connection, schemas: Sequence[str] | None = None) -> str | None:
    """A digest of the schema's catalog rows in one query (None: no such shortcut here).
    Only ever compared with a stamp of the same database: equal stamps, same schema."""
    if connection.dialect.name == "postgresql":
        listed = stamped_schemas(connection, schemas)
        ahead = prefetched(connection, "stamp")
        if ahead is not None and ahead[0] == listed:
            return str(ahead[1])
        found = connection.execute(_PG_STAMP, {"schemas": listed}).scalar_one()
        return stamp_of(found)
    if connection.dialect.name == "sqlite":
        rows = connection.execute(_SQLITE_STAMP).all()
        digest = repr([STAMP_FORMAT, *(tuple(r) for r in rows)])
        return hashlib.sha256(digest.encode()).hexdigest()
    return None
