"""The PostgreSQL advisory lock itself, on a real server, against a real second session:
fast enough to run for every mutant of orchestrator/db/locks.py (`make mutants`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from pgcluster import PgCluster

from orchestrator.core.errors import LockTimeout
from orchestrator.db.locks import lock_id, migration_lock

KEY = "tenant-42"


@pytest.fixture
def engine(pg_db: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_db, connect_args={"application_name": "the orchestrator"})
    yield engine
    engine.dispose()


@pytest.fixture
def other(pg_cluster: PgCluster, pg_db: str) -> Iterator[psycopg.Connection[Any]]:
    """Another session on the same database, as psql would be."""
    conn = psycopg.connect(
        pg_cluster.dsn(sa.engine.make_url(pg_db).database or ""),
        autocommit=True,
        application_name="someone else",
    )
    yield conn
    conn.close()


def try_lock(conn: psycopg.Connection[Any], key: str) -> bool:
    taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_id(key),)).fetchone()
    assert taken is not None
    if taken[0]:
        conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id(key),))
    return bool(taken[0])


def test_held_for_the_block_on_an_idle_session_and_released_after(
    engine: sa.Engine, other: psycopg.Connection[Any]
) -> None:
    with migration_lock(engine, KEY, 5, lambda _h: pytest.fail("waited"), "me") as held:
        assert held.waited is None
        assert not try_lock(other, KEY)  # held: nobody else gets it
        assert try_lock(other, "another key")  # only that key
        states = other.execute(
            "SELECT a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted"
        ).fetchall()
        # idle, not "idle in transaction": CREATE INDEX CONCURRENTLY never waits on it
        assert states == [("idle",)]
    assert try_lock(other, KEY)


def test_timeout_names_the_session_holding_it(
    engine: sa.Engine, other: psycopg.Connection[Any]
) -> None:
    other.execute("SELECT pg_advisory_lock(%s)", (lock_id(KEY),))
    row = other.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    pid = row[0]
    waits: list[dict[str, Any]] = []
    with (
        pytest.raises(LockTimeout) as info,
        migration_lock(engine, KEY, 0.3, waits.append, "me"),
    ):
        pytest.fail("acquired a lock another session holds")
    (waited,) = waits
    assert info.value.details["holder"] == waited
    assert (waited["pid"], waited["application_name"]) == (pid, "someone else")
    assert waited["client_addr"] == "127.0.0.1" and waited["state"] == "idle"
    assert waited["since"] and waited["since"][:4].isdigit()
    assert info.value.message.startswith(
        f"The migration lock was not acquired within 0.3s: it is held by pid {pid}, "
        "application 'someone else', from 127.0.0.1, connected since "
    )
    assert info.value.message.endswith(". Wait for that run to finish, or raise --lock-timeout.")


def test_a_holder_of_another_role_is_named_by_what_postgres_shows_us(
    pg_cluster: PgCluster, pg_db: str
) -> None:
    """Two deploy roles, neither superuser: PostgreSQL hides each one's address and start
    from the other (NULL backend_start), unless it has pg_read_all_stats."""
    database = sa.engine.make_url(pg_db).database or ""
    suffix = uuid.uuid4().hex[:12]
    first, second = f"deploy_a_{suffix}", f"deploy_b_{suffix}"
    with pg_cluster.connect(database) as admin:
        for role in (first, second):
            admin.execute(f"CREATE ROLE {role} LOGIN")
    holder = psycopg.connect(
        pg_cluster.dsn(database, user=first), autocommit=True, application_name="run a"
    )
    engine = sa.create_engine(pg_cluster.url(database, second))
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_id(KEY),))
        row = holder.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        waits: list[dict[str, Any]] = []
        with (
            pytest.raises(LockTimeout) as info,
            migration_lock(engine, KEY, 0.3, waits.append, "me"),
        ):
            pytest.fail("acquired a lock another session holds")
        hidden = {"pid": row[0], "application_name": "run a", "role": first}
        hidden |= {"client_addr": None, "since": None, "state": None, "hidden": True}
        assert waits == [hidden] and info.value.details["holder"] == hidden
        assert info.value.message == (
            f"The migration lock was not acquired within 0.3s: it is held by pid {row[0]}, "
            f"application 'run a', role '{first}' (its address and start are hidden from "
            "this role; pg_read_all_stats shows them). Wait for that run to finish, or raise "
            "--lock-timeout."
        )

        with pg_cluster.connect(database) as admin:
            admin.execute(f"GRANT pg_read_all_stats TO {second}")
        with (
            pytest.raises(LockTimeout) as info,
            migration_lock(engine, KEY, 0.1, lambda _h: None, "me"),
        ):
            pytest.fail("acquired a lock another session holds")
        shown = info.value.details["holder"]
        assert (shown["pid"], shown["client_addr"], shown["state"]) == (row[0], "127.0.0.1", "idle")
        assert shown["since"][:4].isdigit() and "hidden" not in shown
    finally:
        engine.dispose()
        holder.close()
        with pg_cluster.connect(database) as admin:
            for role in (first, second):
                admin.execute(f"DROP ROLE {role}")


def test_a_different_key_is_a_different_lock(
    engine: sa.Engine, other: psycopg.Connection[Any]
) -> None:
    other.execute("SELECT pg_advisory_lock(%s)", (lock_id("someone's key"),))
    with migration_lock(engine, KEY, 0.3, lambda _h: pytest.fail("waited"), "me"):
        pass


def test_waits_until_released_and_yields_whom_it_waited_for(
    engine: sa.Engine, other: psycopg.Connection[Any]
) -> None:
    other.execute("SELECT pg_advisory_lock(%s)", (lock_id(KEY),))
    row = other.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None

    def on_wait(_holder: dict[str, Any]) -> None:
        other.execute("SELECT pg_advisory_unlock(%s)", (lock_id(KEY),))

    with migration_lock(engine, KEY, 30, on_wait, "me") as held:
        assert held.waited is not None and held.waited["pid"] == row[0]
        assert not try_lock(other, KEY)
    assert try_lock(other, KEY)


def test_the_holder_over_a_unix_socket_and_no_holder_at_all(
    engine: sa.Engine, pg_cluster: PgCluster, pg_db: str
) -> None:
    from orchestrator.db.locks import pg_lock_holder

    database = sa.engine.make_url(pg_db).database or ""
    local = psycopg.connect(
        f"host={pg_cluster.base_dir} port={pg_cluster.port} dbname={database} user=postgres",
        autocommit=True,
        application_name="over the socket",
    )
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            assert pg_lock_holder(conn, lock_id(KEY)) == {"pid": None}  # nobody holds it
            local.execute("SELECT pg_advisory_lock(%s)", (lock_id(KEY),))
            holder = pg_lock_holder(conn, lock_id(KEY))
            assert holder["client_addr"] == "local socket"
            assert holder["application_name"] == "over the socket"
    finally:
        local.close()


def test_the_fence_holds_while_the_lock_session_does(
    engine: sa.Engine, other: psycopg.Connection[Any]
) -> None:
    """Each revision's commit checks the fence: true only while this run's lock session
    still holds the lock; a session that ended (terminated here) leaves it false."""
    # autocommit: each check its own transaction (pg_stat_* read a snapshot per transaction)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as probe:
        with migration_lock(engine, KEY, 5, lambda _h: pytest.fail("waited"), "me") as held:
            fence = held.fence
            assert fence is not None and fence.key == lock_id(KEY)
            (holder,) = other.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database"
                " = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
            assert fence.pid == holder[0]
            assert fence.held(probe)
            assert not held.lost
            other.execute("SELECT pg_terminate_backend(%s, 10000)", (fence.pid,))  # waits for it
            assert not fence.held(probe)  # the session is gone, and the lock with it
        assert held.lost  # it could not be released: it was already gone
        with migration_lock(engine, KEY, 5, lambda _h: pytest.fail("waited"), "me") as again:
            assert again.fence is not None and again.fence.held(probe)
            assert not fence.held(probe)  # the old fence is not the new holder
        assert not again.fence.held(probe) and not again.lost


def test_a_fence_for_another_key_or_database_is_not_held(
    engine: sa.Engine, other: psycopg.Connection[Any]
) -> None:
    from dataclasses import replace

    with (
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as probe,
        migration_lock(engine, KEY, 5, lambda _h: pytest.fail("waited"), "me") as held,
    ):
        fence = held.fence
        assert fence is not None and fence.held(probe)
        assert not replace(fence, key=lock_id("another key")).held(probe)
        assert not replace(fence, key=fence.key ^ (1 << 40)).held(probe)  # high half differs
        assert not replace(fence, database=fence.database + 1).held(probe)
        assert not replace(fence, pid=fence.pid + 100000).held(probe)


def test_a_fence_checked_on_a_broken_connection_is_not_held(
    engine: sa.Engine, other: psycopg.Connection[Any]
) -> None:
    """Unsure (the checking session itself is gone) means not held: fail closed."""
    with (
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as probe,
        migration_lock(engine, KEY, 5, lambda _h: pytest.fail("waited"), "me") as held,
    ):
        fence = held.fence
        assert fence is not None and fence.held(probe)
        probe_pid = probe.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        other.execute("SELECT pg_terminate_backend(%s, 10000)", (probe_pid,))
        assert not fence.held(probe)
