"""Real projects as they come (SPEC Part 3): env.py files that are not ours, Flask-Migrate's
layout, histories written for PostgreSQL, and the logging a project's env.py sets up.

Each test builds a tiny project of that shape under tmp_path and drives the real console
entry point, as a team would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from projectkit import Project, make_project

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
    # lint off: env.py fails where the revisions would run; the run's end says it, no revision
    dev = project.path / "environments" / "dev.yaml"
    dev.write_text(dev.read_text().replace("lint: warn", "lint: off"))
    done = project.run("migrate", "dev")
    assert done.code == 2, done.output
    events = [json.loads(line) for line in done.stderr.splitlines()]
    runs = [e["event"] for e in events if e.get("event", "").startswith(("run.", "migration."))]
    assert runs == ["run.started", "run.failed"]
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
