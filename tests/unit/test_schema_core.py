"""Schema drift core without a database (SPEC Part 2 "Schema drift"): the fingerprint, the
one-line differences, the status judgement and the Alembic operations that repair them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from orchestrator.schema.description import compare, fingerprint, judge
from orchestrator.schema.ops import repair


def _users() -> dict[str, Any]:
    return {
        "dialect": "postgresql",
        "tables": {
            "users": {
                "columns": [
                    {"name": "id", "type": "INTEGER", "nullable": False, "default": None},
                    {"name": "phone", "type": "VARCHAR(20)", "nullable": True, "default": None},
                ],
                "primary_key": {"name": "users_pkey", "columns": ["id"]},
                "foreign_keys": [],
                "unique_constraints": [],
                "check_constraints": [],
                "indexes": [],
            },
            "orders": {
                "columns": [
                    {"name": "id", "type": "INTEGER", "nullable": False, "default": None},
                    {"name": "user_id", "type": "INTEGER", "nullable": False, "default": None},
                    {"name": "total", "type": "NUMERIC(10,2)", "nullable": False, "default": "0"},
                ],
                "primary_key": {"name": "orders_pkey", "columns": ["id"]},
                "foreign_keys": [
                    {
                        "name": "orders_user_id_fkey",
                        "columns": ["user_id"],
                        "referred_table": "users",
                        "referred_columns": ["id"],
                        "options": {},
                    }
                ],
                "unique_constraints": [],
                "check_constraints": [{"name": "ck_total", "sqltext": "total >= 0"}],
                "indexes": [
                    {
                        "name": "ix_orders_open",
                        "columns": ["user_id"],
                        "unique": False,
                        "where": "total > 0",
                    }
                ],
            },
        },
        "enums": {"mood": ["happy", "sad"]},
        "render": {
            "users": {"id": "sa.INTEGER()", "phone": "sa.VARCHAR(length=20)"},
            "orders": {
                "id": "sa.INTEGER()",
                "user_id": "sa.INTEGER()",
                "total": "sa.NUMERIC(precision=10, scale=2)",
            },
        },
    }


def _lines(reference: dict[str, Any], live: dict[str, Any]) -> list[str]:
    return [d.line for d in compare(reference, live)]


# -- fingerprint -----------------------------------------------------------------------------


def test_fingerprint_is_a_sha256_that_depends_only_on_the_schema() -> None:
    """The same schema, however its dicts were built, gives the same fingerprint; the
    rendering hints are not the schema."""
    a = _users()
    b = copy.deepcopy(a)
    b["tables"] = dict(reversed(list(b["tables"].items())))  # another insertion order
    b["render"] = {}
    assert fingerprint(a) == fingerprint(b)
    assert len(fingerprint(a)) == 64 and int(fingerprint(a), 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["tables"]["orders"]["columns"][2].update(type="NUMERIC(12,2)"),
        lambda d: d["tables"]["orders"]["columns"][2].update(nullable=True),
        lambda d: d["tables"]["orders"]["columns"][2].update(default="1"),
        lambda d: d["tables"]["orders"]["indexes"][0].update(where="total > 1"),
        lambda d: d["tables"]["orders"]["check_constraints"][0].update(sqltext="total > 0"),
        lambda d: d["tables"]["orders"]["foreign_keys"][0]["options"].update(ondelete="CASCADE"),
        lambda d: d["tables"]["users"]["columns"].reverse(),  # column order is the database's
        lambda d: d["enums"]["mood"].append("meh"),
        lambda d: d["tables"]["users"].update(primary_key=None),
    ],
)
def test_every_part_of_the_schema_is_in_the_fingerprint(change: Any) -> None:
    changed = _users()
    change(changed)
    assert fingerprint(changed) != fingerprint(_users())
    assert compare(_users(), changed), "a fingerprint change must come with a difference"


# -- differences, one line per object --------------------------------------------------------


def test_an_index_added_by_hand_is_one_plus_line_with_the_drop_that_reverts_it() -> None:
    live = _users()
    live["tables"]["users"]["indexes"].append(
        {"name": "ix_users_phone", "columns": ["phone"], "unique": False, "where": None}
    )
    (diff,) = compare(_users(), live)
    assert diff.line == "+ index ix_users_phone on users (phone)"
    assert repair(diff, _users(), live) == "op.drop_index('ix_users_phone', table_name='users')"


def test_a_changed_column_type_names_both_types_and_the_alter_that_reverts_it() -> None:
    live = _users()
    live["tables"]["orders"]["columns"][2]["type"] = "NUMERIC(12,2)"
    live["render"]["orders"]["total"] = "sa.NUMERIC(precision=12, scale=2)"
    (diff,) = compare(_users(), live)
    assert diff.line == "~ column orders.total NUMERIC(10,2) -> NUMERIC(12,2)"
    op = repair(diff, _users(), live)
    assert op is not None and op.startswith("op.alter_column('orders', 'total',")
    assert "type_=sa.NUMERIC(precision=10, scale=2)" in op
    assert "existing_type=sa.NUMERIC(precision=12, scale=2)" in op


def test_a_dropped_partial_index_comes_back_with_its_predicate() -> None:
    live = _users()
    live["tables"]["orders"]["indexes"] = []
    (diff,) = compare(_users(), live)
    assert diff.line == "- index ix_orders_open on orders (user_id) where total > 0"
    assert repair(diff, _users(), live) == (
        "op.create_index('ix_orders_open', 'orders', ['user_id'], unique=False, "
        "postgresql_where=sa.text('total > 0'))"
    )


def test_tables_columns_constraints_and_enums_each_have_their_line() -> None:
    live = _users()
    del live["tables"]["users"]
    live["tables"]["orders"]["columns"].append(
        {"name": "note", "type": "TEXT", "nullable": True, "default": None}
    )
    live["tables"]["orders"]["check_constraints"] = []
    live["tables"]["orders"]["columns"][1]["nullable"] = True
    live["enums"]["mood"] = ["happy", "sad", "meh"]
    assert _lines(_users(), live) == [
        "~ column orders.user_id NOT NULL -> NULL",
        "+ column orders.note TEXT",
        "- check ck_total on orders (total >= 0)",
        "- table users",
        "~ enum mood ('happy', 'sad') -> ('happy', 'sad', 'meh')",
    ]
    ops = {d.line: repair(d, _users(), live) for d in compare(_users(), live)}
    assert ops["+ column orders.note TEXT"] == "op.drop_column('orders', 'note')"
    assert ops["- check ck_total on orders (total >= 0)"] == (
        "op.create_check_constraint('ck_total', 'orders', 'total >= 0')"
    )
    assert (ops["- table users"] or "").startswith("op.create_table('users',")
    assert "sa.VARCHAR(length=20)" in (ops["- table users"] or "")
    assert ops["~ enum mood ('happy', 'sad') -> ('happy', 'sad', 'meh')"] is None


def test_the_same_schema_has_no_difference() -> None:
    assert compare(_users(), copy.deepcopy(_users())) == []


# -- ok, drifted, diverged, unknown ----------------------------------------------------------


@pytest.mark.parametrize(
    ("live", "recorded", "predecessors", "expected"),
    [
        ("a", "a", [], "ok"),
        ("a", "a", ["a"], "ok"),
        ("a", "a", ["a", "b"], "ok"),  # one database of a fleet drifted: not this one's fault
        ("b", "a", [], "drifted"),
        ("b", "a", ["b"], "drifted"),  # drifted wins: its own record says so
        ("a", "a", ["b"], "diverged"),
        ("a", None, ["b"], "diverged"),
        ("a", None, ["a"], "unknown"),
        ("a", None, [], "unknown"),
        (None, "a", [], "unknown"),
    ],
)
def test_judge(
    live: str | None, recorded: str | None, predecessors: list[str], expected: str
) -> None:
    assert judge(live, recorded, predecessors) == expected


# -- policy.schema_drift -----------------------------------------------------------------------


def _env(policy: str) -> str:
    return f"name: prod\ndatabase:\n  url_env: PROD_DATABASE_URL\npolicy:\n  {policy}\n"


def test_schema_drift_policy_parses_off_warn_refuse_and_names_a_bad_value() -> None:
    from orchestrator.core.config import parse_environment
    from orchestrator.core.errors import UsageError

    assert parse_environment(_env("schema_drift: off"), "prod.yaml").policy.schema_drift == "off"
    assert parse_environment(_env("lint: warn"), "prod.yaml").policy.schema_drift == "warn"
    refuse = parse_environment(_env("schema_drift: refuse"), "prod.yaml")
    assert refuse.policy.schema_drift == "refuse"
    with pytest.raises(UsageError) as bad:
        parse_environment(_env("schema_drift: maybe"), "prod.yaml")
    assert "policy.schema_drift" in bad.value.message and bad.value.exit_code == 2


def test_shipped_and_initialised_environments_refuse_drift_in_prod_only() -> None:
    from pathlib import Path

    from orchestrator.commands.init import environment_file
    from orchestrator.core.config import load_environments, parse_environment

    shipped = load_environments(Path(__file__).resolve().parents[2] / "environments")
    assert {n: e.policy.schema_drift for n, e in shipped.by_name.items()} == {
        "dev": "warn",
        "staging": "warn",
        "prod": "refuse",
    }
    written = {
        "dev": environment_file("dev", None, last=False),
        "staging": environment_file("staging", "dev", last=False),
        "prod": environment_file("prod", "staging", last=True),
    }
    policies = {
        n: parse_environment(t, f"{n}.yaml").policy.schema_drift for n, t in written.items()
    }
    assert policies == {"dev": "warn", "staging": "warn", "prod": "refuse"}


# -- the whole schema (format 2) ----------------------------------------------------------------


def _whole() -> dict[str, Any]:
    """`_users()` with one object of every other kind, as format 2 describes them."""
    return {
        **_users(),
        "format": 2,
        "views": {
            "big_orders": {
                "materialized": False,
                "definition": " SELECT orders.id\n   FROM orders\n  WHERE orders.total > 100;",
                "options": [],
                "indexes": {},
            }
        },
        "sequences": {
            "invoice_no": {
                "type": "bigint",
                "start": 1000,
                "increment": 1,
                "min": 1,
                "max": 9223372036854775807,
                "cache": 1,
                "cycle": False,
                "owned_by": None,
            }
        },
        "functions": {
            "add_one(x integer)": {
                "kind": "function",
                "returns": "integer",
                "language": "sql",
                "attributes": "VOLATILE PARALLEL UNSAFE COST 100",
                "body": " SELECT x + 1 ",
                "definition": "CREATE OR REPLACE FUNCTION public.add_one(x integer)\n"
                " RETURNS integer\n LANGUAGE sql\nAS $function$ SELECT x + 1 $function$\n",
            }
        },
        "triggers": {
            "trg_touch on orders": {
                "definition": "CREATE TRIGGER trg_touch BEFORE UPDATE ON public.orders "
                "FOR EACH ROW EXECUTE FUNCTION touch()",
                "enabled": "enabled",
            }
        },
        "row_security": {"orders": {"enabled": True, "forced": False}},
        "policies": {
            "orders_all on orders": {
                "command": "ALL",
                "permissive": True,
                "roles": ["PUBLIC"],
                "using": "true",
                "with_check": None,
            }
        },
        "unlogged": [],
        "grants": {},
        "owners": {},
        "column_grants": {},
        "default_privileges": {},
        "comments": {"table users": "people"},
        "extensions": {"plpgsql": {"version": "1.0", "schema": "pg_catalog"}},
        "schemas": {"audit": {"tables": {}, "enums": {}}},
        "hints": {"acl_defaults": {"table": {"(owner)": ["SELECT", "UPDATE"]}}},
    }


WHOLE_CHANGES = [
    (
        lambda d: d["views"]["big_orders"].update(
            definition=" SELECT orders.id\n   FROM orders\n  WHERE orders.total > 1;"
        ),
        "~ view big_orders: definition … orders.total > 100; -> … orders.total > 1;",
        "op.execute('CREATE OR REPLACE VIEW big_orders AS SELECT orders.id",
    ),
    (
        lambda d: d["functions"]["add_one(x integer)"].update(body=" SELECT x + 2 "),
        "~ function add_one(x integer): body SELECT x + 1 -> SELECT x + 2",
        "op.execute('CREATE OR REPLACE FUNCTION public.add_one(x integer)",
    ),
    (
        lambda d: d["triggers"]["trg_touch on orders"].update(enabled="disabled"),
        "~ trigger trg_touch on orders: enabled enabled -> disabled",
        "op.execute('ALTER TABLE orders ENABLE TRIGGER trg_touch')",
    ),
    (
        lambda d: d["row_security"].pop("orders"),
        "- row level security on orders (enabled)",
        "op.execute('ALTER TABLE orders ENABLE ROW LEVEL SECURITY')",
    ),
    (
        lambda d: d["policies"].update(
            {"p2 on orders": {**d["policies"]["orders_all on orders"], "command": "SELECT"}}
        ),
        "+ policy p2 on orders for SELECT to PUBLIC",
        "op.execute('DROP POLICY p2 ON orders')",
    ),
    (
        lambda d: d["grants"].update(
            {"table users": {"(owner)": ["SELECT", "UPDATE"], "app_reader": ["SELECT"]}}
        ),
        "~ grants on table users: + app_reader SELECT",
        "op.execute('REVOKE SELECT ON TABLE users FROM app_reader')",
    ),
    (
        lambda d: d["sequences"]["invoice_no"].update(increment=10),
        "~ sequence invoice_no: increment 1 -> 10",
        "op.execute('ALTER SEQUENCE invoice_no AS bigint INCREMENT BY 1 ",
    ),
    (
        lambda d: d["extensions"].update({"pg_trgm": {"version": "1.6", "schema": "public"}}),
        "+ extension pg_trgm 1.6",
        "op.execute('DROP EXTENSION pg_trgm')",
    ),
    (
        lambda d: d["comments"].update({"table users": "customers"}),
        "~ comment on table users: 'people' -> 'customers'",
        "op.create_table_comment('users', 'people', existing_comment='customers'",
    ),
    (
        lambda d: d["unlogged"].append("orders"),
        "+ unlogged table orders",
        "op.execute('ALTER TABLE orders SET LOGGED')",
    ),
    (
        lambda d: d["schemas"]["audit"]["tables"].update(
            {"events": copy.deepcopy(d["tables"]["users"])}
        ),
        "+ table audit.events",
        "op.drop_table('events', schema='audit')",
    ),
    (
        lambda d: d["schemas"].update({"audit": None}),
        "- schema audit",
        "op.execute('CREATE SCHEMA audit')",
    ),
    (
        lambda d: d["owners"].update({"table users": "bob"}),
        "~ owner of table users: (deploy role) -> bob",
        "op.execute('ALTER TABLE users OWNER TO SESSION_USER')",
    ),
    (
        lambda d: d["owners"].update({"function add_one(x integer)": "bob"}),
        "~ owner of function add_one(x integer): (deploy role) -> bob",
        "op.execute('ALTER FUNCTION add_one(x integer) OWNER TO SESSION_USER')",
    ),
    (
        lambda d: d["column_grants"].update({"column users.phone": {"app_reader": ["SELECT"]}}),
        "~ grants on column users.phone: + app_reader SELECT",
        "op.execute('REVOKE SELECT (phone) ON TABLE users FROM app_reader')",
    ),
    (
        lambda d: d["default_privileges"].update(
            {"tables for (deploy role) in schema public": {"app_reader": ["SELECT"]}}
        ),
        "~ default privileges on tables for (deploy role) in schema public: + app_reader SELECT",
        "op.execute('ALTER DEFAULT PRIVILEGES FOR ROLE SESSION_USER IN SCHEMA public "
        "REVOKE SELECT ON TABLES FROM app_reader')",
    ),
]


@pytest.mark.parametrize("change", range(len(WHOLE_CHANGES)))
def test_each_kind_of_object_has_its_line_and_its_revert(change: int) -> None:
    edit, line, op = WHOLE_CHANGES[change]
    live = _whole()
    edit(live)
    assert fingerprint(live) != fingerprint(_whole())
    (diff,) = compare(_whole(), live)
    assert diff.line == line
    assert (repair(diff, _whole(), live) or "").startswith(op)


def test_an_index_whose_options_alone_differ_names_the_option() -> None:
    live = _users()
    live["tables"]["orders"]["indexes"][0]["options"] = {"postgresql_using": "hash"}
    (diff,) = compare(_users(), live)
    assert diff.line == (
        "~ index ix_orders_open on orders (user_id) where total > 0: postgresql_using none -> hash"
    )
    assert repair(diff, _users(), live) == (
        "op.drop_index('ix_orders_open', table_name='orders')\n"
        "op.create_index('ix_orders_open', 'orders', ['user_id'], unique=False, "
        "postgresql_where=sa.text('total > 0'))"
    )


def test_a_record_of_the_previous_release_does_not_know_the_new_objects() -> None:
    """Compared with a description without `format`, only tables and enums count: the rest
    is "not recorded", not drift."""
    from orchestrator.schema.description import not_recorded

    live = _whole()
    live["views"] = {}
    assert compare(_users(), live) == []
    assert not_recorded(_users(), live)
    assert not_recorded(_whole(), live) == []
    live["tables"]["users"]["columns"].pop()
    assert [d.line for d in compare(_users(), live)] == ["- column users.phone VARCHAR(20)"]


def test_hints_are_not_the_schema() -> None:
    other = _whole()
    other["hints"] = {"acl_defaults": {}}
    assert fingerprint(other) == fingerprint(_whole())


def test_schemas_is_a_list_of_distinct_names() -> None:
    from orchestrator.core.config import parse_environment
    from orchestrator.core.errors import UsageError

    base = "name: prod\ndatabase:\n  url_env: PROD_DATABASE_URL\n"
    assert parse_environment(base, "prod.yaml").schemas is None
    listed = parse_environment(base + "schemas: [public, audit]\n", "prod.yaml")
    assert listed.schemas == ["public", "audit"]
    for bad in ("schemas: []\n", "schemas: [a, a]\n", "schemas: public\n"):
        with pytest.raises(UsageError) as error:
            parse_environment(base + bad, "prod.yaml")
        assert "schemas" in error.value.message and error.value.exit_code == 2


def test_a_record_without_owners_and_privileges_reads_them_as_not_recorded() -> None:
    from orchestrator.schema.description import not_recorded

    record = _whole()
    for key in ("owners", "column_grants", "default_privileges"):
        record.pop(key)
    live = _whole()
    live["owners"]["table users"] = "bob"
    live["column_grants"]["column users.phone"] = {"app_reader": ["SELECT"]}
    assert compare(record, live) == []
    assert not_recorded(record, live) == ["owners, column grants, default privileges"]


def test_a_serial_sequence_moves_with_its_table_and_a_dropped_object_has_one_line() -> None:
    record = _whole()
    record["sequences"]["invoice_no"]["owned_by"] = "users.id"
    live = copy.deepcopy(record)
    live["owners"].update({"table users": "bob", "sequence invoice_no": "bob"})
    assert [d.line for d in compare(record, live)] == [
        "~ owner of table users: (deploy role) -> bob"
    ]
    record["owners"]["view big_orders"] = "bob"
    gone = copy.deepcopy(record)
    gone["views"].pop("big_orders")
    gone["owners"].pop("view big_orders")
    assert [d.line for d in compare(record, gone)] == ["- view big_orders"]
