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
