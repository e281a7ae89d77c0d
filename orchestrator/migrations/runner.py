"""The only module that drives Alembic's runtime.

Alembic is imported lazily: `status` and a no-op `migrate` read the revision graph from
the files (`layout.ProjectFiles`, which this builds on) and never need it. When something
runs, the script directory is loaded once per process and handed the exact steps the gate
approved.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from orchestrator.core.errors import OrchestratorError, UsageError
from orchestrator.core.logging import kept_over_project_logging, quiet_alembic
from orchestrator.migrations import observe
from orchestrator.migrations.failures import (
    EnvPyFailed,
    env_py_message,
    line_in_revision,
    one_line,
    revision_file_of,
)
from orchestrator.migrations.layout import ProjectFiles
from orchestrator.migrations.project_modules import source_only

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection


# Set by orchestrator.alembic_env once env.py hands over to Alembic's run_migrations: an
# error after that (reading alembic_version, a revision) is no longer env.py's own
HANDED_OVER = "orchestrator_env_py_handed_over"


@dataclass
class OfflineSql:
    """Alembic's offline rendering (`--sql`) of some revisions, each rendered on its own."""

    sql: dict[str, str] = field(default_factory=dict)  # revision -> the SQL its upgrade emits
    failed: dict[str, str] = field(default_factory=dict)  # revision -> why it cannot render


class AlembicProject(ProjectFiles):
    """The project's Alembic runtime: its config, script directory and env.py, driven."""

    @cached_property
    def config(self) -> Config:
        from alembic.config import Config

        toml = str(self.toml_path) if self.toml_path is not None else None
        config = Config(str(self.ini_path), toml_file=toml)
        if "script_location_implied" in self._options:  # Flask-Migrate's layout
            config.set_main_option("script_location", str(self.script_location).replace("%", "%%"))
        return config

    @cached_property
    def script(self) -> ScriptDirectory:
        """The script directory with every revision module imported; a revision that fails
        to import is named (exit 2), not reported as an unexpected error."""
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(self.config)
        try:
            with source_only():  # never from a byte-code cache
                script.get_heads()  # imports every revision file
        except Exception as exc:
            try:
                files = {r.path.resolve(): r.revision for r in self.graph}
            except Exception:
                files = {}
            path = revision_file_of(exc, files)
            if path is None:
                raise
            file, revision = path
            raise UsageError(
                f"Revision {revision} ({file.name}) failed to import: {one_line(exc)}. "
                "Fix the file, or install what it imports."
            ) from None
        return script

    def _steps(
        self, revisions: Sequence[str], direction: str, reached: list[bool]
    ) -> Callable[..., list[Any]]:
        from alembic.runtime.migration import MigrationStep

        script = self.script

        def steps(_heads: Any, context: Any) -> list[Any]:
            reached.append(True)  # env.py got as far as the revisions
            make = (
                MigrationStep.upgrade_from_script
                if direction == "up"
                else MigrationStep.downgrade_from_script
            )
            loaded = [make(script.revision_map, script.get_revision(r)) for r in revisions]
            if not context.as_sql:
                self.check_unchanged(revisions)
                observe.restart()  # what env.py and loading opened is no revision's read
            return loaded

        return steps

    def run(
        self,
        connection: Connection,
        revisions: Sequence[str],
        direction: str,
        on_version_apply: Callable[..., None],
    ) -> None:
        """Apply (or revert) exactly `revisions` on our connection: one transaction each, or
        all in the one the caller began (`transaction: per-run`)."""
        from alembic.runtime.environment import EnvironmentContext

        attributes = {
            "connection": connection,
            "on_version_apply": on_version_apply,
            "transaction_per_migration": not connection.in_transaction(),
        }
        self._run_env(EnvironmentContext, revisions, direction, attributes, as_sql=False)

    def offline_sql(self, revisions: Sequence[str], dialect: str) -> OfflineSql:
        """The SQL each revision's upgrade would emit (Alembic's offline mode).

        Each revision is rendered on its own, from its own down revisions: its SQL is exactly
        what its upgrade() emitted (whatever its function is called, decorated or not), and a
        revision that cannot be rendered offline (it reads the database, needs a live
        connection for batch mode on SQLite, uses what is None offline) is named with the
        reason, without hiding the SQL of the others.
        """
        from alembic.runtime.environment import EnvironmentContext
        from alembic.runtime.migration import MigrationStep

        out = OfflineSql()
        if not revisions:
            return out
        script = self.script  # a revision that fails to import is a usage error, named
        for revision in revisions:
            script_revision = script.get_revision(revision)
            start = MigrationStep.upgrade_from_script(
                script.revision_map, script_revision
            ).from_revisions
            buffer = io.StringIO()
            attributes = {"dialect_name": dialect, "output_buffer": buffer}
            try:
                # quiet: "Running upgrade ..." would be a lie, nothing runs
                with quiet_alembic(), outer_alembic_kept():
                    self._run_env(
                        EnvironmentContext,
                        [revision],
                        "up",
                        attributes,
                        as_sql=True,
                        start=start or None,
                    )
            except EnvPyFailed:
                raise  # env.py's own error: said once, never charged to each revision
            except Exception as exc:  # whatever the revision does offline, it is named
                out.failed[revision] = one_line(exc) + line_in_revision(exc, script_revision.path)
            else:
                out.sql[revision] = buffer.getvalue()
        return out

    def compare_models(self, connection: Connection) -> list[Any] | None:
        """Autogenerate's diffs between the database and env.py's own target_metadata; None
        when env.py configures no target_metadata (nothing to compare with).

        Same approach as `alembic check`: env.py runs with a `fn` that compares instead of
        migrating, so it configures the context (target_metadata, include_name, compare_type)
        exactly as for a migration, and the script directory is loaded only once.
        """
        from alembic.autogenerate import compare_metadata

        return self._with_models(connection, compare_metadata)  # type: ignore[no-any-return]

    def models_upgrade_ops(self, connection: Connection) -> Any:
        """The operations autogenerate would write to bring the database to the models
        (`produce_migrations(...).upgrade_ops`), env.py configuring the context as for
        `compare_models`; a usage error when env.py configures no target_metadata."""
        from alembic.autogenerate import produce_migrations

        ops = self._with_models(
            connection, lambda context, metadata: produce_migrations(context, metadata).upgrade_ops
        )
        if ops is None:
            raise UsageError(
                f"{self.script_location / 'env.py'} configures no target_metadata, so there "
                "are no models to compare with: pass your models' MetaData to "
                "run_migrations(target_metadata=...)."
            )
        return ops

    def _with_models(self, connection: Connection, work: Callable[[Any, Any], Any]) -> Any:
        """env.py runs with a `fn` that calls `work(context, target_metadata)` instead of
        migrating; its result, or None when env.py configures no target_metadata."""
        from alembic.runtime.environment import EnvironmentContext

        result: list[Any] = []
        reached: list[bool] = []

        def compare(_rev: Any, context: Any) -> list[Any]:
            reached.append(True)
            metadata = context.opts.get("target_metadata")
            result.append(None if metadata is None else work(context, metadata))
            return []

        self.config.attributes["connection"] = connection
        try:
            with (
                source_only(),
                EnvironmentContext(self.config, self.script, fn=compare, as_sql=False),
            ):
                self._env_py(reached)
        finally:
            self.config.attributes.pop("connection", None)
        return result[0] if result else None

    def stamp(self, connection: Connection, revision: str | None) -> None:
        """Set alembic_version without running anything (baseline)."""
        from alembic.runtime.migration import MigrationContext

        context = MigrationContext.configure(connection)
        with source_only():
            context.stamp(self.script, revision or "base")

    def _run_env(
        self,
        environment: Any,
        revisions: Sequence[str],
        direction: str,
        attributes: dict[str, Any],
        as_sql: bool,
        start: Sequence[str] | None = None,
    ) -> None:
        self.config.attributes.update(attributes)
        reached: list[bool] = []
        try:
            with (
                source_only(),
                environment(
                    self.config,
                    self.script,
                    fn=self._steps(revisions, direction, reached),
                    as_sql=as_sql,
                    starting_rev=start,
                    destination_rev=revisions[-1] if revisions else None,
                    output_buffer=attributes.get("output_buffer"),
                ),
            ):
                self._env_py(reached)
        finally:
            for key in attributes:
                self.config.attributes.pop(key, None)

    def _env_py(self, reached: list[bool]) -> None:
        """Run env.py. An error it raises before it hands over to the revisions (at import:
        Flask's `current_app` outside an application, a NameError in the models it imports)
        is env.py's, whatever revision was asked for: it is said once, naming env.py and the
        line (EnvPyFailed, exit 2), never charged to a revision."""
        try:
            with kept_over_project_logging():  # env.py's fileConfig: stderr stays JSON lines
                self.script.run_env()
        except OrchestratorError:
            raise
        except Exception as exc:
            if reached or self.config.attributes.get(HANDED_OVER):
                raise  # Alembic or a revision ran: a database's or a revision's error
            raise EnvPyFailed(env_py_message(exc, self.script_location / "env.py")) from None
        finally:
            self.config.attributes.pop(HANDED_OVER, None)


@contextmanager
def outer_alembic_kept() -> Iterator[None]:
    """An Alembic run nested in another one (linting from inside env.py, under plain
    `alembic upgrade`) without breaking the outer one.

    Alembic's `context` and `op` are process-global proxies: entering an EnvironmentContext
    points them at it, leaving it removes them, and the outer env.py would find no
    `context.configure` any more. Put the outer ones back (Alembic has no public API for it).
    """
    from alembic import context, op

    outer = [getattr(module, "_proxy", None) for module in (context, op)]
    try:
        yield
    finally:
        for proxy in outer:
            if proxy is not None:
                proxy._install_proxy()
