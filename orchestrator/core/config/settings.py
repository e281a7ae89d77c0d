"""Global settings: `ORCHESTRATOR_*` variables, `.env`, and where the project is."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.core.config.files import read_text_file
from orchestrator.core.errors import UsageError


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


def read_dotenv(project_dir: Path) -> dict[str, str]:
    """Variables from `.env` (process variables win over it)."""
    import io

    from dotenv import dotenv_values  # a dependency of pydantic-settings

    path = project_dir / ".env"
    if not path.exists():
        return {}
    values = dotenv_values(stream=io.StringIO(read_text_file(path, "The file")))
    return {k: v for k, v in values.items() if v is not None}


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
