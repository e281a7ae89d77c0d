"""The databases an environment migrates: their names, and their URLs from the variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator.core.config.files import read_text_file
from orchestrator.core.config.models import NAME_PATTERN, EnvironmentConfig
from orchestrator.core.config.urls import given_url, normalise_scheme
from orchestrator.core.errors import UsageError
from orchestrator.core.secrets import url_secrets


@dataclass(frozen=True)
class Target:
    """One database an environment migrates: a single one, or one entry of a fleet."""

    env: str
    name: str
    url: str  # may hold a password: render it with `safe_url` before showing it


def target_names(env: EnvironmentConfig, project_dir: Path) -> list[str]:
    """The names of an environment's databases, as its configuration lists them, without
    their URLs (a job that may not connect to them still knows what they are)."""
    db = env.database
    names = list(db.databases or [])
    if db.databases_file:
        names += _read_names(databases_file_path(env, project_dir), env.source)
    if not names and not db.targets and (db.url_env or db.url):
        names.append(env.name)
    return names + [named.name for named in db.targets or []]


def resolve_targets(
    env: EnvironmentConfig, environ: Mapping[str, str], project_dir: Path
) -> list[Target]:
    """The databases of an environment, with URLs; a missing variable is a UsageError."""
    db = env.database
    targets: list[Target] = []
    if db.url_env or db.url:
        base = _resolve_url(env, db.url_env, db.url, environ, project_dir, what="database")
        names = list(db.databases or [])
        if db.databases_file:
            names += _read_names(databases_file_path(env, project_dir), env.source)
        listed = db.databases is not None or db.databases_file is not None
        if listed and not names:
            # never fall back to the server URL's own database (e.g. `postgres`)
            raise UsageError(
                f"{env.source}: `database.databases`"
                + (f" and {db.databases_file}" if db.databases_file else "")
                + " list no database: name at least one."
            )
        if names and base.startswith("sqlite") and "{database}" not in base:
            raise UsageError(
                f"{env.source}: the SQLite URL of a fleet must say where each database goes: "
                "put `{database}` in it, e.g. sqlite:///.orchestrator/tenants/{database}.db."
            )
        if names:
            targets += [Target(env.name, n, _with_database(base, n, project_dir)) for n in names]
        elif not db.targets:
            targets.append(Target(env.name, env.name, base))
    for named in db.targets or []:
        url = _resolve_url(env, named.url_env, named.url, environ, project_dir, what=named.name)
        targets.append(Target(env.name, named.name, url))
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise UsageError(f"{env.source}: target {target.name!r} is listed twice.")
        seen.add(target.name)
    return targets


def _resolve_url(
    env: EnvironmentConfig,
    url_env: str | None,
    literal: str | None,
    environ: Mapping[str, str],
    project_dir: Path,
    what: str,
) -> str:
    if url_env and environ.get(url_env):
        where = f"The variable {url_env} (database of {env.name!r}, {env.source})"
        return _anchor_sqlite(given_url(environ[url_env], where), project_dir)
    if literal:
        if url_secrets(literal):
            raise UsageError(f"{env.source}: the URL of {what!r} holds a password; use url_env.")
        return _anchor_sqlite(normalise_scheme(literal), project_dir)
    raise UsageError(
        f"Environment {env.name!r} ({env.source}) reads its {what} URL from the variable "
        f"{url_env}, which is not set. Export {url_env}=<SQLAlchemy URL> (or put it in .env); "
        "this environment has no default, by design."
    )


def _anchor_sqlite(url: str, project_dir: Path) -> str:
    """Relative SQLite paths are relative to the project, not to the caller's directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        path = url[len(prefix) :]
        return prefix + str((project_dir / path).resolve())
    return url


def _with_database(base: str, name: str, project_dir: Path) -> str:
    if "{database}" in base:
        return _anchor_sqlite(base.replace("{database}", name), project_dir)
    parts = urlsplit(base)
    return parts._replace(path="/" + name).geturl()


def databases_file_path(env: EnvironmentConfig, project_dir: Path) -> Path:
    """`databases_file` is relative to the environment file that names it. Files written for
    the first version, relative to the project directory, still work, with a warning."""
    assert env.database.databases_file is not None
    named = Path(env.database.databases_file)
    beside = Path(env.source).parent / named
    if named.is_absolute() or beside.exists() or not (project_dir / named).exists():
        return beside
    import warnings

    warnings.warn(
        f"{env.source}: `database.databases_file` {named} is read relative to the project "
        f"directory; that is deprecated. Write it relative to {env.source} "
        f"(it is at {project_dir / named}).",
        FutureWarning,  # shown by default, unlike DeprecationWarning
        stacklevel=2,
    )
    return project_dir / named


def _read_names(path: Path, source: str) -> list[str]:
    if not path.exists():
        raise UsageError(f"{source}: `database.databases_file` {path} does not exist.")
    names = []
    text = read_text_file(path, f"{source}: `database.databases_file`")
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not NAME_PATTERN.match(name):
            raise UsageError(f"{path}, line {number}: {name!r} is not a database name.")
        names.append(name)
    return names


def env_summary(env: EnvironmentConfig, project_dir: Path) -> dict[str, Any]:
    """What `envs` shows: the policy, never a URL."""
    db = env.database
    listed = len(db.databases or []) + len(db.targets or [])
    if db.databases_file:
        listed += len(_read_names(databases_file_path(env, project_dir), env.source))
    return {
        "name": env.name,
        "promotes_from": env.promotes_from,
        "url_env": db.url_env,
        "targets": listed or 1,
        "require_approval": env.policy.require_approval,
        "allow_downgrade": env.policy.allow_downgrade,
        "lint": env.policy.lint,
        "schema_drift": env.policy.schema_drift,
        "signing": env.signing is not None,
        "lock_timeout": env.lock.timeout,
        "file": env.source,
    }
