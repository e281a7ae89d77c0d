"""Fencing (SPEC Part 2, "Fencing and fail-closed"): a run whose lock session ended commits
nothing more, and exits 1 saying so; the lock session is not subject to idle timeouts.

Real processes and a real PostgreSQL. A revision blocks on an advisory lock the test holds
(key BLOCK), so every step waits for an event seen in pg_stat_activity, never for time.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pgcluster import PgCluster
from projectkit import (
    HEAD,
    SHIPPED,
    Project,
    add_chain,
    assert_audit_verifies,
    assert_consistent,
    dbname,
    events,
    finish,
    sign_env,
    wait_for,
)

from orchestrator.db.locks import DEFAULT_KEY, lock_id

LOCK_ID = lock_id(DEFAULT_KEY)


def wait_long(what: str, predicate: Any) -> Any:
    """wait_for, with room for a loaded machine: a run starts in seconds, but not always."""
    return wait_for(what, predicate, timeout=120)


BLOCK = 424242  # the advisory lock a test holds to keep a revision waiting

# Waits, inside its transaction, for the test's BLOCK lock when TEST_BLOCK is set.
BLOCKING_BODY = """
import os
if os.environ.get("TEST_BLOCK"):
    op.execute("SELECT pg_advisory_xact_lock(424242)")
op.execute("INSERT INTO side_effects VALUES (1)")
"""


@pytest.fixture
def blocker(pg_project: Project, pg_cluster: PgCluster) -> Iterator[psycopg.Connection[Any]]:
    """A session holding the BLOCK lock: revisions that wait for it wait until released."""
    connection = pg_cluster.connect(dbname(pg_project, "dev"))
    connection.execute(f"SELECT pg_advisory_lock({BLOCK})")
    yield connection
    connection.close()


def lock_holder_pid(project: Project) -> int | None:
    """The backend holding the orchestrator's migration lock on dev."""
    rows = project.query(
        "dev",
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        f"AND classid::bigint = {(LOCK_ID >> 32) & 0xFFFFFFFF} "
        f"AND objid::bigint = {LOCK_ID & 0xFFFFFFFF}"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    return rows[0][0] if rows else None


def runs_waiting_on(project: Project, wait_event: str) -> list[str]:
    """application_name of orchestrator sessions waiting on a lock of this kind."""
    return [
        name
        for (name,) in project.query(
            "dev",
            "SELECT application_name FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            f"AND wait_event = '{wait_event}' AND application_name LIKE 'orchestrator run=%' "
            "AND datname = current_database()",
        )
    ]


def terminate_lock_session(project: Project) -> int:
    pid = wait_long("a run to hold the migration lock", lambda: lock_holder_pid(project))
    project.query("dev", f"SELECT pg_terminate_backend({pid})")
    wait_long("the lock session to end", lambda: lock_holder_pid(project) != pid)
    return pid


def setup(project: Project) -> tuple[str, str, str]:
    """dev at HEAD; then: a table, the blocking revision, one more revision."""
    assert project.run("migrate", "dev", timeout=60).code == 0
    quick, blocking, after = add_chain(
        project,
        HEAD,
        'op.create_table("side_effects", sa.Column("n", sa.Integer))',
        BLOCKING_BODY,
        'op.create_table("after_blocking", sa.Column("id", sa.Integer, primary_key=True))',
    )
    return quick, blocking, after


def run_id_of(project: Project, proc: subprocess.Popen[str]) -> str:
    (started,) = [e for e in events(project, "dev", "run.started") if e.get("pid") == proc.pid]
    return str(started["run_id"])


@pytest.mark.parametrize("signing", [False, True], ids=["unsigned", "signing"])
def test_a_run_that_lost_its_lock_rolls_back_and_exits_1(
    pg_project: Project, blocker: psycopg.Connection[Any], procs: list, signing: bool
) -> None:
    """Signing or not, the ledger row (and the chain entry) sent with the COMMIT fail it."""
    if signing:
        sign_env(pg_project, "dev")
    quick, blocking, after = setup(pg_project)
    first = pg_project.popen("migrate", "dev", TEST_BLOCK="1")
    procs.append(first)
    wait_long(
        "the first run inside the blocking revision",
        lambda: runs_waiting_on(pg_project, "advisory"),
    )

    terminate_lock_session(pg_project)
    blocker.execute(f"SELECT pg_advisory_unlock({BLOCK})")  # the revision goes on to commit
    code, _, err = finish(first, 120)

    assert code == 1, err[-3000:]
    assert "lost the migration lock" in err and blocking in err
    assert "Traceback" not in err
    assert pg_project.version("dev") == [quick], "the revision must not commit without the lock"
    assert [r for r, _ in pg_project.ledger("dev")] == [*SHIPPED, quick]
    assert pg_project.query("dev", "SELECT count(*) FROM side_effects") == [(0,)]
    first_run = run_id_of(pg_project, first)
    (failed,) = events(pg_project, "dev", "run.failed", first_run)
    assert failed["lock_lost"] is True and failed["revision"] == blocking
    assert not events(pg_project, "dev", "run.interrupted"), "it ended itself, as failed"
    assert events(pg_project, "dev", "lock.lost", first_run)

    again = pg_project.run("migrate", "dev", "--json", timeout=60)
    assert again.code == 0, again.output
    assert again.json()[0]["applied"] == [blocking, after]
    assert pg_project.query("dev", "SELECT count(*) FROM side_effects") == [(1,)]
    assert_consistent(pg_project, "dev")
    assert not events(pg_project, "dev", "run.interrupted")
    assert_audit_verifies(pg_project, "dev")


def test_a_second_run_cannot_interleave_with_one_that_lost_its_lock(
    pg_project: Project, blocker: psycopg.Connection[Any], procs: list
) -> None:
    quick, blocking, after = setup(pg_project)
    first = pg_project.popen("migrate", "dev", TEST_BLOCK="1")
    procs.append(first)
    wait_long(
        "the first run inside the blocking revision",
        lambda: runs_waiting_on(pg_project, "advisory"),
    )
    terminate_lock_session(pg_project)

    # The second run takes the lock and reaches the same revision while the first is still
    # in it: both wait for BLOCK, the first in line.
    second = pg_project.popen("migrate", "dev", "--json", TEST_BLOCK="1")
    procs.append(second)
    wait_long(
        "both runs inside the blocking revision",
        lambda: len(runs_waiting_on(pg_project, "advisory")) == 2,
    )
    blocker.execute(f"SELECT pg_advisory_unlock({BLOCK})")

    code, _, err = finish(first, 120)
    assert code == 1, err[-3000:]
    assert "lost the migration lock" in err
    code, out, err = finish(second, 120)
    assert code == 0, err[-3000:]
    assert json.loads(out)[0]["applied"] == [blocking, after]
    assert pg_project.query("dev", "SELECT count(*) FROM side_effects") == [(1,)]
    ups = [r for r, d in pg_project.ledger("dev") if d == "up"]
    assert ups == [*SHIPPED, quick, blocking, after]
    assert_consistent(pg_project, "dev")
    # the second run did not close the first, which was alive: the first ended itself
    first_run = run_id_of(pg_project, first)
    assert [
        e["event"] for e in events(pg_project, "dev", run_id=first_run) if e.get("outcome")
    ] == [
        "migration.failed",
        "run.failed",
    ]
    assert not events(pg_project, "dev", "run.interrupted")
    assert_audit_verifies(pg_project, "dev")


LEDGER_TRIGGER = """
CREATE FUNCTION test_hold_ledger() RETURNS trigger AS $$
BEGIN
  IF NEW.revision = '{rev}' THEN PERFORM pg_advisory_xact_lock(424242); END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER test_hold_ledger AFTER INSERT ON orchestrator_ledger
  FOR EACH ROW EXECUTE FUNCTION test_hold_ledger();
"""


def test_the_next_run_waits_for_a_commit_that_passed_its_fence(
    pg_project: Project, blocker: psycopg.Connection[Any], procs: list
) -> None:
    """The first run proved it held the lock, then its session was killed before it
    committed: the run that takes the lock next must see that commit, not redo the revision."""
    assert pg_project.run("migrate", "dev", timeout=60).code == 0
    held, after = add_chain(
        pg_project,
        HEAD,
        'op.create_table("held_table", sa.Column("id", sa.Integer, primary_key=True))',
        'op.create_table("after_held", sa.Column("id", sa.Integer, primary_key=True))',
    )
    blocker.execute(LEDGER_TRIGGER.format(rev=held))  # type: ignore[call-overload]
    first = pg_project.popen("migrate", "dev")
    procs.append(first)
    wait_long(
        "the first run's fenced ledger insert to wait",
        lambda: runs_waiting_on(pg_project, "advisory"),
    )
    terminate_lock_session(pg_project)

    second = pg_project.popen("migrate", "dev", "--json")
    procs.append(second)
    wait_long(
        "the second run to wait for the first one's commit",
        lambda: runs_waiting_on(pg_project, "relation"),
    )
    blocker.execute(f"SELECT pg_advisory_unlock({BLOCK})")

    code, _, err = finish(first, 120)
    assert code == 1 and "lost the migration lock" in err and after in err, err[-3000:]
    code, out, err = finish(second, 120)
    assert code == 0, err[-3000:]
    assert json.loads(out)[0]["applied"] == [after]
    assert [r for r, d in pg_project.ledger("dev") if d == "up"] == [*SHIPPED, held, after]
    assert_consistent(pg_project, "dev")


def test_the_lock_session_outlives_an_idle_session_timeout(
    pg_project: Project, pg_cluster: PgCluster, blocker: psycopg.Connection[Any], procs: list
) -> None:
    db = dbname(pg_project, "dev")
    role = f"deploy_{db}"
    with pg_cluster.connect(db) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f'ALTER DATABASE "{db}" OWNER TO {role}')
        admin.execute(f"ALTER ROLE {role} SET idle_session_timeout = '1s'")
    try:
        pg_project.urls["dev"] = pg_cluster.url(db, user=role)
        quick, blocking, after = setup(pg_project)
        first = pg_project.popen("migrate", "dev", TEST_BLOCK="1")
        procs.append(first)
        wait_long(
            "the run inside the blocking revision", lambda: runs_waiting_on(pg_project, "advisory")
        )
        holder = lock_holder_pid(pg_project)
        # an idle session of the same role, opened now: once the timeout ended it, the lock
        # session (idle for longer) has been exposed to it too
        canary = psycopg.connect(pg_cluster.dsn(db, user=role), autocommit=True)
        (canary_pid,) = canary.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
        wait_long(
            "the idle-session timeout to end an idle session",
            lambda: (
                not pg_project.query(
                    "dev", f"SELECT 1 FROM pg_stat_activity WHERE pid = {canary_pid}"
                )
            ),
        )
        canary.close()
        assert lock_holder_pid(pg_project) == holder, "the lock session was ended by the timeout"

        blocker.execute(f"SELECT pg_advisory_unlock({BLOCK})")
        code, _, err = finish(first, 120)
        assert code == 0, err[-3000:]
        assert "persist_failed" not in err
        assert pg_project.version("dev") == [after]
        assert_consistent(pg_project, "dev")
        assert_audit_verifies(pg_project, "dev")
    finally:
        with pg_cluster.connect(db) as admin:
            admin.execute(f"ALTER ROLE {role} RESET idle_session_timeout")
