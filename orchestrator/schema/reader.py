"""Read a database's schema into the plain description of `orchestrator.schema.description`.

SQLAlchemy 2's multi-table reflection reads the whole schema in a handful of catalog
queries (columns, primary keys, foreign keys, indexes, unique and check constraints, enums),
not one round trip per table. The orchestrator's own tables and `alembic_version` are left
out. Names are case-normalised as PostgreSQL does: SQLite keeps names as they were written
and compares them without case, so its names are lower-cased.
"""

from __future__ import annotations

import gc
import re
import warnings
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, cast

from sqlalchemy import Connection, inspect
from sqlalchemy.exc import CompileError, NotSupportedError, SAWarning
from sqlalchemy.types import TypeEngine

from orchestrator.schema import pg_tables
from orchestrator.schema.catalog import (
    acl_defaults,
    home_schema,
    pg_extensions,
    pg_objects_read,
    pg_sections,
    read_pg_objects,
    sqlite_sections,
)
from orchestrator.schema.description import FORMAT, HINTS, RENDER, Description, sort_key
from orchestrator.schema.pg_tables import DEFAULT_SCOPE
from orchestrator.schema.stamp import catalog_stamp

__all__ = ["catalog_stamp", "excluded", "read_schema"]

VERSION_TABLE = "alembic_version"
OWN_PREFIX = "orchestrator_"


def reads(connection: Connection, schemas: Sequence[str] | None) -> tuple[list[Any], Any]:
    """PostgreSQL 12+: what `read_schema` reads of the catalogs, to read ahead (psycopg's
    parameters); and what to keep of their results for `read_schema` (`prefetched`).
    ([], None) where it reads otherwise."""
    if connection.dialect.name != "postgresql" or not pg_tables.supported(connection):
        return [], None
    home = home_schema(connection, schemas) or "public"
    listed = list(dict.fromkeys([home, *(schemas or [])]))
    default = connection.dialect.default_schema_name
    # every listed schema's scope: one that does not exist has no rows (and then read_schema,
    # asking for fewer scopes, reads again)
    scopes = sorted({DEFAULT_SCOPE if s == default else s for s in listed})
    statements = [pg_objects_read(listed), *pg_tables.reads(connection, scopes)]

    def keep(found: list[Any]) -> dict[str, Any]:
        return {
            "pg_objects": (listed, found[0]),
            "pg_tables": (scopes, found[1:5]),
            "pg_enums": (scopes, found[5]),
        }

    return statements, keep


def excluded(table: str) -> bool:
    return table == VERSION_TABLE or table.startswith(OWN_PREFIX)


def read_schema(connection: Connection, schemas: Sequence[str] | None = None) -> Description:
    """The canonical description of the listed schemas (default: the first schema of the
    search path): the first one's objects at the top level, each other one's under
    `schemas` (None where it does not exist)."""
    # reflecting 1,000 tables makes hundreds of thousands of small objects, none of them in a
    # cycle worth collecting: the collector's passes over them cost more than the reading
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _read_schema(connection, schemas)
    finally:
        if collecting:
            gc.enable()


def _read_schema(connection: Connection, schemas: Sequence[str] | None) -> Description:
    inspector = inspect(connection)
    dialect = connection.dialect
    types = _Types(dialect)
    render: dict[str, dict[str, str]] = {}
    if dialect.name != "postgresql":
        tables, enums = _read_tables(connection, inspector, None, "", types, render)
        _sqlite_details(connection, tables)
        return _assemble(dialect.name, tables, enums, render, sqlite_sections(connection))
    home = home_schema(connection, schemas) or "public"
    listed = list(dict.fromkeys([home, *(schemas or [])]))
    raw = read_pg_objects(connection, listed)
    present = set(raw["schemas"])
    default = dialect.default_schema_name
    scopes = {s: DEFAULT_SCOPE if s == default else s for s in listed if s in present}
    read = (
        pg_tables.read_tables(connection, sorted(set(scopes.values())))
        if pg_tables.supported(connection)
        else None
    )
    typed = _pg_types(connection, inspector, read, types) if read is not None else {}
    enums_of = (
        pg_tables.read_enums(connection, sorted(set(scopes.values()))) if read is not None else {}
    )

    def one(schema: str, prefix: str) -> Description:
        if schema not in present:
            return {"tables": {}, "enums": {}, **pg_sections(raw, schema, home)}
        if read is None:  # PostgreSQL before 12: SQLAlchemy's reflection, one schema at a time
            tables, enums = _read_tables(
                connection, inspector, scopes[schema] or None, prefix, types, render
            )
        else:
            tables = _pg_schema_tables(read, scopes[schema], prefix, typed, render)
            enums = enums_of[scopes[schema]]
        return {"tables": tables, "enums": enums, **pg_sections(raw, schema, home)}

    top = one(home, "")
    others = {s: (one(s, f"{s}.") if s in present else None) for s in sorted(listed) if s != home}
    described = _assemble(dialect.name, top.pop("tables"), top.pop("enums"), render, top)
    described["extensions"] = pg_extensions(raw)
    described["schemas"] = others
    described[HINTS] = {"acl_defaults": acl_defaults(raw)}
    return described


def _read_tables(
    connection: Connection,
    inspector: Any,
    schema: str | None,
    prefix: str,
    types: _Types,
    render: dict[str, dict[str, str]],
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The tables and enums of one schema (None: the default one), by SQLAlchemy's
    multi-table reflection; column types as Alembic writes them go to `render`, under the
    table's name with `prefix` (the schema, for a schema other than the first)."""
    dialect = connection.dialect
    fold = (lambda n: n) if dialect.name == "postgresql" else _lower
    # every table, ours included, then ours dropped: a list of 1,000 names in each catalog
    # query costs more than reflecting our few tables
    columns = inspector.get_multi_columns(schema=schema)
    pks = inspector.get_multi_pk_constraint(schema=schema)
    fks = inspector.get_multi_foreign_keys(schema=schema)
    with warnings.catch_warnings():  # SQLite: expression indexes are read below instead
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
        indexes = inspector.get_multi_indexes(schema=schema)
        uniques = inspector.get_multi_unique_constraints(schema=schema)
    checks = _multi_or_empty(partial(inspector.get_multi_check_constraints, schema=schema))
    enums = _pg_enums(inspector, schema) if dialect.name == "postgresql" else {}
    tables: dict[str, Any] = {}
    for key in columns:
        table = fold(key[1])
        if excluded(table):
            continue
        described = [(c, types(c["type"])) for c in columns[key]]
        render[prefix + table] = {fold(c["name"]): python for c, (_text, python) in described}
        tables[table] = _table(
            [_column(c, text, fold) for c, (text, _python) in described],
            pks.get(key),
            fks.get(key, []),
            uniques.get(key, []),
            checks.get(key, []),
            indexes.get(key, []),
            fold,
        )
    return tables, enums


def _table(
    columns: list[dict[str, Any]],
    pk: Mapping[str, Any] | None,
    fks: Sequence[Mapping[str, Any]],
    uniques: Sequence[Mapping[str, Any]],
    checks: Sequence[Mapping[str, Any]],
    indexes: Sequence[Mapping[str, Any]],
    fold: Any,
) -> dict[str, Any]:
    """One table's description from reflection's shapes (SQLAlchemy's, or pg_tables')."""
    return {
        "columns": columns,
        "primary_key": _pk(pk, fold),
        "foreign_keys": sorted((_fk(f, fold) for f in fks), key=sort_key),
        "unique_constraints": sorted(
            (
                {"name": _name(u["name"], fold), "columns": [fold(c) for c in u["column_names"]]}
                for u in uniques
            ),
            key=sort_key,
        ),
        "check_constraints": sorted(
            ({"name": _name(c["name"], fold), "sqltext": _squash(c["sqltext"])} for c in checks),
            key=sort_key,
        ),
        "indexes": sorted(
            (
                _index(i, fold)
                for i in indexes
                if not i.get("duplicates_constraint")  # the index behind a unique constraint
            ),
            key=sort_key,
        ),
    }


def _pg_enums(inspector: Any, schema: str | None) -> dict[str, list[str]]:
    listed = cast(Any, inspector).get_enums(schema=schema)  # PostgreSQL's inspector only
    return {e["name"]: list(e["labels"]) for e in listed if e["visible"] or schema is not None}


def _pg_types(
    connection: Connection,
    inspector: Any,
    read: dict[pg_tables.Key, dict[str, Any]],
    types: _Types,
) -> dict[tuple[str, Any], tuple[str, str]]:
    """{(scope, type key): (DDL text, Alembic's text)}: each type as SQLAlchemy's reflection
    makes it from its `format_type` (its own step, no query for a built-in type); a column
    with a collation of its own, by SQLAlchemy reflecting only the few tables that show each
    such type first. Either way every type reads as it always did."""
    out: dict[tuple[str, Any], tuple[str, str]] = {}
    reflect = _type_reflector(connection, inspector)
    collated: dict[pg_tables.Key, dict[str, Any]] = {}
    for (scope, table), described in read.items():
        for column in described["columns"]:
            format_type, collation = column["type"]
            if (scope, column["type"]) in out:
                continue
            if collation is None and reflect is not None:
                out[(scope, column["type"])] = types(reflect(format_type, column["name"]))
            else:
                collated.setdefault((scope, table), {"columns": []})["columns"].append(column)
    for scope, names in pg_tables.representatives(collated).items():
        reflected = inspector.get_multi_columns(schema=scope or None, filter_names=names)
        for (_schema, table), columns in reflected.items():
            keys = {c["name"]: c["type"] for c in read[(scope, table)]["columns"]}
            for column in columns:
                out.setdefault((scope, keys[column["name"]]), types(column["type"]))
    return out


def _type_reflector(connection: Connection, inspector: Any) -> Any:
    """SQLAlchemy's own `format_type` -> type step of its column reflection (enums and
    domains loaded, as it does, only when a type names one); None where this SQLAlchemy
    has no such step (then the tables are reflected)."""
    try:
        from sqlalchemy.dialects.postgresql.base import _NamedTypeLoader
    except ImportError:
        return None
    dialect = connection.dialect
    step = getattr(dialect, "_reflect_type", None)
    if step is None:
        return None
    loader = _NamedTypeLoader(cast(Any, dialect), connection, {"info_cache": inspector.info_cache})

    def reflect(format_type: str, column: str) -> TypeEngine[Any]:
        return cast(Any, step)(format_type, loader, f"column '{column}'", collation=None)

    return reflect


def _pg_schema_tables(
    read: dict[pg_tables.Key, dict[str, Any]],
    scope: str,
    prefix: str,
    typed: dict[tuple[str, Any], tuple[str, str]],
    render: dict[str, dict[str, str]],
) -> dict[str, Any]:
    same = _same
    tables: dict[str, Any] = {}
    for (where, table), raw in read.items():
        if where != scope or excluded(table):
            continue
        columns = []
        for column in raw["columns"]:
            text, python = typed[(scope, column["type"])]
            render.setdefault(prefix + table, {})[column["name"]] = python
            columns.append(_column(column, text, same))
        render.setdefault(prefix + table, {})
        tables[table] = _table(
            columns, raw["pk"], raw["fks"], raw["uniques"], raw["checks"], raw["indexes"], same
        )
    return tables


def _same(name: str) -> str:
    return name


def _sqlite_details(connection: Connection, tables: dict[str, Any]) -> None:
    """What SQLAlchemy's SQLite reflection leaves out: expression indexes, and the ON
    DELETE / ON UPDATE of foreign keys written inline (`REFERENCES users (id) ON DELETE ...`)."""
    rows = connection.exec_driver_sql(
        "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ).all()
    for name, table, sql in rows:
        described = tables.get(table.lower())
        if described is None or any(i["name"] == name.lower() for i in described["indexes"]):
            continue
        columns, where = _index_sql_parts(sql)
        described["indexes"].append(
            {
                "name": name.lower(),
                "columns": [columns],
                "unique": sql.lstrip().upper().startswith("CREATE UNIQUE"),
                "where": where,
            }
        )
        described["indexes"].sort(key=sort_key)
    for table, described in tables.items():
        if not described["foreign_keys"]:
            continue
        quoted = table.replace("'", "''")
        pragma = connection.exec_driver_sql(f"PRAGMA foreign_key_list('{quoted}')").all()
        options: dict[tuple[str, str], dict[str, str]] = {}
        for row in pragma:
            key = (row[2].lower(), row[3].lower())  # referred table, local column
            found = {"ondelete": str(row[6]).upper(), "onupdate": str(row[5]).upper()}
            options[key] = {k: v for k, v in found.items() if v not in ("NO ACTION", "NONE")}
        for fk in described["foreign_keys"]:
            extra = options.get((fk["referred_table"], fk["columns"][0]), {})
            fk["options"] = dict(sorted({**extra, **fk["options"]}.items()))


def _index_sql_parts(sql: str) -> tuple[str, str | None]:
    """`CREATE INDEX ix ON t (lower(note)) WHERE x` -> ("lower(note)", "x")."""
    start = sql.index("(")
    depth = 0
    for position in range(start, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[position], 0)
        if depth == 0:
            break
    rest = sql[position + 1 :].strip()
    where = rest[5:].strip() if rest.upper().startswith("WHERE") else None
    return " ".join(sql[start + 1 : position].split()), _squash(where)


def _assemble(
    dialect: str,
    tables: dict[str, Any],
    enums: dict[str, list[str]],
    render: dict[str, Any],
    sections: dict[str, Any],
) -> Description:
    return {
        "dialect": dialect,
        "format": FORMAT,
        "tables": dict(sorted(tables.items())),
        "enums": dict(sorted(enums.items())),
        **sections,
        RENDER: dict(sorted(render.items())),
    }


def _lower(name: str) -> str:
    return name.lower()


def _name(name: str | None, fold: Any) -> str | None:
    return fold(name) if name else None


def _multi_or_empty(read: Any) -> Mapping[Any, Any]:
    try:
        return read()  # type: ignore[no-any-return]
    except NotImplementedError:
        return {}


_COMMA = re.compile(r",\s+")


def _squash(sql: Any) -> str | None:
    """SQL text in one line, runs of white space as one space."""
    return None if sql is None else " ".join(str(sql).split())


class _Types:
    """Type texts, worked out once per distinct type of a schema (thousands of columns share
    a few dozen types): the DDL text, and the type as Alembic writes it in a revision."""

    def __init__(self, dialect: Any) -> None:
        self.dialect = dialect
        self._seen: dict[tuple[Any, ...], tuple[str, str]] = {}

    def __call__(self, type_: TypeEngine[Any]) -> tuple[str, str]:
        key = (type(type_), *((k, _hashable(v)) for k, v in vars(type_).items()))
        known = self._seen.get(key)
        if known is None:
            known = self._seen[key] = (self._text(type_), _python(type_))
        return known

    def _text(self, type_: TypeEngine[Any]) -> str:
        try:
            text = type_.compile(dialect=self.dialect)
        except (CompileError, NotSupportedError, NotImplementedError, TypeError):
            text = repr(type_)
        return _COMMA.sub(",", text)


def _python(type_: TypeEngine[Any]) -> str:
    """`sa.VARCHAR(length=50)`, `postgresql.ENUM('a', 'b', name='mood')`."""
    module = type(type_).__module__
    if module.startswith("sqlalchemy.dialects."):
        return f"{module.split('.')[2]}.{type_!r}"
    if module.startswith("sqlalchemy."):
        return f"sa.{type_!r}"
    return repr(type_)


_SIMPLE = (str, int, float, bool, type(None))


def _hashable(value: Any) -> Any:
    return value if isinstance(value, _SIMPLE) else repr(value)


def _column(column: Mapping[str, Any], type_text: str, fold: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": fold(column["name"]),
        "type": type_text,
        "nullable": bool(column["nullable"]),
        "default": _squash(column.get("default")),
    }
    computed = column.get("computed")
    if computed:
        out["computed"] = _squash(computed.get("sqltext"))
    if column.get("identity"):
        out["identity"] = True
    return out


def _pk(pk: Mapping[str, Any] | None, fold: Any) -> dict[str, Any] | None:
    if not pk or not pk.get("constrained_columns"):
        return None
    return {
        "name": _name(pk.get("name"), fold),
        "columns": [fold(c) for c in pk["constrained_columns"]],
    }


def _fk(fk: Mapping[str, Any], fold: Any) -> dict[str, Any]:
    options = {k: str(v).upper() for k, v in (fk.get("options") or {}).items() if v is not None}
    # NO ACTION is what no option means
    options = {k: v for k, v in options.items() if v != "NO ACTION"}
    out: dict[str, Any] = {
        "name": _name(fk.get("name"), fold),
        "columns": [fold(c) for c in fk["constrained_columns"]],
        "referred_table": fold(fk["referred_table"]),
        "referred_columns": [fold(c) for c in fk["referred_columns"]],
        "options": dict(sorted(options.items())),
    }
    if fk.get("referred_schema"):
        out["referred_schema"] = fk["referred_schema"]
    return out


def _index(index: Mapping[str, Any], fold: Any) -> dict[str, Any]:
    expressions = index.get("expressions")
    columns = [
        fold(c) if c is not None else _squash(e)
        for c, e in zip(index["column_names"], expressions or index["column_names"], strict=False)
    ]
    options: dict[str, Any] = {
        k: _plain(v)
        for k, v in sorted((index.get("dialect_options") or {}).items())
        if v is not None and not (isinstance(v, str | list | tuple) and not v)
    }
    where = options.pop("postgresql_where", None) or options.pop("sqlite_where", None)
    out: dict[str, Any] = {
        "name": _name(index.get("name"), fold),
        "columns": columns,
        "unique": bool(index.get("unique")),
        "where": where,
    }
    if index.get("column_sorting"):
        out["sorting"] = {k: list(v) for k, v in sorted(index["column_sorting"].items())}
    if options:
        out["options"] = options
    return out


def _plain(value: Any) -> Any:
    """JSON-able: SQL (a partial index's predicate may come as a clause) as one-line text."""
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return _squash(value)
