"""The catalog stamp: one cheap query that says whether a schema may have changed since a
description was recorded with it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Connection, text

from orchestrator.db.database import psycopg_style
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
_PG_STAMP = text(
    """
    WITH ns AS (SELECT oid, xmin FROM pg_namespace WHERE nspname = ANY(CAST(:schemas AS text[]))),
    rels AS (SELECT c.oid, c.xmin FROM pg_class c JOIN ns ON c.relnamespace = ns.oid),
    procs AS (SELECT p.oid, p.xmin FROM pg_proc p JOIN ns ON p.pronamespace = ns.oid)
    SELECT count(*)::text || ' ' || coalesce(sum(hashtextextended(x, 0)), 0)::text FROM (
      SELECT 's' || array_to_string(CAST(:schemas AS text[]), ',') AS x
      UNION ALL
      SELECT 'n' || oid::text || ' ' || xmin::text FROM ns
      UNION ALL
      SELECT 'r' || oid::text || ' ' || xmin::text FROM rels
      UNION ALL
      SELECT 'a' || a.attrelid::text || ' ' || a.attnum::text || ' ' || a.xmin::text
        FROM pg_attribute a JOIN rels ON rels.oid = a.attrelid WHERE a.attnum > 0
      UNION ALL
      SELECT 'd' || d.oid::text || ' ' || d.xmin::text
        FROM pg_attrdef d JOIN rels ON rels.oid = d.adrelid
      UNION ALL
      SELECT 'i' || i.indexrelid::text || ' ' || i.xmin::text
        FROM pg_index i JOIN rels ON rels.oid = i.indrelid
      UNION ALL
      SELECT 'c' || o.oid::text || ' ' || o.xmin::text
        FROM pg_constraint o JOIN ns ON o.connamespace = ns.oid
      UNION ALL
      SELECT 't' || t.oid::text || ' ' || t.xmin::text
        FROM pg_type t JOIN ns ON t.typnamespace = ns.oid
      UNION ALL
      SELECT 'e' || e.oid::text || ' ' || e.xmin::text
        FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid JOIN ns ON t.typnamespace = ns.oid
      UNION ALL
      SELECT 'p' || oid::text || ' ' || xmin::text FROM procs
      UNION ALL
      SELECT 'g' || t.oid::text || ' ' || t.xmin::text
        FROM pg_trigger t JOIN rels ON rels.oid = t.tgrelid
      UNION ALL
      SELECT 'o' || p.oid::text || ' ' || p.xmin::text
        FROM pg_policy p JOIN rels ON rels.oid = p.polrelid
      UNION ALL
      SELECT 'q' || s.seqrelid::text || ' ' || s.xmin::text
        FROM pg_sequence s JOIN rels ON rels.oid = s.seqrelid
      UNION ALL
      SELECT 'w' || w.oid::text || ' ' || w.xmin::text
        FROM pg_rewrite w JOIN rels ON rels.oid = w.ev_class
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


def stamp_query(connection: Connection, schemas: Sequence[str] | None) -> tuple[str, dict]:
    """`catalog_stamp`'s query on PostgreSQL, as (SQL, psycopg parameters) for a batch of
    reads (db.database.read_at_once); `stamp_of` makes its one value the stamp."""
    return psycopg_style(str(_PG_STAMP)), {"schemas": _listed(connection, schemas)}


def stamp_of(found: str) -> str:
    return f"{STAMP_FORMAT}:{found}"


def _listed(connection: Connection, schemas: Sequence[str] | None) -> list[str | None]:
    home = home_schema(connection, schemas)
    return list(dict.fromkeys([home, *(schemas or [])]))


def catalog_stamp(connection: Connection, schemas: Sequence[str] | None = None) -> str | None:
    """A digest of the schema's catalog rows in one query (None: no such shortcut here).
    Only ever compared with a stamp of the same database: equal stamps, same schema."""
    if connection.dialect.name == "postgresql":
        found = connection.execute(_PG_STAMP, {"schemas": _listed(connection, schemas)})
        return stamp_of(found.scalar_one())
    if connection.dialect.name == "sqlite":
        rows = connection.execute(_SQLITE_STAMP).all()
        digest = repr([STAMP_FORMAT, *(tuple(r) for r in rows)])
        return hashlib.sha256(digest.encode()).hexdigest()
    return None
