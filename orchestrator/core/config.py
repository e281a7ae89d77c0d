"""Environment files and global settings: validated plain data, no database access.

Importing this module must stay cheap (no SQLAlchemy, no Alembic): `envs` and `--help`
only need it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.core.errors import UsageError
from orchestrator.core.secrets import register_url, url_secrets

_DURATION = re.compile(r"^\d+\s*(us|ms|s|min|h|d)?$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_NAME = 128  # the width of the `env` column of the ledger and audit tables
MAX_TEXT = 4096  # actor, ticket, reason: longer is a usage error


class Settings(BaseSettings):
    """Global settings: `ORCHESTRATOR_*` variables, then `.env`, then these defaults."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", env_file=".env", extra="ignore")

    project_dir: Path = Path(".")
    environments_dir: Path | None = None
    alembic_ini: Path | None = None
    audit_file: Path | None = None
    log_format: Literal["auto", "json", "console"] = "auto"
    actor: str | None = None
    env: str = "dev"
    # seconds between `migration.running` lines while one revision runs (0: none)
    progress_seconds: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    search_parents: bool = Field(default=True, exclude=True)

    @model_validator(mode="after")
    def _find_project(self) -> Settings:
        """Run from a sub-directory: the project is the nearest directory up that holds
        `environments/` or `alembic.ini` (as git finds its repository)."""
        if "project_dir" not in self.model_fields_set and self.search_parents:
            self.project_dir = find_project_dir(Path.cwd())
        return self

    @property
    def environments_path(self) -> Path:
        return self.environments_dir or self.project_dir / "environments"

    @property
    def alembic_ini_path(self) -> Path:
        """ORCHESTRATOR_ALEMBIC_INI, else the project's `alembic.ini`, else Flask-Migrate's
        (`migrations/alembic.ini`, or `PKG/migrations/alembic.ini` when there is one only)."""
        if self.alembic_ini:
            return self.alembic_ini
        beside = self.project_dir / "alembic.ini"
        if beside.is_file():
            return beside
        return flask_migrate_ini(self.project_dir) or beside


def flask_migrate_ini(project_dir: Path) -> Path | None:
    """Flask-Migrate's `alembic.ini`: `migrations/` (its default directory) or one
    `PKG/migrations/` (`Migrate(app, db, directory=...)`); None when absent or ambiguous."""
    default = project_dir / "migrations" / "alembic.ini"
    if default.is_file():
        return default
    found = sorted(project_dir.glob("*/migrations/alembic.ini"))
    return found[0] if len(found) == 1 else None


def find_project_dir(start: Path) -> Path:
    """`start` or its nearest parent holding `environments/` or `alembic.ini`; else `start`
    (and the error about the missing directory says where it looked)."""
    for directory in (start, *start.parents):
        if (directory / "environments").is_dir() or (directory / "alembic.ini").is_file():
            return directory
    return start


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NamedTarget(_Strict):
    """One database of a fleet with its own URL (e.g. one per region)."""

    name: str
    url_env: str | None = None
    url: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"target name {value!r} may use letters, digits, _ . - only")
        return value

    @model_validator(mode="after")
    def _has_url(self) -> NamedTarget:
        if not (self.url_env or self.url):
            raise ValueError(f"target {self.name!r} needs `url_env` (or a literal `url`)")
        return self


class DatabaseConfig(_Strict):
    url_env: str | None = None
    url: str | None = Field(default=None, description="literal URL, only without a password")
    # Fleet form: the URL names a server; each entry of `databases` is one target on it.
    databases: list[str] | None = None
    databases_file: str | None = None
    targets: list[NamedTarget] | None = None

    @field_validator("databases")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not _NAME.match(name):
                raise ValueError(f"{name!r} is not a database name (letters, digits, _ . - only)")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DatabaseConfig:
        if not (self.url_env or self.url or self.targets):
            raise ValueError("set `url_env` (the variable holding the URL), `url` or `targets`")
        if (self.databases is not None or self.databases_file) and not (self.url_env or self.url):
            raise ValueError(
                "`databases` and `databases_file` name databases on the server of `url_env` "
                "(or `url`): set one of them"
            )
        return self


class LockConfig(_Strict):
    timeout: float = Field(default=60, ge=0, allow_inf_nan=False)
    key: str | None = None


class PolicyConfig(_Strict):
    require_approval: bool = False
    allow_downgrade: bool = True
    lint: Literal["off", "warn", "error"] = "warn"
    lint_exclude: list[str] = Field(default_factory=list)
    # rules waived for one revision on this environment only: the revision file (and its
    # checksum) stays as its predecessor ran it
    lint_waivers: dict[str, list[str]] = Field(default_factory=dict)
    # the live schema against what the last run recorded: refuse a migrate when it differs
    schema_drift: Literal["off", "warn", "refuse"] = "warn"
    require_plan: bool = False  # migrate/promote only with --plan FILE (a reviewed plan)
    plan_approvers: list[str] = Field(
        default_factory=list, description="public keys (PEM files) whose plan approval counts"
    )
    # env.py and the project modules it imports differ from the predecessor's last run:
    # `plan`/`status` say so (warn); `refuse` makes a run exit 3
    same_env_py: Literal["warn", "refuse"] = "warn"

    @field_validator("lint", "schema_drift", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @field_validator("lint_exclude")
    @classmethod
    def _known_excludes(cls, value: list[str]) -> list[str]:
        _refuse_unknown_rules(value, "lint_exclude")
        return value

    @field_validator("lint_waivers", mode="before")
    @classmethod
    def _revision_keys(cls, value: object) -> object:
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    # YAML reads `1e10` as a number, `0123` as 123: the id would be lost
                    raise ValueError(f'quote the revision id {key!r} ("{key}": [rule])')
        return value

    @field_validator("lint_waivers")
    @classmethod
    def _known_waivers(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for revision, rules in value.items():
            _refuse_unknown_rules(rules, f"lint_waivers of {revision}")
        return value


def _refuse_unknown_rules(rules: list[str], where: str) -> None:
    from orchestrator.core.lint_rules import unknown_rules

    unknown = unknown_rules(rules)
    if unknown:
        raise ValueError(
            f"{', '.join(map(repr, unknown))} in {where} is not a lint rule: name a squawk rule "
            "(https://squawkhq.com/docs/rules, e.g. ban-drop-column) or `unlintable`"
        )


class SessionConfig(_Strict):
    lock_timeout: str | None = None
    statement_timeout: str | None = None

    @field_validator("lock_timeout", "statement_timeout")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not _DURATION.match(value):
            raise ValueError(f"{value!r} is not a duration such as 5s, 500ms or 15min")
        return value


class SigningConfig(_Strict):
    """Ed25519 keys of an environment's evidence: the public half in the repo, the private
    half only in the variable of the job that migrates this environment."""

    public_key: str = Field(description="path of the PEM public key, relative to the project")
    key_env: str = Field(description="variable holding the private key: PEM text or a path")
    previous_keys: list[str] = Field(
        default_factory=list, description="retired public keys whose signatures still count"
    )

    @field_validator("key_env")
    @classmethod
    def _variable(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
            raise ValueError(f"{value!r} is not a variable name")
        return value


class EnvironmentConfig(_Strict):
    name: str
    promotes_from: str | None = None
    database: DatabaseConfig
    lock: LockConfig = LockConfig()
    policy: PolicyConfig = PolicyConfig()
    session: SessionConfig = SessionConfig()
    # per-run (PostgreSQL only): all of a run's revisions and ledger rows commit together
    transaction: Literal["per-revision", "per-run"] = "per-revision"
    signing: SigningConfig | None = None
    # PostgreSQL: the schemas whose objects drift watches; the first names objects unqualified
    # (default: the first schema of the search path)
    schemas: list[str] | None = None
    source: str = Field(default="", exclude=True, description="the file it was read from")

    @field_validator("schemas")
    @classmethod
    def _schemas(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("list at least one schema, or leave `schemas` out")
        for name in value:
            if not name or len(name) > 63 or name != name.strip():
                raise ValueError(f"{name!r} is not a schema name (1-63 characters)")
        if len(set(value)) != len(value):
            raise ValueError("a schema is listed twice")
        return value


@dataclass(frozen=True)
class Target:
    """One database an environment migrates: a single one, or one entry of a fleet."""

    env: str
    name: str
    url: str  # may hold a password: render it with `safe_url` before showing it


@dataclass(frozen=True)
class Environments:
    """All environments, in promotion order (parents before children)."""

    by_name: dict[str, EnvironmentConfig]
    order: tuple[str, ...]

    def get(self, name: str) -> EnvironmentConfig:
        if name not in self.by_name:
            known = ", ".join(self.order) or "none"
            raise UsageError(f"Unknown environment {name!r}. Known environments: {known}.")
        return self.by_name[name]

    def path_to(self, name: str) -> list[str]:
        """The chain from the first environment down to `name`, inclusive."""
        path = [self.get(name).name]
        while (parent := self.by_name[path[-1]].promotes_from) is not None:
            path.append(parent)
        return path[::-1]


# -- loading -----------------------------------------------------------------------------


def load_environments(directory: Path) -> Environments:
    if not directory.is_dir():
        looked = directory.resolve()
        raise UsageError(
            f"The environments directory {looked} does not exist, and no parent directory "
            "holds a project (alembic.ini or environments/). Run from the project's directory "
            "or below it, create environments/ with one YAML file per environment, or set "
            "ORCHESTRATOR_PROJECT_DIR (or ORCHESTRATOR_ENVIRONMENTS_DIR)."
        )
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise UsageError(f"No environment files (*.yaml) in {directory}.")
    envs = [
        parse_environment(read_text_file(path, "Environment file"), str(path)) for path in files
    ]
    return order_environments(envs)


def parse_environment(text: str, source: str) -> EnvironmentConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"{source}{where}: not valid YAML ({problem}).") from None
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a mapping of keys (name, database, ...).")
    try:
        env = EnvironmentConfig.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise UsageError(f"{source}: {describe_validation_error(exc)}") from None
    stem = Path(source).stem
    if env.name != stem:
        raise UsageError(
            f"{source}: `name` is {env.name!r} but must equal the file's stem {stem!r}."
        )
    if not _NAME.match(env.name):
        raise UsageError(f"{source}: `name` {env.name!r} may use letters, digits, _ . - only.")
    if len(env.name) > MAX_NAME:
        raise UsageError(
            f"{source}: `name` is {len(env.name)} characters long; at most {MAX_NAME}."
        )
    if env.database.url and url_secrets(env.database.url):
        raise UsageError(
            f"{source}: `database.url` holds a password. Secrets never live in YAML: put the URL "
            "in a variable and name it with `database.url_env`."
        )
    return env


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown key `{key}`")
        elif error["type"] == "missing":
            parts.append(f"missing required key `{key}`")
        else:
            parts.append(f"`{key}`: {error['msg']}")
    return "; ".join(parts) + "."


def order_environments(envs: list[EnvironmentConfig]) -> Environments:
    by_name: dict[str, EnvironmentConfig] = {}
    for env in envs:
        if env.name in by_name:
            raise UsageError(f"Environment {env.name!r} is defined twice ({env.source}).")
        by_name[env.name] = env
    for env in envs:
        if env.promotes_from is not None and env.promotes_from not in by_name:
            raise UsageError(
                f"{env.source}: `promotes_from: {env.promotes_from}` names no environment. "
                f"Known environments: {', '.join(sorted(by_name))}."
            )
    order: list[str] = []
    level = sorted(name for name, env in by_name.items() if env.promotes_from is None)
    while level:
        order.extend(level)
        level = sorted(n for n, e in by_name.items() if e.promotes_from in level)
    if len(order) != len(by_name):
        cyclic = sorted(set(by_name) - set(order))
        raise UsageError(
            f"The `promotes_from` links of {', '.join(cyclic)} form a cycle: every chain must "
            "start at an environment without `promotes_from`."
        )
    return Environments(by_name=by_name, order=tuple(order))


# -- resolving URLs ----------------------------------------------------------------------


def read_dotenv(project_dir: Path) -> dict[str, str]:
    """Variables from `.env` (process variables win over it)."""
    import io

    from dotenv import dotenv_values  # a dependency of pydantic-settings

    path = project_dir / ".env"
    if not path.exists():
        return {}
    values = dotenv_values(stream=io.StringIO(read_text_file(path, "The file")))
    return {k: v for k, v in values.items() if v is not None}


def read_text_file(path: Path, what: str) -> str:
    """A configuration file's UTF-8 text; anything else is a UsageError naming the file."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory, not a file.") from None
    except OSError as exc:
        raise UsageError(f"{what} {path} cannot be read: {exc.strerror or exc}.") from None
    if b"\0" in data:
        raise UsageError(f"{what} {path} is not a text file: it holds binary data.") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} cannot be decoded): save it "
            "as UTF-8."
        ) from None


def load_settings() -> Settings:
    """`Settings()`, with a bad ORCHESTRATOR_* value named as the variable it came from."""
    try:
        return Settings()
    except UnicodeDecodeError:
        raise UsageError(".env is not UTF-8 text: save it as UTF-8.") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"ORCHESTRATOR_{field.upper()}: {error['msg']}")
        raise UsageError(f"Bad setting: {'; '.join(problems)}.") from None


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


def given_url(raw: str, where: str) -> str:
    """A URL a user gave (a variable, an option), made safe to use and to show: a raw `@`
    in its password encoded, its secrets registered for redaction before anything can print
    them, checked, its scheme normalised. `where` names the source in the error."""
    url = encode_raw_at(raw)
    register_url(url)
    problem = _url_problem(url)
    if problem:
        raise UsageError(
            f"{where} does not hold a usable SQLAlchemy URL: {problem}. Expected e.g. "
            "postgresql+psycopg://user:password@host:5432/dbname."
        )
    return normalise_scheme(url)


def encode_raw_at(url: str) -> str:
    """`user:p@ss@host` means the password `p@ss`: the last `@` of the authority ends the
    user part (as for urllib), where SQLAlchemy would end it at the first one and take
    `ss@host` for the host. The other `@` are encoded as `%40`, which SQLAlchemy decodes."""
    scheme, sep, rest = url.partition("://")
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0] or [len(rest)])
    userinfo, at, host = rest[:end].rpartition("@")
    if not sep or "@" not in userinfo:
        return url
    return f"{scheme}://{userinfo.replace('@', '%40')}{at}{host}{rest[end:]}"


def normalise_scheme(url: str) -> str:
    """`postgres://` (Heroku, Render, many PaaS) means `postgresql://` to SQLAlchemy."""
    scheme, sep, rest = url.partition("://")
    if sep and (scheme == "postgres" or scheme.startswith("postgres+")):
        return "postgresql" + scheme[len("postgres") :] + sep + rest
    return url


def _url_problem(url: str) -> str | None:
    """Why a URL cannot work, checked without SQLAlchemy and without echoing a secret."""
    if "://" not in url:
        return "it has no `dialect://` scheme"
    try:
        parts = urlsplit(url)
        _port = parts.port
    except ValueError:
        return "its port is not a number"
    if not re.match(r"^[a-z][a-z0-9_]*(\+[a-z0-9_]+)?$", parts.scheme):
        return f"{parts.scheme!r} is not a dialect name"
    return None


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
        if not _NAME.match(name):
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
