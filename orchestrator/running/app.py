"""The application's collaborators, built once per process: settings, environments, the
revision graph, who is running it."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from orchestrator.core.config import (
    MAX_TEXT,
    EnvironmentConfig,
    Environments,
    Settings,
    Target,
    load_environments,
    load_settings,
    read_dotenv,
    resolve_targets,
)
from orchestrator.core.errors import UsageError
from orchestrator.core.planning import TargetState
from orchestrator.evidence.audit import detect_actor, detect_git_dirty, detect_git_sha
from orchestrator.evidence.keys import Signer, load_signer, public_keys
from orchestrator.migrations.revisions import RevisionGraph, RevisionsError
from orchestrator.migrations.runner import AlembicProject

if TYPE_CHECKING:
    from orchestrator.core.signing import PublicKey


@dataclass
class App:
    settings: Settings
    envs: Environments
    environ: dict[str, str]
    interactive: bool = False
    predecessor_cache: dict[str, list[TargetState]] = field(default_factory=dict)
    schema_cache: dict[str, list[Any]] = field(default_factory=dict)  # commands/drift.py
    _environments: dict[str, Environment] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings | None = None, interactive: bool = False) -> App:
        settings = settings or load_settings()
        envs = load_environments(settings.environments_path)
        environ = {**read_dotenv(settings.project_dir), **os.environ}
        return cls(settings, envs, environ, interactive)

    @cached_property
    def project(self) -> AlembicProject:
        return AlembicProject(self.settings.alembic_ini_path)

    @cached_property
    def graph(self) -> RevisionGraph:
        try:
            return self.project.graph
        except RevisionsError as exc:
            raise UsageError(f"The revision history cannot be read: {exc}") from None

    @cached_property
    def actor(self) -> str:
        actor = detect_actor(self.settings.actor, self.environ)
        if len(actor) > MAX_TEXT:
            raise UsageError(
                f"The actor (ORCHESTRATOR_ACTOR, or the CI's user variable) is {len(actor)} "
                f"characters long; at most {MAX_TEXT}."
            )
        return actor

    @cached_property
    def git_sha(self) -> str | None:
        return detect_git_sha(self.settings.project_dir, self.environ)

    @cached_property
    def git_dirty(self) -> bool:
        return detect_git_dirty(self.settings.project_dir)

    def environment(self, name: str) -> Environment:
        """The environment called `name`, resolved once (an unknown name: exit 2, named)."""
        if name not in self._environments:
            self._environments[name] = Environment(self, self.envs.get(name))
        return self._environments[name]

    def signer(self, env: str) -> Signer | None:
        return self.environment(env).signer

    def public_keys(self, env: str) -> tuple[PublicKey, ...] | None:
        return self.environment(env).public_keys

    def targets(self, env: str) -> list[Target]:
        return self.environment(env).targets

    def resolve(self, ref: str) -> str:
        try:
            return self.graph.resolve(ref)
        except RevisionsError as exc:
            raise UsageError(revision_error(exc)) from None


class Environment:
    """One environment as commands and runs need it, resolved from its name once: its
    settings, its databases, its keys, and the environment it promotes from. Each part is
    worked out when first asked (a missing variable or key is an error only where needed)."""

    def __init__(self, app: App, config: EnvironmentConfig) -> None:
        self._app, self.config = app, config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def predecessor(self) -> Environment | None:
        """The environment this one promotes from, if any."""
        name = self.config.promotes_from
        return self._app.environment(name) if name is not None else None

    @cached_property
    def targets(self) -> list[Target]:
        """Its databases (exit 2 naming a variable that is not set)."""
        app = self._app
        return resolve_targets(self.config, app.environ, app.settings.project_dir)

    @cached_property
    def public_keys(self) -> tuple[PublicKey, ...] | None:
        """The keys whose signatures count as its own; None where it does not sign."""
        return public_keys(self.config, self._app.settings.project_dir)

    @cached_property
    def signer(self) -> Signer | None:
        """Its private key where it signs (exit 2 when it is missing or wrong)."""
        app = self._app
        return load_signer(self.config, app.environ, app.settings.project_dir)


def revision_error(exc: Exception) -> str:
    message = str(exc)
    if "head" in message.lower() and "multiple" in message.lower():
        return (
            f"{message.rstrip('.')}. Merge them with `alembic merge heads -m 'merge'`, "
            "or name a revision."
        )
    return message


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]
