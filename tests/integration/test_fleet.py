"""Fleet environments (issue 8): one environment, many databases, on real PostgreSQL.

A staging fleet of 20 tenant databases on the throwaway server, reached through one server
URL variable plus a list of database names; prod as a fleet read from a file plus one named
database with its own URL variable. Every run is the real CLI in a subprocess; the kill is a
real SIGKILL of the whole process group; the proof is counted in each database's ledger.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pgcluster import PgCluster
from projectkit import HEAD, SHIPPED, Project, make_project

from orchestrator.db.locks import DEFAULT_KEY, lock_id

FLEET_SIZE = 20
SLOW = "f1ee70000001"  # a revision that takes a while on every tenant
TERMINAL = {"run.succeeded", "run.failed", "run.refused", "run.interrupted"}


@dataclass
class Fleet:
    project: Project
    cluster: PgCluster
    staging: list[str]  # database names = target names, in the order of staging.yaml
    prod: list[str]  # from prod-tenants.txt
    prod_eu: str  # the named prod target with its own URL variable

    def run(self, *args: str, **kw: Any) -> Any:
        return self.project.run(*args, **kw)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """The CLI in its own process group, so that a kill takes its workers too."""
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=self.project.path,
            env=self.project.environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def write_staging(self, names: list[str]) -> None:
        self.project.write_env(
            "staging",
            f"""\
            name: staging
            promotes_from: dev
            database:
              url_env: STAGING_SERVER_URL
              databases: [{", ".join(names)}]
            lock:
              timeout: 60
            policy:
              lint: off
            """,
        )

    def rows(self, db: str, sql: str) -> list[tuple[Any, ...]]:
        with self.cluster.connect(db) as conn:
            exists = conn.execute("SELECT to_regclass('orchestrator_ledger')").fetchone()
            if sql.startswith("SELECT") and "orchestrator_ledger" in sql and exists == (None,):
                return []
            return list(conn.execute(sql).fetchall())

    def version(self, db: str) -> list[str]:
        with self.cluster.connect(db) as conn:
            if conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,):
                return []
            return sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))

    def ledger(self, db: str) -> list[tuple[str, str]]:
        return [
            (r[0], r[1])
            for r in self.rows(
                db, "SELECT revision, direction FROM orchestrator_ledger ORDER BY id"
            )
        ]

    def events(self, db: str) -> list[str]:
        with self.cluster.connect(db) as conn:
            if conn.execute("SELECT to_regclass('orchestrator_audit')").fetchone() == (None,):
                return []
            return [
                r[0]
                for r in conn.execute(
                    "SELECT payload::jsonb->>'event' FROM orchestrator_audit ORDER BY id"
                )
            ]

    def audit(self, db: str) -> list[tuple[str, str]]:
        """(event, run_id) of each audit row, oldest first."""
        with self.cluster.connect(db) as conn:
            return [
                (r[0], r[1])
                for r in conn.execute(
                    "SELECT payload::jsonb->>'event', payload::jsonb->>'run_id' "
                    "FROM orchestrator_audit ORDER BY id"
                )
            ]

    def assert_applied_once(self, db: str, revisions: list[str]) -> None:
        """Each revision exactly once, upwards, in order: nothing ran twice, nothing reverted."""
        assert self.ledger(db) == [(r, "up") for r in revisions], db


@pytest.fixture
def fleet(tmp_path: Path, pg_cluster: PgCluster) -> Iterator[Fleet]:
    prefix = f"f{uuid.uuid4().hex[:6]}"
    staging = [f"{prefix}_t{i:02d}" for i in range(FLEET_SIZE)]
    prod = [f"{prefix}_p{i}" for i in range(3)]
    prod_eu = f"{prefix}_eu"
    dev = f"{prefix}_dev"
    created = [dev, *staging, *prod, prod_eu]
    for name in created:
        pg_cluster.create_database(name)
    project = make_project(tmp_path / "project", {"dev": pg_cluster.url(dev)})
    project.extra_env.update(
        STAGING_SERVER_URL=pg_cluster.url("postgres"),  # the server: each name becomes the database
        PROD_SERVER_URL=pg_cluster.url("postgres"),
        PROD_EU_DATABASE_URL=pg_cluster.url(prod_eu),
    )
    project.write_env(
        "dev",
        """\
        name: dev
        database:
          url_env: DEV_DATABASE_URL
        policy:
          lint: off
        """,
    )
    (project.path / "prod-tenants.txt").write_text(
        "# production tenants, one per line\n" + "\n".join(prod) + "\n\n"
    )
    project.write_env(
        "prod",
        """\
        name: prod
        promotes_from: staging
        database:
          url_env: PROD_SERVER_URL
          databases_file: prod-tenants.txt
          targets:
            - name: eu
              url_env: PROD_EU_DATABASE_URL
        policy:
          require_approval: true
          allow_downgrade: false
          lint: off
        """,
    )
    f = Fleet(project, pg_cluster, staging, prod, prod_eu)
    f.write_staging(staging)
    yield f
    for name in created:
        pg_cluster.drop_database(name)


def migrate_dev(fleet: Fleet) -> None:
    result = fleet.run("migrate", "dev")
    assert result.code == 0, result.stderr


def results_by_target(stdout: str) -> dict[str, dict[str, Any]]:
    return {r["target"]: r for r in json.loads(stdout)}


def break_tenant(fleet: Fleet, db: str) -> None:
    """A tenant someone touched by hand: the `orders` revision cannot create its table."""
    with fleet.cluster.connect(db) as conn:
        conn.execute("CREATE TABLE orders (id integer PRIMARY KEY)")


def fix_tenant(fleet: Fleet, db: str) -> None:
    with fleet.cluster.connect(db) as conn:
        conn.execute("DROP TABLE orders")


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} outlived {timeout}s:\n{err[-3000:]}") from None
    return proc.returncode, out, err


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return value


# -- tests -------------------------------------------------------------------------------------


def test_parallel_fan_out_reaches_head_on_every_target_and_a_rerun_is_a_quick_no_op(
    fleet: Fleet,
) -> None:
    migrate_dev(fleet)
    result = fleet.run("migrate", "staging", "--parallel", "4", "--json")
    assert result.code == 0, result.stderr
    results = json.loads(result.stdout)
    assert sorted(r["target"] for r in results) == sorted(fleet.staging)
    assert [r["target"] for r in results] == fleet.staging  # reported in the file's order
    for r in results:
        assert (r["env"], r["outcome"], r["exit_code"], r["applied"]) == (
            "staging",
            "succeeded",
            0,
            SHIPPED,
        ), r
    run_ids = {r["run_id"] for r in results}
    assert len(run_ids) == FLEET_SIZE  # each target its own run, lock, ledger, audit trail
    for db in fleet.staging:
        assert fleet.version(db) == [HEAD]
        fleet.assert_applied_once(db, SHIPPED)
        events = fleet.events(db)
        assert events.count("run.succeeded") == 1 and "lock.acquired" in events, db
        assert "lock.waiting" not in events, db  # a lock per database: no tenant waits on another

    # A re-run reads the whole fleet first, in threads, and runs only where there is work.
    # A tenant changed by hand is at head too, yet its drift must still be seen and recorded.
    touched = fleet.staging[3]
    with fleet.cluster.connect(touched) as conn:
        conn.execute("CREATE TABLE added_by_hand (id integer)")
    before = {db: len(fleet.events(db)) for db in fleet.staging}
    again = fleet.run("migrate", "staging", "--parallel", "4", "--json")
    assert again.code == 0, again.stderr
    assert {(r["applied"] == [], r["message"]) for r in json.loads(again.stdout)} == {
        (True, "nothing to do")
    }  # how quick it is: `make bench`
    for db in fleet.staging:
        fleet.assert_applied_once(db, SHIPPED)
        new_events = fleet.events(db)[before[db] :]
        if db == touched:  # its run took the lock and recorded what it found
            assert "schema.drifted" in new_events and new_events[-1] == "run.succeeded", new_events
        else:  # nothing to do, nothing written
            assert new_events == [], (db, new_events)


BARRIER = """
import os, pathlib, time
if os.environ.get("TEST_BARRIER") and not op.get_context().as_sql:
    here = pathlib.Path(os.environ["TEST_BARRIER"])
    (here / str(os.getpid())).touch()
    deadline = time.monotonic() + 30
    while len(list(here.iterdir())) < 2:  # the other worker must be in here too
        if time.monotonic() > deadline:
            raise RuntimeError("no other worker ran this revision at the same time")
        time.sleep(0.05)
"""


def test_parallel_workers_really_run_at_the_same_time(fleet: Fleet, tmp_path: Path) -> None:
    """A revision that finishes only when two workers are inside it at once: one at a time,
    it fails. The audit trail then shows two worker pids whose runs overlap."""
    fleet.project.add_revision(SLOW, HEAD, BARRIER)
    migrate_dev(fleet)
    pair = fleet.staging[:2]
    fleet.write_staging(pair)
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    result = fleet.run("migrate", "staging", "--parallel", "2", "--json", TEST_BARRIER=str(barrier))

    assert result.code == 0, result.stderr
    assert [r["applied"] for r in json.loads(result.stdout)] == [[*SHIPPED, SLOW]] * 2
    runs = {}
    for db in pair:
        with fleet.cluster.connect(db) as conn:
            rows = conn.execute(
                "SELECT payload::jsonb FROM orchestrator_audit "
                "WHERE payload::jsonb->>'event' IN ('run.started', 'run.succeeded') ORDER BY id"
            ).fetchall()
        (started, ended) = (r[0] for r in rows)
        runs[db] = (started["pid"], started["timestamp"], ended["timestamp"])
    (pid_a, start_a, end_a), (pid_b, start_b, end_b) = runs.values()
    assert pid_a != pid_b and {pid_a, pid_b} == {int(p.name) for p in barrier.iterdir()}
    assert start_a < end_b and start_b < end_a, runs  # the two runs' intervals overlap


def test_failing_target_stop_then_continue_then_fix_resumes_only_what_is_left(fleet: Fleet) -> None:
    migrate_dev(fleet)
    bad = fleet.staging[5]
    break_tenant(fleet, bad)
    orders = SHIPPED.index("a41d7e9c0b12")

    # sequential, --on-error stop (the default): the five before it done, the rest untouched
    stopped = fleet.run("migrate", "staging", "--on-error", "stop", "--json")
    assert stopped.code == 1
    assert bad in stopped.stderr
    results = results_by_target(stopped.stdout)
    assert list(results) == fleet.staging  # one result per target, the untouched ones too
    assert [r["outcome"] for r in results.values()] == ["succeeded"] * 5 + ["failed"] + [
        "skipped"
    ] * (FLEET_SIZE - 6)
    assert results[fleet.staging[6]]["message"] == f"not run: stopped after {bad} failed"
    assert results[bad]["exit_code"] == 1
    assert "a41d7e9c0b12" in results[bad]["message"]
    for db in fleet.staging[:5]:
        assert fleet.version(db) == [HEAD]
    assert fleet.version(bad) == [SHIPPED[orders - 1]]  # earlier revisions stay applied
    fleet.assert_applied_once(bad, SHIPPED[:orders])
    for db in fleet.staging[6:]:
        assert fleet.version(db) == [] and fleet.ledger(db) == [], db

    # parallel, --on-error continue: every other target done, the broken one named again
    cont = fleet.run("migrate", "staging", "--parallel", "4", "--on-error", "continue", "--json")
    assert cont.code == 1
    assert bad in cont.stderr
    results = results_by_target(cont.stdout)
    assert len(results) == FLEET_SIZE
    assert [t for t, r in results.items() if r["exit_code"]] == [bad]
    assert results[bad]["exit_code"] == 1
    for db in fleet.staging[:5]:
        assert results[db]["applied"] == [] and results[db]["message"] == "nothing to do"
    for db in fleet.staging[6:]:
        assert results[db]["applied"] == SHIPPED
    for db in fleet.staging:
        if db != bad:
            assert fleet.version(db) == [HEAD]
            fleet.assert_applied_once(db, SHIPPED)

    # status rolls the fleet up: counts per revision, the failed target named
    status = fleet.run("status", "staging")
    assert status.code == 0, status.stderr
    assert f"staging: fleet of {FLEET_SIZE} databases" in status.stdout
    assert f"{FLEET_SIZE - 1:>4} at {HEAD}" in status.stdout
    assert f"   1 at {SHIPPED[orders - 1]}" in status.stdout
    assert f"last run failed: {bad}" in status.stdout

    # fixed by hand, the re-run resumes only the broken tenant
    fix_tenant(fleet, bad)
    resumed = fleet.run("migrate", "staging", "--parallel", "4", "--json")
    assert resumed.code == 0, resumed.stderr
    results = results_by_target(resumed.stdout)
    assert {t: r["applied"] for t, r in results.items() if r["applied"]} == {bad: SHIPPED[orders:]}
    for db in fleet.staging:
        assert fleet.version(db) == [HEAD]
        fleet.assert_applied_once(db, SHIPPED)


def test_a_failing_canary_leaves_every_other_target_untouched(fleet: Fleet) -> None:
    migrate_dev(fleet)
    break_tenant(fleet, fleet.staging[1])
    result = fleet.run(
        "migrate", "staging", "--canary", "2", "--parallel", "4", "--on-error", "continue", "--json"
    )
    assert result.code == 1
    assert fleet.staging[1] in result.stderr
    results = results_by_target(result.stdout)
    assert [r["outcome"] for r in results.values()] == ["succeeded", "failed"] + ["skipped"] * (
        FLEET_SIZE - 2
    )
    assert results[fleet.staging[1]]["exit_code"] == 1
    assert {r["exit_code"] for r in results.values()} == {0, 1}
    assert fleet.version(fleet.staging[0]) == [HEAD]  # the other canary ran
    for db in fleet.staging[2:]:
        assert fleet.version(db) == [] and fleet.ledger(db) == [], db
    # (a passing canary is in the gate test: prod goes through with --canary 1)


def test_sigkill_mid_fan_out_then_rerun_finishes_only_what_is_left(fleet: Fleet) -> None:
    fleet.project.add_revision(SLOW, HEAD, "op.execute('SELECT pg_sleep(0.5)')")
    everything = [*SHIPPED, SLOW]
    migrate_dev(fleet)
    conns = {db: fleet.cluster.connect(db) for db in ["postgres", *fleet.staging]}

    def slow_done() -> list[str]:
        return [db for db in fleet.staging if _has_revision(conns[db], SLOW)]

    def sleeping() -> list[str]:
        return [
            r[0]
            for r in conns["postgres"]
            .execute(
                "SELECT datname FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE '%%pg_sleep%%' AND pid <> pg_backend_pid()"
            )
            .fetchall()
        ]

    proc = fleet.popen("migrate", "staging", "--parallel", "2")
    try:
        # some targets done, and a worker inside the slow revision right now: kill everything
        cut = wait_for(
            "a worker mid-revision after a few targets",
            lambda: len(slow_done()) >= 3 and sleeping(),
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    wait_for("the killed sessions to end", lambda: not sleeping(), timeout=10)
    finished = slow_done()
    for conn in conns.values():
        conn.close()
    assert 3 <= len(finished) < FLEET_SIZE, finished
    assert not set(cut) & set(finished)  # the revision in progress died with its session

    rerun = fleet.run("migrate", "staging", "--parallel", "4", "--json")
    assert rerun.code == 0, rerun.stderr
    results = results_by_target(rerun.stdout)
    assert len(results) == FLEET_SIZE
    for db in finished:  # already at head: skipped, nothing applied again
        assert results[db]["applied"] == [] and results[db]["message"] == "nothing to do", db
    for db in set(fleet.staging) - set(finished):
        assert results[db]["applied"], db
        assert results[db]["applied"] == everything[everything.index(results[db]["applied"][0]) :]
    for db in cut:
        assert results[db]["applied"] == [SLOW], db  # only what was left
    for db in fleet.staging:
        assert fleet.version(db) == [SLOW]
        fleet.assert_applied_once(db, everything)
        # every run that started has ended; the ones the kill cut short as interrupted
        started = {run for event, run in fleet.audit(db) if event == "run.started"}
        ended = {run for event, run in fleet.audit(db) if event in TERMINAL}
        assert started <= ended, (db, fleet.audit(db))
    for db in cut:
        assert "run.interrupted" in fleet.events(db), db
    status = fleet.run("status", "staging", "--json")
    assert [r["target"] for r in status.json() if r["interrupted"]] == []


def _has_revision(conn: Any, revision: str) -> bool:
    if conn.execute("SELECT to_regclass('orchestrator_ledger')").fetchone() == (None,):
        return False
    found = conn.execute("SELECT 1 FROM orchestrator_ledger WHERE revision = %s", (revision,))
    return found.fetchone() is not None


@contextmanager
def lock_held(fleet: Fleet, db: str) -> Iterator[None]:
    """Someone else holds `db`'s migration lock for the duration of the block."""
    with fleet.cluster.connect(db) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (lock_id(DEFAULT_KEY),))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id(DEFAULT_KEY),))


def all_waiting(
    fleet: Fleet, db: str, runners: list[subprocess.Popen[str]], before: int = 0
) -> None:
    """Until every runner waits for `db`'s lock: they are all alive and in the same place."""
    wait_for(
        f"{len(runners)} runners to wait for {db}'s lock",
        lambda: (
            any(p.poll() is not None for p in runners)
            or fleet.events(db).count("lock.waiting") == before + len(runners)
        ),
        timeout=60,
    )
    assert all(p.poll() is None for p in runners), [finish(p, 5) for p in runners]


def test_overlapping_shard_runners_never_apply_a_revision_twice(fleet: Fleet) -> None:
    migrate_dev(fleet)
    start = fleet.staging[0]  # where the two identical shards start: both wait there at once
    with lock_held(fleet, start):
        runners = [
            fleet.popen("migrate", "staging", "--shard", shard, "--json")
            for shard in ("1/2", "1/2", "2/2")
        ]
        all_waiting(fleet, start, runners[:2])
    outcomes = [finish(p) for p in runners]
    for code, _, err in outcomes:
        assert code == 0, err
    first, twin, second = (results_by_target(out) for _, out, _ in outcomes)
    assert list(first) == list(twin) == fleet.staging[0::2]
    assert list(second) == fleet.staging[1::2]
    for db in fleet.staging[0::2]:  # the two identical shards share each database's work
        assert sorted(first[db]["applied"] + twin[db]["applied"]) == sorted(SHIPPED), db
    for db in fleet.staging:
        assert fleet.version(db) == [HEAD]
        fleet.assert_applied_once(db, SHIPPED)

    # a new revision: a whole-fleet runner and a half-fleet runner at once
    fleet.project.add_revision(SLOW, HEAD, "op.execute('SELECT pg_sleep(0.05)')")
    migrate_dev(fleet)
    waited = fleet.events(start).count("lock.waiting")
    with lock_held(fleet, start):
        runners = [
            fleet.popen("migrate", "staging", "--shard", shard, "--parallel", "2")
            for shard in ("1/1", "1/2")
        ]
        all_waiting(fleet, start, runners, before=waited)
    for code, _, err in (finish(p) for p in runners):
        assert code == 0, err
    for db in fleet.staging:
        assert fleet.version(db) == [SLOW]
        fleet.assert_applied_once(db, [*SHIPPED, SLOW])
        counts = Counter(r for r, _ in fleet.ledger(db))
        assert set(counts.values()) == {1}, (db, counts)


def test_gate_refuses_prod_while_one_staging_target_lags(fleet: Fleet) -> None:
    migrate_dev(fleet)
    onboarded_later = fleet.staging[-1]
    fleet.write_staging(fleet.staging[:-1])
    assert fleet.run("migrate", "staging", "--parallel", "4").code == 0
    fleet.write_staging(fleet.staging)  # a new tenant joins staging, migrated only part-way
    partial = fleet.run(
        "migrate", "staging", "--shard", f"{FLEET_SIZE}/{FLEET_SIZE}", "--to", SHIPPED[2], "--json"
    )
    assert partial.code == 0, partial.stderr
    assert list(results_by_target(partial.stdout)) == [onboarded_later]
    prod_dbs = [*fleet.prod, fleet.prod_eu]

    refused = fleet.run("migrate", "prod", "--approve", "--parallel", "4", "--json")
    assert refused.code == 3
    assert onboarded_later in refused.stderr
    for rev in SHIPPED[3:]:
        assert rev in refused.stderr
    assert f"not run on staging ({onboarded_later})" in refused.stderr
    others = [t for t in fleet.staging if t != onboarded_later]
    assert not any(t in refused.stderr for t in others[:5])  # only the lagging one is named
    results = results_by_target(refused.stdout)
    assert sorted(results) == sorted([*fleet.prod, "eu"])
    assert {r["exit_code"] for r in results.values()} == {3}
    for db in prod_dbs:
        assert fleet.version(db) == [] and fleet.ledger(db) == [], db

    # promote refuses too: staging's databases disagree
    assert fleet.run("promote", "prod", "--approve").code == 3
    # what every staging target has run is allowed
    upto = fleet.run("migrate", "prod", "--approve", "--to", SHIPPED[2], "--parallel", "4")
    assert upto.code == 0, upto.stderr
    for db in prod_dbs:
        assert fleet.version(db) == [SHIPPED[2]]

    # once the lagging tenant catches up, prod goes through (canary first)
    assert fleet.run("migrate", "staging", "--parallel", "4").code == 0
    done = fleet.run("promote", "prod", "--approve", "--canary", "1", "--parallel", "4", "--json")
    assert done.code == 0, done.stderr
    assert sorted(results_by_target(done.stdout)) == sorted([*fleet.prod, "eu"])
    for db in prod_dbs:
        assert fleet.version(db) == [HEAD]
        fleet.assert_applied_once(db, SHIPPED)


def test_status_lists_every_target_and_rolls_the_fleet_up(fleet: Fleet) -> None:
    migrate_dev(fleet)
    assert fleet.run("migrate", "staging", "--parallel", "4").code == 0
    drifted = fleet.staging[3]
    with fleet.cluster.connect(drifted) as conn:  # as if that tenant ran another script
        conn.execute(
            "UPDATE orchestrator_ledger SET checksum = repeat('0', 64) WHERE revision = %s", (HEAD,)
        )
    hand_made = fleet.staging[5]
    with fleet.cluster.connect(hand_made) as conn:  # a hot-fix index on one tenant only
        conn.execute("CREATE INDEX ix_users_display ON users (display_name)")

    listed = fleet.run("status", "--json")
    assert listed.code == 0, listed.stderr
    rows = listed.json()
    by_env = Counter(r["env"] for r in rows)
    assert by_env == {"dev": 1, "staging": FLEET_SIZE, "prod": len(fleet.prod) + 1}
    staging = {r["target"]: r for r in rows if r["env"] == "staging"}
    assert sorted(staging) == sorted(fleet.staging)
    assert all(r["current"] == [HEAD] for r in staging.values())
    assert [t for t, r in staging.items() if r["drift"]] == [drifted]
    assert {t for t, r in staging.items() if r["schema"] != "ok"} == {hand_made}
    assert staging[hand_made]["schema"] == "drifted"
    prod = {r["target"]: r for r in rows if r["env"] == "prod"}
    assert sorted(prod) == sorted([*fleet.prod, "eu"])
    assert all(r["pending"] == SHIPPED and r["current"] == [] for r in prod.values())
    assert all(
        r["blocked"] == [{"revision": HEAD, "reason": prod["eu"]["blocked"][0]["reason"]}]
        for r in prod.values()
    )
    assert drifted in prod["eu"]["blocked"][0]["reason"]

    text = fleet.run("status")
    assert text.code == 0, text.stderr
    assert f"staging: fleet of {FLEET_SIZE} databases" in text.stdout
    assert f"{FLEET_SIZE:>4} at {HEAD}" in text.stdout
    assert f"drifted: {drifted}" in text.stdout
    assert f"schema: {FLEET_SIZE - 1} ok, 1 drifted" in text.stdout
    assert f"schema drifted: {hand_made}" in text.stdout
    assert f"prod: fleet of {len(fleet.prod) + 1} databases" in text.stdout
    assert fleet.staging[7] not in text.stdout  # rolled up, not listed

    per_target = fleet.run("status", "staging", "--targets")
    assert per_target.code == 0, per_target.stderr
    assert all(db in per_target.stdout for db in fleet.staging)


@pytest.mark.parametrize(
    ("database", "named"),
    [
        ("databases: []", "list no database"),
        ("databases_file: empty.txt", "list no database"),
        ("databases: [good, 'bad name']", "'bad name' is not a database name"),
        ("databases: [a, b, a]", "target 'a' is listed twice"),
        ("databases_file: missing.txt", "missing.txt does not exist"),
        ("targets: [{name: eu}]", "target 'eu' needs `url_env`"),
        ("targets: [{name: eu, url_env: NOT_SET_ANYWHERE}]", "NOT_SET_ANYWHERE"),
    ],
)
def test_bad_fleet_entries_are_usage_errors_naming_the_entry(
    tmp_path: Path, database: str, named: str
) -> None:
    project = make_project(tmp_path / "project", {})
    (project.path / "empty.txt").write_text("# nobody yet\n\n")
    project.write_env(
        "staging",
        f"""\
        name: staging
        promotes_from: dev
        database:
          url_env: STAGING_SERVER_URL
          {database}
        """,
    )
    result = project.run("migrate", "staging", STAGING_SERVER_URL="sqlite:///x/{database}.db")
    assert result.code == 2, result.output
    assert named in result.stderr and "staging.yaml" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
