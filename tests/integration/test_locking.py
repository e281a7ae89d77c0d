"""Concurrency and failure safety (SPEC "Locking", "Failure", "Ledger and audit trail").

Real processes, real PostgreSQL, real SIGKILL: every run goes through the CLI in a
subprocess, and every wait has a timeout so that a hang fails the test instead of CI.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
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
    wait_for,
    waits_for_file,
)

from orchestrator.db.locks import DEFAULT_KEY, lock_id

LOCK_ID = lock_id(DEFAULT_KEY)
CIC_REVISION = SHIPPED[1]  # 8f3b1c2d4e5a: CREATE INDEX CONCURRENTLY in an autocommit block


# -- helpers ---------------------------------------------------------------------------------


def advisory_locks(project: Project, env: str) -> list[tuple[Any, ...]]:
    return project.query(
        env,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )


# -- many runs at once -----------------------------------------------------------------------


def test_eight_concurrent_runs_apply_each_revision_once(pg_project: Project, procs: list) -> None:
    assert pg_project.run("migrate", "dev", timeout=60).code == 0

    # Someone else holds the lock until all eight are waiting for it: they are all alive at
    # once, and each has passed the gate, before any of them can migrate.
    engine = sa.create_engine(pg_project.urls["staging"])
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as holder:
            holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_ID})
            runs = [
                pg_project.popen("migrate", "staging", "--json", "--lock-timeout", "90")
                for _ in range(8)
            ]
            procs.extend(runs)
            wait_for(
                "all eight runs to wait for the lock",
                lambda: (
                    any(p.poll() is not None for p in runs)
                    or len(events(pg_project, "staging", "lock.waiting")) == 8
                ),
                timeout=60,
            )
            assert all(p.poll() is None for p in runs), [finish(p, 5) for p in runs]
            holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_ID})
            results = [finish(p, 90) for p in runs]
    finally:
        engine.dispose()

    for code, _out, err in results:
        assert code == 0, err[-3000:]
    applied = sorted((r["applied"] for _, out, _ in results for r in json.loads(out)), key=len)
    assert applied == [[]] * 7 + [SHIPPED], applied
    assert pg_project.version("staging") == [HEAD]
    assert [r for r, d in pg_project.ledger("staging")] == SHIPPED
    assert_consistent(pg_project, "staging")
    audit = pg_project.audit_events("staging")
    started = {e["run_id"] for e in audit if e["event"] == "run.started"}
    ended = {e["run_id"] for e in audit if e["event"] == "run.succeeded"}
    assert started <= ended, "every run that started also ended"
    assert not [e for e in audit if e["event"] in ("run.failed", "run.interrupted")]
    assert len([e for e in audit if e["event"] == "migration.applied"]) == len(SHIPPED)
    assert_audit_verifies(pg_project, "staging")


# -- the gate is judged again after the wait, on the predecessor as it is then ----------------


@pytest.mark.parametrize(
    "command",
    [
        ("orchestrator", "migrate", "prod", "--approve", "--lock-timeout", "60"),
        ("alembic", "-x", "env=prod", "-x", "approve=1", "upgrade", "head"),
    ],
    ids=["migrate", "plain-alembic"],
)
def test_prod_waiting_for_the_lock_refuses_what_staging_rolled_back_meanwhile(
    pg_project: Project, procs: list, command: tuple[str, ...]
) -> None:
    for env in ("dev", "staging"):
        assert pg_project.run("migrate", env, timeout=60).code == 0
    engine = sa.create_engine(pg_project.urls["prod"])
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as holder:
            holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_ID})
            prod = pg_project.popen(*command[1:], module=command[0])
            procs.append(prod)
            wait_for(
                "prod to wait for the lock",
                lambda: prod.poll() is not None or events(pg_project, "prod", "lock.waiting"),
            )
            assert prod.poll() is None, finish(prod, 5)  # it passed the gate and now waits
            down = pg_project.run("downgrade", "staging", "--to", "-1", "--reason", "bad index")
            assert down.code == 0, down.output
            assert pg_project.version("staging") == [SHIPPED[-2]]
            holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_ID})
            code, _, err = finish(prod, 60)
    finally:
        engine.dispose()

    assert code == (3 if command[0] == "orchestrator" else 255), err[-3000:]
    assert f"{HEAD}: rolled back on staging" in err
    assert pg_project.version("prod") == []
    assert pg_project.ledger("prod") == []
    (refused,) = events(pg_project, "prod", "gate.refused")
    assert [b["revision"] for b in refused["blocked"]] == [HEAD]
    assert events(pg_project, "prod", "lock.acquired")[0]["timestamp"] < refused["timestamp"]
    assert not events(pg_project, "prod", "migration.applied")
    assert_audit_verifies(pg_project, "prod")


# -- lock timeout names the holder -------------------------------------------------------------


def test_lock_timeout_names_the_postgres_session_holding_it(
    pg_project: Project, pg_cluster: PgCluster, procs: list
) -> None:
    db = dbname(pg_project, "dev")
    holder = subprocess.Popen(
        [
            *pg_cluster.psql_args(db),
            "-c",
            f"SELECT pg_advisory_lock({LOCK_ID})",
            "-c",
            "SELECT pg_sleep(60)",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    procs.append(holder)
    (pid,) = wait_for(
        "psql to hold the lock", lambda: [r[0] for r in advisory_locks(pg_project, "dev")]
    )
    assert pg_project.query(
        "dev", f"SELECT application_name FROM pg_stat_activity WHERE pid = {pid}"
    ) == [("psql",)]

    result = pg_project.run("migrate", "dev", "--lock-timeout", "2", timeout=30)

    assert result.code == 4, result.output
    assert holder.poll() is None  # it gave up while the lock was still held (for 60 s)
    assert f"pid {pid}" in result.stderr and "psql" in result.stderr
    waiting = events(pg_project, "dev", "lock.waiting")
    failed = events(pg_project, "dev", "run.failed")
    assert [e["holder"]["pid"] for e in waiting] == [pid]
    assert [e["holder"]["pid"] for e in failed] == [pid]
    assert failed[0]["run_id"] == waiting[0]["run_id"]
    assert pg_project.version("dev") == []
    assert_audit_verifies(pg_project, "dev")


# -- CREATE INDEX CONCURRENTLY versus our own lock connections ------------------------------------


def test_concurrent_index_does_not_wait_for_our_own_lock_or_a_waiting_run(
    pg_project: Project, procs: list
) -> None:
    # From empty: the shipped CIC revision completes while this run holds the lock.
    first = pg_project.run("migrate", "dev", timeout=30)
    assert first.code == 0, first.output
    assert ("ix_users_email",) in pg_project.query(
        "dev",
        "SELECT indexname FROM pg_indexes WHERE indexname = 'ix_users_email' AND "
        "EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = 'ix_users_email' AND i.indisvalid)",
    )

    # A holder run: a revision that waits for the test, then a CIC; a second run waits for
    # the lock meanwhile, and only then does the test let the holder go on.
    release = pg_project.path / "release"
    slow, cic = add_chain(
        pg_project,
        HEAD,
        waits_for_file(release, 60),
        """
        with op.get_context().autocommit_block():
            op.create_index("ix_orders_total", "orders", ["total"], postgresql_concurrently=True)
        """,
    )
    holder = pg_project.popen("migrate", "dev")
    procs.append(holder)
    holder_run = wait_for(
        "the holder to take the lock",
        lambda: holder.poll() is not None or events(pg_project, "dev", "lock.acquired")[1:],
    )
    assert holder.poll() is None, finish(holder, 5)
    holder_run = holder_run[0]["run_id"]
    waiter = pg_project.popen("migrate", "dev", "--lock-timeout", "45")
    procs.append(waiter)
    wait_for(
        "the second run to wait",
        lambda: waiter.poll() is not None or events(pg_project, "dev", "lock.waiting"),
        timeout=60,
    )
    assert waiter.poll() is None, finish(waiter, 5)
    release.touch()

    code, _, err = finish(holder, 25)  # a CIC blocked by the waiter would hang here until 45s
    assert code == 0, err[-3000:]
    code, _, err = finish(waiter, 25)
    assert code == 0, err[-3000:]

    applied = {e["revision"]: e for e in events(pg_project, "dev", "migration.applied", holder_run)}
    assert set(applied) == {slow, cic}
    (waited,) = events(pg_project, "dev", "lock.waiting")
    assert waited["timestamp"] < applied[cic]["timestamp"], "the waiter was waiting during the CIC"
    assert pg_project.version("dev") == [cic]
    assert_consistent(pg_project, "dev")


# -- SIGKILL mid-way ---------------------------------------------------------------------------


SLOW_PG = """
import os
if os.environ.get("TEST_SLOW_REVISION"):
    op.execute("SELECT pg_sleep(30)")
op.create_table("after_slow", sa.Column("id", sa.Integer, primary_key=True))
"""
SLOW_PY = """
import os, pathlib, time
if os.environ.get("TEST_SLOW_REVISION") and not op.get_context().as_sql:  # not while linting
    pathlib.Path(os.environ["TEST_SLOW_REVISION"]).touch()  # the test waits for this
    time.sleep(30)
op.create_table("after_slow", sa.Column("id", sa.Integer, primary_key=True))
"""


def kill_mid_run(
    project: Project, procs: list, slow_body: str, in_slow: Callable[[], Any]
) -> tuple[list[str], str]:
    """Two quick revisions and a slow one; SIGKILL the runner once `in_slow()` says the slow
    revision is running (its statement on the server, or its Python code)."""
    revs = add_chain(
        project,
        HEAD,
        'op.create_table("quick_one", sa.Column("id", sa.Integer, primary_key=True))',
        'op.create_table("quick_two", sa.Column("id", sa.Integer, primary_key=True))',
        slow_body,
    )
    runner = project.popen("migrate", "dev", TEST_SLOW_REVISION=str(project.path / "in-slow"))
    procs.append(runner)
    wait_for("the slow revision to run", lambda: runner.poll() is not None or in_slow(), 30)
    assert runner.poll() is None, runner.communicate()[1][-3000:]
    assert revs[1] in [r for r, _ in project.ledger("dev")]  # the quick ones committed before
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(timeout=10)  # reaped: no zombie that looks alive
    (started,) = [e for e in events(project, "dev", "run.started") if e.get("pid") == runner.pid]
    return revs, started["run_id"]


def check_after_kill(project: Project, revs: list[str], dead: str) -> None:
    assert project.version("dev") == [revs[1]]
    assert [r for r, _ in project.ledger("dev")] == [*SHIPPED, *revs[:2]]
    assert_consistent(project, "dev")

    status = project.run("status", "dev", "--json", timeout=30)
    assert status.code == 0, status.output
    (row,) = status.json()
    assert row["interrupted"] == [dead], row
    assert row["pending"] == [revs[2]]

    again = project.run("migrate", "dev", "--json", timeout=30)
    assert again.code == 0, again.output
    assert again.json()[0]["applied"] == [revs[2]]
    assert project.version("dev") == [revs[2]]
    assert [r for r, _ in project.ledger("dev")] == [*SHIPPED, *revs]
    (interrupted,) = events(project, "dev", "run.interrupted")
    assert interrupted["run_id"] == dead and interrupted["outcome"] == "interrupted"
    assert interrupted["noticed_by"] == again.json()[0]["run_id"]
    # the dead run's committed revisions are on the trail too, recovered from its ledger rows
    recovered = events(project, "dev", "migration.applied", dead)
    assert [e["revision"] for e in recovered] == [*SHIPPED, *revs[:2]]
    assert all(e["noticed_by"] == interrupted["noticed_by"] for e in recovered)
    assert "ticket" not in interrupted  # the dead run's events carry nothing of the new run
    assert_audit_verifies(project, "dev")


def test_sigkill_mid_run_on_postgres(pg_project: Project, procs: list) -> None:
    def sleeping() -> bool:
        return bool(
            pg_project.query(
                "dev",
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid() "
                "AND datname = current_database()",
            )
        )

    revs, dead = kill_mid_run(pg_project, procs, SLOW_PG, sleeping)

    # The lock dies with the session, and so does the dead run's migration transaction.
    wait_for(
        "the advisory lock to be released", lambda: not advisory_locks(pg_project, "dev"), timeout=5
    )
    wait_for(
        "the killed run's backends to go away",
        lambda: (
            not pg_project.query(
                "dev",
                f"SELECT pid FROM pg_stat_activity WHERE application_name LIKE '%run={dead}%'",
            )
        ),
        timeout=10,
    )
    check_after_kill(pg_project, revs, dead)


def test_sigkill_mid_run_on_sqlite(sqlite_project: Project, procs: list) -> None:
    marker = sqlite_project.path / "in-slow"
    revs, dead = kill_mid_run(sqlite_project, procs, SLOW_PY, marker.exists)
    lock_file = Path(sqlite_project.urls["dev"].removeprefix("sqlite:///") + ".lock")
    with lock_file.open("a") as handle:  # the kernel dropped the dead run's flock
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle, fcntl.LOCK_UN)
    check_after_kill(sqlite_project, revs, dead)


# -- a failing revision in the middle ---------------------------------------------------------


@pytest.fixture(params=["pg", "sqlite"])
def project(request: pytest.FixtureRequest) -> Project:
    return request.getfixturevalue(f"{request.param}_project")


def test_failing_revision_rolls_back_alone(project: Project) -> None:
    assert project.run("migrate", "dev", timeout=30).code == 0
    good, bad, after = add_chain(
        project,
        HEAD,
        'op.create_table("good_one", sa.Column("id", sa.Integer, primary_key=True))',
        """
        op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
        op.execute("INSERT INTO no_such_table VALUES (1)")
        """,
        'op.create_table("never_reached", sa.Column("id", sa.Integer, primary_key=True))',
    )

    result = project.run("migrate", "dev", timeout=30)

    assert result.code == 1, result.output
    assert f"Revision {bad} failed" in result.stderr
    assert "no_such_table" in result.stderr
    assert project.version("dev") == [good]
    assert [r for r, _ in project.ledger("dev")] == [*SHIPPED, good]
    assert "half_done" not in project.schema("dev") and "never_reached" not in project.schema("dev")
    assert "good_one" in project.schema("dev")
    (failed,) = events(project, "dev", "migration.failed")
    assert failed["revision"] == bad and "no_such_table" in failed["error"]
    (run_failed,) = events(project, "dev", "run.failed")
    assert run_failed["run_id"] == failed["run_id"] and bad in run_failed["error"]
    assert [
        e["revision"] for e in events(project, "dev", "migration.applied", failed["run_id"])
    ] == [good]
    assert_audit_verifies(project, "dev")


def test_revision_failing_at_commit_is_not_recorded_as_applied(pg_project: Project) -> None:
    """A deferred foreign key is checked at COMMIT, after the revision's statements ran."""
    assert pg_project.run("migrate", "dev", timeout=30).code == 0
    good, bad = add_chain(
        pg_project,
        HEAD,
        'op.create_table("good_one", sa.Column("id", sa.Integer, primary_key=True))',
        """
        op.execute("CREATE TABLE parent_d (id integer PRIMARY KEY)")
        op.execute(
            "CREATE TABLE child_d (id integer PRIMARY KEY, parent_id integer "
            "REFERENCES parent_d (id) DEFERRABLE INITIALLY DEFERRED)"
        )
        op.execute("INSERT INTO child_d VALUES (1, 42)")
        """,
    )

    result = pg_project.run("migrate", "dev", "--json", timeout=30)

    assert result.code == 1, result.output
    assert f"Revision {bad} failed on dev" in result.stderr
    assert "child_d" in result.stderr  # the database's own words about the violation
    assert f"1 earlier revision(s) of this run stay applied ({good}); dev is at {good}" in (
        result.stderr
    )
    assert pg_project.version("dev") == [good]
    assert [r for r, _ in pg_project.ledger("dev")] == [*SHIPPED, good]
    assert "child_d" not in pg_project.schema("dev")
    (failed,) = events(pg_project, "dev", "migration.failed")
    assert failed["revision"] == bad
    (run_failed,) = events(pg_project, "dev", "run.failed")
    assert run_failed["revision"] == bad and run_failed["run_id"] == failed["run_id"]
    applied = events(pg_project, "dev", "migration.applied", failed["run_id"])
    assert [e["revision"] for e in applied] == [good]
    assert_audit_verifies(pg_project, "dev")


# -- session settings on the migration connection ------------------------------------------------


def test_session_settings_apply_to_the_migration_connection(pg_project: Project) -> None:
    (probe,) = add_chain(
        pg_project,
        HEAD,
        """
        op.execute(
            "CREATE TABLE session_probe AS SELECT current_setting('lock_timeout') AS lock_timeout, "
            "current_setting('statement_timeout') AS statement_timeout"
        )
        """,
    )
    assert pg_project.run("migrate", "dev", timeout=30).code == 0
    result = pg_project.run("migrate", "staging", timeout=30)
    assert result.code == 0, result.output
    assert pg_project.query("staging", "SELECT * FROM session_probe") == [("5s", "15min")]
    assert pg_project.query("dev", "SELECT * FROM session_probe") == [("0", "0")]  # dev sets none


# -- SQLite: the file lock ---------------------------------------------------------------------

HOLD_FLOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.pwrite(fd, f"{os.getpid()}\\nheld by a test\\n2030-01-01T00:00:00Z\\n".encode(), 0)
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_timeout_names_the_process_holding_the_sqlite_file_lock(
    sqlite_project: Project, procs: list
) -> None:
    lock_file = sqlite_project.urls["dev"].removeprefix("sqlite:///") + ".lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FLOCK, lock_file],
        stdout=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    procs.append(holder)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"

    result = sqlite_project.run("migrate", "dev", "--lock-timeout", "1", timeout=30)

    assert result.code == 4, result.output
    assert holder.poll() is None  # it gave up while the lock was still held (for 60 s)
    assert f"pid {holder.pid}" in result.stderr and "held by a test" in result.stderr
    assert [e["holder"]["pid"] for e in events(sqlite_project, "dev", "lock.waiting")] == [
        holder.pid
    ]
    assert [e["holder"]["pid"] for e in events(sqlite_project, "dev", "run.failed")] == [holder.pid]
    assert sqlite_project.version("dev") == []

    holder.kill()
    holder.wait(timeout=10)
    after = sqlite_project.run("migrate", "dev", "--lock-timeout", "5", timeout=30)
    assert after.code == 0, after.output
    assert sqlite_project.version("dev") == [HEAD]
    assert_audit_verifies(sqlite_project, "dev")


def test_second_sqlite_run_times_out_behind_a_running_one(
    sqlite_project: Project, procs: list, tmp_path: Path
) -> None:
    assert sqlite_project.run("migrate", "dev", timeout=30).code == 0
    release = tmp_path / "release"
    (slow,) = add_chain(
        sqlite_project,
        HEAD,
        waits_for_file(release, 20),
    )
    first = sqlite_project.popen("migrate", "dev")
    procs.append(first)
    wait_for(
        "the first run to take the lock",
        lambda: first.poll() is not None or events(sqlite_project, "dev", "lock.acquired")[1:],
    )
    assert first.poll() is None, finish(first, 5)

    # The first run holds SQLite's write lock for its whole revision: the second must neither
    # block on it for its reads nor for its audit rows, or --lock-timeout would mean nothing.
    second = sqlite_project.run("migrate", "dev", "--lock-timeout", "1", timeout=30)
    assert second.code == 4, second.output
    assert f"pid {first.pid}" in second.stderr
    assert first.poll() is None and not release.exists()  # gave up while the first still ran

    release.touch()
    code, _, err = finish(first, 20)
    assert code == 0, err[-3000:]
    assert sqlite_project.version("dev") == [slow]
    assert_audit_verifies(sqlite_project, "dev")
