"""What runs is what was reviewed (SPEC Part 3): the files a revision reads while it runs,
env.py, plans that cannot be bent, resuming a stopped plan, plain Alembic under plans.

Real PostgreSQL, the CLI and plain `alembic` in subprocesses."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from pgcluster import PgCluster
from projectkit import HEAD, Project
from test_fencing import BLOCK, BLOCKING_BODY, procs
from test_locking import add_chain, dbname, finish, wait_for

__all__ = ["procs"]  # fixture

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
    made = pg_project.run("plan", "prod", "--out", str(plan))
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
            lambda: pg_project.query(
                "prod",
                "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'advisory' "
                "AND application_name LIKE 'orchestrator run=%'",
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
