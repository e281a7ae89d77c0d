"""Real projects as they come (SPEC Part 3): env.py files that are not ours, Flask-Migrate's
layout, histories written for PostgreSQL, and the logging a project's env.py sets up.

Each test builds a tiny project of that shape under tmp_path and drives the real console
entry point, as a team would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from projectkit import Project, Result, make_project

NAME_ERROR_MODELS = '''\
"""The application's models, with the typo a refactoring left behind."""
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(Strin(100))
'''

FLASK_AT_IMPORT = '''\
"""env.py as Flask-Migrate writes it, run where Flask's application context is missing
(simulated without Flask: what `current_app` raises outside an application)."""
from app.models import Base
from orchestrator.alembic_env import run_migrations


def get_engine_url():
    raise RuntimeError("Working outside of application context.")


url = get_engine_url()
run_migrations(target_metadata=Base.metadata)
'''


def broken_env_py(project: Project, case: str) -> None:
    if case == "flask":
        (project.path / "alembic" / "env.py").write_text(FLASK_AT_IMPORT)
    else:
        (project.path / "app" / "models.py").write_text(NAME_ERROR_MODELS)


@pytest.mark.parametrize("case", ["flask", "models"])
def test_an_env_py_error_is_said_once_and_never_charged_to_a_revision(
    tmp_path: Path, case: str
) -> None:
    project = make_project(tmp_path / "p", {"dev": f"sqlite:///{tmp_path / 'dev.db'}"})
    broken_env_py(project, case)
    where = "line 8 of alembic/env.py" if case == "flask" else "alembic/env.py"
    raised = "RuntimeError: Working outside" if case == "flask" else "NameError: name 'Strin'"
    for argv in (["migrate", "dev"], ["check"], ["plan", "dev"]):
        done = project.run(*argv)
        assert done.code == 2, (argv, done.output)
        lines = [json.loads(line) for line in done.stderr.splitlines()]
        said = [e for e in lines if raised in json.dumps(e)]
        assert len(said) == 1, (argv, lines)  # once, by the command's own error
        assert where in said[0]["error"] and "before any revision ran" in said[0]["error"]
        if case == "models":
            assert "line 3 of alembic/env.py" in said[0]["error"]
            assert "line 13 of app/models.py" in said[0]["error"]
        assert "unlintable" not in done.output and "failed on dev" not in done.output
        assert "Traceback" not in done.output
        assert not any(e.get("event") == "lint.finding" for e in lines)
    assert project.version("dev") == []
    # lint off: env.py is still read first (its checksum is part of the run's evidence), so
    # the error comes before any run starts: said once, no run and no revision recorded
    dev = project.path / "environments" / "dev.yaml"
    dev.write_text(dev.read_text().replace("lint: warn", "lint: off"))
    done = project.run("migrate", "dev")
    assert done.code == 2, done.output
    events = [json.loads(line) for line in done.stderr.splitlines()]
    runs = [e["event"] for e in events if e.get("event", "").startswith(("run.", "migration."))]
    assert runs == []
    assert events[-1]["event"] == "command.error"
    assert "before any revision ran" in events[-1]["error"]
    assert "Revision" not in done.output and "Traceback" not in done.output
    assert project.version("dev") == []


LOGGING_INI = """

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console
qualname =

[logger_sqlalchemy]
level = WARN
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers = console
qualname = alembic
propagate = 0

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %%(levelname)-5.5s [%%(name)s] %%(message)s
"""

FILECONFIG_ENV_PY = '''\
"""env.py that sets up its own logging, as `alembic init` and Flask-Migrate write it."""
import logging
from logging.config import fileConfig

from alembic import context

from app.models import Base
from orchestrator.alembic_env import run_migrations

if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name)
logging.getLogger("alembic.env").warning("env.py configured its logging")

run_migrations(target_metadata=Base.metadata)
'''


def test_stderr_is_json_lines_whatever_logging_env_py_sets_up(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"dev": f"sqlite:///{tmp_path / 'dev.db'}"})
    ini = project.path / "alembic.ini"
    ini.write_text(ini.read_text() + LOGGING_INI)
    (project.path / "alembic" / "env.py").write_text(FILECONFIG_ENV_PY)
    project.add_revision(
        "f1f1f1f1f1f1",
        "e19b6a3f4c70",
        """
        import warnings
        warnings.warn("this revision is old-fashioned", UserWarning)
        op.add_column("users", sa.Column("nick", sa.String(20), nullable=True))
        """,
        'op.drop_column("users", "nick")',
    )
    seen: list[str] = []
    for argv in (["plan", "dev"], ["migrate", "dev"], ["check"], ["status", "dev"]):
        done = project.run(*argv)
        assert done.code in (0, 3), (argv, done.output)  # check: the revision's lint finding
        for line in done.stderr.splitlines():
            assert isinstance(json.loads(line), dict), (argv, line)  # every line one object
        seen += done.stderr.splitlines()
        if argv == ["migrate", "dev"]:  # the lint's offline render says nothing: nothing ran
            assert done.stderr.count("Running upgrade e19b6a3f4c70 -> f1f1f1f1f1f1") == 1
    text = "\n".join(seen)
    assert "env.py configured its logging" in text  # env.py's own line, as JSON
    assert "old-fashioned" in text  # py.warnings, as JSON
    assert "Running upgrade" in text  # Alembic's INFO lines of the real run, as JSON
    assert project.version("dev") == ["f1f1f1f1f1f1"]


# -- Flask-Migrate's layout ---------------------------------------------------------------------

FLASK_STUB = '''\
"""Stands in for Flask: `current_app` outside an application, as Flask's own proxy."""


class _NoApp:
    def __getattr__(self, name):
        raise RuntimeError("Working outside of application context.")


current_app = _NoApp()
'''

EXTENSIONS = '''\
"""The app's extensions; SQLAlchemy stands in for flask_sqlalchemy.SQLAlchemy (a MetaData
and a declarative Model base, which need no application)."""
from sqlalchemy.orm import DeclarativeBase


class SQLAlchemy:
    def __init__(self):
        class Model(DeclarativeBase):
            pass

        self.Model = Model
        self.metadata = Model.metadata


db = SQLAlchemy()
'''

MODELS = """\
import sqlalchemy as sa

from shop.extensions import db


class User(db.Model):
    __tablename__ = "users"
    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(50), nullable=True)
"""

FLASK_MIGRATE_INI = """\
# A generic, single database configuration.

[alembic]
# template used to generate migration files
# file_template = %%(rev)s_%%(slug)s

# set to 'true' to run the environment during
# the 'revision' command, regardless of autogenerate
# revision_environment = false


# Logging configuration
[loggers]
keys = root,sqlalchemy,alembic,flask_migrate

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console
qualname =

[logger_sqlalchemy]
level = WARN
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[logger_flask_migrate]
level = INFO
handlers =
qualname = flask_migrate

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"""

FLASK_MIGRATE_ENV_PY = """\
import logging
from logging.config import fileConfig

from flask import current_app

from alembic import context

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Interpret the config file for Python logging.
# This line sets up loggers basically.
fileConfig(config.config_file_name)
logger = logging.getLogger('alembic.env')


def get_engine():
    try:
        # this works with Flask-SQLAlchemy<3 and Alchemical
        return current_app.extensions['migrate'].db.get_engine()
    except (TypeError, AttributeError):
        # this works with Flask-SQLAlchemy>=3
        return current_app.extensions['migrate'].db.engine


def get_engine_url():
    try:
        return get_engine().url.render_as_string(hide_password=False).replace(
            '%', '%%')
    except AttributeError:
        return str(get_engine().url).replace('%', '%%')


# add your model's MetaData object here
# for 'autogenerate' support
# from myapp import mymodel
# target_metadata = mymodel.Base.metadata
config.set_main_option('sqlalchemy.url', get_engine_url())
target_db = current_app.extensions['migrate'].db


def get_metadata():
    if hasattr(target_db, 'metadatas'):
        return target_db.metadatas[None]
    return target_db.metadata


def run_migrations_offline():
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url, target_metadata=get_metadata(), literal_binds=True
    )

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    def process_revision_directives(context, revision, directives):
        if getattr(config.cmd_opts, 'autogenerate', False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logger.info('No changes in schema detected.')

    conf_args = current_app.extensions['migrate'].configure_args
    if conf_args.get("process_revision_directives") is None:
        conf_args["process_revision_directives"] = process_revision_directives

    connectable = get_engine()

    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=get_metadata(),
            **conf_args
        )

        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
"""

FLASK_REVISIONS = {
    "0a1b2c3d4e5f": (
        None,
        "op.create_table('users', sa.Column('id', sa.Integer, primary_key=True))",
        "op.drop_table('users')",
    ),
    "1a1b2c3d4e5f": (
        "0a1b2c3d4e5f",
        "op.add_column('users', sa.Column('name', sa.String(50), nullable=True))",
        "op.drop_column('users', 'name')",
    ),
}


def revision_text(rev: str, down: str | None, up: str, undo: str, imports: str = "") -> str:
    return (
        f'"""step\n\nRevision ID: {rev}\n"""\nfrom alembic import op\nimport sqlalchemy as sa\n'
        f"{imports}\nrevision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
        f"depends_on = None\n\n\ndef upgrade():\n{textwrap.indent(up, '    ')}\n\n\n"
        f"def downgrade():\n    {undo}\n"
    )


def flask_project(root: Path, importable: bool = True) -> Path:
    """`flask db init` in package shop: shop/migrations/ with Flask-Migrate's alembic.ini
    (no script_location) and env.py, two revisions, the app's db and models."""
    migrations = root / "shop" / "migrations"
    (migrations / "versions").mkdir(parents=True)
    (root / "flask.py").write_text(FLASK_STUB)
    (root / "shop" / "__init__.py").write_text("")
    extensions = EXTENSIONS
    if not importable:  # reads the app's config at import: needs the application
        extensions = "from flask import current_app\n\nDEBUG = current_app.debug\n" + extensions
    (root / "shop" / "extensions.py").write_text(extensions)
    (root / "shop" / "models.py").write_text(MODELS)
    (migrations / "alembic.ini").write_text(FLASK_MIGRATE_INI)
    (migrations / "env.py").write_text(FLASK_MIGRATE_ENV_PY)
    for rev, (down, up, undo) in FLASK_REVISIONS.items():
        (migrations / "versions" / f"{rev}_step.py").write_text(revision_text(rev, down, up, undo))
    return root


def orchestrator(root: Path, *argv: str, **env: str) -> Result:
    """The installed console script, from the project's directory, as a team runs it (no
    PYTHONPATH: the application's modules are found through alembic.ini)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    environ.pop("PYTHONPATH", None)
    environ.update(ORCHESTRATOR_LOG_FORMAT="json", ORCHESTRATOR_ACTOR="tester", **env)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "orchestrator"), *argv],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def test_flask_migrate_project_is_found_handed_over_and_runs_outside_flask(
    tmp_path: Path,
) -> None:
    root = flask_project(tmp_path / "app")
    dev = {"DEV_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}"}
    dry = orchestrator(root, "init", "--dry-run")
    assert dry.code == 0, dry.output
    assert "would change" in dry.stdout and "shop/migrations/alembic.ini" in dry.stdout
    assert "would hand over" in dry.stdout and "from shop.extensions import db" in dry.stdout
    assert not (root / "environments").exists()

    done = orchestrator(root, "init", "--json")
    assert done.code == 0, done.output
    result = done.json()
    assert result["adopted"] is True
    assert {a["path"]: a["action"] for a in result["actions"]} == {
        "shop/migrations/alembic.ini": "change",
        "environments/dev.yaml": "write",
        "environments/staging.yaml": "write",
        "environments/prod.yaml": "write",
        "shop/migrations/env.py": "hand over",
        ".gitignore": "write",
    }
    assert any("SQLALCHEMY_DATABASE_URI" in note for note in result["notes"])
    ini = (root / "shop" / "migrations" / "alembic.ini").read_text()
    assert "[alembic]\nscript_location = %(here)s\nprepend_sys_path = %(here)s/../..\n" in ini
    env_py = (root / "shop" / "migrations" / "env.py").read_text()
    assert "current_app" not in env_py and "import shop.models" in env_py

    migrated = orchestrator(root, "migrate", "dev", **dev)
    assert migrated.code == 0, migrated.output
    for line in migrated.stderr.splitlines():
        json.loads(line)  # Flask-Migrate's fileConfig is gone; stderr is JSON lines
    checked = orchestrator(root, "check", "--json")
    assert checked.code == 0, checked.output  # the models match the migrations, outside Flask


def test_flask_migrate_env_py_that_cannot_import_outside_flask_is_never_plain_success(
    tmp_path: Path,
) -> None:
    root = flask_project(tmp_path / "app", importable=False)
    env_py = (root / "shop" / "migrations" / "env.py").read_text()
    done = orchestrator(root, "init")
    assert done.code == 0, done.output
    assert "change by hand" in done.stdout and "Working outside of application context" in (
        done.stdout
    )
    assert "run_migrations(target_metadata=db.metadata)" in done.stdout  # the exact change
    assert "NOT adopted yet" in done.stdout and "next: set" not in done.stdout
    assert (root / "shop" / "migrations" / "env.py").read_text() == env_py
    # run as it is: env.py's current_app is said once, as env.py's, with the way out
    for argv in (["check"], ["migrate", "dev"]):
        ran = orchestrator(root, *argv, DEV_DATABASE_URL=f"sqlite:///{tmp_path / 'dev.db'}")
        assert ran.code == 2, ran.output
        assert ran.stderr.count("shop/migrations/env.py failed before any revision ran") == 1
        assert "line 21 of shop/migrations/env.py" in ran.stderr  # get_engine: current_app
        assert "unlintable" not in ran.output and "failed on dev" not in ran.output


# -- a history written for PostgreSQL, and dev's database from alembic.ini ----------------------

PG_REVISIONS = {
    "aa01aa01aa01": (
        None,
        """\
op.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
op.create_table(
    "orders",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("ref", postgresql.UUID(as_uuid=True), server_default=sa.text("gen_random_uuid()")),
)""",
        'op.drop_table("orders")',
    ),
    "aa02aa02aa02": (
        "aa01aa01aa01",
        """\
op.add_column("orders", sa.Column("note", sa.Text, nullable=True))
op.execute("UPDATE orders SET note = ref::text")""",
        'op.drop_column("orders", "note")',
    ),
}


def alembic_project(root: Path, revisions: dict[str, tuple[str | None, str, str]]) -> Path:
    """`alembic init -t generic alembic` and the given revisions (id: down, upgrade, downgrade)."""
    root.mkdir(parents=True)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "init", "-t", "generic", "alembic"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    for rev, (down, up, undo) in revisions.items():
        (root / "alembic" / "versions" / f"{rev}_step.py").write_text(
            revision_text(rev, down, up, undo, "from sqlalchemy.dialects import postgresql\n")
        )
    return root


def test_a_postgresql_only_history_asks_for_postgresql_instead_of_blaming_revisions(
    tmp_path: Path, pg_url_factory: Any
) -> None:
    root = alembic_project(tmp_path / "api", PG_REVISIONS)
    done = orchestrator(root, "init", "--json")
    assert done.code == 0, done.output
    notes = " ".join(done.json()["notes"])
    assert "dev needs a PostgreSQL URL" in notes and "aa01aa01aa01" in notes
    dev_yaml = (root / "environments" / "dev.yaml").read_text()
    assert "sqlite" not in dev_yaml and "url_env: DEV_DATABASE_URL" in dev_yaml

    on_sqlite = orchestrator(root, "check")
    assert on_sqlite.code == 2, on_sqlite.output
    assert "--scratch-url" in on_sqlite.stderr and "PostgreSQL-only" in on_sqlite.stderr
    assert "aa01aa01aa01" in on_sqlite.stderr and "near" not in on_sqlite.stderr
    assert "Traceback" not in on_sqlite.output

    on_postgresql = orchestrator(root, "check", "--json", "--scratch-url", pg_url_factory())
    checks = {f["check"] for f in on_postgresql.json()} if on_postgresql.stdout.strip() else set()
    assert checks <= {"lint"}, on_postgresql.output  # the revisions run, up, down and up
    unset = orchestrator(root, "migrate", "dev")
    assert unset.code == 2 and "DEV_DATABASE_URL" in unset.stderr, unset.output
    migrated = orchestrator(root, "migrate", "dev", DEV_DATABASE_URL=pg_url_factory())
    assert migrated.code == 0, migrated.output


def test_init_keeps_the_dev_database_alembic_ini_names(tmp_path: Path) -> None:
    root = alembic_project(tmp_path / "svc", FLASK_REVISIONS)
    ini = root / "alembic.ini"
    ini.write_text(
        ini.read_text().replace(
            "sqlalchemy.url = driver://user:pass@localhost/dbname",
            "sqlalchemy.url = sqlite:///app.db",
        )
    )
    first = next(iter(FLASK_REVISIONS))
    # years of plain Alembic with the stock env.py: app.db is the team's dev database
    plain = subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "upgrade", first],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert plain.returncode == 0, plain.stderr
    done = orchestrator(root, "init")
    assert done.code == 0, done.output
    assert "sqlalchemy.url" in done.stdout
    assert "url: sqlite:///app.db" in (root / "environments" / "dev.yaml").read_text()
    status = orchestrator(root, "status", "dev", "--json")
    assert status.code == 0, status.output
    assert status.json()[0]["current"] in ([first], first)  # the same database, not a new one
    migrated = orchestrator(root, "migrate", "dev")
    assert migrated.code == 0, migrated.output
    assert not (root / ".orchestrator" / "dev.db").exists()
    assert sorted(p.name for p in root.glob("*.db")) == ["app.db"]


def test_init_never_writes_the_password_of_alembic_ini_into_an_environment_file(
    tmp_path: Path,
) -> None:
    root = alembic_project(tmp_path / "svc", FLASK_REVISIONS)
    ini = root / "alembic.ini"
    secret = "postgresql+psycopg://app:Pa55-w0rd@db.internal/shop"
    ini.write_text(
        ini.read_text().replace(
            "sqlalchemy.url = driver://user:pass@localhost/dbname", f"sqlalchemy.url = {secret}"
        )
    )
    done = orchestrator(root, "init")
    assert done.code == 0, done.output
    assert "Pa55-w0rd" not in done.output
    assert "set DEV_DATABASE_URL" in done.stdout and "password" in done.stdout
    written = "".join(p.read_text() for p in (root / "environments").glob("*.yaml"))
    assert "Pa55-w0rd" not in written and "db.internal" not in written
    unset = orchestrator(root, "migrate", "dev")
    assert unset.code == 2 and "DEV_DATABASE_URL" in unset.stderr, unset.output
