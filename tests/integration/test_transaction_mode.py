"""`transaction: per-run` (one transaction for a whole run) against the default, one per
revision: real PostgreSQL, real CLI runs, what is left in the tables after a failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from projectkit import HEAD, SHIPPED, Project, events, finish
from test_console import waiting_revision
from test_fencing import (  # noqa: F401 -- fixtures
    BLOCK,
    blocker,
    run_id_of,
    runs_waiting_on,
    setup,
    terminate_lock_session,
    wait_long,
)

FIRST, SECOND, THIRD = "a1000000000a", "b2000000000b", "c3000000000c"


def _env(project: Project, transaction: str | None) -> None:
    project.write_env(
        "dev",
        f"""\
        name: dev
        database:
          url_env: DEV_DATABASE_URL
        policy:
          lint: off
          schema_drift: off
        {f"transaction: {transaction}" if transaction else ""}
        """,
    )


def _history_failing_at_third(project: Project) -> None:
    for path in project.versions.glob("*.py"):
        path.unlink()
    project.add_revision(FIRST, None, "op.execute('CREATE TABLE first_t (id int)')")
    project.add_revision(SECOND, FIRST, "op.execute('CREATE TABLE second_t (id int)')")
    project.add_revision(THIRD, SECOND, "op.execute('SELECT 1 / 0')")


def _tables(project: Project) -> list[str]:
    rows = project.query(
        "dev", "SELECT tablename FROM pg_tables WHERE tablename IN ('first_t', 'second_t')"
    )
    return sorted(r[0] for r in rows)


@pytest.mark.parametrize("runner", ["orchestrator", "plain-alembic"])
def test_per_run_failing_third_revision_leaves_nothing_applied(
    pg_project: Project, runner: str
) -> None:
    _env(pg_project, "per-run")
    _history_failing_at_third(pg_project)

    if runner == "orchestrator":
        result = pg_project.run("migrate", "dev")
        assert result.code == 1, result.output
    else:  # plain `alembic upgrade head` through env.py: the same single transaction
        result = pg_project.alembic("-x", "env=dev", "upgrade", "head")
        assert result.code != 0, result.output
    assert f"Revision {THIRD} failed" in result.stderr
    assert "per-run" in result.stderr and "none of its revisions stay applied" in result.stderr
    assert "Traceback" not in result.output
    assert pg_project.version("dev") == []
    assert pg_project.ledger("dev") == []
    assert _tables(pg_project) == []
    events = pg_project.audit_events("dev")
    assert not [e for e in events if e["event"] == "migration.applied"]
    (failed,) = [e for e in events if e["event"] == "migration.failed"]
    assert failed["revision"] == THIRD
    assert [e["event"] for e in events if e["event"] in ("run.failed", "run.succeeded")] == [
        "run.failed"
    ]


@pytest.mark.parametrize("transaction", [None, "per-revision"], ids=["default", "explicit"])
def test_per_revision_failing_third_revision_keeps_the_first_two(
    pg_project: Project, transaction: str | None
) -> None:
    _env(pg_project, transaction)
    _history_failing_at_third(pg_project)

    result = pg_project.run("migrate", "dev")

    assert result.code == 1, result.output
    assert f"Revision {THIRD} failed" in result.stderr
    assert pg_project.version("dev") == [SECOND]
    assert pg_project.ledger("dev") == [(FIRST, "up"), (SECOND, "up")]
    assert _tables(pg_project) == ["first_t", "second_t"]


def test_a_revision_that_moves_the_version_row_itself_fails_whole(pg_project: Project) -> None:
    """The version row's UPDATE rides with the ledger row and the COMMIT (one round trip):
    Alembic's check that it matched one row is made in that SQL. A revision that deletes
    the row itself fails there, as under bare Alembic, and nothing of it commits."""
    _env(pg_project, None)
    for path in pg_project.versions.glob("*.py"):
        path.unlink()
    pg_project.add_revision(FIRST, None, "op.execute('CREATE TABLE first_t (id int)')")
    pg_project.add_revision(
        SECOND,
        FIRST,
        "op.execute('CREATE TABLE second_t (id int)')\nop.execute('DELETE FROM alembic_version')",
    )
    result = pg_project.run("migrate", "dev")
    assert result.code == 1, result.output
    assert f"Revision {SECOND} failed" in result.stderr
    assert "the version table has 0 rows where Alembic expected to change one" in result.stderr
    assert "Traceback" not in result.output
    assert pg_project.version("dev") == [FIRST]
    assert pg_project.ledger("dev") == [(FIRST, "up")]
    assert _tables(pg_project) == ["first_t"]
    assert pg_project.run("audit", "verify", "--env", "dev").code == 0


def test_branches_a_merge_and_a_downgrade_to_base_keep_the_version_rows_right(
    pg_project: Project,
) -> None:
    """Alembic's statements on its version table at a merge (a DELETE, then an UPDATE), at a
    branch (an INSERT) and going down to base (DELETEs) ride with each revision's COMMIT in
    their order: the rows end as Alembic leaves them, with a ledger row each."""
    _env(pg_project, None)
    for path in pg_project.versions.glob("*.py"):
        path.unlink()
    merge = "d4000000000d"
    pg_project.add_revision(FIRST, None, "op.execute('CREATE TABLE first_t (id int)')")
    pg_project.add_revision(SECOND, FIRST, "op.execute('CREATE TABLE second_t (id int)')")
    pg_project.add_revision(THIRD, FIRST, "op.execute('CREATE TABLE third_t (id int)')")
    pg_project.add_revision(merge, (SECOND, THIRD), "pass")  # type: ignore[arg-type]
    up = pg_project.run("migrate", "dev")
    assert up.code == 0, up.output
    assert pg_project.version("dev") == [merge]
    assert sorted(pg_project.ledger("dev")) == sorted(
        [(FIRST, "up"), (SECOND, "up"), (THIRD, "up"), (merge, "up")]
    )
    down = pg_project.run("downgrade", "dev", "--to", "base", "--reason", "start over")
    assert down.code == 0, down.output
    assert pg_project.version("dev") == []
    assert [r for r in pg_project.ledger("dev") if r[1] == "down"][-1] == (FIRST, "down")
    assert len(pg_project.ledger("dev")) == 8
    assert pg_project.run("audit", "verify", "--env", "dev").code == 0


def test_per_run_success_commits_every_revision_and_ledger_row(pg_project: Project) -> None:
    _env(pg_project, "per-run")
    _history_failing_at_third(pg_project)
    (pg_project.versions / f"{THIRD}_test.py").unlink()

    result = pg_project.run("migrate", "dev", "--json")

    assert result.code == 0, result.output
    assert result.json()[0]["applied"] == [FIRST, SECOND]
    assert pg_project.version("dev") == [SECOND]
    assert pg_project.ledger("dev") == [(FIRST, "up"), (SECOND, "up")]
    assert _tables(pg_project) == ["first_t", "second_t"]
    applied = [
        e["revision"] for e in pg_project.audit_events("dev") if e["event"] == "migration.applied"
    ]
    assert applied == [FIRST, SECOND]
    assert pg_project.run("audit", "verify", "--env", "dev").code == 0


def test_per_run_progress_names_the_revision_running_not_the_first(
    pg_project: Project, tmp_path: Path
) -> None:
    """One transaction commits only at the end; progress still moves with each revision."""
    _env(pg_project, "per-run")
    _history_failing_at_third(pg_project)
    gate = tmp_path / "go"
    (pg_project.versions / f"{THIRD}_test.py").unlink()
    waiting_revision(pg_project, gate, THIRD, SECOND)
    run = pg_project.popen(
        "migrate", "dev", ORCHESTRATOR_PROGRESS_SECONDS="0.2", ORCHESTRATOR_LOG_FORMAT="json"
    )
    assert run.stderr is not None
    for line in run.stderr:
        event = json.loads(line)
        if event["event"] == "migration.running" and event.get("elapsed_s", 0) >= 0.4:
            break
    assert run.poll() is None  # still inside the third revision, nothing committed yet
    assert (event["revision"], event["step"]) == (THIRD, "3/3")
    gate.touch()
    _out, rest = run.communicate(timeout=120)
    assert run.returncode == 0, rest
    assert pg_project.ledger("dev") == [(FIRST, "up"), (SECOND, "up"), (THIRD, "up")]


def test_per_run_refuses_a_revision_with_an_autocommit_block(pg_project: Project) -> None:
    _env(pg_project, "per-run")  # the shipped history: SHIPPED[1] creates an index concurrently

    result = pg_project.run("migrate", "dev")

    assert result.code == 2, result.output
    assert SHIPPED[1] in result.stderr and "autocommit block" in result.stderr
    assert "Traceback" not in result.output
    assert pg_project.version("dev") == []
    assert pg_project.ledger("dev") == []


def test_per_run_on_sqlite_is_a_configuration_error(sqlite_project: Project) -> None:
    _env(sqlite_project, "per-run")

    result = sqlite_project.run("migrate", "dev")

    assert result.code == 2, result.output
    assert "transaction: per-run" in result.stderr and "PostgreSQL" in result.stderr
    assert "Traceback" not in result.output
    assert sqlite_project.version("dev") == []


def test_an_unknown_transaction_mode_is_a_configuration_error(pg_project: Project) -> None:
    _env(pg_project, "per-statement")

    result = pg_project.run("migrate", "dev")

    assert result.code == 2, result.output
    assert "transaction" in result.stderr and "per-run" in result.stderr
    assert pg_project.version("dev") == []


def test_per_run_that_lost_its_lock_commits_nothing(
    pg_project: Project,
    blocker: Any,  # noqa: F811 -- test_fencing's fixture
    procs: list,  # noqa: F811
) -> None:
    """Its ledger rows are not fenced one by one (that would read pg_locks while the run's
    one transaction holds a lock per table it made): its single COMMIT is."""
    quick, blocking, after = setup(pg_project)
    _env(pg_project, "per-run")
    run = pg_project.popen("migrate", "dev", TEST_BLOCK="1")
    procs.append(run)
    wait_long(
        "the run inside the blocking revision", lambda: runs_waiting_on(pg_project, "advisory")
    )

    terminate_lock_session(pg_project)
    blocker.execute(f"SELECT pg_advisory_unlock({BLOCK})")  # the run goes on to its COMMIT
    code, _, err = finish(run, 120)

    assert code == 1, err[-3000:]
    assert "lost the migration lock" in err and "Traceback" not in err
    assert pg_project.version("dev") == [HEAD]  # none of the three: one transaction, rolled back
    assert [r for r, _ in pg_project.ledger("dev")] == SHIPPED
    assert pg_project.query("dev", "SELECT to_regclass('side_effects')") == [(None,)]
    (failed,) = events(pg_project, "dev", "run.failed", run_id_of(pg_project, run))
    assert failed["lock_lost"] is True
