"""Reading a fleet: one engine per server, databases read in threads (issue 18), on real
PostgreSQL. Each database must answer for itself, whichever thread and connection read it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pgcluster import PgCluster
from sqlalchemy import event

from orchestrator.core.config import Target
from orchestrator.db import database
from orchestrator.db.database import current_heads, has_table
from orchestrator.evidence import ledger
from orchestrator.running.predecessor import read_connection, read_each

SIZE = 24


@pytest.fixture
def databases(pg_cluster: PgCluster) -> Iterator[list[str]]:
    prefix = f"r{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}_{i:02d}" for i in range(SIZE)]
    for i, name in enumerate(names):
        pg_cluster.create_database(name)
        if i % 3:  # two of three at their own revision; every third has no version table
            with pg_cluster.connect(name) as conn:
                conn.execute("CREATE TABLE alembic_version (version_num varchar(32))")
                conn.execute("INSERT INTO alembic_version VALUES (%s)", (f"rev{i:02d}",))
    yield names
    for name in names:
        pg_cluster.drop_database(name)


def test_threads_read_each_database_through_one_server_engine(
    pg_cluster: PgCluster, databases: list[str]
) -> None:
    targets = [Target("fleet", n, pg_cluster.url(n)) for n in databases]

    def heads(target: Target) -> tuple[tuple[str, ...], str, bool]:
        with read_connection(target) as connection:
            name = connection.exec_driver_sql("SELECT current_database()").scalar_one()
            return current_heads(connection), name, has_table(connection, ledger.AUDIT_TABLE)

    for _ in range(3):  # the engine is reused: later rounds must not see earlier databases
        found = read_each(targets, heads)
        assert [name for _, name, _ in found] == databases
        assert [h for h, _, _ in found] == [(f"rev{i:02d}",) if i % 3 else () for i in range(SIZE)]
        assert not any(audit for _, _, audit in found)
    # and through one engine for the server, not one per database
    server = pg_cluster.url("x").rsplit("/", 1)[0]  # the URL without its database
    assert [key for key in database._readers if key[0] == server] == [
        (server, "orchestrator status")
    ]


def test_a_read_only_connection_lists_tables_once_and_answers_from_the_list(
    pg_cluster: PgCluster, databases: list[str]
) -> None:
    name = databases[1]  # has alembic_version
    target = Target("dev", "dev", pg_cluster.url(name))
    with read_connection(target) as connection:
        assert has_table(connection, "alembic_version")
        assert not has_table(connection, ledger.LEDGER_TABLE)
        statements: list[str] = []
        event.listen(connection, "before_cursor_execute", lambda *a: statements.append(a[2]))
        assert has_table(connection, "alembic_version")  # from the list: no new statement
        assert not has_table(connection, ledger.AUDIT_TABLE)
        assert statements == []
