"""`orchestrator check` (SPEC "Commands"): the CI invariants, through the CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from projectkit import HEAD, REPO, SHIPPED, Project, make_project

WAIVER = "# orchestrator: allow require-concurrent-index-creation"


def checks(project: Project, *args: str) -> list[dict]:
    result = project.run("check", "--json", *args)
    assert result.code in (0, 3), result.stderr
    assert "Traceback" not in result.stderr
    findings = result.json()
    assert (result.code == 3) == bool(findings)
    return findings


def no_urls(tmp_path: Path) -> Project:
    """A project copy with no database URL variable at all: check needs none."""
    return make_project(tmp_path / "project", {})


def edit_models(project: Project, old: str, new: str) -> None:
    models = project.path / "app" / "models.py"
    text = models.read_text()
    assert old in text
    models.write_text(text.replace(old, new))


def test_passes_on_the_repo_as_shipped(tmp_path: Path) -> None:
    project = no_urls(tmp_path)
    result = project.run("check")
    assert result.code == 0, result.output
    assert "all invariants hold" in result.stdout


def test_passes_with_a_postgresql_scratch_database(tmp_path: Path, pg_db: str) -> None:
    assert checks(no_urls(tmp_path), "--scratch-url", pg_db) == []


def test_two_heads_is_a_finding_and_a_merge_fixes_it(tmp_path: Path) -> None:
    project = no_urls(tmp_path)
    project.add_revision(
        "f00000000001", SHIPPED[-2], "op.execute('SELECT 1')", "op.execute('SELECT 1')"
    )
    findings = checks(project)
    assert [f["check"] for f in findings] == ["single_head"]
    assert set(findings[0]["heads"]) == {HEAD, "f00000000001"}
    assert "alembic merge heads" in findings[0]["message"]

    # what the message says to do: a merge revision (which, rightly, reverts nothing)
    project.add_revision("f00000000002", (HEAD, "f00000000001"), "pass", "pass", doc="merge")
    assert checks(project) == []


def test_a_downgrade_that_does_nothing_is_a_finding(tmp_path: Path) -> None:
    project = no_urls(tmp_path)
    project.add_revision(
        "f00000000001",
        HEAD,
        'op.execute("UPDATE users SET display_name = name")',
        '"""nothing to undo?"""\npass',
    )
    findings = checks(project)
    assert [(f["check"], f.get("revision")) for f in findings] == [
        ("downgrade_does_something", "f00000000001")
    ]
    assert "NotImplementedError" in findings[0]["message"]

    # an explicit, loud refusal to downgrade is a downgrade that does something
    project.add_revision(
        "f00000000001",
        HEAD,
        'op.execute("UPDATE users SET display_name = name")',
        "raise NotImplementedError('display names cannot be un-backfilled')",
    )
    assert checks(project) == []


def test_a_downgrade_that_leaves_something_behind_is_named(tmp_path: Path, pg_db: str) -> None:
    """Up, down, up: the second upgrade trips over what the downgrade forgot. (Views: the
    models know nothing of them, and autogenerate does not compare them.)"""
    project = no_urls(tmp_path)
    project.add_revision(
        "f00000000001",
        HEAD,
        """
        op.execute("CREATE VIEW scratch_notes AS SELECT 1 AS one")
        op.execute("CREATE VIEW scratch_tags AS SELECT 2 AS two")
        """,
        'op.execute("DROP VIEW scratch_notes")',  # forgets scratch_tags
    )
    project.add_revision("f00000000002", "f00000000001", "pass", "pass", doc="after it")
    for args in ((), ("--scratch-url", pg_db)):
        findings = checks(project, *args)
        assert [(f["check"], f.get("revision")) for f in findings] == [
            ("up_down_consistency", "f00000000001")
        ], findings
        message = findings[0]["message"]
        assert "upgrading it again after its downgrade() fails" in message
        assert "scratch_tags" in message  # the database's own words
        assert "f00000000001_test.py" in message


def test_a_downgrade_that_fails_is_named(tmp_path: Path) -> None:
    project = no_urls(tmp_path)
    project.add_revision(
        "f00000000001",
        HEAD,
        'op.execute("CREATE VIEW scratch_notes AS SELECT 1 AS one")',
        'op.execute("DROP VIEW scratch_notez")',
    )
    findings = checks(project)
    assert [(f["check"], f.get("revision")) for f in findings] == [
        ("up_down_consistency", "f00000000001")
    ]
    assert "its downgrade() fails right after its upgrade()" in findings[0]["message"]
    assert "scratch_notez" in findings[0]["message"]

    project.add_revision(
        "f00000000001",
        HEAD,
        'op.execute("CREATE VIEW scratch_notes AS SELECT 1 AS one")',
        'op.execute("DROP VIEW scratch_notes")',
    )
    assert checks(project) == []


def test_a_model_changed_without_a_migration_is_a_finding(tmp_path: Path, pg_db: str) -> None:
    project = no_urls(tmp_path)
    edit_models(
        project,
        "display_name: Mapped[str | None] = mapped_column(String(100), nullable=True)",
        "display_name: Mapped[str | None] = mapped_column(String(100), nullable=True)\n"
        "    nickname: Mapped[str | None] = mapped_column(String(50), nullable=True)",
    )
    for args in ((), ("--scratch-url", pg_db)):
        findings = checks(project, *args)
        assert [f["check"] for f in findings] == ["models_match_migrations"], findings
        message = findings[0]["message"]
        assert "users.nickname" in message
        assert "alembic revision --autogenerate" in message

    # the repository's own models were not the ones compared
    assert "nickname" not in (REPO / "app" / "models.py").read_text()


def test_a_blocking_index_without_a_waiver_is_a_finding(tmp_path: Path) -> None:
    project = no_urls(tmp_path)
    edit_models(
        project,
        'Index("ix_users_email", "email", unique=True),',
        'Index("ix_users_email", "email", unique=True), Index("ix_users_name", "name"),',
    )
    upgrade = 'op.create_index("ix_users_name", "users", ["name"])'
    downgrade = 'op.drop_index("ix_users_name", table_name="users")'
    project.add_revision("f00000000001", HEAD, upgrade, downgrade)

    findings = checks(project)
    assert [(f["check"], f.get("revision"), f.get("rule")) for f in findings] == [
        ("lint", "f00000000001", "require-concurrent-index-creation")
    ]
    assert "# orchestrator: allow require-concurrent-index-creation" in findings[0]["message"]

    project.add_revision("f00000000001", HEAD, upgrade, downgrade, header=WAIVER)
    assert checks(project) == []


def test_the_strictest_environment_lint_exclude_applies(tmp_path: Path) -> None:
    project = no_urls(tmp_path)
    edit_models(
        project,
        'Index("ix_users_email", "email", unique=True),',
        'Index("ix_users_email", "email", unique=True), Index("ix_users_name", "name"),',
    )
    project.add_revision(
        "f00000000001",
        HEAD,
        'op.create_index("ix_users_name", "users", ["name"])',
        'op.drop_index("ix_users_name", table_name="users")',
    )
    prod = (project.path / "environments" / "prod.yaml").read_text()
    project.write_env(
        "prod",
        prod.replace(
            "  lint: error\n",
            "  lint: error\n  lint_exclude: [require-concurrent-index-creation]\n",
        ),
    )
    assert checks(project) == []


def test_squawk_missing_is_a_finding_not_a_pass(tmp_path: Path) -> None:
    """A real interpreter environment without squawk: the venv's packages, not its bin/."""
    project = no_urls(tmp_path)
    venv = Path(sys.prefix)
    bare = tmp_path / "bare"
    (bare / "bin").mkdir(parents=True)
    (bare / "pyvenv.cfg").write_text((venv / "pyvenv.cfg").read_text())
    (bare / "lib").symlink_to(venv / "lib")
    python = bare / "bin" / "python"
    python.symlink_to(Path(sys.base_prefix) / "bin" / "python3")
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if not (Path(p) / "squawk").exists()
    )
    import subprocess

    done = subprocess.run(
        [str(python), "-m", "orchestrator", "check", "--json"],
        cwd=project.path,
        env=project.environ(PATH=path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    import json

    findings = json.loads(done.stdout)
    assert [f["check"] for f in findings] == ["lint"]
    assert "squawk" in findings[0]["message"] and "pip install squawk-cli" in findings[0]["message"]


def test_a_scratch_database_that_is_not_empty_is_refused(tmp_path: Path, pg_db: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_db)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE customers (id integer)")
        connection.exec_driver_sql("INSERT INTO customers VALUES (1)")
    try:
        result = no_urls(tmp_path).run("check", "--scratch-url", pg_db)

        assert result.code == 2, result.output
        assert "is not empty" in result.stderr and "customers" in result.stderr
        with engine.connect() as connection:
            tables = sa.inspect(connection).get_table_names()
        assert tables == ["customers"], "nothing was migrated into it"
    finally:
        engine.dispose()
