"""Fail closed (SPEC Part 2, "Fencing and fail-closed"): no run changes a schema unless its
`run.started` is durably in the audit table. A real restricted PostgreSQL role."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pgcluster import PgCluster
from projectkit import HEAD, SHIPPED, Project, add_chain, dbname


@pytest.fixture
def deploy(pg_project: Project, pg_cluster: PgCluster) -> Iterator[str]:
    """dev migrated to HEAD by the owner; a `deploy` role that may use what exists."""
    assert pg_project.run("migrate", "dev", timeout=60).code == 0
    db = dbname(pg_project, "dev")
    role = f"deploy_{db}"
    with pg_cluster.connect(db) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        admin.execute("CREATE TABLE marker (n integer)")
        admin.execute(f"GRANT ALL ON marker TO {role}")
    yield role
    with pg_cluster.connect(db) as admin:
        admin.execute(f"DROP OWNED BY {role}")


def assert_nothing_changed(project: Project, result_stderr: str) -> None:
    assert project.query("dev", "SELECT count(*) FROM marker") == [(0,)]
    assert project.version("dev") == [HEAD]
    assert [r for r, _ in project.ledger("dev")] == SHIPPED
    assert "Traceback" not in result_stderr


def test_no_insert_on_the_audit_table_means_no_run(
    pg_project: Project, pg_cluster: PgCluster, deploy: str
) -> None:
    add_chain(pg_project, HEAD, 'op.execute("INSERT INTO marker VALUES (1)")')
    db = dbname(pg_project, "dev")
    with pg_cluster.connect(db) as admin:
        admin.execute(f"REVOKE INSERT ON orchestrator_audit FROM {deploy}")
    before = pg_project.query("dev", "SELECT count(*) FROM orchestrator_audit")

    result = pg_project.run("migrate", "dev", DEV_DATABASE_URL=pg_cluster.url(db, user=deploy))

    assert result.code == 1, result.output
    assert "audit trail of dev cannot be written" in result.stderr
    assert "permission denied for table orchestrator_audit" in result.stderr
    assert "nothing was changed" in result.stderr
    assert_nothing_changed(pg_project, result.stderr)
    assert pg_project.query("dev", "SELECT count(*) FROM orchestrator_audit") == before


def test_a_missing_audit_table_the_role_cannot_create_means_no_run(
    pg_project: Project, pg_cluster: PgCluster, deploy: str
) -> None:
    add_chain(pg_project, HEAD, 'op.execute("INSERT INTO marker VALUES (1)")')
    db = dbname(pg_project, "dev")
    with pg_cluster.connect(db) as admin:
        admin.execute("DROP TABLE orchestrator_audit")

    result = pg_project.run("migrate", "dev", DEV_DATABASE_URL=pg_cluster.url(db, user=deploy))

    assert result.code == 1, result.output
    assert "audit trail of dev cannot be written" in result.stderr
    assert "permission denied for schema public" in result.stderr
    assert_nothing_changed(pg_project, result.stderr)
