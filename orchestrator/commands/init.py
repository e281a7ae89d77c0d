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

import configparser
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.commands.init_env_py import EnvPyChange, change_env_py
from orchestrator.core.errors import UsageError
from orchestrator.core.secrets import url_secrets

DEFAULT_ENVS = ("dev", "staging", "prod")
# What git should not see: the embedded databases, lock files and the byte-code caches
# Python writes beside the revisions (where a project ignores only `*.pyc`, the directory shows)
GITIGNORE = (".orchestrator/", "__pycache__/")
# `alembic init` writes this placeholder into sqlalchemy.url: no URL at all
PLACEHOLDER_URL = "driver://user:pass@localhost/dbname"


@dataclass(frozen=True)
class Action:
    path: str
    action: str  # write | keep | hand over | change | add to | change by hand | already ...
    detail: str = ""
    content: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "action": self.action, "detail": self.detail}


def variable(env: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", env.upper()) + "_DATABASE_URL"


@dataclass(frozen=True)
class DevDatabase:
    """What the first environment's file says about its database."""

    url: str | None  # a literal URL (no password), or None: the variable only
    comment: str  # why, on the url line (or the url_env line when there is no url)


@dataclass
class Adoption:
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the user must know or do next
    adopted: bool = True  # False: env.py must be changed by hand before anything runs


def environment_file(env: str, predecessor: str | None, last: bool, dev: DevDatabase) -> str:
    """The YAML of one environment, the shape of the shipped environments/*.yaml: the first
    has dev's database, the last is production-strict, the ones between are staging-like."""
    lines = [f"name: {env}"]
    if predecessor:
        lines.append(f"promotes_from: {predecessor}   # only revisions {predecessor} has run")
    if predecessor is None and dev.url is None:
        lines += ["database:", f"  url_env: {variable(env)}   # {dev.comment}"]
    else:
        lines += ["database:", f"  url_env: {variable(env)}"]
    if predecessor is None and dev.url is not None:
        lines.append(f"  url: {dev.url}   # {dev.comment}")
    lines += ["lock:", "  timeout: 60"]
    if last and predecessor is not None:
        policy = [
            "require_approval: true",
            "allow_downgrade: false",
            "lint: error",
            "schema_drift: refuse",
        ]
    else:
        policy = [
            "require_approval: false",
            "allow_downgrade: true",
            "lint: warn",
            "schema_drift: warn",
        ]
    lines += ["policy:", *(f"  {p}" for p in policy)]
    if predecessor is not None:
        lines += ["session:", "  lock_timeout: 5s", "  statement_timeout: 15min"]
    return "\n".join(lines) + "\n"


def ini_url(alembic_ini: Path) -> str | None:
    """`sqlalchemy.url` of alembic.ini's [alembic] section (`%(here)s` expanded, `%%` read
    as `%`), or None when unset, empty or `alembic init`'s placeholder."""
    parser = configparser.ConfigParser(defaults={"here": str(alembic_ini.parent)})
    try:
        parser.read(alembic_ini, encoding="utf-8")
        value = parser.get("alembic", "sqlalchemy.url", fallback="") or ""
    except (configparser.Error, UnicodeDecodeError):
        return None
    value = value.strip()
    return value if value and value != PLACEHOLDER_URL else None


def dev_database(env: str, url: str | None, postgresql_only: str | None) -> DevDatabase:
    """Dev's database: the one alembic.ini names (the team's plain `alembic upgrade` keeps
    building it), a variable only when that URL holds a password or when the history needs
    PostgreSQL, else the embedded SQLite file."""
    name = variable(env)
    if url is not None and url_secrets(url):
        return DevDatabase(None, "set it to sqlalchemy.url of alembic.ini (it holds a password)")
    if url is not None:
        return DevDatabase(url, f"sqlalchemy.url of alembic.ini; {name} overrides it")
    if postgresql_only:
        return DevDatabase(None, "a PostgreSQL database: the revisions are PostgreSQL-only")
    return DevDatabase(f"sqlite:///.orchestrator/{env}.db", f"when {name} is unset")


def dev_notes(env: str, url: str | None, postgresql_only: str | None, flask: bool) -> list[str]:
    name = variable(env)
    notes = []
    if url is not None and url_secrets(url):
        notes.append(
            f"{env}: alembic.ini's sqlalchemy.url holds a password, so it is not written into "
            f"environments/{env}.yaml: set {name} to that URL (in your shell, or in .env, which "
            "git ignores), and take the password out of alembic.ini."
        )
    elif url is not None:
        notes.append(
            f"{env}: uses the database of alembic.ini's sqlalchemy.url, as plain `alembic "
            f"upgrade head` did ({name} overrides it)."
        )
    elif flask:
        notes.append(
            f"{env}: Flask-Migrate keeps the URL in the app's config (SQLALCHEMY_DATABASE_URI), "
            f"not in alembic.ini: set {name} to your development database's URL."
        )
    if postgresql_only and not (url or "").startswith(("postgresql", "postgres")):
        notes.append(
            f"{env} needs a PostgreSQL URL: the revisions use PostgreSQL-only constructs "
            f"({postgresql_only}), which SQLite cannot run. Set "
            f"{name}=postgresql+psycopg://USER@HOST/DBNAME; `orchestrator check` needs "
            "`--scratch-url` with an empty PostgreSQL database for the same reason."
        )
    return notes


def gitignore_action(project_dir: Path) -> Action | None:
    """Append what git must not see to .gitignore (made if absent); None if all there."""
    path = project_dir / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    present = {line.strip().lstrip("/").rstrip("/") for line in text.splitlines()}
    present |= {p.removeprefix("**/") for p in present}
    missing = [entry for entry in GITIGNORE if entry.rstrip("/") not in present]
    if not missing:
        return None
    added = "".join(f"{entry}\n" for entry in missing)
    content = text + ("\n" if text and not text.endswith("\n") else "") + added
    verb = "add to" if path.exists() else "write"
    detail = "keeps out of git: " + ", ".join(missing)
    return Action(".gitignore", verb, detail, content)


def ini_action(alembic_ini: Path, project_dir: Path) -> Action | None:
    """Flask-Migrate's alembic.ini has no script_location (Flask-Migrate passes it) and no
    prepend_sys_path (`flask` puts the working directory on sys.path): both are added to
    its [alembic] section, so plain `alembic` and the orchestrator find env.py and the
    application's modules. Flask-Migrate still sets script_location itself, to the same
    directory."""
    text = alembic_ini.read_text(encoding="utf-8")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    if not parser.has_section("alembic"):
        return None
    added = []
    if not parser.has_option("alembic", "script_location"):
        added.append("script_location = %(here)s")
    if not parser.has_option("alembic", "prepend_sys_path"):
        root = os.path.relpath(project_dir.resolve(), alembic_ini.parent.resolve())
        added.append("prepend_sys_path = %(here)s" + ("" if root == "." else f"/{root}"))
    if not added:
        return None
    match = re.search(r"^\[alembic\][ \t]*\n", text, re.MULTILINE)
    assert match is not None
    content = text[: match.end()] + "".join(f"{line}\n" for line in added) + text[match.end() :]
    shown = _show(alembic_ini, project_dir)
    return Action(shown, "change", "adds to [alembic]: " + "; ".join(added), content)


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
        shown = _show(path, project_dir)
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
    return adoption


def _env_py_action(
    env_py: Path, project_dir: Path, text: str, change: EnvPyChange, adoption: Adoption
) -> Action:
    shown = _show(env_py, project_dir)
    if change.kind == "handed over":
        return Action(shown, "already handed over")
    if change.content is None:
        adoption.adopted = False
        adoption.notes.append(
            f"NOT adopted yet: {shown} cannot run under the orchestrator as it is. Change it "
            "as shown above, then run `orchestrator check`."
        )
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


def _show(path: Path, project_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(project_dir.resolve()))
    except ValueError:
        return str(path)
