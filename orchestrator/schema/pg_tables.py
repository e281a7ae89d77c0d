"""PostgreSQL tables straight from pg_catalog: columns, primary keys, unique, foreign-key and
check constraints, indexes, for every listed schema in three queries (not one per table).

The rows are shaped into exactly what SQLAlchemy's reflection used to give reader.py (which
still reads SQLite that way), so a description recorded by an earlier release reads the same:
the same tables in scope (the default schema: every table visible on the search path), the
same texts (`pg_get_constraintdef`, `pg_get_expr`, `pg_get_indexdef` of one element), and the
column types as SQLAlchemy reflects them. A type is reflected once per distinct
`format_type` (and collation), by reflecting only the few tables that show each one first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, text

from orchestrator.db.database import as_rows, prefetched, psycopg_style

DEFAULT_SCOPE = ""  # the scope of the search path's tables (SQLAlchemy's schema=None)

_RELS = """
WITH scopes AS (SELECT unnest(CAST(:scopes AS text[])) AS scope),
rels AS (
  SELECT c.oid, c.relname, s.scope FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN scopes s ON (s.scope = '' AND n.nspname <> 'pg_catalog' AND pg_table_is_visible(c.oid))
                OR n.nspname = s.scope
  WHERE c.relkind IN ('r', 'p', 'f') AND c.relpersistence <> 't'
)
"""

_COLUMNS = text(
    _RELS
    + """
SELECT r.scope, r.relname, r.oid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
            THEN a.attcollation END,
       a.attnotnull, t.typtype = 'd' AND t.typnotnull,
       pg_get_expr(d.adbin, d.adrelid), CASE WHEN t.typtype = 'd' THEN t.typdefault END,
       a.attgenerated, a.attidentity
FROM rels r
LEFT JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON a.atthasdef AND d.adrelid = a.attrelid AND d.adnum = a.attnum
ORDER BY r.scope, r.relname, a.attnum
"""
)

_CONSTRAINTS = text(
    _RELS
    + """
SELECT r.scope, r.relname, o.contype, o.conname,
       CASE WHEN o.contype = 'c' OR o.confdeltype IN ('n', 'd')
            THEN pg_get_constraintdef(o.oid, true) END,
       r.oid, o.conkey,
       CASE WHEN o.contype = 'f' THEN
         ARRAY(SELECT a.attname::text FROM unnest(o.confkey) WITH ORDINALITY AS k(n, i)
               JOIN pg_attribute a ON a.attrelid = o.confrelid AND a.attnum = k.n ORDER BY k.i)
       END,
       f.relname, fn.nspname, CASE WHEN f.oid IS NOT NULL THEN pg_table_is_visible(f.oid) END,
       o.confupdtype, o.confdeltype, o.condeferrable, o.condeferred, o.confmatchtype
FROM rels r
JOIN pg_constraint o ON o.conrelid = r.oid AND o.contype IN ('p', 'u', 'f', 'c')
LEFT JOIN pg_class f ON f.oid = o.confrelid
LEFT JOIN pg_namespace fn ON fn.oid = f.relnamespace
"""
)

_INDEXES = text(
    _RELS
    + """
SELECT r.scope, r.relname, ic.relname, i.indisunique, i.indisvalid, i.indnkeyatts,
       {nulls_not_distinct}, am.amname, ic.reloptions,
       CASE WHEN i.indpred IS NOT NULL THEN pg_get_expr(i.indpred, i.indrelid) END,
       r.oid, CAST(i.indkey AS int2[]),
       CASE WHEN 0 = ANY(i.indkey) THEN
         ARRAY(SELECT CASE WHEN k.n = 0 THEN pg_get_indexdef(i.indexrelid, k.i::int, true) END
               FROM unnest(i.indkey) WITH ORDINALITY AS k(n, i) ORDER BY k.i)
       END,
       CAST(i.indclass AS oid[]), CAST(i.indoption AS int2[])
FROM rels r
JOIN pg_index i ON i.indrelid = r.oid AND NOT i.indisprimary
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
WHERE NOT EXISTS (SELECT 1 FROM pg_constraint o WHERE o.conrelid = i.indrelid
                  AND o.conindid = i.indexrelid AND o.contype IN ('p', 'u', 'x'))
"""
)

# Each scope's enums as SQLAlchemy's inspector lists them (get_enums): the search path's
# visible ones outside pg_catalog, or a named schema's; labels in their order.
_ENUMS = text(
    """
WITH scopes AS (SELECT unnest(CAST(:scopes AS text[])) AS scope)
SELECT s.scope, t.typname, pg_type_is_visible(t.oid),
       ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid
             ORDER BY e.enumsortorder)
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
JOIN scopes s ON (s.scope = '' AND pg_type_is_visible(t.oid) AND n.nspname <> 'pg_catalog')
              OR n.nspname = s.scope
WHERE t.typtype = 'e'
ORDER BY s.scope, n.nspname, t.typname
"""
)

_OPCLASSES = text("SELECT oid, opcname FROM pg_opclass WHERE NOT opcdefault")

_ACTIONS = {"r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
_SET_COLUMNS = re.compile(r"ON DELETE (SET (?:NULL|DEFAULT) \(.+\))")
_CHECK = re.compile(r"^CHECK *\((.+)\)( NO INHERIT)?( NOT VALID)?$", re.DOTALL)
_NEXTVAL = re.compile(r"""(nextval\(')([^']+)('.*$)""")

Key = tuple[str, str]  # (scope, table)


def supported(connection: Connection) -> bool:
    """The catalog columns read here exist from PostgreSQL 12 on (attgenerated)."""
    version = connection.dialect.server_version_info or (0,)
    return version >= (12,)


def read_tables(connection: Connection, scopes: list[str]) -> dict[Key, dict[str, Any]]:
    """{(scope, table): {"columns", "pk", "fks", "uniques", "checks", "indexes"}} in the shapes
    SQLAlchemy's inspector gives (a column's "type" is a key for `representatives`)."""
    params = {"scopes": scopes}
    tables: dict[Key, dict[str, Any]] = {}
    names: dict[tuple[int, int], str] = {}  # (table oid, attnum) -> column name

    def table(scope: str, name: str) -> dict[str, Any]:
        found = tables.get((scope, name))
        if found is None:
            found = tables[(scope, name)] = {
                "columns": [],
                "pk": None,
                "fks": [],
                "uniques": [],
                "checks": [],
                "indexes": [],
            }
        return found

    ahead = prefetched(connection, "pg_tables")
    column_rows: Sequence[Any]
    constraint_rows: Sequence[Any]
    opclass_rows: Sequence[Any]
    index_rows: Sequence[Any]
    if ahead is not None and ahead[0] == scopes:
        column_rows, constraint_rows, opclass_rows, index_rows = (as_rows(r) for r in ahead[1])
    else:
        column_rows = connection.execute(_COLUMNS, params).all()
        constraint_rows = connection.execute(_CONSTRAINTS, params).all()
        opclass_rows = connection.execute(_OPCLASSES).all()
        index_rows = connection.execute(_indexes(connection), params).all()
    for row in column_rows:
        described = table(row[0], row[1])
        if row[4] is not None:
            names[(row[2], row[3])] = row[4]
            described["columns"].append(_column(row[0], row[4:]))
    for row in constraint_rows:
        # a check's columns are not needed (and may name a system column: tableoid)
        columns = [names[(row[5], n)] for n in row[6] or []] if row[2] != "c" else []
        _constraint(table(row[0], row[1]), row, columns)
    opclasses: dict[int, str] = {oid: name for oid, name in opclass_rows}
    for row in index_rows:
        elements = [
            expression if n == 0 else names[(row[10], n)]
            for n, expression in zip(row[11], row[12] or [None] * len(row[11]), strict=True)
        ]
        table(row[0], row[1])["indexes"].append(_index(row, elements, opclasses))
    return tables


def _indexes(connection: Connection) -> Any:
    version = connection.dialect.server_version_info or (0,)
    nulls = "i.indnullsnotdistinct" if version >= (15,) else "false"
    return text(str(_INDEXES).replace("{nulls_not_distinct}", nulls))


def reads(connection: Connection, scopes: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """What `read_tables` reads, to read ahead (psycopg's parameters), in its order."""
    params = {"scopes": scopes}
    return [
        (psycopg_style(str(_COLUMNS)), params),
        (psycopg_style(str(_CONSTRAINTS)), params),
        (str(_OPCLASSES), {}),
        (psycopg_style(str(_indexes(connection))), params),
        (psycopg_style(str(_ENUMS)), params),
    ]


def read_enums(connection: Connection, scopes: list[str]) -> dict[str, dict[str, list[str]]]:
    """{scope: {enum: labels}} for every scope, in one query."""
    ahead = prefetched(connection, "pg_enums")
    if ahead is not None and ahead[0] == scopes:
        rows: Any = as_rows(ahead[1])
    else:
        rows = connection.execute(_ENUMS, {"scopes": scopes}).all()
    out: dict[str, dict[str, list[str]]] = {scope: {} for scope in scopes}
    for scope, name, visible, labels in rows:
        if visible or scope != DEFAULT_SCOPE:
            out[scope][name] = list(labels or [])
    return out


def _column(scope: str, row: Any) -> dict[str, Any]:
    (name, format_type, collation, not_null, domain_not_null, default) = row[:6]
    domain_default, generated, identity = row[6:]
    if not default and domain_default is not None:  # as SQLAlchemy: a domain's default
        default = domain_default
    column: dict[str, Any] = {
        "name": name,
        "type": (format_type, collation),
        "nullable": not not_null and not domain_not_null,
        "default": default,
    }
    if generated not in (None, "", b"\x00"):
        column["computed"] = {"sqltext": default}
        column["default"] = None
    else:
        column["default"] = qualified_default(default, scope)
    if identity not in (None, "", b"\x00"):
        column["identity"] = True
    return column


def _constraint(described: dict[str, Any], row: Any, columns: list[str]) -> None:
    scope, _table, kind, name, definition = row[:5]
    if kind == "p":
        described["pk"] = {"name": name, "constrained_columns": columns}
    elif kind == "u":
        described["uniques"].append({"name": name, "column_names": columns})
    elif kind == "c":
        described["checks"].append({"name": name, "sqltext": _check_text(definition)})
    else:
        described["fks"].append(_fk(scope, name, definition, columns, row[7], row[8:]))


def _fk(
    scope: str, name: str, definition: str, columns: list[str], referred: list[str], rest: Any
) -> dict[str, Any]:
    table, schema, visible, on_update, on_delete, deferrable, deferred, match = rest
    # as SQLAlchemy: the referred schema where the definition names it (the table is not on
    # the search path), else the table's own when reading a named schema
    referred_schema = (
        schema if not visible else (scope if scope != DEFAULT_SCOPE and scope == schema else None)
    )
    delete = _ACTIONS.get(on_delete)
    with_columns = _SET_COLUMNS.search(definition or "")
    if with_columns:  # ON DELETE SET NULL (a, b): PostgreSQL 15
        delete = with_columns.group(1)
    options = {
        "onupdate": _ACTIONS.get(on_update),
        "ondelete": delete,
        "initially": "DEFERRED" if deferred else None,
        "deferrable": True if deferrable else None,
        "match": "FULL" if match == "f" else None,
    }
    return {
        "name": name,
        "constrained_columns": columns,
        "referred_schema": referred_schema,
        "referred_table": table,
        "referred_columns": referred,
        "options": {k: v for k, v in options.items() if v is not None},
    }


def _check_text(definition: str) -> str:
    found = _CHECK.match(definition or "")
    return _strip_outer_parens(found.group(1)) if found else ""


def _index(row: Any, elements: list[str], opclasses: dict[int, str]) -> dict[str, Any]:
    (_s, _t, name, unique, valid, key_count, nulls_not_distinct, method, reloptions) = row[:9]
    where, is_expr = row[9], [n == 0 for n in row[11]]
    keys, included = elements[:key_count], elements[key_count:]
    index: dict[str, Any] = {"name": name, "unique": unique}
    if any(is_expr[:key_count]):
        index["column_names"] = [None if e else k for k, e in zip(keys, is_expr, strict=False)]
        index["expressions"] = keys
    else:
        index["column_names"] = keys
    options: dict[str, Any] = {}
    classes = [opclasses.get(c) for c in row[13]]
    ops = {k: c for k, c in zip(keys, classes, strict=False) if c is not None}
    if ops:
        options["postgresql_ops"] = ops
    sorting = {}
    for position, flag in enumerate(row[14] or []):
        order: tuple[str, ...] = ()
        if flag & 0x01:
            order += ("desc",) + (() if flag & 0x02 else ("nulls_last",))
        elif flag & 0x02:
            order += ("nulls_first",)
        if order:
            sorting[keys[position]] = order
    if sorting:
        index["column_sorting"] = sorting
    if reloptions:
        options["postgresql_with"] = dict(o.split("=", 1) for o in reloptions)
    if method != "btree":
        options["postgresql_using"] = method
    if where:
        options["postgresql_where"] = where
    options["postgresql_include"] = included
    if nulls_not_distinct:
        options["postgresql_nulls_not_distinct"] = True
    if not valid:
        options["postgresql_invalid"] = True
    index["dialect_options"] = options
    return index


def qualified_default(default: str | None, scope: str) -> str | None:
    """As SQLAlchemy: in a named schema, a serial's unqualified sequence gets the schema."""
    if default is None or scope == DEFAULT_SCOPE:
        return default
    found = _NEXTVAL.search(default)
    if found is None or "." in found.group(2):
        return default
    return f'{found.group(1)}"{scope}".{found.group(2)}{found.group(3)}'


def representatives(tables: dict[Key, dict[str, Any]]) -> dict[str, list[str]]:
    """{scope: [table, ...]}: the fewest tables, first by name, that show every distinct
    column type of their scope (what SQLAlchemy is asked to reflect)."""
    seen: set[tuple[str, Any]] = set()
    out: dict[str, list[str]] = {}
    for (scope, name), described in sorted(tables.items()):
        types = {(scope, c["type"]) for c in described["columns"]}
        if types - seen:
            seen |= types
            out.setdefault(scope, []).append(name)
    return out


def type_keys(tables: dict[Key, dict[str, Any]], scope: str, names: Iterable[str]) -> list[Any]:
    """The type keys of the listed tables' columns, in order."""
    return [c["type"] for n in names for c in tables[(scope, n)]["columns"]]


def _strip_outer_parens(sql: str) -> str:
    """One layer of parentheses around the whole text (quotes honoured), as SQLAlchemy."""
    stripped = sql.strip()
    if len(stripped) < 2 or stripped[0] != "(" or stripped[-1] != ")":
        return sql
    depth, quote, position = 0, "", 0
    while position < len(stripped):
        ch = stripped[position]
        if quote:
            if ch == quote:
                if stripped[position + 1 : position + 2] == quote:
                    position += 1
                else:
                    quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return stripped[1:-1] if position == len(stripped) - 1 else sql
        position += 1
    return sql
