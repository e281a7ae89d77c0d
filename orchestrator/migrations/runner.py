"""The only module that drives Alembic's runtime.

Alembic is imported lazily: `status` and a no-op `migrate` read the revision graph from
the files (orchestrator.migrations.revisions) and never need it. When something runs, the script
directory is loaded once per process and handed the exact steps the gate approved.
"""

from __future__ import annotations

import configparser
import io
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core.errors import MigrationFailed, OrchestratorError, UsageError
from orchestrator.core.logging import kept_over_project_logging, quiet_alembic
from orchestrator.core.secrets import redact
from orchestrator.migrations import observe
from orchestrator.migrations.project_modules import ProjectModules, source_only
from orchestrator.migrations.revisions.checksums import current_checksums
from orchestrator.migrations.revisions.graph import RevisionGraph
from orchestrator.migrations.revisions.script_dirs import read_versions
from orchestrator.migrations.revisions.static import RevisionFile

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


class AlembicProject:
    def __init__(self, ini_path: Path) -> None:
        if not ini_path.is_file():
            raise UsageError(
                f"{ini_path} does not exist: point ORCHESTRATOR_ALEMBIC_INI at your alembic.ini."
            )
        self.ini_path = ini_path.resolve()

    # -- cheap: no Alembic import ----------------------------------------------------------

    @cached_property
    def toml_path(self) -> Path | None:
        """`alembic init -t pyproject` keeps the options in pyproject.toml's [tool.alembic]."""
        path = self.ini_path.parent / "pyproject.toml"
        return path if "alembic" in self._toml(path) else None

    @staticmethod
    def _toml(path: Path) -> dict[str, Any]:
        import tomllib

        if not path.is_file():
            return {}
        try:
            return tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path} cannot be read: {exc}.") from None

    @cached_property
    def _options(self) -> dict[str, Any]:
        """[tool.alembic] of pyproject.toml under [alembic] of alembic.ini (ini wins, as in
        Alembic itself); `%(here)s` is each file's own directory."""
        options: dict[str, Any] = {}
        if self.toml_path is not None:
            here = str(self.toml_path.parent)
            for key, value in self._toml(self.toml_path)["alembic"].items():
                options[key] = (
                    [str(v).replace("%(here)s", here) for v in value]
                    if isinstance(value, list)
                    else str(value).replace("%(here)s", here)
                )
        parser = configparser.ConfigParser(defaults={"here": str(self.ini_path.parent)})
        parser.read(self.ini_path, encoding="utf-8")
        if parser.has_section("alembic"):
            options.update({k: v for k, v in parser["alembic"].items() if k != "here"})
        if "script_location" not in options and (self.ini_path.parent / "env.py").is_file():
            # Flask-Migrate's layout: its alembic.ini has no script_location, Flask-Migrate
            # sets it to the ini's own directory, where env.py and versions/ are
            options["script_location"] = str(self.ini_path.parent)
            options["script_location_implied"] = "yes"
        if "script_location" not in options:
            raise UsageError(
                f"{self.ini_path}: script_location is set neither in [alembic] nor in "
                "pyproject.toml's [tool.alembic]."
            )
        return options

    @property
    def script_location(self) -> Path:
        return self._resolve(self._options["script_location"])

    @property
    def versions_dirs(self) -> list[Path]:
        locations = self._options.get("version_locations")
        if not locations:
            return [self.script_location / "versions"]
        if isinstance(locations, list):
            return [self._resolve(p) for p in locations]
        separator = {"os": None, "space": None, "newline": "\n", ":": ":", ";": ";"}.get(
            self._options.get("path_separator", "space")
        )
        return [self._resolve(p) for p in locations.split(separator) if p.strip()]

    @property
    def import_roots(self) -> list[Path]:
        """Where the project's own modules are imported from: Alembic's `prepend_sys_path`
        entries (relative to the working directory, as Alembic puts them on sys.path), the
        process's own `sys.path` (the working directory, PYTHONPATH, an editable install's
        path: a `pkg/migrations/` layout imports `pkg.migrations.utils` from there), then
        the project directory. Installed packages are left out by `ProjectModules`."""
        value = self._options.get("prepend_sys_path") or ""
        separator = self._options.get("path_separator")
        if isinstance(value, list):  # pyproject.toml: a list already
            entries = [str(v) for v in value]
        elif separator is None:  # Alembic's legacy splitting
            entries = re.split(r", *| +|:", value)
        else:
            sep = {"os": os.pathsep, "space": " ", "newline": "\n"}.get(separator, separator)
            entries = value.split(sep)
        prepended = [self._resolve(e) for e in entries if e.strip()]
        running = [Path(p) if p else Path.cwd() for p in sys.path if isinstance(p, str)]
        return [*prepended, *running, self.ini_path.parent]

    def _resolve(self, value: str) -> Path:
        path = Path(value.strip())
        return (path if path.is_absolute() else Path.cwd() / path).resolve()  # `%(here)s/..`

    @cached_property
    def graph(self) -> RevisionGraph:
        return RevisionGraph(read_versions(self.versions_dirs, modules=self.modules))

    @property
    def modules(self) -> ProjectModules:
        return ProjectModules(self.ini_path.parent, self.import_roots)

    @cached_property
    def env_py_checksum(self) -> str | None:
        """env.py's checksum, covering the project modules it imports (not installed
        packages, not the orchestrator): part of every run's evidence."""
        path = self.script_location / "env.py"
        if not path.is_file():
            return None
        script = RevisionFile("env.py", (), (), (), path, "", "")
        return current_checksums([script], self.modules)["env.py"]

    def check_unchanged(self, revisions: Sequence[str]) -> None:
        """Refuse to run revisions whose files (or modules) changed since they were judged:
        called once Alembic has loaded them, so what runs is what the gate checked."""
        graph = self.graph
        now = current_checksums([graph.get(r) for r in revisions], self.modules)
        changed = [r for r in revisions if now[r] != graph.get(r).checksum]
        if changed:
            raise MigrationFailed(
                f"{', '.join(changed)} changed on disk after the gate checked it "
                "(file or a module it imports): nothing of it ran. Run again to judge "
                "the files as they are now."
            )

    # -- Alembic proper ----------------------------------------------------------------------

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
            path = _revision_file_of(exc, files)
            if path is None:
                raise
            file, revision = path
            raise UsageError(
                f"Revision {revision} ({file.name}) failed to import: {_one_line(exc)}. "
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
                out.failed[revision] = _one_line(exc) + _where(exc, script_revision.path)
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


class EnvPyFailed(UsageError):
    """env.py (or a module it imports) raised before any revision ran (exit 2)."""


def env_py_message(exc: BaseException, env_py: Path) -> str:
    """`env.py failed ...: the error (line N of env.py[, raised at line M of FILE])`, with
    what to do; Flask's "outside of application context" gets its own advice."""
    frames = _frames(exc)
    target = env_py.resolve()
    lines = [f.lineno for f in frames if Path(f.filename).resolve() == target and f.lineno]
    where = f"line {lines[-1]} of {_shown(target)}" if lines else _shown(target)
    deepest = frames[-1] if frames else None
    if (
        deepest is not None
        and Path(deepest.filename).resolve() != target
        and _is_project_file(Path(deepest.filename))
    ):
        where += f", raised at line {deepest.lineno} of {_shown(Path(deepest.filename))}"
    elif isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename).resolve() != target:
        where += f", line {exc.lineno} of {_shown(Path(exc.filename))}"
    text = str(exc)
    if "application context" in text or "current_app" in text:
        advice = (
            "env.py reads Flask's `current_app`, which exists only under `flask db ...`: "
            "`orchestrator init` prints the change that lets it run outside Flask (take the "
            "models' MetaData from the module that defines `db`)."
        )
    else:
        advice = (
            "No revision is at fault and none ran. Fix env.py or the module it imports "
            "(`python -c 'import <that module>'` from the project's directory shows the "
            "traceback), then run again."
        )
    return f"{_shown(target)} failed before any revision ran: {_one_line(exc)} ({where}). {advice}"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _is_project_file(path: Path) -> bool:
    """Not the standard library or an installed package: a file of the project."""
    import sysconfig

    text = str(path)
    if text.startswith("<") or "site-packages" in path.parts or "dist-packages" in path.parts:
        return False
    stdlib = sysconfig.get_paths()["stdlib"]
    return not text.startswith(stdlib)


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


def _one_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return redact(text)


def _frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(exc.__traceback__)) if exc.__traceback__ else []


def _where(exc: BaseException, path: str | None) -> str:
    """` (line N of FILE)`: the last line of the revision's own file the error went through."""
    if not path:
        return ""
    target = Path(path).resolve()
    lines = [f.lineno for f in _frames(exc) if Path(f.filename).resolve() == target]
    return f" (line {lines[-1]} of {target.name})" if lines and lines[-1] else ""


def _revision_file_of(exc: BaseException, files: dict[Path, str]) -> tuple[Path, str] | None:
    """The revision file an import error came from: the outermost frame in one of `files`,
    or the file a SyntaxError names."""
    candidates = [Path(f.filename) for f in _frames(exc)]
    filename = getattr(exc, "filename", None)
    if isinstance(filename, str):
        candidates.append(Path(filename))
    for candidate in candidates:
        resolved = candidate.resolve()
        if resolved in files:
            return resolved, files[resolved]
    return None
