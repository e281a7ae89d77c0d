"""What runs is what was reviewed (SPEC Part 3): the files a revision reads while it runs,
env.py, plans that cannot be bent, resuming a stopped plan, plain Alembic under plans.

Real PostgreSQL, the CLI and plain `alembic` in subprocesses."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from pgcluster import PgCluster
from projectkit import HEAD, SHIPPED, Project, add_chain, dbname, finish, sign_env, wait_for
from test_fencing import BLOCK, BLOCKING_BODY
from test_plans import apply, approve, approver, make_plan, resign, rewrite, set_policy

READER = "0a0a0a0a0a0a"

# The common pattern: the SQL lives in a file beside the revisions. SQL_FILE, when set,
# names another file (what a run there reads is known only while it runs).
READER_BODY = """
import os
name = os.environ.get("SQL_FILE", "alembic/sql/r3.sql")
with open(name) as sql:
    op.execute(sql.read())
"""


def add_reader(project: Project) -> Path:
    sql = project.path / "alembic" / "sql" / "r3.sql"
    sql.parent.mkdir(exist_ok=True)
    sql.write_text("CREATE TABLE r3_table (id integer PRIMARY KEY);\n")
    project.add_revision(READER, HEAD, READER_BODY, 'op.execute("DROP TABLE r3_table")')
    return sql


def ledger_reads(project: Project, env: str, revision: str) -> dict[str, str] | None:
    rows = project.query(
        env,
        f"SELECT reads FROM orchestrator_ledger WHERE revision = '{revision}' ORDER BY id",
    )
    return json.loads(rows[-1][0]) if rows and rows[-1][0] is not None else None


def test_a_sql_file_edited_after_staging_read_it_is_refused(pg_project: Project) -> None:
    sql = add_reader(pg_project)
    for env in ("dev", "staging"):
        done = pg_project.run("migrate", env)
        assert done.code == 0, done.output
    reads = ledger_reads(pg_project, "staging", READER)
    assert reads is not None and list(reads) == ["alembic/sql/r3.sql"], reads

    sql.write_text("CREATE TABLE r3_table (id integer PRIMARY KEY); DROP TABLE users;\n")
    refused = pg_project.run("migrate", "prod", "--approve")
    assert refused.code == 3, refused.output
    assert "reads alembic/sql/r3.sql, which differs from what staging's run of it read" in (
        refused.stderr
    )
    assert pg_project.version("prod") == []
    plan = pg_project.run("plan", "prod")
    assert plan.code == 3 and "reads alembic/sql/r3.sql" in plan.stdout, plan.output
    plain = pg_project.alembic("-x", "env=prod", "-x", "approve=yes", "upgrade", "head")
    assert plain.code != 0 and "reads alembic/sql/r3.sql" in plain.stderr, plain.output
    assert pg_project.version("prod") == []

    sql.write_text("CREATE TABLE r3_table (id integer PRIMARY KEY);\n")  # as staging read it
    done = pg_project.run("migrate", "prod", "--approve")
    assert done.code == 0, done.output
    assert "r3_table" in pg_project.schema("prod")


def test_a_file_only_known_while_the_revision_runs_is_checked_before_it_commits(
    pg_project: Project,
) -> None:
    add_reader(pg_project)
    for env in ("dev", "staging"):
        assert pg_project.run("migrate", env).code == 0
    other = pg_project.path / "alembic" / "sql" / "other.sql"
    other.write_text("CREATE TABLE r3_table (id integer PRIMARY KEY, evil text);\n")
    plain = pg_project.alembic(
        "-x", "env=prod", "-x", "approve=yes", "upgrade", "head", SQL_FILE="alembic/sql/other.sql"
    )
    assert plain.code != 0 and "read alembic/sql/other.sql while it ran" in plain.stderr
    assert "r3_table" not in pg_project.schema("prod")
    refused = pg_project.run("migrate", "prod", "--approve", SQL_FILE="alembic/sql/other.sql")
    assert refused.code == 3, refused.output
    assert f"{READER} read alembic/sql/other.sql while it ran" in refused.stderr
    assert "rolled back" in refused.stderr and "Traceback" not in refused.stderr
    assert pg_project.version("prod") == [HEAD]  # the revisions before it ran
    assert "r3_table" not in pg_project.schema("prod")
    assert [e["event"] for e in pg_project.audit_events("prod")][-2:] == [
        "run.refused",
        "lock.released",
    ]


# -- a plan run stopped by SIGTERM goes on with the same plan ------------------------------


def test_a_plan_run_stopped_by_sigterm_goes_on_with_the_same_plan(
    pg_project: Project, pg_cluster: PgCluster, procs: list
) -> None:
    for env in ("dev", "staging", "prod"):
        assert pg_project.run("migrate", env, "--approve").code == 0
    quick, blocking, after = add_chain(
        pg_project,
        HEAD,
        'op.create_table("side_effects", sa.Column("n", sa.Integer))',
        BLOCKING_BODY,
        'op.create_table("after_blocking", sa.Column("id", sa.Integer, primary_key=True))',
    )
    for env in ("dev", "staging"):
        assert pg_project.run("migrate", env).code == 0
    plan = pg_project.path / "plan.json"
    # the SQL reviewed is the SQL that runs: the plan is made as the run will render it
    made = pg_project.run("plan", "prod", "--out", str(plan), TEST_BLOCK="1")
    assert made.code == 0, made.output

    blocker = pg_cluster.connect(dbname(pg_project, "prod"))
    try:
        blocker.execute(f"SELECT pg_advisory_lock({BLOCK})")
        runner = pg_project.popen(
            "migrate", "prod", "--plan", str(plan), "--approve", TEST_BLOCK="1"
        )
        procs.append(runner)
        wait_for(
            "the plan's run inside the blocking revision",
            lambda: (
                runner.poll() is not None
                or pg_project.query(
                    "prod",
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'advisory' "
                    "AND application_name LIKE 'orchestrator run=%' "
                    "AND datname = current_database()",
                )
            ),
            timeout=120,
        )
        runner.send_signal(signal.SIGTERM)
        blocker.execute(f"SELECT pg_advisory_unlock({BLOCK})")
        code, _, err = finish(runner, 120)
    finally:
        blocker.close()
    assert code == 143, err[-3000:]
    assert pg_project.version("prod") == [blocking]

    again = pg_project.run("migrate", "prod", "--plan", str(plan), "--approve", "--json")
    assert again.code == 0, again.output
    assert again.json()[0]["applied"] == [after]
    assert [r for r, d in pg_project.ledger("prod") if d == "up"][-3:] == [quick, blocking, after]

    # applied whole now: the same plan again is a no-op
    assert pg_project.run("migrate", "prod", "--plan", str(plan), "--approve").code == 0


# -- plans that cannot be bent -------------------------------------------------------------


def test_an_unsigned_plan_edited_by_whoever_holds_the_file_is_refused(
    pg_project: Project,
) -> None:
    """No approvers configured: the writer's signature alone seals expiry, steps, evidence."""
    sign_env(pg_project, "staging")
    for env in ("dev", "staging"):
        assert pg_project.run("migrate", env).code == 0
    plan = make_plan(pg_project)
    assert len(json.loads(plan.read_text())["signatures"]) == 1  # the writer's
    rewrite(plan, lambda b: b.update(expires_at="2999-01-01T00:00:00Z"))
    done = apply(pg_project, plan)
    assert done.code == 3, done.output
    assert "altered after it was written" in done.stderr
    assert "no valid signature by the key of staging" in done.stderr
    assert pg_project.version("prod") == []

    plan = make_plan(pg_project)  # as written: applied
    done = apply(pg_project, plan)
    assert done.code == 0, done.output


def test_a_plan_that_reads_an_edited_file_is_refused(pg_project: Project) -> None:
    sign_env(pg_project, "staging")
    sql = add_reader(pg_project)
    for env in ("dev", "staging"):
        assert pg_project.run("migrate", env).code == 0
    plan = make_plan(pg_project)
    shown = pg_project.run("plan", "show", str(plan), "--format", "json")
    (step,) = [s for s in shown.json()["steps"] if s["revision"] == READER]
    assert list(step["reads"]) == ["alembic/sql/r3.sql"]

    sql.write_text("CREATE TABLE r3_table (id integer PRIMARY KEY); DROP TABLE users;\n")
    done = apply(pg_project, plan)
    assert done.code == 3, done.output
    assert f"alembic/sql/r3.sql (read by {READER}) changed since the plan was made" in done.stderr
    assert pg_project.version("prod") == []


def test_a_step_whose_sql_renders_otherwise_is_refused(pg_project: Project) -> None:
    sign_env(pg_project, "staging")
    for env in ("dev", "staging"):
        assert pg_project.run("migrate", env).code == 0
    plan = make_plan(pg_project)

    def other_sql(body: dict[str, Any]) -> None:
        body["steps"][1]["sql_sha256"] = "0" * 64

    rewrite(plan, other_sql)
    resign(pg_project, plan, "STAGING_KEY")  # even by the writer's own key
    done = apply(pg_project, plan)
    assert done.code == 3, done.output
    assert f"the SQL of {SHIPPED[1]} renders differently now than in the plan" in done.stderr
    assert pg_project.version("prod") == []


def test_a_plan_that_leaves_out_a_step_on_the_path_is_refused(pg_project: Project) -> None:
    sign_env(pg_project, "staging")
    for env in ("dev", "staging"):
        assert pg_project.run("migrate", env).code == 0
    plan = make_plan(pg_project)

    def omit(body: dict[str, Any]) -> None:
        body["steps"] = [s for s in body["steps"] if s["revision"] != SHIPPED[2]]

    rewrite(plan, omit)
    resign(pg_project, plan, "STAGING_KEY")
    done = apply(pg_project, plan)
    assert done.code == 3, done.output
    assert f"{SHIPPED[2]} would run but are not in the plan" in done.stderr
    assert pg_project.version("prod") == []


def test_a_fleet_plan_missing_a_database_is_refused(
    pg_project: Project, pg_cluster: PgCluster
) -> None:
    project = pg_project
    prefix = dbname(project, "staging")
    server = project.urls["staging"].rsplit("/", 1)[0]
    for name in ("s1", "s2"):
        pg_cluster.create_database(f"{prefix}_{name}")
        project.extra_env[f"STAGING_{name.upper()}_URL"] = f"{server}/{prefix}_{name}"
    try:
        project.write_env(
            "staging",
            """
            name: staging
            promotes_from: dev
            database:
              targets:
                - {name: s1, url_env: STAGING_S1_URL}
                - {name: s2, url_env: STAGING_S2_URL}
            policy:
              lint: warn
            """,
        )
        sign_env(project, "staging")
        assert project.run("migrate", "dev").code == 0
        done = project.run("migrate", "staging")
        assert done.code == 0, done.output
        plan = make_plan(project)

        def drop_s2(body: dict[str, Any]) -> None:  # as if s2 were not staging's
            del body["evidence"]["s2"]

        rewrite(plan, drop_s2)
        resign(project, plan, "STAGING_KEY")  # by whoever holds the writer's key
        done = project.run(
            "migrate",
            "prod",
            "--plan",
            str(plan),
            "--approve",
            STAGING_S1_URL="",
            STAGING_S2_URL="",
        )
        assert done.code == 3, done.output
        assert "not run on staging (s2)" in done.stderr, done.stderr
        assert project.version("prod") == []
    finally:
        for name in ("s1", "s2"):
            pg_cluster.drop_database(f"{prefix}_{name}")


# -- plain Alembic ---------------------------------------------------------------------------


def test_plain_alembic_honours_require_plan_and_plan_approvers(pg_project: Project) -> None:
    project = pg_project
    sign_env(project, "staging")
    project.extra_env["RM_KEY"] = approver(project, "release-manager")
    set_policy(project, "prod", require_plan=True, plan_approvers=["keys/release-manager.pub"])
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0

    bare = project.alembic("-x", "env=prod", "-x", "approve=yes", "upgrade", "head")
    assert bare.code != 0, bare.output
    assert "policy.require_plan" in bare.stderr and "Traceback" not in bare.stderr
    assert project.version("prod") == []

    plan = make_plan(project)
    unapproved = project.alembic(
        "-x", "env=prod", "-x", "approve=yes", "-x", f"plan={plan}", "upgrade", "head"
    )
    assert unapproved.code != 0, unapproved.output
    assert "lacks a required approval" in unapproved.stderr
    assert project.version("prod") == []

    approve(project, plan)
    done = project.alembic(
        "-x", "env=prod", "-x", "approve=yes", "-x", f"plan={plan}", "upgrade", "head"
    )
    assert done.code == 0, done.output
    assert project.version("prod") == [HEAD]
    ended = [e for e in project.audit_events("prod") if e["event"] == "run.succeeded"]
    assert ended[-1]["plan_sha256"], ended[-1]


def test_a_plain_alembic_upgrade_with_nothing_to_do_is_no_refusal(pg_project: Project) -> None:
    project = pg_project
    for env in ("dev", "staging", "prod"):
        assert project.run("migrate", env, "--approve").code == 0
    before = project.audit_events("prod")
    done = project.alembic("-x", "env=prod", "upgrade", "head")
    assert done.code == 0, done.output
    after = project.audit_events("prod")
    assert after == before  # no run, no refusal recorded


# -- a Flask-Migrate layout: the helper a revision imports is in its checksum ------------------


def test_a_helper_of_a_pkg_migrations_layout_is_in_the_checksum(pg_project: Project) -> None:
    """`pkg/migrations/alembic.ini` without `prepend_sys_path`, run from the project's root:
    the revision imports `pkg.migrations.utils` from the working directory on sys.path."""
    project = pg_project
    migrations = project.path / "pkg" / "migrations"
    (migrations / "versions").mkdir(parents=True)
    (project.path / "pkg" / "__init__.py").write_text("")
    (migrations / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\n")
    for name in ("env.py", "script.py.mako"):
        (migrations / name).write_text((project.path / "alembic" / name).read_text())
    (migrations / "utils.py").write_text('NAME = "flask_notes"\n')
    (migrations / "versions" / "b1b1b1b1b1b1_notes.py").write_text(
        '"""notes"""\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        "from pkg.migrations.utils import NAME\n\n"
        'revision = "b1b1b1b1b1b1"\ndown_revision = None\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade():\n"
        '    op.create_table(NAME, sa.Column("id", sa.Integer, primary_key=True))\n\n\n'
        "def downgrade():\n"
        "    op.drop_table(NAME)\n"
    )
    project.extra_env["ORCHESTRATOR_ALEMBIC_INI"] = str(migrations / "alembic.ini")
    for env in ("dev", "staging"):
        done = project.run("migrate", env)
        assert done.code == 0, done.output
    assert "flask_notes" in project.schema("staging")
    (checksum,) = project.query(
        "staging", "SELECT checksum FROM orchestrator_ledger WHERE revision = 'b1b1b1b1b1b1'"
    )[0]
    own = hashlib.sha256((migrations / "versions" / "b1b1b1b1b1b1_notes.py").read_bytes())
    assert checksum != own.hexdigest()  # the helper is in it

    (migrations / "utils.py").write_text('NAME = "other_notes"\n')
    rows = {r["env"]: r for r in project.run("status", "--json").json()}
    assert rows["staging"]["drift"] == ["b1b1b1b1b1b1"]
    refused = project.run("migrate", "prod", "--approve")
    assert refused.code == 3, refused.output
    assert "b1b1b1b1b1b1: edited since staging ran it" in refused.stderr


# -- env.py is part of every run's evidence ----------------------------------------------------


def test_a_different_env_py_is_said_and_refused_under_the_policy(pg_project: Project) -> None:
    project = pg_project
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0
    rows = {r["env"]: r for r in project.run("status", "--json").json()}
    assert rows["prod"]["env_py"] == "same" and rows["staging"]["env_py"] == "same"

    env_py = project.path / "alembic" / "env.py"
    env_py.write_text(env_py.read_text() + "# prod's own env.py\n")
    said = "env.py (or a project module it imports) differs from staging's last run"
    status = project.run("status")
    assert status.code == 0 and said in status.stdout, status.output
    rows = {r["env"]: r for r in project.run("status", "--json").json()}
    assert rows["prod"]["env_py"] == "differs" and said in rows["prod"]["env_py_note"]
    plan = project.run("plan", "prod")
    assert plan.code == 0 and said in plan.stdout, plan.output  # warn: said, not refused

    set_policy(project, "prod", same_env_py="refuse")
    plan = project.run("plan", "prod")
    assert plan.code == 3 and "policy.same_env_py: refuse" in plan.stdout, plan.output
    refused = project.run("migrate", "prod", "--approve")
    assert refused.code == 3, refused.output
    assert said in refused.stderr and project.version("prod") == []

    prod = project.path / "environments" / "prod.yaml"
    prod.write_text(prod.read_text().replace('same_env_py: "refuse"', 'same_env_py: "warn"'))
    done = project.run("migrate", "prod", "--approve")
    assert done.code == 0, done.output
    (warned,) = [e for e in project.audit_events("prod") if e["event"] == "env_py.differs"]
    assert said in warned["message"]


# -- bad input: exit 2 naming what is wrong, nothing recorded ------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("plan", "prod", "--out", "plan.json", "--ttl", "99999999999d"), "--ttl"),
        (("plan", "prod", "--out", "plan.json", "--ttl", "0s"), "--ttl"),
        (("audit", "--since", "99999999999d"), "99999999999d"),
        (("audit", "--since", "99999999999w"), "99999999999w"),
    ],
)
def test_durations_out_of_range_are_usage_errors(
    pg_project: Project, args: tuple[str, ...], message: str
) -> None:
    done = pg_project.run(*args)
    assert done.code == 2, done.output
    assert message in done.stderr
    assert "unexpected error" not in done.output and "Traceback" not in done.output


def test_durations_take_seconds(pg_project: Project) -> None:
    for env in ("dev", "staging"):
        assert pg_project.run("migrate", env).code == 0
    plan = pg_project.path / "plan.json"
    made = pg_project.run("plan", "prod", "--out", str(plan), "--ttl", "1s", "--json")
    assert made.code == 0, made.output
    assert pg_project.run("audit", "--since", "90s").code == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.update(targets="prod"), "its targets are not a list"),
        (lambda b: b["steps"][0].pop("checksum"), "its step #1 has no checksum"),
        (lambda b: b.update(steps={"a": 1}), "its steps are not a list"),
        (lambda b: b.update(evidence=[1]), "its evidence is not a list of rows"),
    ],
)
def test_a_plan_of_the_wrong_shape_is_a_usage_error_and_no_failed_run(
    pg_project: Project, change: Any, message: str
) -> None:
    for env in ("dev", "staging"):
        assert pg_project.run("migrate", env).code == 0
    plan = make_plan(pg_project)
    rewrite(plan, change)
    for args in (
        ("migrate", "prod", "--plan", str(plan), "--approve"),
        ("plan", "show", str(plan)),
    ):
        done = pg_project.run(*args)
        assert done.code == 2, done.output
        assert message in done.stderr, done.stderr
        assert "unexpected error" not in done.output and "Traceback" not in done.output
    assert pg_project.version("prod") == []
    assert not pg_project.query(
        "prod", "SELECT 1 FROM pg_tables WHERE tablename = 'orchestrator_audit'"
    )  # nothing recorded, no failed run
