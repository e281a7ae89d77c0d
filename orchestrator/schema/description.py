"""Schema fingerprints and schema differences: pure functions over plain data.

A *description* is what `schema_reader.read_schema` builds from the catalog (JSON-able):

    {"dialect": "postgresql",
     "tables": {"users": {"columns": [{"name", "type", "nullable", "default"}, ...],
                          "primary_key": {"name", "columns"} | None,
                          "foreign_keys": [{"name", "columns", "referred_table",
                                            "referred_columns", "options"}],
                          "unique_constraints": [{"name", "columns"}],
                          "check_constraints": [{"name", "sqltext"}],
                          "indexes": [{"name", "columns", "unique", "where", "options"}]}},
     "enums": {"mood": ["happy", "sad"]},
     "render": {"users": {"name": "sa.VARCHAR(length=50)"}}}

Columns keep the database's order; every other list is sorted, so the same schema always
gives the same description and the same fingerprint. The top-level "render" maps
table -> column -> the column type as Alembic writes it (`sa.NUMERIC(precision=10, scale=2)`),
for the operations that repair a difference: a rendering hint, not part of the fingerprint
(nor is "hints": the default privileges of each kind of object).

Format 2 (`"format": 2`) adds, per schema, "views", "sequences", "functions", "triggers",
"row_security", "policies", "unlogged", "grants" and "comments" (orchestrator.schema.catalog);
at the top "extensions", and "schemas": each other listed schema's own description (None:
it does not exist). Later, also per schema: "owners" (objects not owned by the deploy role,
the role the orchestrator logs in as), "column_grants" and "default_privileges"; a format 2
record without them reads them as "not recorded". A description without "format" is an
earlier release's: compared with it, what it did not record is "not recorded", not drift
(`not_recorded`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

Description = dict[str, Any]
SchemaStatus = Literal["ok", "drifted", "diverged", "unknown"]
RENDER = "render"
HINTS = "hints"
FORMAT = 2


def canonical_json(description: Mapping[str, Any]) -> str:
    return json.dumps(description, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(description: Mapping[str, Any]) -> str:
    """sha256 over the canonical description (the rendering hints left out)."""
    canonical = canonical_json({k: v for k, v in description.items() if k not in (RENDER, HINTS)})
    return hashlib.sha256(canonical.encode()).hexdigest()


def sort_key(item: Mapping[str, Any]) -> tuple[str, str]:
    """Objects sort by name; unnamed ones (SQLite) by their content."""
    name = item.get("name")
    return (name, "") if name else ("", canonical_json(item))


# -- what a live schema is, next to what was recorded -----------------------------------------


def judge(
    live: str | None,
    recorded: str | None,
    predecessors: Sequence[str] = (),
) -> SchemaStatus:
    """`live`: the fingerprint now; `recorded`: what the last run recorded at the revision
    the database is at (None: nothing recorded there); `predecessors`: the live fingerprints
    of the predecessor's databases standing at the same revision, same kind of database."""
    if live is None:
        return "unknown"
    if recorded is not None and live != recorded:
        return "drifted"
    if predecessors and live not in predecessors:
        return "diverged"
    return "ok" if recorded is not None else "unknown"


# -- differences ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One object that differs. `change`: "+" only in the live schema, "-" only in the
    reference, "~" in both but different. `before`/`after`: the object in the reference and
    in the live schema (plain data, None where absent)."""

    change: str
    kind: str  # table, column, primary key, foreign key, unique, check, index, enum, view, ...
    table: str | None  # schema-qualified outside the first listed schema, as in `line`
    name: str
    line: str
    before: Any = None
    after: Any = None
    schema: str | None = None  # None: the first listed schema

    def as_dict(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "kind": self.kind,
            "schema": self.schema,
            "table": self.table,
            "name": self.name,
            "line": self.line,
        }


def _cols(columns: Iterable[Any]) -> str:
    return "(" + ", ".join(str(c) for c in columns) + ")"


def show(kind: str, table: str | None, obj: Mapping[str, Any]) -> str:
    """An object in one short phrase: `index ix_users_phone on users (phone)`."""
    name = obj.get("name") or "(unnamed)"
    if kind == "column":
        text = f"column {table}.{obj['name']} {obj['type']}"
        text += "" if obj["nullable"] else " NOT NULL"
        return text + (f" DEFAULT {obj['default']}" if obj.get("default") is not None else "")
    if kind == "index":
        unique = "unique " if obj.get("unique") else ""
        where = f" where {obj['where']}" if obj.get("where") else ""
        return f"{unique}index {name} on {table} {_cols(obj['columns'])}{where}"
    if kind == "primary key":
        return f"primary key {name} on {table} {_cols(obj['columns'])}"
    if kind == "unique":
        return f"unique {name} on {table} {_cols(obj['columns'])}"
    if kind == "check":
        return f"check {name} on {table} ({obj['sqltext']})"
    if kind == "foreign key":
        options = "".join(f" {k} {v}" for k, v in sorted((obj.get("options") or {}).items()))
        return (
            f"foreign key {name} on {table} {_cols(obj['columns'])} -> "
            f"{obj['referred_table']} {_cols(obj['referred_columns'])}{options}"
        )
    if kind == "enum":
        return f"enum {obj['name']} {_cols(repr(v) for v in obj['values'])}"
    return f"{kind} {name}"


def _column_change(table: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    parts = []
    if before["type"] != after["type"]:
        parts.append(f"{before['type']} -> {after['type']}")
    if before["nullable"] != after["nullable"]:
        parts.append(
            f"{'NULL' if before['nullable'] else 'NOT NULL'} -> "
            f"{'NULL' if after['nullable'] else 'NOT NULL'}"
        )
    if before.get("default") != after.get("default"):
        parts.append(f"DEFAULT {before.get('default')} -> DEFAULT {after.get('default')}")
    rest = sorted(
        k
        for k in set(before) | set(after)
        if k not in ("name", "type", "nullable", "default") and before.get(k) != after.get(k)
    )
    parts += [f"{k} {before.get(k)} -> {after.get(k)}" for k in rest]
    return f"~ column {table}.{before['name']} {', '.join(parts)}"


def _changed(kind: str, table: str | None, before: Any, after: Any) -> str:
    """`~ index ix on t (a) -> (a, b)`: the words both share, up to the first list, once;
    where both read the same (an index's method, INCLUDE, sorting), the fields that differ:
    `~ index ix on t (a): postgresql_using btree -> hash`."""
    if show(kind, table, before) == show(kind, table, after):
        return f"~ {show(kind, table, before)}: {field_changes(before, after)}"
    old, new = show(kind, table, before).split(" "), show(kind, table, after).split(" ")
    same = 0
    while same < min(len(old), len(new)) and old[same] == new[same] and "(" not in old[same]:
        same += 1
    return f"~ {' '.join(old)} -> {' '.join(new[same:])}"


_KINDS = (
    ("primary key", "primary_key"),
    ("foreign key", "foreign_keys"),
    ("unique", "unique_constraints"),
    ("check", "check_constraints"),
    ("index", "indexes"),
)


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, str(k)))
        return out
    return {path: value}


def shorten(old: Any, new: Any, width: int = 60) -> tuple[str, str]:
    """Two texts around where they differ: the words both start with (but two) and end with
    cut to `…`."""
    a, b = str(old).split(), str(new).split()
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    head = max(head - 2, 0)  # two words of context where they start to differ

    def clip(words: list[str]) -> str:
        text = " ".join(words[head : len(words) - tail]) or "(nothing)"
        text = text if len(text) <= width else text[:width] + "…"
        return ("… " if head else "") + text + (" …" if tail else "")

    return clip(a), clip(b)


def field_changes(before: Any, after: Any, skip: Sequence[str] = ()) -> str:
    """`increment 1 -> 5; cycle False -> True`: each field that differs, long texts shown
    around where they differ."""
    old, new = _flat(before), _flat(after)
    parts = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        if a == b or key in skip:
            continue
        if isinstance(a, str) and isinstance(b, str):
            a, b = " ".join(a.split()), " ".join(b.split())
            a, b = shorten(a, b) if len(a) > 40 or len(b) > 40 else (a, b)
            parts.append(f"{key} {a} -> {b}")
        else:
            parts.append(f"{key} {_plain(a)} -> {_plain(b)}")
    return "; ".join(parts)


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return "none" if value is None else str(value)


def _key(obj: Mapping[str, Any]) -> str:
    return obj.get("name") or canonical_json(obj)


def _compare_objects(
    kind: str, table: str, before: Sequence[Any], after: Sequence[Any]
) -> list[Difference]:
    old = {_key(o): o for o in before}
    new = {_key(o): o for o in after}
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a is None:
            diffs.append(
                Difference("+", kind, table, key, f"+ {show(kind, table, b)}", after=b)  # type: ignore[arg-type]
            )
        elif b is None:
            diffs.append(Difference("-", kind, table, key, f"- {show(kind, table, a)}", before=a))
        elif a != b:
            diffs.append(Difference("~", kind, table, key, _changed(kind, table, a, b), a, b))
    return diffs


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def not_recorded(reference: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """What `live` describes that `reference` (an earlier release's record, or one made with
    other `schemas:`) does not: not compared, so not drift, until a run records it."""
    if live.get("format") is None:
        return []
    if reference.get("format") is None:
        return [
            "views, sequences, functions, triggers, row-level security, policies, "
            "grants, comments, UNLOGGED, extensions, other schemas, owners, column grants, "
            "default privileges"
        ]
    ref_schemas, live_schemas = reference.get("schemas") or {}, live.get("schemas") or {}
    # recorded since a later release than format 2's first: not compared until recorded
    later = [s for s in _LATER if s in live and s not in reference]
    return [", ".join(_LATER[s] for s in later)] * bool(later) + [
        f"schema {s}" for s in sorted(set(live_schemas) - set(ref_schemas))
    ]


_LATER = {
    "owners": "owners",
    "column_grants": "column grants",
    "default_privileges": "default privileges",
}


def compare(reference: Mapping[str, Any], live: Mapping[str, Any]) -> list[Difference]:
    """What differs from `reference` (recorded, models or predecessor) to `live`, one entry
    per object, tables in name order; only what both describe (`not_recorded`)."""
    from orchestrator.schema.objects import compare_extensions, compare_sections

    diffs = _compare_tables(reference, live, None)
    if reference.get("format") is None or live.get("format") is None:
        return diffs
    defaults = (live.get(HINTS) or reference.get(HINTS) or {}).get("acl_defaults")
    diffs += compare_sections(reference, live, None, defaults)
    diffs += compare_extensions(reference.get("extensions") or {}, live.get("extensions") or {})
    ref_schemas, live_schemas = reference.get("schemas") or {}, live.get("schemas") or {}
    for schema in sorted(set(ref_schemas) & set(live_schemas)):
        a, b = ref_schemas[schema], live_schemas[schema]
        if a is None and b is not None:
            diffs.append(Difference("+", "schema", None, schema, f"+ schema {schema}", None, {}))
        elif b is None and a is not None:
            diffs.append(Difference("-", "schema", None, schema, f"- schema {schema}", {}, None))
        if a != b:
            a, b = {"format": FORMAT, **(a or {})}, {"format": FORMAT, **(b or {})}
            diffs += _compare_tables(a, b, schema) + compare_sections(a, b, schema, defaults)
    return diffs


def _compare_tables(
    reference: Mapping[str, Any], live: Mapping[str, Any], schema: str | None
) -> list[Difference]:
    """Tables and enums of one schema (None: the first listed)."""
    diffs: list[Difference] = []
    prefix = f"{schema}." if schema else ""
    ref_tables, live_tables = reference.get("tables", {}), live.get("tables", {})
    for name in sorted(set(ref_tables) | set(live_tables)):
        table = prefix + name
        a, b = ref_tables.get(name), live_tables.get(name)
        if a is None:
            diffs.append(
                Difference("+", "table", table, table, f"+ table {table}", None, b, schema)
            )
            continue
        if b is None:
            diffs.append(
                Difference("-", "table", table, table, f"- table {table}", a, None, schema)
            )
            continue
        found = _compare_columns(table, a["columns"], b["columns"])
        for kind, key in _KINDS:
            found += _compare_objects(kind, table, _as_list(a.get(key)), _as_list(b.get(key)))
        diffs += [replace(d, schema=schema) for d in found]
    ref_enums, live_enums = reference.get("enums", {}), live.get("enums", {})
    for enum in sorted(set(ref_enums) | set(live_enums)):
        old, new = ref_enums.get(enum), live_enums.get(enum)
        name = prefix + enum
        if old == new:
            continue
        before = None if old is None else {"name": name, "values": old}
        after = None if new is None else {"name": name, "values": new}
        if before is None:
            line = f"+ {show('enum', None, after)}"  # type: ignore[arg-type]
        elif after is None:
            line = f"- {show('enum', None, before)}"
        else:
            line = _changed("enum", None, before, after)
        change = "+" if before is None else "-" if after is None else "~"
        diffs.append(Difference(change, "enum", None, name, line, before, after, schema))
    return diffs


def _compare_columns(
    table: str, before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[Difference]:
    old = {c["name"]: c for c in before}
    new = {c["name"]: c for c in after}
    diffs = []
    for name in [*old, *(n for n in new if n not in old)]:
        a, b = old.get(name), new.get(name)
        if a is None:
            line = f"+ {show('column', table, b)}"  # type: ignore[arg-type]
            diffs.append(Difference("+", "column", table, name, line, after=b))
        elif b is None:
            diffs.append(
                Difference("-", "column", table, name, f"- {show('column', table, a)}", before=a)
            )
        elif a != b:
            diffs.append(Difference("~", "column", table, name, _column_change(table, a, b), a, b))
    old_order = [n for n in old if n in new]
    new_order = [n for n in new if n in old]
    if old_order != new_order:
        diffs.append(
            Difference(
                "~",
                "column order",
                table,
                table,
                f"~ column order of {table} {_cols(old_order)} -> {_cols(new_order)}",
                old_order,
                new_order,
            )
        )
    return diffs
