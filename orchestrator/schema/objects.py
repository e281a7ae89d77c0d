"""The differences of what a schema holds besides tables (format 2 of a description): one
line per object, saying what changed. Pure functions over plain data.

    + view active_users
    ~ function add_one(x integer): body … x + 1 … -> … x + 2 …
    ~ trigger trg_audit on users: enabled enabled -> disabled
    ~ grants on table users: + app_reader SELECT
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.schema.description import Difference, field_changes

# section -> how one of its objects is named in a line
_NOUNS = {
    "views": "view",
    "sequences": "sequence",
    "functions": "function",
    "triggers": "trigger",
    "policies": "policy",
    "row_security": "row level security on",
    "comments": "comment on",
}
# section -> the `kind` of its differences (what `drift --json` says, what ops.py repairs)
KINDS = {
    "views": "view",
    "sequences": "sequence",
    "functions": "function",
    "triggers": "trigger",
    "policies": "policy",
    "row_security": "row level security",
    "comments": "comment",
}


def _noun(section: str, value: Any) -> str:
    if section == "views" and isinstance(value, Mapping) and value.get("materialized"):
        return "materialized view"
    if section == "functions" and isinstance(value, Mapping):
        return str(value.get("kind") or "function")
    return _NOUNS[section]


def _qualify(key: str, schema: str | None, section: str) -> str:
    """`audit.events`; for `name on table` keys the table, for comments/grants the name."""
    if not schema:
        return key
    if section in ("triggers", "policies"):
        name, _, table = key.partition(" on ")
        return f"{name} on {schema}.{table}"
    if section in ("comments", "grants"):
        kind, _, name = key.partition(" ")
        return f"{kind} {name}" if kind == "schema" else f"{kind} {schema}.{name}"
    return f"{schema}.{key}"


def _table_of(key: str, section: str) -> str | None:
    if section in ("triggers", "policies"):
        return key.partition(" on ")[2]
    if section in ("row_security", "unlogged"):
        return key
    return None


def _one_line(section: str, value: Any) -> str:
    """What an added or removed object was, in a few words."""
    if section == "row_security":
        return "(" + ", ".join(k for k in ("enabled", "forced") if value.get(k)) + ")"
    if section == "comments":
        return repr(value)
    if section == "sequences":
        return f"{value['type']} increment {value['increment']}"
    if section == "functions":
        return f"returns {value['returns']} language {value['language']}"
    if section == "triggers":
        return "" if value.get("enabled", "enabled") == "enabled" else f"({value['enabled']})"
    if section == "policies":
        return f"for {value['command']} to {', '.join(value['roles'])}"
    return ""


def _changes(section: str, before: Any, after: Any) -> str:
    if section == "comments":
        return f"{before!r} -> {after!r}"
    if section == "functions":  # the definition repeats the fields: only where nothing else
        skipped = field_changes(before, after, skip=("definition",))
        return skipped or field_changes(before, after)
    return field_changes(before, after)


def _diff(
    change: str, section: str, key: str, schema: str | None, before: Any, after: Any
) -> Difference:
    value = after if before is None else before
    name = _qualify(key, schema, section)
    noun = _noun(section, value)
    table = _table_of(key, section)
    table = f"{schema}.{table}" if schema and table else table
    if change == "~":
        line = f"~ {noun} {name}: {_changes(section, before, after)}"
    else:
        extra = _one_line(section, value)
        line = f"{change} {noun} {name}" + (f" {extra}" if extra else "")
    kind = noun if section in ("views", "functions") else KINDS[section]
    return Difference(change, kind, table, name, line, before, after, schema)


def compare_sections(
    reference: Mapping[str, Any],
    live: Mapping[str, Any],
    schema: str | None,
    acl_defaults: Mapping[str, Any] | None = None,
) -> list[Difference]:
    """Views, sequences, functions, triggers, row-level security, policies, UNLOGGED,
    grants and comments of one schema (None: the first listed)."""
    diffs: list[Difference] = []
    for section in _NOUNS:
        old, new = reference.get(section) or {}, live.get(section) or {}
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key), new.get(key)
            if a == b:
                continue
            change = "+" if a is None else "-" if b is None else "~"
            diffs.append(_diff(change, section, key, schema, a, b))
    old_unlogged, new_unlogged = (
        set(reference.get("unlogged") or ()),
        set(live.get("unlogged") or ()),
    )
    for table in sorted(old_unlogged ^ new_unlogged):
        change = "+" if table in new_unlogged else "-"
        name = f"{schema}.{table}" if schema else table
        diffs.append(
            Difference(
                change,
                "unlogged",
                name,
                name,
                f"{change} unlogged table {name}",
                None,
                None,
                schema,
            )
        )
    diffs += _compare_grants(
        reference.get("grants") or {}, live.get("grants") or {}, schema, acl_defaults or {}
    )
    return diffs + compare_privileges(reference, live, schema, acl_defaults or {})


def _compare_grants(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    schema: str | None,
    defaults: Mapping[str, Any],
) -> list[Difference]:
    """Per object, the privileges granted or revoked: `+ app_reader SELECT`. An object not
    listed has its kind's default privileges (a column: none)."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        kind = key.partition(" ")[0]
        a = old.get(key, defaults.get(kind, {}))
        b = new.get(key, defaults.get(kind, {}))
        name = _qualify(key, schema, "grants")
        line = f"~ grants on {name}: {_granted(a, b)}"
        diffs.append(Difference("~", "grants", None, name, line, a, b, schema))
    return diffs


def _granted(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """`+ app_reader SELECT; - PUBLIC EXECUTE`."""
    parts = []
    for grantee in sorted(set(a) | set(b)):
        gained = sorted(set(b.get(grantee, [])) - set(a.get(grantee, [])))
        lost = sorted(set(a.get(grantee, [])) - set(b.get(grantee, [])))
        parts += [f"+ {grantee} {', '.join(gained)}"] if gained else []
        parts += [f"- {grantee} {', '.join(lost)}"] if lost else []
    return "; ".join(parts) or "as recorded"


# -- owners, column grants, default privileges (recorded since issue 33's second part) ---------

DEPLOY_ROLE = "(deploy role)"
_OWNED = ("materialized view", "table", "view", "sequence", "function", "procedure")
_SECTION_OF = {
    "materialized view": "views",
    "view": "views",
    "table": "tables",
    "sequence": "sequences",
    "function": "functions",
    "procedure": "functions",
}
# default privileges of every schema: the kind whose default ACL applies where none is set
_DEFAULT_KIND = {"tables": "table", "sequences": "sequence", "functions": "function"}


def split_owned(key: str) -> tuple[str, str]:
    """`materialized view totals` -> ("materialized view", "totals")."""
    kind = next((k for k in _OWNED if key.startswith(k + " ")), key.partition(" ")[0])
    return kind, key[len(kind) + 1 :]


def _exists(described: Mapping[str, Any], kind: str, name: str) -> bool:
    return name in (described.get(_SECTION_OF.get(kind, "tables")) or {})


def _follows_table(
    live: Mapping[str, Any],
    sequence: str,
    prefix: str,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
) -> bool:
    """A serial's sequence changes owner with its table (ALTER TABLE ... OWNER TO): said once,
    on the table's line."""
    owned_by = ((live.get("sequences") or {}).get(sequence) or {}).get("owned_by") or ""
    table = owned_by.rpartition(".")[0].removeprefix(prefix)
    key = f"table {table}"
    return bool(table) and (old.get(key), new.get(key)) == (
        old.get(f"sequence {sequence}"),
        new.get(f"sequence {sequence}"),
    )


def compare_privileges(
    reference: Mapping[str, Any],
    live: Mapping[str, Any],
    schema: str | None,
    acl_defaults: Mapping[str, Any],
) -> list[Difference]:
    """Owners, column grants and default privileges of one schema; a section the reference
    does not hold (a record of an earlier release) is not recorded, not compared. An object
    that is itself added or removed has its own line: its owner and grants are not repeated."""
    diffs: list[Difference] = []
    prefix = f"{schema}." if schema else ""
    if "owners" in reference and "owners" in live:
        old, new = reference["owners"], live["owners"]
        for key in sorted(set(old) | set(new)):
            kind, bare = split_owned(key)
            a, b = old.get(key, DEPLOY_ROLE), new.get(key, DEPLOY_ROLE)
            if a == b or not (_exists(reference, kind, bare) and _exists(live, kind, bare)):
                continue
            if kind == "sequence" and _follows_table(live, bare, prefix, old, new):
                continue
            name = f"{kind} {prefix}{bare}"
            line = f"~ owner of {name}: {a} -> {b}"
            diffs.append(Difference("~", "owner", None, name, line, a, b, schema))
    if "column_grants" in reference and "column_grants" in live:

        def kept(grants: Mapping[str, Any]) -> dict[str, Any]:
            return {
                k: v
                for k, v in grants.items()
                if _exists(reference, "table", k[len("column ") :].rpartition(".")[0])
                and _exists(live, "table", k[len("column ") :].rpartition(".")[0])
            }

        diffs += _compare_grants(
            kept(reference["column_grants"]), kept(live["column_grants"]), schema, {}
        )
    if "default_privileges" in reference and "default_privileges" in live:
        old, new = reference["default_privileges"], live["default_privileges"]
        for key in sorted(set(old) | set(new)):
            if old.get(key) == new.get(key):
                continue
            # where no default privileges are set: none in a schema; in every schema, the
            # kind's own defaults (PUBLIC may execute functions)
            every = key.endswith(" in every schema")
            absent = acl_defaults.get(_DEFAULT_KIND.get(key.partition(" ")[0], ""), {})
            a = old.get(key, absent if every else {})
            b = new.get(key, absent if every else {})
            line = f"~ default privileges on {key}: {_granted(a, b)}"
            diffs.append(Difference("~", "default privileges", None, key, line, a, b, schema))
    return diffs


def compare_extensions(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Difference]:
    diffs = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is None:
            line = f"+ extension {name} {(b or {}).get('version')}"
        elif b is None:
            line = f"- extension {name} {a['version']}"
        else:
            line = f"~ extension {name}: {field_changes(a, b)}"
        change = "+" if a is None else "-" if b is None else "~"
        diffs.append(Difference(change, "extension", None, name, line, a, b))
    return diffs
