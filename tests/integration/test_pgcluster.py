"""The real-PostgreSQL harness itself works (never skips)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import psycopg
from pgcluster import PgCluster
from sqlalchemy.engine import make_url


def _connect(url: str) -> psycopg.Connection:
    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port, dbname=u.database, user=u.username, autocommit=True
    )


def test_cluster_runs(pg_db: str) -> None:
    assert pg_db.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    with _connect(pg_db) as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
        dbname = conn.execute("SELECT current_database()").fetchone()[0]
    assert version.startswith("PostgreSQL")
    assert dbname == make_url(pg_db).database
    assert dbname.startswith("t_") and len(dbname) == 14


def test_fresh_databases_are_distinct(pg_url_factory: Callable[[], str]) -> None:
    a, b = pg_url_factory(), pg_url_factory()
    assert make_url(a).database != make_url(b).database
    with _connect(a) as conn:
        conn.execute("CREATE TABLE only_in_a (id int)")
    with _connect(b) as conn:
        row = conn.execute("SELECT to_regclass('public.only_in_a')").fetchone()
    assert row[0] is None


def test_psql_args(pg_cluster: PgCluster, pg_db: str) -> None:
    dbname = make_url(pg_db).database
    assert dbname is not None
    proc = subprocess.run(
        [*pg_cluster.psql_args(dbname), "-tAc", "select 1"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


def test_role_with_password(pg_cluster: PgCluster, pg_db: str) -> None:
    pg_cluster.create_role("secret_user", "s3cr3t-pw")
    url = pg_cluster.url(make_url(pg_db).database or "", user="secret_user", password="s3cr3t-pw")
    assert url.startswith("postgresql+psycopg://secret_user:s3cr3t-pw@127.0.0.1:")
    with _connect(url) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "secret_user"
