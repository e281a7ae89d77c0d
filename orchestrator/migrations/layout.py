"""An Alembic project as its files say: options, version directories, graph, checksums.

Nothing here imports Alembic: `status` and a no-op `migrate` read the revision graph from
the files (orchestrator.migrations.revisions) and never need it. Driving Alembic's runtime is
`runner.AlembicProject`'s, which builds on this.
"""

from __future__ import annotations

import configparser
import os
import re
import sys
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from orchestrator.core.errors import MigrationFailed, UsageError
from orchestrator.migrations.project_modules import ProjectModules
from orchestrator.migrations.revisions.checksums import current_checksums
from orchestrator.migrations.revisions.graph import RevisionGraph
from orchestrator.migrations.revisions.script_dirs import read_versions
from orchestrator.migrations.revisions.static import RevisionFile


class ProjectFiles:
    """Where the project's alembic.ini (and pyproject.toml) put things, read cheaply."""

    def __init__(self, ini_path: Path) -> None:
        if not ini_path.is_file():
            raise UsageError(
                f"{ini_path} does not exist: point ORCHESTRATOR_ALEMBIC_INI at your alembic.ini."
            )
        self.ini_path = ini_path.resolve()

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
