"""Bad input (SPEC Part 2, "Fencing and fail-closed"): each is exit 2 naming what is wrong,
one paragraph, no traceback, and nothing migrated."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from pgcluster import PgCluster
from projectkit import HEAD, SHIPPED, Project, Result, add_chain, dbname, events, finish
from test_fencing import BLOCKING_BODY, blocker, run_id_of, runs_waiting_on, wait_long

__all__ = ["blocker"]  # a fixture


def assert_usage(result: Result, *names: str) -> None:
    assert result.code == 2, result.output
    for name in names:
        assert name in result.stderr, (name, result.stderr)
    assert "Traceback" not in result.output and "unexpected error" not in result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("migrate", "dev", "--to", ""), "--to"),
        (("migrate", "dev", "--to", "  "), "--to"),
        (("migrate", "dev", "--lock-timeout", "nan"), "--lock-timeout"),
        (("migrate", "dev", "--lock-timeout", "inf"), "--lock-timeout"),
        (("migrate", "dev", "--lock-timeout", "-5"), "--lock-timeout"),
        (("migrate", "dev", "--ticket", "x" * 4097), "--ticket"),
        (("downgrade", "dev", "--to", "-1", "--reason", "r" * 4097), "--reason"),
        (("baseline", "dev", "--revision", HEAD, "--reason", "r" * 4097), "--reason"),
    ],
)
def test_bad_arguments(sqlite_project: Project, args: tuple[str, ...], named: str) -> None:
    assert_usage(sqlite_project.run(*args), named)
    assert sqlite_project.version("dev") == []


def test_an_actor_longer_than_4096_characters_is_refused(sqlite_project: Project) -> None:
    result = sqlite_project.run("migrate", "dev", ORCHESTRATOR_ACTOR="a" * 4097)
    assert_usage(result, "ORCHESTRATOR_ACTOR", "4096")
    assert sqlite_project.version("dev") == []


def test_a_long_actor_is_recorded_even_in_tables_of_the_previous_version(
    pg_project: Project,
) -> None:
    assert pg_project.run("migrate", "dev", "--to", SHIPPED[0]).code == 0
    engine = pg_project.engine("dev")
    with engine.begin() as connection:  # the tables as the previous version made them
        for table in ("orchestrator_audit", "orchestrator_ledger"):
            connection.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN actor TYPE VARCHAR(256)")
    engine.dispose()
    actor = "ci-bot/" + "x" * 293

    result = pg_project.run("migrate", "dev", ORCHESTRATOR_ACTOR=actor)

    assert result.code == 0, result.output
    assert pg_project.version("dev") == [HEAD]
    run = [e for e in pg_project.audit_events("dev") if e["actor"] == actor]
    assert [e["event"] for e in run][:2] == ["run.started", "lock.acquired"]
    assert "run.succeeded" in [e["event"] for e in run]
    assert pg_project.query(
        "dev", "SELECT count(*) FROM orchestrator_ledger WHERE actor = '" + actor + "'"
    ) == [(len(SHIPPED) - 1,)]


def test_bad_log_format_names_the_variable(sqlite_project: Project) -> None:
    assert_usage(
        sqlite_project.run("status", ORCHESTRATOR_LOG_FORMAT="xml"), "ORCHESTRATOR_LOG_FORMAT"
    )
    plain = sqlite_project.alembic("upgrade", "head", ORCHESTRATOR_LOG_FORMAT="xml")
    assert plain.code != 0 and "ORCHESTRATOR_LOG_FORMAT" in plain.output
    assert "Traceback" not in plain.output
    assert sqlite_project.version("dev") == []


def test_an_environment_file_that_is_not_utf8_text(sqlite_project: Project) -> None:
    path = sqlite_project.path / "environments" / "dev.yaml"
    path.write_bytes(path.read_bytes().replace(b"developer", b"d\xe9veloper"))
    assert_usage(sqlite_project.run("migrate", "dev"), "dev.yaml", "not UTF-8")
    path.write_bytes(b"\x00\x01\x02name: dev\n")
    assert_usage(sqlite_project.run("envs"), "dev.yaml", "binary")


def test_an_environment_file_that_is_a_directory(sqlite_project: Project) -> None:
    (sqlite_project.path / "environments" / "qa.yaml").mkdir()
    assert_usage(sqlite_project.run("envs"), "qa.yaml", "is a directory")


@pytest.mark.parametrize("kind", ["directory", "binary", "latin-1"])
def test_a_databases_file_that_is_not_text(sqlite_project: Project, kind: str) -> None:
    sqlite_project.write_env(
        "dev",
        """
        name: dev
        database:
          url: sqlite:///.orchestrator/{database}.db
          databases_file: tenants.txt
        """,
    )
    tenants = sqlite_project.path / "tenants.txt"
    if kind == "directory":
        tenants.mkdir()
    else:
        tenants.write_bytes(b"acme\n\x00\x01" if kind == "binary" else b"acme\nm\xfcller\n")
    assert_usage(sqlite_project.run("migrate", "dev"), "tenants.txt")


def test_a_revision_that_raises_on_import_is_named(sqlite_project: Project) -> None:
    (rev,) = add_chain(sqlite_project, HEAD, "pass")
    path = next(sqlite_project.versions.glob(f"{rev}_*.py"))
    path.write_text(path.read_text() + '\nraise RuntimeError("cannot import me")\n')

    result = sqlite_project.run("migrate", "dev")

    assert_usage(result, path.name, "cannot import me", "RuntimeError")
    assert sqlite_project.version("dev") == []


def test_a_long_environment_name_never_hides_a_live_run(
    pg_project: Project, blocker: psycopg.Connection[Any], procs: list
) -> None:
    long = "customer-facing-production-eu-west-primary-cluster-" + "x" * 9
    assert len(long) == 60
    (pg_project.path / "environments" / "dev.yaml").rename(
        pg_project.path / "environments" / f"{long}.yaml"
    )
    text = (pg_project.path / "environments" / f"{long}.yaml").read_text()
    (pg_project.path / "environments" / f"{long}.yaml").write_text(
        text.replace("name: dev", f"name: {long}")
    )
    staging = (pg_project.path / "environments" / "staging.yaml").read_text()
    (pg_project.path / "environments" / "staging.yaml").write_text(
        staging.replace("promotes_from: dev", f"promotes_from: {long}")
    )
    assert pg_project.run("migrate", long).code == 0
    (quick, _blocking) = add_chain(
        pg_project,
        HEAD,
        'op.create_table("side_effects", sa.Column("n", sa.Integer))',
        BLOCKING_BODY,
    )
    runner = pg_project.popen("migrate", long, TEST_BLOCK="1")
    procs.append(runner)
    wait_long("the run inside a revision", lambda: runs_waiting_on(pg_project, "advisory"))

    status = pg_project.run("status", long, "--json")

    assert status.code == 0, status.output
    (row,) = status.json()
    assert row["interrupted"] == [], "a live run shown as interrupted"
    blocker.execute("SELECT pg_advisory_unlock(424242)")
    code, _, err = finish(runner, 120)
    assert code == 0, err[-3000:]
    assert run_id_of(pg_project, runner)
    assert not events(pg_project, "dev", "run.interrupted")


def test_the_database_going_away_mid_revision_names_the_revision(
    pg_project: Project, pg_cluster: PgCluster, blocker: psycopg.Connection[Any], procs: list
) -> None:
    """What a server restart does to a run: every session of it ends with AdminShutdown."""
    assert pg_project.run("migrate", "dev").code == 0
    (quick, blocking) = add_chain(
        pg_project,
        HEAD,
        'op.create_table("side_effects", sa.Column("n", sa.Integer))',
        BLOCKING_BODY,
    )
    runner = pg_project.popen("migrate", "dev", TEST_BLOCK="1")
    procs.append(runner)
    wait_long("the run inside a revision", lambda: runs_waiting_on(pg_project, "advisory"))
    with pg_cluster.connect(dbname(pg_project, "dev")) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'orchestrator run=%' AND datname = current_database()"
        )

    code, _, err = finish(runner, 120)

    assert code == 1, err[-3000:]
    assert blocking in err and "unexpected error" not in err and "Traceback" not in err
    assert pg_project.version("dev") == [quick]
