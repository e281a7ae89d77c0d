"""The schema of an environment file: validated, frozen models of its YAML keys."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"^\d+\s*(us|ms|s|min|h|d)?$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_NAME = 128  # the width of the `env` column of the ledger and audit tables
MAX_TEXT = 4096  # actor, ticket, reason: longer is a usage error


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
        if not NAME_PATTERN.match(value):
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
            if not NAME_PATTERN.match(name):
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
