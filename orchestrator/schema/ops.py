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
    maker = _MAKERS.get((diff.kind, diff.change))
    if maker is None:
        return None
    operations = maker(diff, reference, live)
    return render(operations) if operations else None


# -- one maker per (kind, change) -------------------------------------------------------------


def _hint(description: Mapping[str, Any], table: str | None, column: str) -> str | None:
    return (description.get(RENDER) or {}).get(table or "", {}).get(column)


def _column(description: Mapping[str, Any], table: str, column: Mapping[str, Any]) -> Any:
    default = column.get("default")
    return sa.Column(
        column["name"],
        RecordedType(_hint(description, table, column["name"])),
        nullable=column["nullable"],
        server_default=sa.text(default) if default is not None else None,
    )


def _drop_table(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    from alembic.operations import ops

    return [ops.DropTableOp(diff.name)]


def _create_table(diff: Difference, ref: Mapping[str, Any], _live: Any) -> list[Op]:
    from alembic.operations import ops

    table = diff.before
    items: list[Any] = [_column(ref, diff.name, c) for c in table["columns"]]
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
    made: list[Op] = [ops.CreateTableOp(diff.name, items)]
    for index in table.get("indexes", []):
        made += _index_ops(ref, diff.name, index)
    return made


def _drop_column(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    from alembic.operations import ops

    return [ops.DropColumnOp(diff.table, diff.name)]  # type: ignore[arg-type]


def _add_column(diff: Difference, ref: Mapping[str, Any], _live: Any) -> list[Op]:
    from alembic.operations import ops

    column = _column(ref, diff.table, diff.before)  # type: ignore[arg-type]
    return [ops.AddColumnOp(diff.table, column)]  # type: ignore[arg-type]


def _alter_column(diff: Difference, ref: Mapping[str, Any], live: Mapping[str, Any]) -> list[Op]:
    from alembic.operations import ops

    before, after = diff.before, diff.after
    table, name = diff.table, diff.name
    changes: dict[str, Any] = {}
    if before["type"] != after["type"]:
        changes["modify_type"] = RecordedType(_hint(ref, table, name))
    if before["nullable"] != after["nullable"]:
        changes["modify_nullable"] = before["nullable"]
    if before.get("default") != after.get("default"):
        default = before.get("default")
        changes["modify_server_default"] = sa.text(default) if default is not None else None
    if not changes:
        return []
    return [
        ops.AlterColumnOp(
            table,  # type: ignore[arg-type]
            name,
            existing_type=RecordedType(_hint(live, table, name)),
            existing_nullable=after["nullable"],
            **changes,
        )
    ]


def _index_ops(ref: Mapping[str, Any], table: str, index: Mapping[str, Any]) -> list[Op]:
    from alembic.operations import ops

    known = {c["name"] for c in ref["tables"].get(table, {}).get("columns", [])}
    columns = [c if c in known else sa.text(c) for c in index["columns"]]
    kw: dict[str, Any] = {}
    if index.get("where"):
        dialect = ref.get("dialect", "postgresql")
        kw[f"{dialect}_where"] = sa.text(index["where"])
    return [ops.CreateIndexOp(index["name"], table, columns, unique=index["unique"], **kw)]


def _create_index(diff: Difference, ref: Mapping[str, Any], _live: Any) -> list[Op]:
    if not diff.before.get("name"):
        return []
    return _index_ops(ref, diff.table, diff.before)  # type: ignore[arg-type]


def _drop_index(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    from alembic.operations import ops

    if not diff.after.get("name"):
        return []
    return [ops.DropIndexOp(diff.after["name"], table_name=diff.table)]


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
    return [ops.DropConstraintOp(name, diff.table, type_=_CONSTRAINT_TYPES[diff.kind])]  # type: ignore[arg-type]


def _create_constraint(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    from alembic.operations import ops

    obj, table = diff.before, diff.table
    if not obj.get("name"):
        return []
    if diff.kind == "unique":
        return [ops.CreateUniqueConstraintOp(obj["name"], table, obj["columns"])]  # type: ignore[arg-type]
    if diff.kind == "check":
        return [ops.CreateCheckConstraintOp(obj["name"], table, sa.text(obj["sqltext"]))]  # type: ignore[arg-type]
    if diff.kind == "primary key":
        return [ops.CreatePrimaryKeyOp(obj["name"], table, obj["columns"])]  # type: ignore[arg-type]
    return [
        ops.CreateForeignKeyOp(
            obj["name"],
            table,  # type: ignore[arg-type]
            obj["referred_table"],
            obj["columns"],
            obj["referred_columns"],
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
