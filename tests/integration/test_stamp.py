"""Plain `alembic stamp` is a write (SPEC Part 2, "What runs is what was hashed"): lock,
approval, downgrade policy, `stamped` ledger rows, audit events; and `status` flags a version
table that disagrees with the ledger."""

from __future__ import annotations

from projectkit import HEAD, SHIPPED, Project

BELOW = SHIPPED[-2]


def up_everywhere(project: Project) -> None:
    for env in ("dev", "staging", "prod"):
        done = project.alembic("-x", f"env={env}", "-x", "approve=yes", "upgrade", "head")
        assert done.code == 0, done.output


def test_a_backwards_stamp_is_a_downgrade_refused_where_downgrades_are(
    sqlite_project: Project,
) -> None:
    up_everywhere(sqlite_project)

    stamp = sqlite_project.alembic("-x", "env=prod", "-x", "approve=yes", "stamp", BELOW)

    assert stamp.code != 0
    assert "downgrades are not allowed on prod" in stamp.output and HEAD in stamp.output
    assert sqlite_project.version("prod") == [HEAD]
    refused = [e for e in sqlite_project.audit_events("prod") if e["event"] == "run.refused"]
    assert len(refused) == 1 and refused[0]["command"] == "alembic stamp"
    promote = sqlite_project.run("promote", "prod", "--approve")
    assert promote.code == 0, promote.output
    assert [r for r, d in sqlite_project.ledger("prod") if d == "up"] == SHIPPED  # each once


def test_a_stamp_needs_approval_where_runs_do(sqlite_project: Project) -> None:
    up_everywhere(sqlite_project)
    stamp = sqlite_project.alembic("-x", "env=prod", "stamp", HEAD)
    assert stamp.code != 0 and "requires approval" in stamp.output
    assert sqlite_project.ledger("prod")[-1] == (HEAD, "up")


def test_a_stamp_is_locked_recorded_in_the_ledger_and_audited(pg_project: Project) -> None:
    up_everywhere(pg_project)

    stamp = pg_project.alembic("-x", "env=staging", "stamp", BELOW)

    assert stamp.code == 0, stamp.output
    assert pg_project.version("staging") == [BELOW]
    assert pg_project.ledger("staging")[-1] == (BELOW, "stamped")
    events = pg_project.audit_events("staging")
    (started,) = [e for e in events if e["event"] == "run.started"][-1:]
    run = [e["event"] for e in events if e["run_id"] == started["run_id"]]
    assert run == [
        "run.started",
        "lock.acquired",
        "migration.stamped",
        "run.succeeded",
        "lock.released",
    ]
    assert started["command"] == "alembic stamp"
    status = pg_project.run("status", "staging", "--json")
    assert status.code == 0, status.output
    (row,) = status.json()
    assert row["version_disagrees"] is None, row  # the ledger knows of the stamp
    assert row["pending"] == [HEAD]


def test_status_flags_a_version_table_that_disagrees_with_the_ledger(
    pg_project: Project,
) -> None:
    assert pg_project.run("migrate", "dev").code == 0
    assert pg_project.run("status", "dev", "--json").json()[0]["version_disagrees"] is None
    engine = pg_project.engine("dev")
    with engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{BELOW}'")
    engine.dispose()

    status = pg_project.run("status", "dev", "--json")

    assert status.code == 0, status.output
    (row,) = status.json()
    assert row["version_disagrees"] == {"alembic_version": [BELOW], "ledger": [HEAD]}
    text = pg_project.run("status", "dev")
    assert "dev: version table disagrees with ledger" in text.stdout, text.output
