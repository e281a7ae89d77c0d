"""Histories nobody here wrote (issue 19), through the README's story: dev on SQLite, staging
and prod on PostgreSQL, lint `warn` on dev and staging, `error` on prod.

The history on top of the shipped one has the shapes real projects have:

- D1 `upgrade()` wrapped by a decorator that skips SQLite (Alembic logs it as `wrapper`),
  changing a column type (squawk: changing-column-type), with an argument Alembic warns about;
- D2 a data migration that reads rows through the connection and rewrites them, importing the
  project's own module and a third-party package, with a `pass` downgrade: it cannot be
  rendered offline, so it cannot be linted;
- D3 batch operations that need a live connection on SQLite (table recreate);
- D4 a PostgreSQL enum created and dropped.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from projectkit import HEAD, Project, make_project

D1, D2, D3, D4 = "d1d1d1d1d1d1", "d2d2d2d2d2d2", "d3d3d3d3d3d3", "d4d4d4d4d4d4"
NEW = [D1, D2, D3, D4]
TYPE_RULE = "changing-column-type"
UNIQUE_RULE = "disallowed-unique-constraint"
VALID_RULE = "constraint-missing-not-valid"

DECORATED = '''\
"""widen users.name (PostgreSQL only: SQLite does not enforce lengths)

Revision ID: {rev}
Revises: {down}
{waiver}
"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def skip_on_sqlite(fn):
    def wrapper():
        if op.get_context().dialect.name == "sqlite":
            return
        fn()

    return wrapper


@skip_on_sqlite
def upgrade():
    op.alter_column(
        "users",
        "name",
        existing_type=sa.String(100),
        type_=sa.String(200),
        existing_autoincrement=False,
    )


@skip_on_sqlite
def downgrade():
    op.alter_column("users", "name", existing_type=sa.String(200), type_=sa.String(100))
'''

DATA = '''\
"""lower-case every email (reads the rows, rewrites them)

Revision ID: {rev}
Revises: {down}
{waiver}
"""
import sqlalchemy as sa
import yaml  # a third-party package, imported as real histories do
from alembic import op

from app.emails import normalise  # the project's own module

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, email FROM users ORDER BY id")).fetchall()
    for id_, email in rows:
        connection.execute(
            sa.text("UPDATE users SET email = :email WHERE id = :id"),
            {{"email": normalise(email), "id": id_}},
        )
    assert yaml.safe_load("ok: 1") == {{"ok": 1}}


def downgrade():
    pass
'''

BATCH = '''\
"""users.nickname, unique

Revision ID: {rev}
Revises: {down}

# orchestrator: allow disallowed-unique-constraint, constraint-missing-not-valid
#   -- users is small everywhere
"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("nickname", sa.String(50), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.create_unique_constraint("uq_users_nickname", ["nickname"])


def downgrade():
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_nickname", type_="unique")
        batch.drop_column("nickname")
'''

ENUM = '''\
"""orders.state, a PostgreSQL enum

Revision ID: {rev}
Revises: {down}
"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None

order_state = sa.Enum("new", "paid", "shipped", name="order_state")


def upgrade():
    order_state.create(op.get_bind(), checkfirst=False)  # nothing on SQLite
    op.add_column("orders", sa.Column("state", order_state, nullable=True))


def downgrade():
    op.drop_column("orders", "state")
    order_state.drop(op.get_bind(), checkfirst=False)
'''

EMAILS = '''\
"""The application's e-mail helpers (imported by a revision)."""


def normalise(email: str) -> str:
    return email.strip().lower()
'''


def write_history(project: Project, waive: bool) -> None:
    """The four revisions on top of the shipped head; `waive`: with the waivers prod needs."""
    sources = [
        (D1, DECORATED, f"# orchestrator: allow {TYPE_RULE}  -- users is small" if waive else ""),
        (D2, DATA, "# orchestrator: allow unlintable  -- reviewed by hand" if waive else ""),
        (D3, BATCH, ""),
        (D4, ENUM, ""),
    ]
    down = HEAD
    for rev, template, waiver in sources:
        text = template.format(rev=rev, down=down, waiver=waiver)
        (project.versions / f"{rev}_history.py").write_text(text)
        down = rev
    (project.path / "app" / "emails.py").write_text(EMAILS)


@pytest.fixture
def story(tmp_path: Path, pg_url_factory: Callable[[], str]) -> Project:
    """The README's story: dev on SQLite (lint warn), staging (warn) and prod (error) on
    PostgreSQL, as shipped."""
    urls = {
        "dev": f"sqlite:///{tmp_path / 'dev.db'}",
        "staging": pg_url_factory(),
        "prod": pg_url_factory(),
    }
    return make_project(tmp_path / "project", urls)


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line is one JSON object (ORCHESTRATOR_LOG_FORMAT=json)."""
    events = []
    for line in stderr.splitlines():
        assert line.startswith("{"), f"not a JSON line: {line!r}"
        events.append(json.loads(line))
    return events


def lint_events(stderr: str) -> list[tuple[str, str]]:
    return [(e["revision"], e["rule"]) for e in json_lines(stderr) if e["event"] == "lint.finding"]


def run_events(project: Project, env: str) -> list[dict[str, Any]]:
    events = project.audit_events(env)
    return [e for e in events if e["run_id"] == events[-1]["run_id"]]


def add_user(project: Project, env: str, email: str) -> None:
    engine = project.engine(env)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO users (name, email) VALUES ('Ann', ?)"
                if env == "dev"
                else "INSERT INTO users (name, email) VALUES ('Ann', %s)",
                (email,),
            )
    finally:
        engine.dispose()


# -- the story, prod refusing what it cannot accept ------------------------------------------------


def test_the_story_on_a_history_with_every_shape(story: Project) -> None:
    project = story
    write_history(project, waive=False)

    # dev, SQLite, lint warn: everything runs; what cannot be linted is a warning naming it
    dev = project.run("migrate", "dev", "--to", HEAD)
    assert dev.code == 0, dev.stderr
    add_user(project, "dev", " Ann@Example.COM ")
    dev = project.run("migrate", "dev")
    assert dev.code == 0, dev.stderr
    assert project.version("dev") == [D4]
    assert project.query("dev", "SELECT email FROM users") == [("ann@example.com",)]
    # charged to the revision that holds the statement, the decorated one included
    assert lint_events(dev.stderr) == [(D1, TYPE_RULE), (D2, "unlintable")]
    unlintable = next(e for e in json_lines(dev.stderr) if e.get("rule") == "unlintable")
    assert "AttributeError" in unlintable["message"] and "fetchall" in unlintable["message"]
    source = (project.versions / f"{D2}_history.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if ".fetchall()" in text)
    assert f"(line {line} of {D2}_history.py)" in unlintable["message"]
    # Alembic's own Python warning is a JSON line like the rest (json_lines checked them all)
    assert any("only make sense for MySQL" in e["event"] for e in json_lines(dev.stderr))
    events = run_events(project, "dev")
    assert events[0]["lint_findings"] == [f"{D1}:{TYPE_RULE}", f"{D2}:unlintable"]
    assert events[0]["waivers"] == [f"{D3}:{VALID_RULE}", f"{D3}:{UNIQUE_RULE}"]

    # staging, PostgreSQL, lint warn: plan then migrate
    assert project.run("migrate", "staging", "--to", HEAD).code == 0
    add_user(project, "staging", "Bob@Example.COM")
    plan = project.run("plan", "staging", "--json")
    assert plan.code == 0, plan.stderr
    found = [(f["revision"], f["rule"], f["waived"]) for f in plan.json()["lint"]]
    assert found == [
        (D1, TYPE_RULE, False),
        (D2, "unlintable", False),
        (D3, VALID_RULE, True),
        (D3, UNIQUE_RULE, True),
    ]
    staging = project.run("migrate", "staging")
    assert staging.code == 0, staging.stderr
    assert project.version("staging") == [D4]
    assert project.query("staging", "SELECT email FROM users") == [("bob@example.com",)]
    enum = "SELECT typname FROM pg_type WHERE typname = 'order_state'"
    assert project.query("staging", enum) == [("order_state",)]

    # prod, lint error: the shipped revisions first, so that the decorated revision is the
    # first pending one (its SQL once vanished there)
    assert project.run("migrate", "prod", "--to", HEAD, "--approve").code == 0
    refused = project.run("promote", "prod", "--approve")
    assert refused.code == 3, refused.stderr
    assert project.version("prod") == [HEAD]
    message = json_lines(refused.stderr)[-1]["error"]
    assert f"{D1} breaks {TYPE_RULE}" in message
    assert f"{D2} breaks unlintable" in message and "fetchall" in message
    assert UNIQUE_RULE not in message  # waived in its own file
    # staging ran those files: the waivers offered are lines of prod's own file
    assert f'    "{D1}": [{TYPE_RULE}]\n' in message
    assert f'    "{D2}": [unlintable]' in message
    assert "# orchestrator: allow" not in message
    assert "Traceback" not in refused.stderr
    events = run_events(project, "prod")
    assert [e["event"] for e in events] == ["run.started", "run.refused"]
    assert [(f["revision"], f["rule"]) for f in events[-1]["findings"]] == [
        (D1, TYPE_RULE),
        (D2, "unlintable"),
    ]

    # plain alembic applies the same lint policy, with the same message
    plain = project.alembic("-x", "env=prod", "-x", "approve=yes", "upgrade", "head")
    assert plain.code != 0
    assert f"{D1} breaks {TYPE_RULE}" in plain.stderr
    assert f"{D2} breaks unlintable" in plain.stderr
    assert "Traceback" not in plain.stderr
    assert project.version("prod") == [HEAD]
    events = run_events(project, "prod")
    assert [e["event"] for e in events] == ["run.started", "run.refused"]
    assert events[0]["command"] == "alembic upgrade"


def test_waivers_let_it_through_and_plain_alembic_records_the_gate(story: Project) -> None:
    project = story
    write_history(project, waive=True)
    assert project.run("migrate", "dev").code == 0

    # staging through plain alembic: linted and gated like `migrate`, with the same events
    plain = project.alembic("-x", "env=staging", "upgrade", "head")
    assert plain.code == 0, plain.stderr
    assert project.version("staging") == [D4]
    events = run_events(project, "staging")
    names = [e["event"] for e in events]
    assert names[:2] == ["run.started", "lock.acquired"]
    assert "gate.passed" in names and "run.succeeded" in names
    assert names.count("migration.applied") == 9
    waivers = {f"{D1}:{TYPE_RULE}", f"{D2}:unlintable", f"{D3}:{UNIQUE_RULE}"}
    assert waivers <= set(events[0]["waivers"])

    promoted = project.run("promote", "prod", "--approve")
    assert promoted.code == 0, promoted.stderr
    assert project.version("prod") == [D4]
    events = run_events(project, "prod")
    assert "gate.passed" in [e["event"] for e in events]
    assert waivers <= set(events[-1]["waivers"])

    # down through the `pass` downgrade: done, and said
    down = project.run("downgrade", "staging", "--to", HEAD, "--reason", "rehearsal")
    assert down.code == 0, down.stderr
    assert project.version("staging") == [HEAD]
    assert (
        project.query("staging", "SELECT typname FROM pg_type WHERE typname = 'order_state'") == []
    )
    hollow = [e for e in json_lines(down.stderr) if e["event"] == "downgrade.reverts_nothing"]
    assert [e["revision"] for e in hollow] == [D2]
    reverted = [e for e in run_events(project, "staging") if e["event"] == "migration.reverted"]
    assert [(e["revision"], e.get("reverted_nothing")) for e in reverted] == [
        (D4, None),
        (D3, None),
        (D2, True),
        (D1, None),
    ]

    # plain alembic says it too (dev, SQLite: the batch downgrade recreates the table)
    plain = project.alembic("-x", "env=dev", "downgrade", HEAD)
    assert plain.code == 0, plain.stderr
    assert project.version("dev") == [HEAD]
    hollow = [e for e in json_lines(plain.stderr) if e["event"] == "downgrade.reverts_nothing"]
    assert [e["revision"] for e in hollow] == [D2]


# -- offline rendering, per revision -------------------------------------------------------------


def test_plan_sql_shows_each_revision_and_names_the_one_that_cannot_render(
    story: Project,
) -> None:
    project = story
    write_history(project, waive=True)
    assert project.run("migrate", "dev", "--to", HEAD).code == 0

    dev = project.run("plan", "dev", "--sql", "--json")  # SQLite: batch needs a connection
    assert dev.code == 0, dev.stderr
    sql = dev.json()["sql"]
    assert list(sql) == NEW
    assert "cannot be rendered offline" in sql[D2] and "fetchall" in sql[D2]
    assert "cannot be rendered offline" in sql[D3] and "CommandError" in sql[D3]
    assert "live database connection" in sql[D3]
    assert "ALTER TABLE orders ADD COLUMN state" in sql[D4]

    prod = project.run("plan", "prod", "--sql", "--json")
    sql = prod.json()["sql"]
    assert "ALTER TABLE users ALTER COLUMN name TYPE VARCHAR(200)" in sql[D1]
    assert "CREATE TYPE order_state AS ENUM" in sql[D4]
    assert "order_state" not in sql[D3] and "nickname" not in sql[D4]


def test_a_revision_that_fails_to_import_is_named(story: Project) -> None:
    project = story
    write_history(project, waive=True)
    path = project.versions / f"{D2}_history.py"
    path.write_text(path.read_text().replace("import yaml ", "import no_such_package "))
    for lint in ("warn", "off"):
        dev = (project.path / "environments" / "dev.yaml").read_text()
        project.write_env("dev", dev.replace("lint: warn", f"lint: {lint}"))
        result = project.run("migrate", "dev")
        assert result.code == 2, result.stderr
        assert f"Revision {D2} ({D2}_history.py) failed to import" in result.stderr
        assert "No module named 'no_such_package'" in result.stderr
        assert "unexpected error" not in result.stderr
        assert project.version("dev") == []
        dev = (project.path / "environments" / "dev.yaml").read_text()
        project.write_env("dev", dev.replace(f"lint: {lint}", "lint: warn"))
    checked = project.run("check")
    assert checked.code == 2, checked.output
    assert f"Revision {D2} ({D2}_history.py) failed to import" in checked.stderr


# -- check ---------------------------------------------------------------------------------------


def test_check_without_target_metadata_reports_the_rest(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", {})
    env_py = project.path / "alembic" / "env.py"
    env_py.write_text(
        textwrap.dedent("""\
            from orchestrator.alembic_env import run_migrations

            run_migrations(target_metadata=None)
            """)
    )
    write_history(project, waive=False)
    result = project.run("check", "--json")
    assert result.code == 3, result.stderr
    findings = result.json()
    assert [(f["check"], f.get("revision"), f.get("rule")) for f in findings] == [
        ("downgrade_does_something", D2, None),
        ("lint", D1, TYPE_RULE),
        ("lint", D2, "unlintable"),
    ]
    skipped = [e for e in json_lines(result.stderr) if e["event"] == "check.skipped"]
    assert [e["check"] for e in skipped] == ["models_match_migrations"]
    assert "target_metadata=None" in skipped[0]["reason"]


# -- git sha of what ran -------------------------------------------------------------------------


def test_uncommitted_revision_files_are_recorded_as_dirty(sqlite_project: Project) -> None:
    project = sqlite_project

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
            cwd=project.path,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    git("init", "-q")
    (project.path / ".gitignore").write_text("*.db\n__pycache__/\n.orchestrator/\n")
    git("add", ".")
    git("commit", "-qm", "the shipped history")
    sha = git("rev-parse", "HEAD")

    assert project.run("migrate", "dev", "--to", HEAD).code == 0
    clean = run_events(project, "dev")
    assert {e["git_sha"] for e in clean} == {sha}
    assert not any("git_dirty" in e for e in clean)

    write_history(project, waive=True)  # new revision files, not committed
    assert project.run("migrate", "dev").code == 0
    dirty = run_events(project, "dev")
    assert {e["git_sha"] for e in dirty} == {sha}
    assert all(e["git_dirty"] is True for e in dirty)
