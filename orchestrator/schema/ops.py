"""The Alembic operation that brings a live schema back to its reference, per difference.

Each difference of `schema.compare` becomes Alembic's own operation objects
(`alembic.operations.ops`), rendered by Alembic's renderer (`render_python_code`): the lines
a repairing revision would contain, e.g. `op.drop_index('ix_users_phone', table_name='users')`.
Column types come from the reference description's rendering hints, so a type is written
as Alembic writes it (`sa.NUMERIC(precision=10, scale=2)`). Where Alembic has no operation
(enum labels, column order, an unnamed constraint to drop), there is none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from orchestrator.schema.description import RENDER, Difference

Op = Any


class RecordedType(sa.types.UserDefinedType[Any]):
    """A column type known only by how Alembic writes it (`sa.NUMERIC(precision=10, ...)`):
    the rendering hint of a recorded description. `_render_item` writes it back verbatim."""

    cache_ok = True

    def __init__(self, python: str | None) -> None:
        self.python = python or "sa.NullType()"

    def get_col_spec(self, **_kw: Any) -> str:
        return "UNKNOWN"


def _render_item(type_: str, obj: Any, _context: Any) -> Any:
    if type_ == "type" and isinstance(obj, RecordedType):
        return obj.python
    return False


def render(operations: Sequence[Op]) -> str:
    """Alembic's rendering of operations, without its banner comments or indentation."""
    from alembic.autogenerate import render_python_code
    from alembic.operations import ops

    from orchestrator.core.logging import quiet_alembic

    with quiet_alembic():  # its scratch migration context says which DDL it assumes
        code = render_python_code(ops.UpgradeOps(ops=list(operations)), render_item=_render_item)
    statements: list[str] = []
    for line in (raw.strip() for raw in code.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("op.") or not statements:
            statements.append(line)
        else:  # Alembic breaks long calls over lines: one statement, one line
            statements[-1] += line if statements[-1].endswith("(") or line == ")" else " " + line
    return "\n".join(statements)


def repair(diff: Difference, reference: Mapping[str, Any], live: Mapping[str, Any]) -> str | None:
    """The operations that bring `live` back to `reference` for this difference, or None."""
    from orchestrator.schema.reverts import MAKERS

    maker = _MAKERS.get((diff.kind, diff.change)) or MAKERS.get(diff.kind)
    if maker is None:
        return None
    operations = maker(diff, reference, live)
    return render(operations) if operations else None


# -- one maker per (kind, change) -------------------------------------------------------------


def hint(description: Mapping[str, Any], table: str | None, column: str) -> str | None:
    """The recorded rendering of a column's type; `table` schema-qualified outside the
    first listed schema, as in a difference."""
    return (description.get(RENDER) or {}).get(table or "", {}).get(column)


def _bare(diff: Difference) -> str:
    """The table's own name (Alembic takes the schema apart)."""
    table = diff.table or ""
    return table.removeprefix(f"{diff.schema}.") if diff.schema else table


def _tables(description: Mapping[str, Any], schema: str | None) -> Mapping[str, Any]:
    if schema:
        return ((description.get("schemas") or {}).get(schema) or {}).get("tables", {})
    return description.get("tables", {})


def _column(description: Mapping[str, Any], table: str | None, column: Mapping[str, Any]) -> Any:
    default = column.get("default")
    return sa.Column(
        column["name"],
        RecordedType(hint(description, table, column["name"])),
        nullable=column["nullable"],
        server_default=sa.text(default) if default is not None else None,
    )


def _drop_table(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    from alembic.operations import ops

    return [ops.DropTableOp(_bare(diff), schema=diff.schema)]


def _create_table(diff: Difference, ref: Mapping[str, Any], _live: Any) -> list[Op]:
    from alembic.operations import ops

    table = diff.before
    items: list[Any] = [_column(ref, diff.table, c) for c in table["columns"]]
    pk = table.get("primary_key")
    if pk:
        items.append(sa.PrimaryKeyConstraint(*pk["columns"], name=pk["name"]))
    for fk in table.get("foreign_keys", []):
        remote = [f"{fk['referred_table']}.{c}" for c in fk["referred_columns"]]
        items.append(
            sa.ForeignKeyConstraint(fk["columns"], remote, name=fk["name"], **fk["options"])
        )
    for unique in table.get("unique_constraints", []):
        items.append(sa.UniqueConstraint(*unique["columns"], name=unique["name"]))
    for check in table.get("check_constraints", []):
        items.append(sa.CheckConstraint(sa.text(check["sqltext"]), name=check["name"]))
    made: list[Op] = [ops.CreateTableOp(_bare(diff), items, schema=diff.schema)]
    for index in table.get("indexes", []):
        made += _index_ops(ref, diff, index)
    return made


def _drop_column(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    from alembic.operations import ops

    return [ops.DropColumnOp(_bare(diff), diff.name, schema=diff.schema)]


def _add_column(diff: Difference, ref: Mapping[str, Any], _live: Any) -> list[Op]:
    from alembic.operations import ops

    column = _column(ref, diff.table, diff.before)
    return [ops.AddColumnOp(_bare(diff), column, schema=diff.schema)]


def _alter_column(diff: Difference, ref: Mapping[str, Any], live: Mapping[str, Any]) -> list[Op]:
    from alembic.operations import ops

    before, after = diff.before, diff.after
    table, name = diff.table, diff.name
    changes: dict[str, Any] = {}
    if before["type"] != after["type"]:
        changes["modify_type"] = RecordedType(hint(ref, table, name))
    if before["nullable"] != after["nullable"]:
        changes["modify_nullable"] = before["nullable"]
    if before.get("default") != after.get("default"):
        default = before.get("default")
        changes["modify_server_default"] = sa.text(default) if default is not None else None
    if not changes:
        return []
    return [
        ops.AlterColumnOp(
            _bare(diff),
            name,
            schema=diff.schema,
            existing_type=RecordedType(hint(live, table, name)),
            existing_nullable=after["nullable"],
            **changes,
        )
    ]


def _index_ops(ref: Mapping[str, Any], diff: Difference, index: Mapping[str, Any]) -> list[Op]:
    """The index as recorded: its columns or expressions, their sorting, its predicate and
    options (method, INCLUDE, NULLS NOT DISTINCT, storage parameters)."""
    from alembic.operations import ops

    table = _bare(diff)
    known = {c["name"] for c in _tables(ref, diff.schema).get(table, {}).get("columns", [])}
    sorting = index.get("sorting") or {}
    columns = [
        sa.text(" ".join([c, *(s.upper().replace("_", " ") for s in sorting[c])]))
        if c in sorting
        else c
        if c in known
        else sa.text(c)
        for c in index["columns"]
    ]
    kw: dict[str, Any] = dict(index.get("options") or {})
    if index.get("where"):
        dialect = ref.get("dialect", "postgresql")
        kw[f"{dialect}_where"] = sa.text(index["where"])
    return [
        ops.CreateIndexOp(
            index["name"], table, columns, schema=diff.schema, unique=index["unique"], **kw
        )
    ]


def _create_index(diff: Difference, ref: Mapping[str, Any], _live: Any) -> list[Op]:
    if not diff.before.get("name"):
        return []
    return _index_ops(ref, diff, diff.before)


def _drop_index(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    from alembic.operations import ops

    if not diff.after.get("name"):
        return []
    return [ops.DropIndexOp(diff.after["name"], table_name=_bare(diff), schema=diff.schema)]


def _replace_index(diff: Difference, ref: Mapping[str, Any], live: Any) -> list[Op]:
    return [*_drop_index(diff, ref, live), *_create_index(diff, ref, live)]


_CONSTRAINT_TYPES = {
    "unique": "unique",
    "check": "check",
    "foreign key": "foreignkey",
    "primary key": "primary",
}


def _drop_constraint(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    from alembic.operations import ops

    name = diff.after.get("name")
    if not name:
        return []
    kind = _CONSTRAINT_TYPES[diff.kind]
    return [ops.DropConstraintOp(name, _bare(diff), type_=kind, schema=diff.schema)]


def _create_constraint(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    from alembic.operations import ops

    obj, table, schema = diff.before, _bare(diff), diff.schema
    if not obj.get("name"):
        return []
    if diff.kind == "unique":
        return [ops.CreateUniqueConstraintOp(obj["name"], table, obj["columns"], schema=schema)]
    if diff.kind == "check":
        check = sa.text(obj["sqltext"])
        return [ops.CreateCheckConstraintOp(obj["name"], table, check, schema=schema)]
    if diff.kind == "primary key":
        return [ops.CreatePrimaryKeyOp(obj["name"], table, obj["columns"], schema=schema)]
    return [
        ops.CreateForeignKeyOp(
            obj["name"],
            table,
            obj["referred_table"],
            obj["columns"],
            obj["referred_columns"],
            source_schema=schema,
            referent_schema=obj.get("referred_schema"),
            **{k.lower(): v for k, v in obj.get("options", {}).items()},
        )
    ]


def _replace_constraint(diff: Difference, ref: Any, live: Any) -> list[Op]:
    dropped = _drop_constraint(diff, ref, live)
    created = _create_constraint(diff, ref, live)
    return [*dropped, *created] if dropped and created else []


Maker = Callable[[Difference, Any, Any], list[Op]]
_MAKERS: dict[tuple[str, str], Maker] = {
    ("table", "+"): _drop_table,
    ("table", "-"): _create_table,
    ("column", "+"): _drop_column,
    ("column", "-"): _add_column,
    ("column", "~"): _alter_column,
    ("index", "+"): _drop_index,
    ("index", "-"): _create_index,
    ("index", "~"): _replace_index,
    **{(kind, "+"): _drop_constraint for kind in _CONSTRAINT_TYPES},
    **{(kind, "-"): _create_constraint for kind in _CONSTRAINT_TYPES},
    **{(kind, "~"): _replace_constraint for kind in _CONSTRAINT_TYPES},
}
