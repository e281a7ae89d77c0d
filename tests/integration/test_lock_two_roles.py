"""Two deploy roles (SPEC "Locking"): a run waiting for the migration lock names the run that
holds it even when that run connected as another role, whose session PostgreSQL shows only in
part (no backend_start, client address or state without pg_read_all_stats). Real roles, real
processes, a real PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgcluster import PgCluster
from projectkit import HEAD, Project, add_chain, dbname, events, finish, wait_for, waits_for_file

from orchestrator.db.locks import DEFAULT_KEY, lock_id


@pytest.fixture
def two_roles(pg_project: Project, pg_cluster: PgCluster) -> Iterator[tuple[str, str]]:
    """dev migrated to HEAD by the owner; two LOGIN roles (no superuser, no pg_read_all_stats)
    that may use its tables, as two deploy pipelines would."""
    assert pg_project.run("migrate", "dev", timeout=60).code == 0
    db = dbname(pg_project, "dev")
    suffix = uuid.uuid4().hex[:12]
    roles = (f"deploy_a_{suffix}", f"deploy_b_{suffix}")
    with pg_cluster.connect(db) as admin:
        for role in roles:
            admin.execute(f"CREATE ROLE {role} LOGIN")
            admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
            admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    yield roles
    with pg_cluster.connect(db) as admin:
        for role in roles:
            admin.execute(f"DROP OWNED BY {role}")
    with pg_cluster.connect("postgres") as admin:
        for role in roles:
            admin.execute(f"DROP ROLE {role}")


def test_a_run_of_another_role_names_the_run_holding_the_lock(
    pg_project: Project,
    pg_cluster: PgCluster,
    two_roles: tuple[str, str],
    procs: list,
    tmp_path: Path,
) -> None:
    first_role, second_role = two_roles
    db = dbname(pg_project, "dev")
    release = tmp_path / "release"
    (held,) = add_chain(
        pg_project,
        HEAD,
        waits_for_file(release, 60),
    )
    first = pg_project.popen("migrate", "dev", DEV_DATABASE_URL=pg_cluster.url(db, first_role))
    procs.append(first)
    wait_for(
        "the first run to take the lock",
        lambda: first.poll() is not None or events(pg_project, "dev", "lock.acquired")[1:],
        timeout=120,
    )
    assert first.poll() is None, finish(first, 5)
    key = lock_id(DEFAULT_KEY)  # the migration lock's, not a passing one of the audit chain
    (lock_pid,) = pg_project.query(
        "dev",
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        f" AND classid = {(key >> 32) & 0xFFFFFFFF} AND objid = {key & 0xFFFFFFFF}",
    )[0]

    second = pg_project.run(
        "migrate",
        "dev",
        "--lock-timeout",
        "2",
        DEV_DATABASE_URL=pg_cluster.url(db, second_role),
        timeout=60,
    )

    assert second.code == 4, second.output
    assert "Traceback" not in second.stderr
    (waiting,) = events(pg_project, "dev", "lock.waiting")
    (run_id,) = [e["run_id"] for e in events(pg_project, "dev", "lock.acquired")[1:]]
    holder = {
        "pid": lock_pid,
        "application_name": f"orchestrator run={run_id} dev tester",
        "role": first_role,
        "client_addr": None,  # over TCP, but PostgreSQL does not say so to this role
        "since": None,
        "state": None,
        "hidden": True,
    }
    assert waiting["holder"] == holder
    (failed,) = [e for e in events(pg_project, "dev", "run.failed") if e["holder"] == holder]
    assert failed["run_id"] == waiting["run_id"]
    assert (
        f"it is held by pid {lock_pid}, application 'orchestrator run={run_id} dev tester', "
        f"role '{first_role}' (its address and start are hidden from this role; "
        "pg_read_all_stats shows them). Wait for that run to finish" in second.stderr
    )
    assert "local socket" not in second.stderr
    assert first.poll() is None and not release.exists()  # it gave up while the first still ran
    release.touch()
    code, _, err = finish(first, 120)
    assert code == 0, err[-3000:]
    assert held in [r for r, d in pg_project.ledger("dev") if d == "up"]
