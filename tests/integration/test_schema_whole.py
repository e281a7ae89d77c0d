"""The whole schema is watched (SPEC Part 3), through the CLI on real PostgreSQL: each hand
change to a view, function, trigger, row-level security, policy, grant, sequence, extension,
comment, UNLOGGED table, index option or a second listed schema is drift (`drift` exits 3
naming it with the statement that reverts it, `status` says drifted, `schema_drift: refuse`
refuses the next run); a history that creates all of these never raises a false alarm; a
record of an earlier release still reads."""

from __future__ import annotations

import ast
import json
import uuid

import pytest
import sqlalchemy as sa
from projectkit import HEAD, Project

WATCHED = "f00000000001"
# what the revision makes: every kind of object drift watches, one of each
OBJECTS = """\
op.execute("CREATE SEQUENCE invoice_no START 1000")
op.execute("CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100")
op.execute(
    "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN NEW.created_at := now(); RETURN NEW; END $$"
)
op.execute(
    "CREATE TRIGGER trg_orders_touch BEFORE UPDATE ON orders FOR EACH ROW "
    "EXECUTE FUNCTION touch()"
)
op.execute("ALTER TABLE orders ENABLE ROW LEVEL SECURITY")
op.execute("CREATE POLICY orders_all ON orders USING (true)")
op.execute("COMMENT ON TABLE users IS 'people'")
op.create_table("notes", sa.Column("id", sa.Integer(), primary_key=True))
op.execute("CREATE SCHEMA audit")
op.create_table("events", sa.Column("id", sa.Integer(), primary_key=True), schema="audit")
"""
UNDO = """\
op.drop_table("events", schema="audit")
op.execute("DROP SCHEMA audit")
op.drop_table("notes")
op.execute("DROP POLICY orders_all ON orders")
op.execute("ALTER TABLE orders DISABLE ROW LEVEL SECURITY")
op.execute("DROP TRIGGER trg_orders_touch ON orders")
op.execute("DROP FUNCTION touch()")
op.execute("DROP VIEW big_orders")
op.execute("DROP SEQUENCE invoice_no")
"""


def _sql(project: Project, env: str, *statements: str) -> None:
    engine = project.engine(env)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _status(project: Project) -> dict[str, str]:
    result = project.run("status", "--json")
    assert result.code == 0, result.stderr
    return {row["env"]: row["schema"] for row in result.json()}


def _configure(project: Project, dev_policy: str = "refuse") -> None:
    """Every environment watches `public` and `audit`, lints nothing (the DDL here is about
    schemas); dev refuses a drifted schema."""
    for name in ("dev", "staging", "prod"):
        path = project.path / "environments" / f"{name}.yaml"
        text = path.read_text()
        for level in ("warn", "error"):
            text = text.replace(f"lint: {level}", "lint: off")
        if name == "dev":
            text = text.replace("schema_drift: warn", f"schema_drift: {dev_policy}")
        path.write_text(text + "schemas: [public, audit]\n")


@pytest.fixture
def watched(pg_project: Project) -> Project:
    _configure(pg_project)
    pg_project.add_revision(WATCHED, HEAD, OBJECTS, UNDO)
    done = pg_project.run("migrate", "dev")
    assert done.code == 0, done.stderr
    return pg_project


def _available(project: Project, *names: str) -> str:
    rows = project.query("dev", "SELECT name FROM pg_available_extensions")
    found = [n for n in names if (n,) in rows]
    if not found:
        pytest.fail(f"none of {names} is installed with this PostgreSQL")
    return found[0]


def _reverts(drift: dict) -> list[str]:  # type: ignore[type-arg]
    """The SQL of each `op.execute(...)` the differences name (all of them, or [])."""
    statements = []
    for difference in drift["differences"]:
        for line in (difference["op"] or "").splitlines():
            if not line.startswith("op.execute("):
                return []
            statements.append(ast.literal_eval(line.removeprefix("op.execute(")[:-1]))
    return statements


ROLE = f"r_{uuid.uuid4().hex[:10]}"
HAND_CHANGES = {
    "view replaced": (
        ["CREATE OR REPLACE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 1"],
        "~ view big_orders: definition",
    ),
    "function body replaced": (
        [
            "CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN NEW; END $$"
        ],
        "~ function touch(): body",
    ),
    "trigger added": (
        [
            "CREATE TRIGGER trg_users_touch BEFORE UPDATE ON users FOR EACH ROW "
            "EXECUTE FUNCTION touch()"
        ],
        "+ trigger trg_users_touch on users",
    ),
    "trigger disabled": (
        ["ALTER TABLE orders DISABLE TRIGGER trg_orders_touch"],
        "~ trigger trg_orders_touch on orders: enabled enabled -> disabled",
    ),
    "row-level security off": (
        ["ALTER TABLE orders DISABLE ROW LEVEL SECURITY"],
        "- row level security on orders (enabled)",
    ),
    "policy added": (
        ["CREATE POLICY orders_big ON orders FOR SELECT USING (total > 100)"],
        "+ policy orders_big on orders for SELECT to PUBLIC",
    ),
    "select granted": (
        ["GRANT SELECT ON users TO {role}"],
        "~ grants on table users: + {role} SELECT",
    ),
    "sequence changed": (
        ["ALTER SEQUENCE invoice_no INCREMENT BY 10"],
        "~ sequence invoice_no: increment 1 -> 10",
    ),
    "extension added": (["CREATE EXTENSION {extension}"], "+ extension {extension} "),
    "comment changed": (
        ["COMMENT ON TABLE users IS 'customers'"],
        "~ comment on table users: 'people' -> 'customers'",
    ),
    "table made unlogged": (["ALTER TABLE notes SET UNLOGGED"], "+ unlogged table notes"),
    "second schema": (
        ["ALTER TABLE audit.events ADD COLUMN note text"],
        "+ column audit.events.note TEXT",
    ),
    "column granted": (
        ["GRANT SELECT (email) ON users TO {role}"],
        "~ grants on column users.email: + {role} SELECT",
    ),
    "default privileges": (
        ["ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}"],
        "~ default privileges on tables for (deploy role) in schema public: + {role} SELECT",
    ),
    "table owner": (
        ["ALTER TABLE users OWNER TO {role}"],
        "~ owner of table users: (deploy role) -> {role}",
    ),
    "view owner": (
        ["ALTER VIEW big_orders OWNER TO {role}"],
        "~ owner of view big_orders: (deploy role) -> {role}",
    ),
    "function owner": (
        ["ALTER FUNCTION touch() OWNER TO {role}"],
        "~ owner of function touch(): (deploy role) -> {role}",
    ),
    "sequence owner": (
        ["ALTER SEQUENCE invoice_no OWNER TO {role}"],
        "~ owner of sequence invoice_no: (deploy role) -> {role}",
    ),
    "second schema's owner": (
        ["ALTER TABLE audit.events OWNER TO {role}"],
        "~ owner of table audit.events: (deploy role) -> {role}",
    ),
    "index options only": (
        [
            "DROP INDEX ix_orders_created_at",
            "CREATE INDEX ix_orders_created_at ON orders (created_at) INCLUDE (total)",
        ],
        "~ index ix_orders_created_at on orders (created_at): postgresql_include none -> (total)",
    ),
}


@pytest.mark.parametrize("change", list(HAND_CHANGES))
def test_a_hand_change_is_drift_named_shown_refused_and_reverted(
    watched: Project, change: str
) -> None:
    project = watched
    statements, expected = HAND_CHANGES[change]
    role = f"{ROLE}_{uuid.uuid4().hex[:6]}"
    names = {"role": role}
    if any("{role}" in s for s in statements):
        _sql(project, "dev", f"CREATE ROLE {role}")
    if change == "extension added":
        names["extension"] = _available(project, "pg_trgm", "citext", "hstore")
    _sql(project, "dev", *(s.format(**names) for s in statements))

    drift = project.run("drift", "dev")
    assert drift.code == 3, drift.output
    assert expected.format(**names) in drift.stdout, drift.stdout
    as_json = project.run("drift", "dev", "--json")
    assert as_json.code == 3
    differences = as_json.json()["differences"]
    assert len(differences) == 1, differences  # one line per object
    assert differences[0]["op"], differences  # and what reverts it
    assert _status(project)["dev"] == "drifted"
    refused = project.run("migrate", "dev")
    assert refused.code == 3, refused.output
    assert "schema_drift" in refused.stderr
    assert expected.format(**names).split(":")[0] in refused.stderr

    # what `drift` shows brings the schema back where it is plain SQL
    reverts = _reverts(as_json.json())
    if reverts:
        _sql(project, "dev", *reverts)
        back = project.run("drift", "dev")
        assert back.code == 0, back.stdout


# -- no false drift ----------------------------------------------------------------------------


def _round(n: int, role: str) -> tuple[str, str]:
    """Revision n of a history that makes one of every watched kind of object."""
    t = f"item{n}"
    upgrade = f"""\
op.create_table("{t}", sa.Column("id", sa.Integer(), primary_key=True),
                sa.Column("qty", sa.Integer(), nullable=False, server_default="0"))
op.execute("CREATE SEQUENCE {t}_no START 100 INCREMENT 5")
op.execute("CREATE VIEW {t}_view AS SELECT id, qty * 2 AS double FROM {t}")
op.execute("CREATE MATERIALIZED VIEW {t}_mat AS SELECT count(*) AS n FROM {t}")
op.execute("CREATE INDEX ix_{t}_mat ON {t}_mat (n)")
op.execute(
    "CREATE FUNCTION {t}_check() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN IF NEW.qty < 0 THEN RAISE EXCEPTION 'negative'; END IF; RETURN NEW; END $$"
)
op.execute("CREATE PROCEDURE {t}_reset() LANGUAGE sql AS $$ UPDATE {t} SET qty = 0 $$")
op.execute(
    "CREATE TRIGGER trg_{t} BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW "
    "EXECUTE FUNCTION {t}_check()"
)
op.execute("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")
op.execute("ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
op.execute("CREATE POLICY {t}_read ON {t} FOR SELECT TO {role} USING (qty >= 0)")
op.execute("GRANT SELECT, INSERT ON {t} TO {role}")
op.execute("GRANT USAGE ON SEQUENCE {t}_no TO {role}")
op.execute("REVOKE EXECUTE ON FUNCTION {t}_check() FROM PUBLIC")
op.execute("GRANT USAGE ON SCHEMA public TO {role}")
op.execute("COMMENT ON COLUMN {t}.qty IS 'how many'")
op.execute("CREATE UNLOGGED TABLE {t}_scratch (id int)")
op.execute("CREATE TABLE audit.{t}_log (id int PRIMARY KEY, at timestamptz DEFAULT now())")
op.execute("GRANT SELECT (qty), UPDATE (qty) ON {t} TO {role}")
op.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA audit GRANT SELECT ON TABLES TO {role}")
op.execute("ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC")
op.execute("ALTER VIEW {t}_view OWNER TO {role}")
op.execute("ALTER FUNCTION {t}_check() OWNER TO {role}")
"""
    downgrade = f"""\
op.execute("DROP TABLE audit.{t}_log")
op.execute("DROP TABLE {t}_scratch")
op.execute("DROP MATERIALIZED VIEW {t}_mat")
op.execute("DROP VIEW {t}_view")
op.drop_table("{t}")
op.execute("DROP PROCEDURE {t}_reset()")
op.execute("DROP FUNCTION {t}_check()")
op.execute("DROP SEQUENCE {t}_no")
"""
    return upgrade, downgrade


def test_no_false_drift_over_five_rounds_through_every_environment(pg_project: Project) -> None:
    project = pg_project
    _configure(project, dev_policy="refuse")
    for name in ("staging", "prod"):
        path = project.path / "environments" / f"{name}.yaml"
        path.write_text(path.read_text().replace("schema_drift: warn", "schema_drift: refuse"))
    role = f"r_{uuid.uuid4().hex[:12]}"
    _sql(project, "dev", f"CREATE ROLE {role}")
    project.add_revision(
        "f10000000000", HEAD, 'op.execute("CREATE SCHEMA audit")', 'op.execute("DROP SCHEMA audit")'
    )
    down = "f10000000000"
    for n in range(1, 6):
        rev = f"f1000000000{n}"
        project.add_revision(rev, down, *_round(n, role))
        down = rev
        for args in (("migrate", "dev"), ("migrate", "staging"), ("promote", "prod", "--approve")):
            for _ in range(2):  # up, then re-run (nothing to do: the drift check still runs)
                result = project.run(*args)
                assert result.code == 0, (n, args, result.output)
        for env in ("dev", "staging", "prod"):
            drift = project.run("drift", env)
            assert drift.code == 0, (n, env, drift.stdout)
        assert _status(project) == {"dev": "ok", "staging": "ok", "prod": "ok"}, n
        assert project.run("drift", "prod", "--against", "staging").code == 0
    description = json.loads(
        project.query("prod", "SELECT description FROM orchestrator_schema ORDER BY id DESC")[0][0]
    )
    assert "item5_check()" in description["functions"]
    assert description["grants"]["table item5"][role] == ["INSERT", "SELECT"]
    assert "item5_log" in description["schemas"]["audit"]["tables"]
    assert "orchestrator_audit_append_only()" not in description["functions"]
    assert description["owners"]["view item5_view"] == role
    assert "table item5" not in description["owners"]  # the deploy role's: not listed
    assert description["column_grants"]["column item5.qty"] == {role: ["SELECT", "UPDATE"]}
    assert description["schemas"]["audit"]["default_privileges"] == {
        "tables for (deploy role) in schema audit": {role: ["SELECT"]}
    }
    assert (
        "PUBLIC"
        not in description["default_privileges"]["functions for (deploy role) in every schema"]
    )


# -- a record of the previous release ----------------------------------------------------------


def _as_previous_release(project: Project, env: str) -> None:
    """Rewrite the newest recorded schema as the previous release recorded it: tables and
    enums only, its fingerprint over that, its catalog stamp of another format."""
    from orchestrator.schema.description import fingerprint

    rid, text = project.query(
        env, "SELECT id, description FROM orchestrator_schema ORDER BY id DESC"
    )[0]
    full = json.loads(text)
    old = {k: full[k] for k in ("dialect", "tables", "enums", "render")}
    engine = project.engine(env)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "UPDATE orchestrator_schema SET description = :d, fingerprint = :f, "
                    "stamp = '1 2' WHERE id = :id"
                ),
                {"d": json.dumps(old), "f": fingerprint(old), "id": rid},
            )
    finally:
        engine.dispose()


def test_a_record_of_the_previous_release_reads_until_the_next_run(watched: Project) -> None:
    project = watched
    _as_previous_release(project, "dev")
    assert _status(project)["dev"] == "ok"
    clean = project.run("drift", "dev")
    assert clean.code == 0, clean.stdout
    assert "not recorded" in clean.stdout
    # what it did not record is not drift; what it recorded still is
    _sql(project, "dev", "CREATE OR REPLACE VIEW big_orders AS SELECT id, total FROM orders")
    assert project.run("drift", "dev").code == 0
    assert _status(project)["dev"] == "ok"
    _sql(project, "dev", "CREATE INDEX ix_users_name ON users (display_name)")
    drift = project.run("drift", "dev")
    assert drift.code == 3 and "+ index ix_users_name" in drift.stdout
    assert _status(project)["dev"] == "drifted"
    # the next run records the fuller description: the view is watched from then on
    _sql(project, "dev", "DROP INDEX ix_users_name")
    project.add_revision("f00000000002", WATCHED, "pass", "pass")
    assert project.run("migrate", "dev").code == 0
    assert project.run("drift", "dev").code == 0
    _sql(
        project, "dev", "CREATE OR REPLACE VIEW big_orders AS SELECT id, total, 1 AS n FROM orders"
    )
    later = project.run("drift", "dev")
    assert later.code == 3 and "~ view big_orders" in later.stdout


def test_a_listed_schema_that_does_not_exist_is_recorded_absent(pg_project: Project) -> None:
    project = pg_project
    _configure(project)
    assert project.run("migrate", "dev").code == 0
    description = json.loads(
        project.query("dev", "SELECT description FROM orchestrator_schema ORDER BY id DESC")[0][0]
    )
    assert description["schemas"] == {"audit": None}
    _sql(project, "dev", "CREATE SCHEMA audit")
    drift = project.run("drift", "dev")
    assert drift.code == 3 and "+ schema audit" in drift.stdout
    assert "DROP SCHEMA audit" in drift.stdout


def test_schemas_must_be_a_list_of_names(pg_project: Project) -> None:
    project = pg_project
    path = project.path / "environments" / "dev.yaml"
    path.write_text(path.read_text() + "schemas: []\n")
    result = project.run("status")
    assert result.code == 2 and "schemas" in result.stderr and "Traceback" not in result.stderr
    path.write_text(path.read_text().replace("schemas: []", "schemas: [public]\nschemaz: 1"))
    result = project.run("status")
    assert result.code == 2 and "unknown key `schemaz`" in result.stderr


def test_sqlite_views_and_triggers_are_watched(sqlite_project: Project) -> None:
    project = sqlite_project
    project.add_revision(
        WATCHED,
        HEAD,
        'op.execute("CREATE VIEW big_orders AS SELECT id FROM orders WHERE total > 100")',
        'op.execute("DROP VIEW big_orders")',
    )
    assert project.run("migrate", "dev").code == 0
    _sql(
        project,
        "dev",
        "CREATE TRIGGER trg_users AFTER INSERT ON users BEGIN SELECT 1; END",
        "DROP VIEW big_orders",
        "CREATE VIEW big_orders AS SELECT id FROM orders WHERE total > 1",
    )
    drift = project.run("drift", "dev")
    assert drift.code == 3
    assert "~ view big_orders: definition" in drift.stdout
    assert "+ trigger trg_users on users" in drift.stdout
    assert "DROP TRIGGER trg_users" in drift.stdout
    assert _status(project)["dev"] == "drifted"


def _as_first_whole_schema_release(project: Project, env: str) -> None:
    """Rewrite the newest recorded schema as the release before owners, column grants and
    default privileges were watched recorded it: without those sections."""
    from orchestrator.schema.description import fingerprint

    rid, text = project.query(
        env, "SELECT id, description FROM orchestrator_schema ORDER BY id DESC"
    )[0]
    old = json.loads(text)
    later = ("owners", "column_grants", "default_privileges")
    for described in [old, *(old.get("schemas") or {}).values()]:
        for key in later:
            (described or {}).pop(key, None)
    engine = project.engine(env)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "UPDATE orchestrator_schema SET description = :d, fingerprint = :f, "
                    "stamp = '2:1 2' WHERE id = :id"
                ),
                {"d": json.dumps(old), "f": fingerprint(old), "id": rid},
            )
    finally:
        engine.dispose()


def test_a_record_without_owners_and_privileges_reads_them_as_not_recorded(
    watched: Project,
) -> None:
    project = watched
    role = f"{ROLE}_{uuid.uuid4().hex[:6]}"
    _sql(project, "dev", f"CREATE ROLE {role}")
    _as_first_whole_schema_release(project, "dev")
    assert _status(project)["dev"] == "ok"
    clean = project.run("drift", "dev")
    assert clean.code == 0, clean.stdout
    assert "not recorded" in clean.stdout and "owners" in clean.stdout, clean.stdout
    _sql(
        project,
        "dev",
        f"ALTER TABLE users OWNER TO {role}",
        f"GRANT SELECT (email) ON users TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
    )
    assert project.run("drift", "dev").code == 0
    assert _status(project)["dev"] == "ok"
    # what it recorded still is drift
    _sql(project, "dev", "CREATE OR REPLACE VIEW big_orders AS SELECT id, total FROM orders")
    assert project.run("drift", "dev").code == 3
    _sql(
        project,
        "dev",
        "CREATE OR REPLACE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100",
    )
    # the next run records them: from then on a change of owner is drift
    project.add_revision("f00000000002", WATCHED, "pass", "pass")
    assert project.run("migrate", "dev").code == 0
    assert project.run("drift", "dev").code == 0
    _sql(project, "dev", "ALTER TABLE users OWNER TO SESSION_USER")
    later = project.run("drift", "dev")
    assert later.code == 3, later.stdout
    assert f"~ owner of table users: {role} -> (deploy role)" in later.stdout
