"""The statements that bring back what a schema held besides tables (views, sequences,
functions, triggers, policies, row-level security, UNLOGGED, grants, comments, extensions,
schemas): Alembic has no operation for most of them, so each is `op.execute(...)` of the SQL
that restores the reference (the recorded definition where the catalog gave one); comments
on tables and columns are Alembic's own operations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.schema.description import Difference

Op = Any


def _preparer() -> Any:
    from sqlalchemy.dialects import postgresql

    return postgresql.dialect().identifier_preparer


def ident(name: str) -> str:
    return str(_preparer().quote(name))


def qualified(schema: str | None, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}" if schema else ident(name)


def _literal(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def _bare(diff: Difference, text: str) -> str:
    return text.removeprefix(f"{diff.schema}.") if diff.schema else text


def _execute(*statements: str) -> list[Op]:
    from alembic.operations import ops

    return [ops.ExecuteSQLOp(s.strip().rstrip(";")) for s in statements if s]


def _sqlite(ref: Mapping[str, Any]) -> bool:
    return ref.get("dialect") == "sqlite"


# -- views -----------------------------------------------------------------------------------


def _view_drop(diff: Difference, obj: Mapping[str, Any]) -> str:
    kind = "MATERIALIZED VIEW" if obj.get("materialized") else "VIEW"
    return f"DROP {kind} {qualified(diff.schema, _bare(diff, diff.name))}"


def _view_create(diff: Difference, obj: Mapping[str, Any], ref: Mapping[str, Any]) -> list[str]:
    if _sqlite(ref):
        return [obj["definition"]]
    name = qualified(diff.schema, _bare(diff, diff.name))
    kind = "MATERIALIZED VIEW" if obj.get("materialized") else "VIEW"
    options = f" WITH ({', '.join(obj['options'])})" if obj.get("options") else ""
    made = [f"CREATE {kind} {name}{options} AS {obj['definition'].strip().rstrip(';')}"]
    return made + list((obj.get("indexes") or {}).values())


def _view(diff: Difference, ref: Any, _live: Any) -> list[Op]:
    before, after = diff.before, diff.after
    if before is None:
        return _execute(_view_drop(diff, after))
    if after is None:
        return _execute(*_view_create(diff, before, ref))
    if before.get("materialized") or after.get("materialized") or _sqlite(ref):
        return _execute(_view_drop(diff, after), *_view_create(diff, before, ref))
    made = _view_create(diff, before, ref)
    return _execute(made[0].replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1), *made[1:])


# -- sequences -------------------------------------------------------------------------------


def _sequence_options(obj: Mapping[str, Any]) -> str:
    cycle = "CYCLE" if obj["cycle"] else "NO CYCLE"
    return (
        f"AS {obj['type']} INCREMENT BY {obj['increment']} MINVALUE {obj['min']} "
        f"MAXVALUE {obj['max']} START WITH {obj['start']} CACHE {obj['cache']} {cycle}"
    )


def _owned_by(obj: Mapping[str, Any]) -> str:
    owner = obj.get("owned_by")
    if not owner:
        return "OWNED BY NONE"
    *table, column = owner.split(".")
    return f"OWNED BY {'.'.join(ident(t) for t in table)}.{ident(column)}"


def _sequence(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    name = qualified(diff.schema, _bare(diff, diff.name))
    if diff.before is None:
        return _execute(f"DROP SEQUENCE {name}")
    verb = "CREATE" if diff.after is None else "ALTER"
    return _execute(
        f"{verb} SEQUENCE {name} {_sequence_options(diff.before)}",
        f"ALTER SEQUENCE {name} {_owned_by(diff.before)}"
        if diff.before.get("owned_by") != (diff.after or {}).get("owned_by")
        else "",
    )


# -- functions and procedures ----------------------------------------------------------------


def _function(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    if diff.before is not None:
        return _execute(diff.before["definition"])
    bare = _bare(diff, diff.name)
    name, _, args = bare.partition("(")
    return _execute(f"DROP {diff.kind.upper()} {qualified(diff.schema, name)}({args}")


# -- triggers and policies -------------------------------------------------------------------

_TRIGGER_STATE = {
    "enabled": "ENABLE",
    "disabled": "DISABLE",
    "replica": "ENABLE REPLICA",
    "always": "ENABLE ALWAYS",
}


def _on(diff: Difference) -> tuple[str, str]:
    """(object, table) of `name on table`, quoted."""
    name, _, _table = diff.name.partition(" on ")
    return ident(name), qualified(diff.schema, _bare(diff, diff.table or ""))


def _trigger(diff: Difference, ref: Any, _live: Any) -> list[Op]:
    name, table = _on(diff)
    drop = f"DROP TRIGGER {name}" + ("" if _sqlite(ref) else f" ON {table}")
    before, after = diff.before, diff.after
    if before is None:
        return _execute(drop)
    state = before.get("enabled", "enabled")
    enable = "" if _sqlite(ref) else f"ALTER TABLE {table} {_TRIGGER_STATE[state]} TRIGGER {name}"
    if after is None:
        return _execute(before["definition"], enable if state != "enabled" else "")
    if before["definition"] == after["definition"]:
        return _execute(enable)
    return _execute(drop, before["definition"], enable if state != "enabled" else "")


def _policy_create(name: str, table: str, obj: Mapping[str, Any]) -> str:
    kind = "PERMISSIVE" if obj["permissive"] else "RESTRICTIVE"
    roles = ", ".join(r if r == "PUBLIC" else ident(r) for r in obj["roles"]) or "PUBLIC"
    text = f"CREATE POLICY {name} ON {table} AS {kind} FOR {obj['command']} TO {roles}"
    text += f" USING ({obj['using']})" if obj.get("using") else ""
    return text + (f" WITH CHECK ({obj['with_check']})" if obj.get("with_check") else "")


def _policy(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    name, table = _on(diff)
    drop = f"DROP POLICY {name} ON {table}" if diff.after is not None else ""
    create = _policy_create(name, table, diff.before) if diff.before is not None else ""
    return _execute(drop, create)


def _row_security(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    table = qualified(diff.schema, _bare(diff, diff.table or ""))
    before, after = diff.before or {}, diff.after or {}
    made = []
    if bool(before.get("enabled")) != bool(after.get("enabled")):
        verb = "ENABLE" if before.get("enabled") else "DISABLE"
        made.append(f"ALTER TABLE {table} {verb} ROW LEVEL SECURITY")
    if bool(before.get("forced")) != bool(after.get("forced")):
        verb = "FORCE" if before.get("forced") else "NO FORCE"
        made.append(f"ALTER TABLE {table} {verb} ROW LEVEL SECURITY")
    return _execute(*made)


def _unlogged(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    table = qualified(diff.schema, _bare(diff, diff.table or ""))
    return _execute(f"ALTER TABLE {table} SET {'LOGGED' if diff.change == '+' else 'UNLOGGED'}")


# -- grants, comments, extensions, schemas ---------------------------------------------------


def _grant_target(diff: Difference) -> str:
    kind, _, name = diff.name.partition(" ")
    if kind == "schema":
        return f"SCHEMA {ident(name)}"
    bare = _bare(diff, name)
    if kind in ("function", "procedure"):
        fn, _, args = bare.partition("(")
        return f"{kind.upper()} {qualified(diff.schema, fn)}({args}"
    return f"{kind.upper()} {qualified(diff.schema, bare)}"


def _grants(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    kind, _, name = diff.name.partition(" ")
    column = ""
    if kind == "column":  # GRANT SELECT (email) ON TABLE users
        table, _, bare = _bare(diff, name).rpartition(".")
        target, column = f"TABLE {qualified(diff.schema, table)}", f" ({ident(bare)})"
    else:
        target = _grant_target(diff)
    return _execute(
        *_grant_statements(diff, f"ON {target}", column, lambda verb, rest: f"{verb} {rest}")
    )


def _grant_statements(diff: Difference, on: str, column: str, wrap: Any) -> list[str]:
    """GRANT what the reference had and the live schema lost, REVOKE what it gained."""
    before, after = diff.before or {}, diff.after or {}
    made = []
    for grantee in sorted(set(before) | set(after)):
        if grantee == "(owner)":  # no role name to write: the owner differs per database
            continue
        who = grantee if grantee == "PUBLIC" else ident(grantee)
        gained = sorted(set(after.get(grantee, [])) - set(before.get(grantee, [])))
        lost = sorted(set(before.get(grantee, [])) - set(after.get(grantee, [])))
        for privilege in gained:
            plain = privilege.removesuffix(" WITH GRANT OPTION")
            made.append(wrap("REVOKE", f"{plain}{column} {on} FROM {who}"))
        for privilege in lost:
            plain = privilege.removesuffix(" WITH GRANT OPTION")
            option = " WITH GRANT OPTION" if plain != privilege else ""
            made.append(wrap("GRANT", f"{plain}{column} {on} TO {who}{option}"))
    return made


def _role(name: str) -> str:
    """The deploy role is whoever runs the revision: SESSION_USER."""
    return "SESSION_USER" if name == "(deploy role)" else ident(name)


def _owner(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    from orchestrator.schema.objects import split_owned

    kind, name = split_owned(diff.name)
    bare = _bare(diff, name)
    if kind in ("function", "procedure"):
        fn, _, args = bare.partition("(")
        target = f"{qualified(diff.schema, fn)}({args}"
    else:
        target = qualified(diff.schema, bare)
    return _execute(f"ALTER {kind.upper()} {target} OWNER TO {_role(str(diff.before))}")


def _default_privileges(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    """`tables for app_owner in schema public` -> ALTER DEFAULT PRIVILEGES FOR ROLE app_owner
    IN SCHEMA public REVOKE SELECT ON TABLES FROM reader."""
    objects, _, rest = diff.name.partition(" for ")
    if rest.endswith(" in every schema"):
        role, where = rest.removesuffix(" in every schema"), ""
    else:
        role, _, schema = rest.rpartition(" in schema ")
        where = f" IN SCHEMA {ident(schema)}"
    head = f"ALTER DEFAULT PRIVILEGES FOR ROLE {_role(role)}{where}"
    return _execute(
        *_grant_statements(
            diff, f"ON {objects.upper()}", "", lambda verb, body: f"{head} {verb} {body}"
        )
    )


def _comment(diff: Difference, ref: Any, live: Any) -> list[Op]:
    from alembic.operations import ops

    kind, _, name = diff.name.partition(" ")
    old, new = diff.before, diff.after
    if kind == "table":
        table = _bare(diff, name)
        if old is None:
            return [ops.DropTableCommentOp(table, existing_comment=new, schema=diff.schema)]
        return [ops.CreateTableCommentOp(table, old, existing_comment=new, schema=diff.schema)]
    if kind == "column":
        from orchestrator.schema.ops import RecordedType, hint

        table, _, column = _bare(diff, name).rpartition(".")
        shown = f"{diff.schema}.{table}" if diff.schema else table
        return [
            ops.AlterColumnOp(
                table,
                column,
                schema=diff.schema,
                existing_type=RecordedType(hint(live, shown, column)),
                modify_comment=old,
                existing_comment=new,
            )
        ]
    if kind in ("constraint", "trigger", "policy"):
        obj, _, table = name.partition(" on ")
        target = f"{kind.upper()} {ident(obj)} ON {qualified(diff.schema, _bare(diff, table))}"
    elif kind == "schema":
        target = f"SCHEMA {ident(name)}"
    elif kind in ("function", "procedure"):
        fn, _, args = _bare(diff, name).partition("(")
        target = f"{kind.upper()} {qualified(diff.schema, fn)}({args}"
    else:
        target = f"{kind.upper()} {qualified(diff.schema, _bare(diff, name))}"
    return _execute(f"COMMENT ON {target} IS {_literal(old)}")


def _extension(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    name, old, new = ident(diff.name), diff.before, diff.after
    if old is None:
        return _execute(f"DROP EXTENSION {name}")
    if new is None:
        return _execute(
            f"CREATE EXTENSION {name} VERSION {_literal(old['version'])} "
            f"SCHEMA {ident(old['schema'])}"
        )
    made = []
    if old["version"] != new["version"]:
        made.append(f"ALTER EXTENSION {name} UPDATE TO {_literal(old['version'])}")
    if old["schema"] != new["schema"]:
        made.append(f"ALTER EXTENSION {name} SET SCHEMA {ident(old['schema'])}")
    return _execute(*made)


def _schema(diff: Difference, _ref: Any, _live: Any) -> list[Op]:
    verb = "DROP" if diff.change == "+" else "CREATE"
    return _execute(f"{verb} SCHEMA {ident(diff.name)}")


Maker = Callable[[Difference, Any, Any], list[Op]]
MAKERS: dict[str, Maker] = {
    "view": _view,
    "materialized view": _view,
    "sequence": _sequence,
    "function": _function,
    "procedure": _function,
    "trigger": _trigger,
    "policy": _policy,
    "row level security": _row_security,
    "unlogged": _unlogged,
    "grants": _grants,
    "owner": _owner,
    "default privileges": _default_privileges,
    "comment": _comment,
    "extension": _extension,
    "schema": _schema,
}
