"""Shared pytest fixtures for the whole tests/ tree.

Layout (add new fixtures in their own section, keep each section small):

* PostgreSQL -- a real throwaway cluster (see tests/pgcluster.py):
    - ``pg_cluster``      session:  the running ``PgCluster``
    - ``pg_url_factory``  function: ``make() -> str`` creates a fresh database
                          per call and returns its SQLAlchemy URL; all are
                          dropped after the test
    - ``pg_db``           function: SQLAlchemy URL of one fresh database

These tests never skip when PostgreSQL is missing: they fail loudly.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgcluster import PgCluster  # noqa: E402

# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


_SHARED: PgCluster | None = None  # the controller's cluster when pytest-xdist spreads the run


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist (`-n`) the controller starts the one cluster of the run before any worker."""
    global _SHARED
    if not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None):
        _SHARED = PgCluster().start()


def pytest_configure_node(node: Any) -> None:  # xdist hook: hand each worker the cluster
    if _SHARED is not None:
        node.workerinput["pg_cluster"] = _SHARED.describe()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SHARED is not None:
        _SHARED.stop()


@pytest.fixture(scope="session")
def pg_cluster(request: pytest.FixtureRequest) -> Iterator[PgCluster]:
    """One PostgreSQL cluster for the whole test run (shared by the xdist workers)."""
    described = getattr(request.config, "workerinput", {}).get("pg_cluster")
    if described is not None:
        yield PgCluster.attach(described)
        return
    if _SHARED is not None:
        yield _SHARED
        return
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url_factory(pg_cluster: PgCluster) -> Iterator[Callable[[], str]]:
    """Factory: each call creates a fresh database ``t_<12 hex>`` and returns its URL."""
    created: list[str] = []

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        pg_cluster.create_database(name)
        created.append(name)
        return pg_cluster.url(name)

    yield make
    for name in reversed(created):
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_db(pg_url_factory: Callable[[], str]) -> str:
    """SQLAlchemy URL (postgresql+psycopg://postgres@127.0.0.1:PORT/t_xxx) of a fresh DB."""
    return pg_url_factory()


# --------------------------------------------------------------------------
# Projects: a copy of this repo's Alembic project per test (tests/projectkit.py)
#   - ``pg_project``      dev, staging, prod on three fresh PostgreSQL databases
#   - ``sqlite_project``  dev, staging, prod on SQLite files in tmp_path
# --------------------------------------------------------------------------

from projectkit import Project, make_project  # noqa: E402


@pytest.fixture
def pg_project(tmp_path: Path, pg_url_factory: Callable[[], str]) -> Project:
    urls = {name: pg_url_factory() for name in ("dev", "staging", "prod")}
    return make_project(tmp_path / "project", urls)


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Project:
    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("dev", "staging", "prod")}
    return make_project(tmp_path / "project", urls)


# --------------------------------------------------------------------------
# Markers for the quick loop (`make test-fast` deselects both)
# --------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "pg_cluster" in fixtures:
            item.add_marker(pytest.mark.pg)
        if item.path.name == "test_audit_report.py":  # the page, in headless Chromium
            item.add_marker(pytest.mark.browser)
