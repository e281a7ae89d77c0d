"""`orchestrator init`: adopt an existing Alembic project (made by `alembic init`, or
Flask-Migrate's `flask db init`).

It writes one environment file per environment, chained in the order given, hands the
project's `env.py` over to the orchestrator with the smallest change that does it (or says
exactly what to change), and keeps `.orchestrator/` and Python's caches out of git. Dev keeps
the database `alembic.ini` names (a URL with a password stays in a variable); a history
written for PostgreSQL gets no SQLite default. It never overwrites a file, never touches
`versions/`, and with `--dry-run` writes nothing. The existing databases are then adopted
with `orchestrator baseline`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.commands.init_env_py import EnvPyChange, change_env_py
from orchestrator.commands.init_files import (
    Action,
    dev_database,
    dev_notes,
    environment_file,
    gitignore_action,
    ini_action,
    ini_url,
    show,
    variable,
)
from orchestrator.core.errors import UsageError

DEFAULT_ENVS = ("dev", "staging", "prod")


@dataclass
class Adoption:
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the user must know or do next
    adopted: bool = True  # False: env.py must be changed by hand before anything runs


def plan_init(
    environments_dir: Path,
    env_py: Path,
    envs: list[str],
    project_dir: Path,
    alembic_ini: Path,
    versions: list[tuple[str, Path]],
    import_roots: list[Path],
) -> Adoption:
    """What `init` would do; pure but for reading the files it would touch (and importing
    the Flask app's `db` module outside Flask, to be sure a replaced env.py runs)."""
    from orchestrator.migrations.postgresql_only import postgresql_only, summary

    adoption = Adoption()
    text = env_py.read_text(encoding="utf-8")
    change = change_env_py(text, project_dir, import_roots)
    flask = change.kind == "flask"
    url = ini_url(alembic_ini)
    found = postgresql_only(versions)
    pg_only = summary(found) if found else None
    dev = dev_database(envs[0], url, pg_only)
    if flask:
        ini = ini_action(alembic_ini, project_dir)
        if ini is not None:
            adoption.actions.append(ini)
    for index, env in enumerate(envs):
        path = environments_dir / f"{env}.yaml"
        shown = show(path, project_dir)
        if path.exists():
            adoption.actions.append(Action(shown, "keep", "exists; not overwritten"))
            continue
        predecessor = envs[index - 1] if index else None
        content = environment_file(env, predecessor, index == len(envs) - 1, dev)
        adoption.actions.append(Action(shown, "write", f"reads {variable(env)}", content))
    adoption.actions.append(_env_py_action(env_py, project_dir, text, change, adoption))
    ignore = gitignore_action(project_dir)
    if ignore is not None:
        adoption.actions.append(ignore)
    if not (environments_dir / f"{envs[0]}.yaml").exists():
        adoption.notes += dev_notes(envs[0], url, pg_only, flask)
    if flask and change.content is not None:
        adoption.notes.append(
            "`flask db upgrade` now runs through the orchestrator too: `flask db upgrade -x "
            "env=staging` targets staging, dev by default."
        )
    if not adoption.adopted:  # the last word: never plain success
        adoption.notes.append(
            f"NOT adopted yet: {show(env_py, project_dir)} cannot run under the orchestrator "
            "as it is. Change it as shown above, then run `orchestrator check`."
        )
    return adoption


def _env_py_action(
    env_py: Path, project_dir: Path, text: str, change: EnvPyChange, adoption: Adoption
) -> Action:
    shown = show(env_py, project_dir)
    if change.kind == "handed over":
        return Action(shown, "already handed over")
    if change.content is None:
        adoption.adopted = False
        return Action(shown, "change by hand", change.advice)
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            change.content.splitlines(keepends=True),
            f"a/{shown}",
            f"b/{shown}",
        )
    )
    detail = (change.advice + "\n" if change.advice else "") + diff
    return Action(shown, "hand over", detail, change.content)


def apply_init(actions: list[Action], project_dir: Path) -> None:
    for action in actions:
        if action.action not in ("write", "hand over", "change", "add to"):
            continue
        path = project_dir / action.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if action.action == "write":
            with path.open("x", encoding="utf-8") as file:  # "x": never overwrite
                file.write(action.content)
        else:
            path.write_text(action.content, encoding="utf-8")


def init(
    project_dir: Path, environments_dir: Path, alembic_ini: Path, envs: list[str], dry_run: bool
) -> Adoption:
    from orchestrator.migrations.runner import AlembicProject

    if not alembic_ini.is_file():
        raise UsageError(
            f"No {alembic_ini} here (nor Flask-Migrate's migrations/alembic.ini): run "
            "`orchestrator init` in the directory of your Alembic project (the one `alembic "
            "init` or `flask db init` ran in), or set ORCHESTRATOR_ALEMBIC_INI."
        )
    bad = [e for e in envs if not re.fullmatch(r"[A-Za-z0-9_.-]+", e)]
    if not envs or bad or len(set(envs)) != len(envs):
        raise UsageError(
            f"--envs {','.join(envs)!r}: give distinct names (letters, digits, _ . -), in "
            "promotion order, e.g. --envs dev,staging,prod."
        )
    project = AlembicProject(alembic_ini)
    env_py = project.script_location / "env.py"
    if not env_py.is_file():
        raise UsageError(f"{env_py} does not exist: is script_location in {alembic_ini} right?")
    versions = [
        (_revision_id(path), path)
        for directory in project.versions_dirs
        if directory.is_dir()
        for path in sorted(directory.rglob("*.py"))
        if "__pycache__" not in path.parts
    ]
    roots = [*project.import_roots, project_dir.resolve()]
    adoption = plan_init(environments_dir, env_py, envs, project_dir, alembic_ini, versions, roots)
    if not dry_run:
        apply_init(adoption.actions, project_dir)
    return adoption


def _revision_id(path: Path) -> str:
    """The `revision = "..."` of a revision file, else its name (for messages only)."""
    try:
        match = re.search(r"^revision\b[^=\n]*=\s*['\"]([^'\"]+)", path.read_text("utf-8"), re.M)
    except (OSError, UnicodeDecodeError):
        match = None
    return match.group(1) if match else path.stem
