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

import subprocess
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
    """Under xdist (`-n`) the controller starts the one cluster of the run before any worker,
    unless `-m` leaves out every test that needs it (`make test-fast`)."""
    global _SHARED
    controller = not hasattr(config, "workerinput")
    if (
        controller
        and getattr(config.option, "numprocesses", None)
        and may_select_pg(config.option.markexpr)
    ):
        _SHARED = PgCluster().start()


def may_select_pg(markexpr: str) -> bool:
    """Whether a test marked pg (and perhaps browser or slow too) can pass `-m markexpr`."""
    if not markexpr:
        return True
    from _pytest.mark.expression import Expression

    expression = Expression.compile(markexpr)
    others = [set(), {"browser"}, {"slow"}, {"browser", "slow"}]
    return any(expression.evaluate(lambda name, s=s: name in s | {"pg"}) for s in others)


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
#   - ``signed``          pg_project, staging and prod signing
# --------------------------------------------------------------------------

from projectkit import Project, make_project, sign_env  # noqa: E402


@pytest.fixture
def pg_project(tmp_path: Path, pg_url_factory: Callable[[], str]) -> Project:
    urls = {name: pg_url_factory() for name in ("dev", "staging", "prod")}
    return make_project(tmp_path / "project", urls)


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Project:
    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("dev", "staging", "prod")}
    return make_project(tmp_path / "project", urls)


@pytest.fixture
def signed(pg_project: Project) -> Project:
    """pg_project with staging and prod signing (keys in the project, private halves in
    STAGING_KEY and PROD_KEY)."""
    sign_env(pg_project, "staging")
    sign_env(pg_project, "prod")
    return pg_project


# --------------------------------------------------------------------------
# Processes a test starts
#   - ``procs``  function: a list to append each Popen to; whatever is still alive at
#                the end is killed
# --------------------------------------------------------------------------


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[Any]]]:
    started: list[subprocess.Popen[Any]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# --------------------------------------------------------------------------
# Markers for the quick loop (`make test-fast` deselects all three)
#   - ``pg``       needs the PostgreSQL cluster
#   - ``browser``  opens headless Chromium
#   - ``slow``     SQLite tests that start cold processes by design (a wheel, make, a shell,
#                  the installed script) or repeat a path the quick loop already runs
# --------------------------------------------------------------------------

# (module, test, any parameters) -> what in the quick loop covers the same command
SLOW = {
    ("test_adopt.py", "test_wheel_installs_into_a_fresh_virtualenv_with_every_command"): (
        "packaging (builds and installs a wheel); init and every command run in test_adopt"
    ),
    ("test_makefile.py", "test_make_demo_leaves_your_dev_database_alone"): (
        "the Makefile; migrate, plan and status run in test_gate and test_cli_basics"
    ),
    ("test_makefile.py", "test_make_plan_fails_after_the_orchestrators_message"): (
        "the Makefile; plan's exit 3 in test_gate::test_plan_exits_3_when_the_run_would_be_refused"
    ),
    ("test_everyday.py", "test_the_readme_first_steps_work_as_written"): (
        "the README's shell lines; the same commands run in test_everyday and test_cli_basics"
    ),
    ("test_schema_drift.py", "test_no_false_drift_over_twenty_runs_of_a_fifty_revision_history"): (
        "twenty runs of fifty revisions; drift's SQLite paths run in test_schema_drift"
    ),
    ("test_locking.py", "test_second_sqlite_run_times_out_behind_a_running_one"): (
        "waits out a lock timeout; test_lock_timeout_names_the_process_holding_the_sqlite_file_lock"
    ),
    (
        "test_real_projects.py",
        "test_flask_migrate_project_is_found_handed_over_and_runs_outside_flask",
    ): "the installed script, cold; init and env.py errors run in test_real_projects",
    ("test_approval_prompt.py", "test_typing_the_name_approves_and_a_wrong_name_refuses"): (
        "a second terminal; test_everyday::test_the_approval_prompt_lists_the_revisions types it"
    ),
    ("test_real_projects.py", "test_init_keeps_the_dev_database_alembic_ini_names"): (
        "the installed script, cold; init runs in test_adopt and test_real_projects"
    ),
    (
        "test_real_projects.py",
        "test_flask_migrate_env_py_that_cannot_import_outside_flask_is_never_plain_success",
    ): "the installed script, cold; env.py errors run in test_real_projects",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec else ()
        # the cluster as a fixture, or a "pg" parameter that asks for one at run time
        # (`request.getfixturevalue("pg_project")`)
        if "pg_cluster" in fixtures or any(isinstance(p, str) and p == "pg" for p in params):
            item.add_marker(pytest.mark.pg)
        if item.path.name == "test_audit_report.py":  # the page, in headless Chromium
            item.add_marker(pytest.mark.browser)
        if (item.path.name, getattr(item, "originalname", item.name)) in SLOW:
            item.add_marker(pytest.mark.slow)
