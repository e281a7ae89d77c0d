"""What a schema holds besides its tables: views, sequences, functions, triggers, row-level
security, grants, extensions, comments, UNLOGGED tables; on PostgreSQL in one catalog query
for every listed schema (a JSON object the database builds), on SQLite from sqlite_master.

Objects an extension owns, ours (`orchestrator_*`) and `alembic_version`'s are left out.
Grants are named relative to the owner ("(owner)"), so that databases owned by different
roles describe the same grants alike; an object whose privileges are its kind's default is
not listed (the defaults are a rendering hint, `hints.acl_defaults`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

from orchestrator.db.database import prefetched, psycopg_style

OWN = "orchestrator\\_%"

_PG_OBJECTS = text(
    """
WITH ns AS (
  SELECT n.oid, n.nspname, n.nspacl, n.nspowner FROM pg_namespace n
  WHERE n.nspname = ANY(CAST(:schemas AS text[]))
),
ext AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e'),
me AS (SELECT oid FROM pg_roles WHERE rolname = session_user),
rels AS (
  SELECT c.oid, c.relname, c.relkind, c.relpersistence, c.relrowsecurity,
         c.relforcerowsecurity, c.relacl, c.relowner, c.reloptions, ns.nspname
  FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    AND c.relname <> 'alembic_version' AND c.relname NOT LIKE :own
    AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_class'::regclass
                    AND ext.objid = c.oid)
),
procs AS (
  SELECT p.*, ns.nspname, pg_get_function_identity_arguments(p.oid) AS args
  FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
  WHERE p.prokind IN ('f', 'p') AND p.proname NOT LIKE :own
    AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_proc'::regclass
                    AND ext.objid = p.oid)
),
acls AS (
  SELECT nspname AS schema, relname AS name,
         CASE relkind WHEN 'S' THEN 'sequence' ELSE 'table' END AS kind,
         relacl AS acl, relowner AS owner,
         acldefault(CASE relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", relowner) AS dflt
  FROM rels
  UNION ALL
  SELECT nspname, proname || '(' || args || ')',
         CASE prokind WHEN 'p' THEN 'procedure' ELSE 'function' END, proacl, proowner,
         acldefault('f'::"char", proowner)
  FROM procs
  UNION ALL
  SELECT nspname, nspname, 'schema', nspacl, nspowner, acldefault('n'::"char", nspowner) FROM ns
),
comments AS (
  SELECT r.nspname AS schema,
         CASE r.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
                        WHEN 'm' THEN 'materialized view' ELSE 'table' END AS kind,
         r.relname AS name, d.description
  FROM pg_description d JOIN rels r ON d.objoid = r.oid
  WHERE d.classoid = 'pg_class'::regclass AND d.objsubid = 0
  UNION ALL
  SELECT r.nspname, 'column', r.relname || '.' || a.attname, d.description
  FROM pg_description d JOIN rels r ON d.objoid = r.oid
  JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum = d.objsubid
  WHERE d.classoid = 'pg_class'::regclass AND d.objsubid > 0
  UNION ALL
  SELECT r.nspname, 'index', ic.relname, d.description
  FROM pg_description d JOIN pg_index i ON i.indexrelid = d.objoid
  JOIN pg_class ic ON ic.oid = i.indexrelid JOIN rels r ON r.oid = i.indrelid
  WHERE d.classoid = 'pg_class'::regclass
  UNION ALL
  SELECT p.nspname, CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END,
         p.proname || '(' || p.args || ')', d.description
  FROM pg_description d JOIN procs p ON d.objoid = p.oid
  WHERE d.classoid = 'pg_proc'::regclass
  UNION ALL
  SELECT ns.nspname, 'schema', ns.nspname, d.description
  FROM pg_description d JOIN ns ON d.objoid = ns.oid
  WHERE d.classoid = 'pg_namespace'::regclass
  UNION ALL
  SELECT r.nspname, 'constraint', o.conname || ' on ' || r.relname, d.description
  FROM pg_description d JOIN pg_constraint o ON o.oid = d.objoid
  JOIN rels r ON r.oid = o.conrelid
  WHERE d.classoid = 'pg_constraint'::regclass
  UNION ALL
  SELECT r.nspname, 'trigger', t.tgname || ' on ' || r.relname, d.description
  FROM pg_description d JOIN pg_trigger t ON t.oid = d.objoid JOIN rels r ON r.oid = t.tgrelid
  WHERE d.classoid = 'pg_trigger'::regclass
  UNION ALL
  SELECT r.nspname, 'policy', p.polname || ' on ' || r.relname, d.description
  FROM pg_description d JOIN pg_policy p ON p.oid = d.objoid JOIN rels r ON r.oid = p.polrelid
  WHERE d.classoid = 'pg_policy'::regclass
  UNION ALL
  SELECT ns.nspname, 'type', t.typname, d.description
  FROM pg_description d JOIN pg_type t ON t.oid = d.objoid JOIN ns ON ns.oid = t.typnamespace
  WHERE d.classoid = 'pg_type'::regclass
    AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_type'::regclass
                    AND ext.objid = t.oid)
)
SELECT json_build_object(
  'schemas', (SELECT coalesce(json_agg(nspname), '[]') FROM ns),
  'views', (SELECT coalesce(json_agg(json_build_object(
      'schema', nspname, 'name', relname, 'materialized', relkind = 'm',
      'definition', pg_get_viewdef(oid), 'options', reloptions,
      'indexes', (SELECT json_object_agg(ic.relname, pg_get_indexdef(i.indexrelid))
                  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                  WHERE i.indrelid = rels.oid))), '[]')
    FROM rels WHERE relkind IN ('v', 'm')),
  'sequences', (SELECT coalesce(json_agg(json_build_object(
      'schema', r.nspname, 'name', r.relname, 'type', format_type(s.seqtypid, NULL),
      'start', s.seqstart, 'increment', s.seqincrement, 'min', s.seqmin, 'max', s.seqmax,
      'cache', s.seqcache, 'cycle', s.seqcycle,
      'owned_by', (SELECT json_build_array(tn.nspname, t.relname, a.attname)
                   FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
                   JOIN pg_namespace tn ON tn.oid = t.relnamespace
                   JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
                   WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
                     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                   LIMIT 1))), '[]')
    FROM rels r JOIN pg_sequence s ON s.seqrelid = r.oid),
  'functions', (SELECT coalesce(json_agg(json_build_object(
      'schema', nspname, 'name', proname, 'args', args, 'kind', prokind,
      'returns', pg_get_function_result(oid),
      'language', (SELECT lanname FROM pg_language l WHERE l.oid = prolang),
      'body', prosrc, 'volatility', provolatile, 'strict', proisstrict,
      'security_definer', prosecdef, 'leakproof', proleakproof, 'parallel', proparallel,
      'cost', procost, 'rows', prorows, 'config', proconfig,
      'definition', pg_get_functiondef(oid))), '[]')
    FROM procs),
  'triggers', (SELECT coalesce(json_agg(json_build_object(
      'schema', r.nspname, 'table', r.relname, 'name', t.tgname,
      'definition', pg_get_triggerdef(t.oid), 'enabled', t.tgenabled)), '[]')
    FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal),
  'policies', (SELECT coalesce(json_agg(json_build_object(
      'schema', r.nspname, 'table', r.relname, 'name', p.polname, 'command', p.polcmd,
      'permissive', p.polpermissive,
      'roles', (SELECT json_agg(role ORDER BY role) FROM (
                  SELECT CASE WHEN x = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x)::text END AS role
                  FROM unnest(p.polroles) AS x) AS roles),
      'using', pg_get_expr(p.polqual, p.polrelid),
      'with_check', pg_get_expr(p.polwithcheck, p.polrelid))), '[]')
    FROM pg_policy p JOIN rels r ON r.oid = p.polrelid),
  'flags', (SELECT coalesce(json_agg(json_build_object(
      'schema', nspname, 'name', relname, 'unlogged', relpersistence = 'u',
      'row_security', relrowsecurity, 'forced', relforcerowsecurity)), '[]')
    FROM rels WHERE relkind IN ('r', 'p')
      AND (relpersistence = 'u' OR relrowsecurity OR relforcerowsecurity)),
  'grants', (SELECT coalesce(json_agg(json_build_object(
      'schema', schema, 'name', name, 'kind', kind,
      'privileges', (SELECT json_agg(json_build_array(
                       CASE WHEN a.grantee = acls.owner THEN '(owner)'
                            WHEN a.grantee = 0 THEN 'PUBLIC'
                            ELSE pg_get_userbyid(a.grantee) END,
                       a.privilege_type, a.is_grantable))
                     FROM aclexplode(acls.acl) AS a))), '[]')
    FROM acls WHERE acl IS NOT NULL AND acl <> dflt),
  'acl_defaults', (SELECT json_object_agg(k.kind, (SELECT json_agg(json_build_array(
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE '(owner)' END,
                      a.privilege_type, a.is_grantable))
                    FROM aclexplode(acldefault(k.code, current_user::regrole::oid)) AS a))
    FROM (VALUES ('table', 'r'::"char"), ('sequence', 's'), ('function', 'f'),
                 ('procedure', 'f'), ('schema', 'n')) AS k(kind, code)),
  'comments', (SELECT coalesce(json_agg(json_build_object(
      'schema', schema, 'kind', kind, 'name', name, 'text', description)), '[]')
    FROM comments),
  'owners', (SELECT coalesce(json_agg(json_build_object(
      'schema', schema, 'kind', kind, 'name', name, 'owner', pg_get_userbyid(owner))), '[]')
    FROM (SELECT nspname AS schema, relname AS name, relowner AS owner,
                 CASE relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
                              WHEN 'm' THEN 'materialized view' ELSE 'table' END AS kind
          FROM rels
          UNION ALL
          SELECT nspname, proname || '(' || args || ')', proowner,
                 CASE prokind WHEN 'p' THEN 'procedure' ELSE 'function' END
          FROM procs) AS owned
    WHERE owner NOT IN (SELECT oid FROM me)),
  'column_grants', (SELECT coalesce(json_agg(json_build_object(
      'schema', r.nspname, 'name', r.relname || '.' || a.attname,
      'privileges', (SELECT json_agg(json_build_array(
                       CASE WHEN x.grantee = r.relowner THEN '(owner)'
                            WHEN x.grantee = 0 THEN 'PUBLIC'
                            ELSE pg_get_userbyid(x.grantee) END,
                       x.privilege_type, x.is_grantable))
                     FROM aclexplode(a.attacl) AS x))), '[]')
    FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid
    WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
      AND cardinality(a.attacl) > 0),
  'default_privileges', (SELECT coalesce(json_agg(json_build_object(
      'schema', n.nspname, 'objects', d.defaclobjtype,
      'role', CASE WHEN d.defaclrole IN (SELECT oid FROM me) THEN '(deploy role)'
                   ELSE pg_get_userbyid(d.defaclrole) END,
      'privileges', (SELECT json_agg(json_build_array(
                       CASE WHEN x.grantee = d.defaclrole THEN '(owner)'
                            WHEN x.grantee = 0 THEN 'PUBLIC'
                            ELSE pg_get_userbyid(x.grantee) END,
                       x.privilege_type, x.is_grantable))
                     FROM aclexplode(d.defaclacl) AS x))), '[]')
    FROM pg_default_acl d LEFT JOIN ns n ON n.oid = d.defaclnamespace
    WHERE d.defaclnamespace = 0 OR n.oid IS NOT NULL),
  'extensions', (SELECT coalesce(json_agg(json_build_object(
      'name', e.extname, 'version', e.extversion, 'schema', n.nspname)), '[]')
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace)
)
"""
)


def home_schema(connection: Connection, schemas: Sequence[str] | None) -> str | None:
    """The schema whose objects a description names unqualified: the first listed, else the
    first schema of the search path (None on SQLite)."""
    if connection.dialect.name != "postgresql":
        return None
    if schemas:
        return schemas[0]
    return str(connection.dialect.default_schema_name or "public")


def read_pg_objects(connection: Connection, schemas: Sequence[str]) -> dict[str, Any]:
    """The raw rows of every object kind above, each naming its schema."""
    ahead = prefetched(connection, "pg_objects")
    if ahead is not None and ahead[0] == list(schemas):
        return dict(next(iter(ahead[1][0].values())))
    row = connection.execute(_PG_OBJECTS, {"schemas": list(schemas), "own": OWN}).scalar_one()
    return dict(row)


def pg_objects_read(schemas: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """What `read_pg_objects` reads, to read ahead (psycopg's parameters)."""
    return psycopg_style(str(_PG_OBJECTS)), {"schemas": list(schemas), "own": OWN}


# -- shaping: rows -> the sections of one schema's description ---------------------------------

_VOLATILITY = {"i": "IMMUTABLE", "s": "STABLE", "v": "VOLATILE"}
_PARALLEL = {"s": "PARALLEL SAFE", "r": "PARALLEL RESTRICTED", "u": "PARALLEL UNSAFE"}
TRIGGER_STATES = {"O": "enabled", "D": "disabled", "R": "replica", "A": "always"}
POLICY_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}


def _qualified(schema: str, name: str, home: str) -> str:
    return name if schema == home else f"{schema}.{name}"


def _function(row: dict[str, Any]) -> dict[str, Any]:
    attributes = [_VOLATILITY.get(row["volatility"], row["volatility"])]
    attributes += ["STRICT"] if row["strict"] else []
    attributes += ["SECURITY DEFINER"] if row["security_definer"] else []
    attributes += ["LEAKPROOF"] if row["leakproof"] else []
    attributes += [_PARALLEL.get(row["parallel"], row["parallel"])]
    attributes += [f"COST {row['cost']:g}"] + ([f"ROWS {row['rows']:g}"] if row["rows"] else [])
    attributes += [f"SET {c}" for c in row["config"] or []]
    return {
        "kind": "procedure" if row["kind"] == "p" else "function",
        "returns": row["returns"],
        "language": row["language"],
        "attributes": " ".join(attributes),
        "body": row["body"],
        "definition": row["definition"],
    }


def _grants(privileges: list[list[Any]]) -> dict[str, list[str]]:
    """{grantee: ["SELECT", "UPDATE WITH GRANT OPTION", ...]}, sorted."""
    out: dict[str, list[str]] = {}
    for grantee, privilege, grantable in privileges or []:
        out.setdefault(grantee, []).append(privilege + (" WITH GRANT OPTION" if grantable else ""))
    return {k: sorted(v) for k, v in sorted(out.items())}


def pg_sections(raw: dict[str, Any], schema: str, home: str) -> dict[str, Any]:
    """The sections of `schema`'s description from the rows of `read_pg_objects`. Names of
    objects in another schema than `home` (a sequence's table) are qualified."""

    def mine(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if r["schema"] == schema]

    views = {
        r["name"]: {
            "materialized": r["materialized"],
            "definition": r["definition"],
            "options": sorted(r["options"] or []),
            "indexes": dict(sorted((r["indexes"] or {}).items())),
        }
        for r in mine(raw["views"])
    }
    sequences = {}
    for r in mine(raw["sequences"]):
        owner = r["owned_by"]
        sequences[r["name"]] = {
            **{k: r[k] for k in ("type", "start", "increment", "min", "max", "cache", "cycle")},
            "owned_by": f"{_qualified(owner[0], owner[1], home)}.{owner[2]}" if owner else None,
        }
    functions = {f"{r['name']}({r['args']})": _function(r) for r in mine(raw["functions"])}
    triggers = {
        f"{r['name']} on {r['table']}": {
            "definition": r["definition"],
            "enabled": TRIGGER_STATES.get(r["enabled"], r["enabled"]),
        }
        for r in mine(raw["triggers"])
    }
    policies = {
        f"{r['name']} on {r['table']}": {
            "command": POLICY_COMMANDS.get(r["command"], r["command"]),
            "permissive": r["permissive"],
            "roles": r["roles"] or [],
            "using": r["using"],
            "with_check": r["with_check"],
        }
        for r in mine(raw["policies"])
    }
    flags = mine(raw["flags"])
    return {
        **_privileges(raw, schema, home),
        "views": dict(sorted(views.items())),
        "sequences": dict(sorted(sequences.items())),
        "functions": dict(sorted(functions.items())),
        "triggers": dict(sorted(triggers.items())),
        "row_security": {
            r["name"]: {"enabled": r["row_security"], "forced": r["forced"]}
            for r in sorted(flags, key=lambda r: r["name"])
            if r["row_security"] or r["forced"]
        },
        "policies": dict(sorted(policies.items())),
        "unlogged": sorted(r["name"] for r in flags if r["unlogged"]),
        "grants": dict(
            sorted(
                (f"{r['kind']} {r['name']}", _grants(r["privileges"])) for r in mine(raw["grants"])
            )
        ),
        "comments": dict(
            sorted((f"{r['kind']} {r['name']}", r["text"]) for r in mine(raw["comments"]))
        ),
    }


DEPLOY_ROLE = "(deploy role)"  # the role the orchestrator logs in as: the same in every env
_DEFAULT_OBJECTS = {"r": "tables", "S": "sequences", "f": "functions", "T": "types", "n": "schemas"}


def _privileges(raw: dict[str, Any], schema: str, home: str) -> dict[str, Any]:
    """Owners other than the deploy role, column grants and default privileges of `schema`
    (default privileges for every schema go with the first listed one)."""
    owners = {
        f"{r['kind']} {r['name']}": r["owner"]
        for r in raw.get("owners") or []
        if r["schema"] == schema
    }
    columns = {
        f"column {r['name']}": _grants(r["privileges"])
        for r in raw.get("column_grants") or []
        if r["schema"] == schema
    }
    defaults = {}
    for r in raw.get("default_privileges") or []:
        if r["schema"] == schema or (r["schema"] is None and schema == home):
            objects = _DEFAULT_OBJECTS.get(r["objects"], r["objects"])
            where = f" in schema {schema}" if r["schema"] is not None else " in every schema"
            defaults[f"{objects} for {r['role']}{where}"] = _grants(r["privileges"])
    return {
        "owners": dict(sorted(owners.items())),
        "column_grants": dict(sorted((k, v) for k, v in columns.items() if v)),
        "default_privileges": dict(sorted(defaults.items())),
    }


def pg_extensions(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        r["name"]: {"version": r["version"], "schema": r["schema"]}
        for r in sorted(raw["extensions"], key=lambda r: r["name"])
    }


def acl_defaults(raw: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    return {kind: _grants(rows) for kind, rows in sorted((raw["acl_defaults"] or {}).items())}


# -- SQLite ------------------------------------------------------------------------------------


def sqlite_sections(connection: Connection) -> dict[str, Any]:
    """SQLite's views and triggers, as written (SQLite keeps the statement)."""
    rows = connection.exec_driver_sql(
        "SELECT type, name, tbl_name, sql FROM sqlite_master "
        "WHERE type IN ('view', 'trigger') AND sql IS NOT NULL"
    ).all()
    views, triggers = {}, {}
    for kind, name, table, sql in rows:
        table = table.lower()
        if table == "alembic_version" or table.startswith("orchestrator_"):
            continue
        definition = " ".join(sql.split())
        if kind == "view":
            views[name.lower()] = {"materialized": False, "definition": definition}
        else:
            triggers[f"{name.lower()} on {table}"] = {"definition": definition}
    return {"views": dict(sorted(views.items())), "triggers": dict(sorted(triggers.items()))}
