"""Schema drift (SPEC Part 2 "Schema drift"), through the CLI on real PostgreSQL and SQLite:
hand edits are caught by `status`, `drift` and policy.schema_drift; untouched databases never
raise a false alarm."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from projectkit import HEAD, REPO, SHIPPED, Project

PHONE = """\
op.add_column('users', sa.Column('phone', sa.Text(), nullable=True))
"""


@pytest.fixture(params=["pg", "sqlite"])
def project(request: pytest.FixtureRequest) -> Project:
    return request.getfixturevalue(f"{request.param}_project")


def _sql(project: Project, env: str, *statements: str) -> None:
    engine = project.engine(env)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _status(project: Project) -> dict[str, str]:
    result = project.run("status", "--json")
    assert result.code == 0, result.stderr
    return {row["env"]: row["schema"] for row in result.json()}


def _everywhere(project: Project) -> None:
    for args in (("migrate", "dev"), ("migrate", "staging"), ("migrate", "prod", "--approve")):
        result = project.run(*args)
        assert result.code == 0, result.stderr


def _recorded(project: Project, env: str) -> list[tuple[str, str]]:
    return [
        (heads, fp)
        for heads, fp in project.query(
            env, "SELECT heads, fingerprint FROM orchestrator_schema ORDER BY id"
        )
    ]


# -- recording ---------------------------------------------------------------------------------


def test_each_applying_run_records_the_schema_at_its_revision_and_status_says_ok(
    project: Project,
) -> None:
    assert project.run("migrate", "dev", "--to", SHIPPED[1]).code == 0
    assert project.run("migrate", "dev").code == 0
    assert project.run("migrate", "dev").code == 0  # nothing to do: nothing recorded

    recorded = _recorded(project, "dev")
    assert [heads for heads, _ in recorded] == [SHIPPED[1], HEAD]
    assert recorded[0][1] != recorded[1][1]
    succeeded = [e for e in project.audit_events("dev") if e["event"] == "run.succeeded"]
    assert succeeded[-1]["schema_fingerprint"] == recorded[1][1]
    assert _status(project) == {"dev": "ok", "staging": "unknown", "prod": "unknown"}
    description = json.loads(
        project.query("dev", "SELECT description FROM orchestrator_schema ORDER BY id DESC")[0][0]
    )
    assert sorted(description["tables"]) == ["orders", "users"]  # none of ours, no version


def test_baseline_records_the_schema_it_adopts(project: Project) -> None:
    """A database whose schema was never recorded (e.g. migrated by an older version) is
    `unknown`; baseline adopts it as it is."""
    assert project.run("migrate", "dev").code == 0
    _sql(project, "dev", "DELETE FROM orchestrator_schema")
    assert _status(project)["dev"] == "unknown"
    assert project.run("drift", "dev").code == 2
    done = project.run("baseline", "dev", "--revision", HEAD, "--reason", "adopt")
    assert done.code == 0, done.stderr
    assert [heads for heads, _ in _recorded(project, "dev")] == [HEAD]
    assert _status(project)["dev"] == "ok"


# -- an index added by hand in prod ------------------------------------------------------------


def test_index_added_by_hand_in_prod_is_drift_named_and_refused(project: Project) -> None:
    _everywhere(project)
    _sql(project, "prod", "CREATE INDEX ix_users_phone ON users (display_name)")

    assert _status(project) == {"dev": "ok", "staging": "ok", "prod": "drifted"}
    human = project.run("status")
    assert "drifted" in human.stdout

    drift = project.run("drift", "prod")
    assert drift.code == 3, drift.stderr
    assert "+ index ix_users_phone on users (display_name)" in drift.stdout
    assert "op.drop_index('ix_users_phone', table_name='users')" in drift.stdout
    as_json = project.run("drift", "prod", "--json")
    assert as_json.code == 3
    (difference,) = as_json.json()["differences"]
    assert difference["line"] == "+ index ix_users_phone on users (display_name)"
    assert project.run("drift", "staging").code == 0

    # a new revision, run by dev and staging; prod (policy refuse) refuses it
    project.add_revision("f00000000001", HEAD, PHONE, "op.drop_column('users', 'phone')")
    assert project.run("migrate", "dev").code == 0
    assert project.run("migrate", "staging").code == 0
    plan = project.run("plan", "prod")
    assert plan.code == 3
    assert "schema drift" in plan.stdout and "ix_users_phone" in plan.stdout
    before = (project.version("prod"), project.ledger("prod"), project.schema("prod"))
    refused = project.run("migrate", "prod", "--approve")
    assert refused.code == 3, refused.stderr
    assert "ix_users_phone" in refused.stderr and "schema_drift" in refused.stderr
    assert (project.version("prod"), project.ledger("prod"), project.schema("prod")) == before
    events = [e["event"] for e in project.audit_events("prod")]
    assert "schema.drifted" in events and events[-1] in ("run.refused", "lock.released")
    # a no-op migrate of a drifted prod is refused too
    assert project.run("migrate", "staging").code == 0

    # reverting the hand edit with the operation `drift` showed: prod runs again
    _sql(project, "prod", "DROP INDEX ix_users_phone")
    assert project.run("drift", "prod").code == 0
    done = project.run("migrate", "prod", "--approve")
    assert done.code == 0, done.stderr
    assert project.version("prod") == ["f00000000001"]


def test_warn_records_the_drift_and_runs(project: Project) -> None:
    _everywhere(project)
    _sql(project, "staging", "CREATE INDEX ix_users_phone ON users (display_name)")
    project.add_revision("f00000000001", HEAD, PHONE, "op.drop_column('users', 'phone')")
    assert project.run("migrate", "dev").code == 0
    result = project.run("migrate", "staging")
    assert result.code == 0, result.stderr
    assert project.version("staging") == ["f00000000001"]
    drifted = [e for e in project.audit_events("staging") if e["event"] == "schema.drifted"]
    assert drifted and drifted[-1]["differences"] == [
        "+ index ix_users_phone on users (display_name)"
    ]
    # the run recorded the schema it left, the hand-made index included: no drift since;
    # but dev, at the same revision, has no such index
    assert project.run("drift", "staging").code == 0
    expected = (
        "diverged"
        if project.urls["dev"].split(":")[0] == project.urls["staging"].split(":")[0]
        else "ok"
    )
    assert _status(project)["staging"] == expected


def test_policy_off_neither_checks_nor_refuses(project: Project) -> None:
    _everywhere(project)
    prod = (project.path / "environments" / "prod.yaml").read_text()
    project.write_env("prod", prod.replace("schema_drift: refuse", "schema_drift: off"))
    _sql(project, "prod", "CREATE INDEX ix_users_phone ON users (display_name)")
    project.add_revision("f00000000001", HEAD, PHONE, "op.drop_column('users', 'phone')")
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0
    result = project.run("migrate", "prod", "--approve")
    assert result.code == 0, result.stderr
    assert "schema.drifted" not in [e["event"] for e in project.audit_events("prod")]


# -- a column changed in staging, then prod promoted -------------------------------------------


def test_change_in_staging_then_prod_promoted_is_diverged(pg_project: Project) -> None:
    project = pg_project
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0
    _sql(project, "staging", "ALTER TABLE orders ALTER COLUMN total TYPE NUMERIC(12,2)")

    promoted = project.run("promote", "prod", "--approve")
    assert promoted.code == 0, promoted.stderr

    assert _status(project) == {"dev": "ok", "staging": "drifted", "prod": "diverged"}
    diverged = [e for e in project.audit_events("prod") if e["event"] == "schema.diverged"]
    assert diverged and diverged[-1]["differences"] == [
        "~ column orders.total NUMERIC(12,2) -> NUMERIC(10,2)"
    ]
    against = project.run("drift", "prod", "--against", "staging")
    assert against.code == 3
    assert "~ column orders.total NUMERIC(12,2) -> NUMERIC(10,2)" in against.stdout
    assert "type_=sa.NUMERIC(precision=12, scale=2)" in against.stdout
    # staging itself: drifted from what its run recorded
    drift = project.run("drift", "staging", "--json")
    assert [d["line"] for d in drift.json()["differences"]] == [
        "~ column orders.total NUMERIC(10,2) -> NUMERIC(12,2)"
    ]


def test_sqlite_change_in_staging_then_prod_promoted_is_diverged(sqlite_project: Project) -> None:
    project = sqlite_project
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0
    _sql(project, "staging", "CREATE INDEX ix_orders_total ON orders (total)")
    assert project.run("promote", "prod", "--approve").code == 0
    assert _status(project) == {"dev": "ok", "staging": "drifted", "prod": "diverged"}


def test_against_a_predecessor_at_another_revision_is_a_usage_error(project: Project) -> None:
    assert project.run("migrate", "dev").code == 0
    assert project.run("migrate", "staging", "--to", SHIPPED[1]).code == 0
    result = project.run("drift", "staging", "--against", "dev")
    assert result.code == 2
    assert "same revision" in result.stderr and "Traceback" not in result.stderr
    unknown = project.run("drift", "staging", "--against", "nowhere")
    assert unknown.code == 2 and "nowhere" in unknown.stderr
    nothing = project.run("drift", "prod")
    assert nothing.code == 2 and "No schema was recorded" in nothing.stderr


# -- a database restored from an old dump ------------------------------------------------------


def test_database_restored_from_an_old_dump_is_drifted(
    project: Project, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """prod ran every revision; then its tables were restored from a dump taken at an older
    revision, and alembic_version rewritten to head by hand."""
    _everywhere(project)
    sqlite = project.urls["prod"].startswith("sqlite")
    old_url = (
        f"sqlite:///{tmp_path / 'old.db'}"
        if sqlite
        else request.getfixturevalue("pg_url_factory")()
    )
    old = Project(project.path, {**project.urls, "dev": old_url})
    assert old.run("migrate", "dev", "--to", SHIPPED[2]).code == 0  # the dump's database
    _sql(project, "prod", "DROP TABLE orders", "DROP TABLE users")
    _restore(old_url, project.urls["prod"], ["users", "orders"])
    _sql(project, "prod", f"UPDATE alembic_version SET version_num = '{HEAD}'")

    assert _status(project)["prod"] == "drifted"
    drift = project.run("drift", "prod")
    assert drift.code == 3
    assert "- index ix_orders_created_at on orders (created_at)" in drift.stdout
    refused = project.run("migrate", "prod", "--approve")
    assert refused.code == 3 and "ix_orders_created_at" in refused.stderr


def _restore(source_url: str, target_url: str, tables: list[str]) -> None:
    """Restore `tables` of the source database into the target, as a schema dump would."""
    if source_url.startswith("sqlite"):
        engine = sa.create_engine(source_url)
        try:
            with engine.connect() as connection:
                ddl = [
                    row[0]
                    for row in connection.exec_driver_sql(
                        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name IN "
                        f"({', '.join(repr(t) for t in tables)}) ORDER BY rowid"
                    )
                ]
        finally:
            engine.dispose()
        engine = sa.create_engine(target_url)
        try:
            with engine.begin() as connection:
                for statement in ddl:
                    connection.exec_driver_sql(statement)
        finally:
            engine.dispose()
        return
    from pgcluster import find_bin_dir

    bin_dir = find_bin_dir(install=False)
    source = source_url.replace("+psycopg", "")
    dump = subprocess.run(
        [
            str(bin_dir / "pg_dump"),
            "--schema-only",
            "--no-owner",
            *(f"-t{t}" for t in tables),
            source,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    subprocess.run(
        [
            str(bin_dir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            target_url.replace("+psycopg", ""),
        ],
        input=dump,
        capture_output=True,
        text=True,
        check=True,
    )


# -- against the models ------------------------------------------------------------------------


def test_against_models_after_editing_the_models_without_a_revision(project: Project) -> None:
    assert project.run("migrate", "dev").code == 0
    clean = project.run("drift", "dev", "--against", "models")
    assert clean.code == 0, clean.stdout + clean.stderr
    models = project.path / "app" / "models.py"
    models.write_text(
        models.read_text().replace(
            "    display_name: Mapped[str | None] = mapped_column(String(100), nullable=True)\n",
            "    display_name: Mapped[str | None] = mapped_column(String(100), nullable=True)\n"
            "    phone: Mapped[str | None] = mapped_column(String(20), nullable=True)\n",
        )
    )
    result = project.run("drift", "dev", "--against", "models", "--json")
    assert result.code == 3, result.stderr
    (difference,) = result.json()["differences"]
    assert difference["line"] == "- column users.phone VARCHAR(20)"
    assert difference["op"].startswith("op.add_column('users', sa.Column('phone', sa.String(")
    # the live schema did not change: against what its run recorded, nothing differs
    assert project.run("drift", "dev").code == 0


# -- the lock ----------------------------------------------------------------------------------


def test_drift_waits_for_the_migration_lock(project: Project) -> None:
    assert project.run("migrate", "dev").code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, project.urls["dev"]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        waiting = project.popen("drift", "dev")
        assert waiting.stderr is not None
        for line in waiting.stderr:  # synchronise on its lock.waiting event
            if "lock.waiting" in line:
                break
        else:
            pytest.fail("drift did not wait for the lock")
        assert waiting.poll() is None
        holder.communicate("release\n", timeout=30)
        stdout, _ = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, stdout
        assert "no difference" in stdout
    finally:
        holder.kill()


_HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from orchestrator.db.database import make_engine
    from orchestrator.db.locks import DEFAULT_KEY, migration_lock
    engine = make_engine(sys.argv[1])
    with migration_lock(engine, DEFAULT_KEY, 10, lambda h: None, "test holder"):
        print("held", flush=True)
        sys.stdin.readline()
    """
)


# -- no false drift ----------------------------------------------------------------------------


def _history(project: Project, count: int = 50) -> list[str]:
    """`count` revisions: tables, renames, enums, check constraints, partial indexes, server
    defaults, foreign keys, each undone by its downgrade."""
    for path in project.versions.glob("*.py"):
        path.unlink()
    revs = [f"{i:012x}" for i in range(1, count + 1)]
    down: str | None = None
    for i, rev in enumerate(revs):
        n = i // 10  # the table this block of ten revisions works on
        t = f"t{n}"
        steps = [
            (
                f"op.create_table('{t}', sa.Column('id', sa.Integer(), primary_key=True), "
                f"sa.Column('a', sa.Integer(), nullable=False, server_default='0'), "
                f"sa.Column('b', sa.String(20)))",
                f"op.drop_table('{t}')",
            ),
            (
                f"op.add_column('{t}', sa.Column('created', sa.DateTime(timezone=True), "
                "server_default=sa.text('CURRENT_TIMESTAMP')))",
                f"op.drop_column('{t}', 'created')",
            ),
            (
                f"with op.batch_alter_table('{t}') as b:\n"
                f"    b.create_check_constraint('ck_{t}_a', 'a >= 0')",
                f"with op.batch_alter_table('{t}') as b:\n"
                f"    b.drop_constraint('ck_{t}_a', type_='check')",
            ),
            (
                f"op.create_index('ix_{t}_b', '{t}', ['b'], postgresql_where=sa.text('a > 0'), "
                "sqlite_where=sa.text('a > 0'))",
                f"op.drop_index('ix_{t}_b', table_name='{t}')",
            ),
            (
                f"op.create_table('{t}_tag', sa.Column('id', sa.Integer(), primary_key=True), "
                f"sa.Column('mood', sa.Enum('happy', 'sad', name='mood_{t}'), nullable=False, "
                "server_default='happy'))",
                f"op.drop_table('{t}_tag')\nsa.Enum(name='mood_{t}').drop(op.get_bind(), "
                "checkfirst=True)",
            ),
            (
                f"with op.batch_alter_table('{t}') as b:\n"
                f"    b.alter_column('b', new_column_name='label')",
                f"with op.batch_alter_table('{t}') as b:\n"
                f"    b.alter_column('label', new_column_name='b')",
            ),
            (
                f"op.create_table('{t}_child', sa.Column('id', sa.Integer(), primary_key=True), "
                f"sa.Column('parent_id', sa.Integer(), sa.ForeignKey('{t}.id', "
                f"ondelete='CASCADE'), nullable=False), sa.Column('total', sa.Numeric(10, 2), "
                "server_default='0'), sa.UniqueConstraint('parent_id', name="
                f"'uq_{t}_child_parent'))",
                f"op.drop_table('{t}_child')",
            ),
            (
                f"op.rename_table('{t}_child', '{t}_item')",
                f"op.rename_table('{t}_item', '{t}_child')",
            ),
            (
                f"with op.batch_alter_table('{t}') as b:\n"
                f"    b.alter_column('label', existing_type=sa.String(20), "
                "type_=sa.String(40))",
                f"with op.batch_alter_table('{t}') as b:\n"
                f"    b.alter_column('label', existing_type=sa.String(40), "
                "type_=sa.String(20))",
            ),
            (
                f"op.create_index('ix_{t}_item_total', '{t}_item', ['total'], unique=False)",
                f"op.drop_index('ix_{t}_item_total', table_name='{t}_item')",
            ),
        ]
        upgrade, downgrade = steps[i % 10]
        project.add_revision(rev, down, upgrade, downgrade, doc=f"step {i}")
        down = rev
    return revs


@pytest.mark.parametrize("dialect", ["pg", "sqlite"])
def test_no_false_drift_over_twenty_runs_of_a_fifty_revision_history(
    request: pytest.FixtureRequest, dialect: str
) -> None:
    project: Project = request.getfixturevalue(f"{dialect}_project")
    revs = _history(project)
    for name in ("dev", "staging"):  # no linting of generated DDL: this is about schemas
        path = project.path / "environments" / f"{name}.yaml"
        path.write_text(path.read_text().replace("lint: warn", "lint: off"))
    stops = [revs[min(len(revs) - 1, round((k + 1) * len(revs) / 20) - 1)] for k in range(20)]
    fingerprints = []
    for stop in stops:
        result = project.run("migrate", "dev", "--to", stop)
        assert result.code == 0, result.stderr
        assert _status(project)["dev"] == "ok", stop
        fingerprints.append(_recorded(project, "dev")[-1][1])
    assert len(set(fingerprints)) == 20  # every run changed the schema, and was recorded
    drift = project.run("drift", "dev")
    assert drift.code == 0, drift.stdout
    # the whole history in one run on staging: the same schema as dev's, step by step
    assert project.run("migrate", "staging").code == 0
    assert _recorded(project, "staging")[-1][1] == fingerprints[-1]
    assert _status(project) == {"dev": "ok", "staging": "ok", "prod": "unknown"}
    assert project.run("drift", "staging", "--against", "dev").code == 0
