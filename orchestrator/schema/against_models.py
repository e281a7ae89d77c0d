"""`drift --against models`: the live schema next to the application's models, as Alembic's
autogenerate sees it (env.py's target_metadata, include_name, compare_type), each difference
in the same one-line form as `drift`, with the operation autogenerate would write for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from orchestrator.schema.description import show

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from orchestrator.migrations.runner import AlembicProject


def model_differences(project: AlembicProject, connection: Connection) -> list[dict[str, Any]]:
    from orchestrator.schema.ops import render

    upgrade_ops = project.models_upgrade_ops(connection)
    dialect = connection.dialect
    out = []
    for op in _leaves(upgrade_ops):
        diff = op.to_diff_tuple()
        tuples = diff if isinstance(diff, list) else [diff]
        for item in tuples:
            change, kind, table, name, line = describe(item, dialect)
            out.append(
                {
                    "change": change,
                    "kind": kind,
                    "table": table,
                    "name": name,
                    "line": line,
                    "op": render([op]),
                }
            )
    return out


def _leaves(ops: Any) -> Iterator[Any]:
    for op in getattr(ops, "ops", []):
        if hasattr(op, "ops"):  # ModifyTableOps: one table's changes
            yield from _leaves(op)
        else:
            yield op


def _type(type_: Any, dialect: Any) -> str:
    try:
        return str(type_.compile(dialect=dialect)).replace(", ", ",")
    except Exception:  # a type the dialect cannot compile: its Python form
        return repr(type_)


def _default(value: Any) -> str | None:
    if value is None or value is False:
        return None
    arg = getattr(value, "arg", value)
    return str(getattr(arg, "text", arg))


def describe(diff: tuple[Any, ...], dialect: Any) -> tuple[str, str, str | None, str, str]:
    """(change, kind, table, name, line) for one of autogenerate's diff tuples. Its "add_*"
    are in the models and missing from the database ("-"), "remove_*" the reverse ("+")."""
    action = diff[0]
    change = "-" if action.startswith("add_") else "+" if action.startswith("remove_") else "~"
    noun = action.split("_", 1)[1]
    if noun == "table":
        table = diff[1]
        return change, "table", table.name, table.name, f"{change} table {table.name}"
    if noun == "column":
        _, _schema, table, column = diff
        obj = {
            "name": column.name,
            "type": _type(column.type, dialect),
            "nullable": column.nullable,
            "default": _default(column.server_default),
        }
        return change, "column", table, column.name, f"{change} {show('column', table, obj)}"
    if noun in ("index", "constraint", "fk"):
        obj = diff[1]
        table = obj.table.name
        if noun == "index":
            kind = "index"
            where = obj.dialect_options[dialect.name].get("where") if dialect.name else None
            data = {
                "name": obj.name,
                "columns": [getattr(e, "name", None) or str(e) for e in obj.expressions],
                "unique": bool(obj.unique),
                "where": str(where) if where is not None else None,
            }
        elif noun == "fk":
            kind = "foreign key"
            data = {
                "name": obj.name,
                "columns": [c.parent.name for c in obj.elements],
                "referred_table": obj.elements[0].column.table.name,
                "referred_columns": [c.column.name for c in obj.elements],
            }
        else:
            kind = "unique" if type(obj).__name__ == "UniqueConstraint" else "constraint"
            data = {"name": obj.name, "columns": [c.name for c in obj.columns]}
        return change, kind, table, obj.name or "", f"{change} {show(kind, table, data)}"
    if action.startswith("modify_"):
        _, _schema, table, column, _existing, database, models = diff
        what = action.removeprefix("modify_")
        if what == "type":
            before, after = _type(models, dialect), _type(database, dialect)
        elif what == "nullable":
            before, after = ("NULL" if v else "NOT NULL" for v in (models, database))
        elif what == "default":
            before, after = f"DEFAULT {_default(models)}", f"DEFAULT {_default(database)}"
        else:
            before, after = str(models), str(database)
        return "~", "column", table, column, f"~ column {table}.{column} {before} -> {after}"
    return change, noun, None, "", f"{change} {action}: {diff[1:]!r}"
