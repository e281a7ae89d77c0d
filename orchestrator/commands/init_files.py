"""The files `init` writes or changes, decided as plain data: environment files (dev keeps
the database alembic.ini names), .gitignore entries, and the two lines Flask-Migrate's
alembic.ini lacks."""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.secrets import url_secrets

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


def environment_file(
    env: str, predecessor: str | None, last: bool, dev: DevDatabase | None = None
) -> str:
    """The YAML of one environment, the shape of the shipped environments/*.yaml: the first
    has dev's database (default: the embedded SQLite file), the last is production-strict,
    the ones between are staging-like."""
    dev = dev or dev_database(env, None, None)
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
    shown = show(alembic_ini, project_dir)
    return Action(shown, "change", "adds to [alembic]: " + "; ".join(added), content)


def show(path: Path, project_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(project_dir.resolve()))
    except ValueError:
        return str(path)
