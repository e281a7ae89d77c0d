"""A cancelled pipeline (SPEC Part 2, "Fencing and fail-closed"): SIGTERM or SIGINT stops a
run between revisions, the run records `run.interrupted` itself and releases the lock; and a
run that fails before or after the lock ends as `run.failed`, never as interrupted.

Real signals to real processes, while a revision is really running (it waits for a lock the
test holds, seen in pg_stat_activity).
"""

from __future__ import annotations

import json
import signal
from typing import Any

import psycopg
import pytest
from pgcluster import PgCluster
from projectkit import (
    SHIPPED,
    Project,
    add_chain,
    assert_audit_verifies,
    assert_consistent,
    events,
    finish,
)
from test_fencing import (
    blocker,
    lock_holder_pid,
    run_id_of,
    runs_waiting_on,
    setup,
    wait_long,
)

__all__ = ["blocker"]  # a fixture


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_after_the_revision_in_progress(
    pg_project: Project,
    blocker: psycopg.Connection[Any],
    procs: list,
    signum: signal.Signals,
    code: int,
) -> None:
    quick, blocking, after = setup(pg_project)
    runner = pg_project.popen("migrate", "dev", TEST_BLOCK="1")
    procs.append(runner)
    wait_long("the run inside a revision", lambda: runs_waiting_on(pg_project, "advisory"))

    runner.send_signal(signum)
    assert runner.poll() is None  # it waits for the revision in progress
    blocker.execute("SELECT pg_advisory_unlock(424242)")
    exit_code, _, err = finish(runner, 120)

    assert exit_code == code, err[-3000:]
    assert f"Stopped by {signum.name}" in err and "Run again" in err and "Traceback" not in err
    assert pg_project.version("dev") == [blocking], "the revision in progress finished"
    assert [r for r, _ in pg_project.ledger("dev")] == [*SHIPPED, quick, blocking]
    assert_consistent(pg_project, "dev")
    run = run_id_of(pg_project, runner)
    (stopped,) = events(pg_project, "dev", "run.interrupted", run)
    assert stopped["outcome"] == "interrupted" and "noticed_by" not in stopped
    assert stopped["applied"] == [quick, blocking]
    assert events(pg_project, "dev", "lock.released", run)
    assert not events(pg_project, "dev", "run.failed")
    assert lock_holder_pid(pg_project) is None

    status = pg_project.run("status", "dev", "--json")
    (row,) = status.json()
    assert row["interrupted"] == [] and row["last_run"]["outcome"] == "interrupted", row
    again = pg_project.run("migrate", "dev", "--json")
    assert again.code == 0 and again.json()[0]["applied"] == [after], again.output
    assert len(events(pg_project, "dev", "run.interrupted")) == 1
    assert_audit_verifies(pg_project, "dev")


def test_sigterm_while_waiting_for_the_lock_stops_at_once(
    pg_project: Project, blocker: psycopg.Connection[Any], procs: list
) -> None:
    setup(pg_project)
    holder = pg_project.popen("migrate", "dev", TEST_BLOCK="1")
    procs.append(holder)
    wait_long("the first run inside a revision", lambda: runs_waiting_on(pg_project, "advisory"))
    waiter = pg_project.popen("migrate", "dev", "--lock-timeout", "600")
    procs.append(waiter)
    wait_long("the second run to wait", lambda: events(pg_project, "dev", "lock.waiting"))

    waiter.send_signal(signal.SIGTERM)
    code, _, err = finish(waiter, 120)

    assert code == 143, err[-3000:]
    (stopped,) = events(pg_project, "dev", "run.interrupted", run_id_of(pg_project, waiter))
    assert stopped["applied"] == [] and "noticed_by" not in stopped
    blocker.execute("SELECT pg_advisory_unlock(424242)")
    code, _, err = finish(holder, 120)
    assert code == 0, err[-3000:]
    assert_consistent(pg_project, "dev")


def test_a_run_failing_before_the_lock_ends_as_failed(
    pg_project: Project, pg_cluster: PgCluster
) -> None:
    assert pg_project.run("migrate", "dev").code == 0
    gone = pg_cluster.url("no_such_database")

    result = pg_project.run("migrate", "staging", DEV_DATABASE_URL=gone)

    assert result.code == 1, result.output
    assert "Cannot read dev" in result.stderr
    ended = [e for e in pg_project.audit_events("staging") if e["event"] != "lock.waiting"]
    assert [e["event"] for e in ended] == ["run.started", "run.failed"]
    assert "Cannot read dev" in ended[1]["error"]
    (row,) = pg_project.run("status", "staging", "--json", DEV_DATABASE_URL=gone).json()
    assert row["interrupted"] == [] and row["last_run"]["outcome"] == "failed", row


def test_a_plain_alembic_run_failing_after_it_started_ends_as_failed(
    pg_project: Project, pg_cluster: PgCluster
) -> None:
    gone = pg_cluster.url("no_such_database")
    result = pg_project.alembic("-x", "env=staging", "upgrade", "head", DEV_DATABASE_URL=gone)

    assert result.code != 0 and "Cannot read dev" in result.output
    assert [e["event"] for e in pg_project.audit_events("staging")] == [
        "run.started",
        "run.failed",
    ]
    status = pg_project.run("status", "staging", "--json", DEV_DATABASE_URL=gone)
    (row,) = json.loads(status.stdout)
    assert row["interrupted"] == [] and row["last_run"]["outcome"] == "failed", row


CIC_THEN_BLOCK = """
with op.get_context().autocommit_block():
    op.execute("CREATE INDEX CONCURRENTLY ix_cic_left ON side_effects (n)")
import os
if os.environ.get("TEST_BLOCK"):
    op.execute("SELECT pg_advisory_xact_lock(424242)")
"""


def test_after_a_kill_past_an_autocommit_block_the_message_says_what_stayed(
    pg_project: Project, blocker: psycopg.Connection[Any], procs: list
) -> None:
    assert pg_project.run("migrate", "dev").code == 0
    quick, cic = add_chain(
        pg_project,
        SHIPPED[-1],
        'op.create_table("side_effects", sa.Column("n", sa.Integer))',
        CIC_THEN_BLOCK,
    )
    runner = pg_project.popen("migrate", "dev", TEST_BLOCK="1")
    procs.append(runner)
    wait_long("the run past the autocommit block", lambda: runs_waiting_on(pg_project, "advisory"))
    runner.kill()
    runner.wait(timeout=10)
    blocker.execute("SELECT pg_advisory_unlock(424242)")
    wait_long(
        "the killed run's sessions to end",
        lambda: (
            not pg_project.query(
                "dev",
                "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'orchestrator%'"
                " AND datname = current_database()",
            )
        ),
    )

    again = pg_project.run("migrate", "dev")

    assert again.code == 1, again.output
    assert "ix_cic_left" in again.stderr and "already exists" in again.stderr
    assert "NOT rolled back" in again.stderr and "It was rolled back" not in again.stderr
    assert "IF NOT EXISTS" in again.stderr and "DROP INDEX CONCURRENTLY" in again.stderr
    assert pg_project.version("dev") == [quick]
    (failed,) = events(pg_project, "dev", "migration.failed")
    assert failed["revision"] == cic and failed["autocommit_block"] is True
