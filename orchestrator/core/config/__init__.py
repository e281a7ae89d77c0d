"""Environment files and global settings: validated plain data, no database access.

Importing this package must stay cheap (no SQLAlchemy, no Alembic): `envs` and `--help`
only need it. One job a module: `settings` (ORCHESTRATOR_* and `.env`), `models` (what an
environment file may say), `files` (reading and ordering them), `targets` (an
environment's databases and their URLs), `urls` (a URL a user gave, made safe). Callers
import the names below from here.
"""

from orchestrator.core.config.files import (
    Environments,
    describe_validation_error,
    load_environments,
    order_environments,
    parse_environment,
    read_text_file,
)
from orchestrator.core.config.models import (
    MAX_NAME,
    MAX_TEXT,
    DatabaseConfig,
    EnvironmentConfig,
    LockConfig,
    NamedTarget,
    PolicyConfig,
    SessionConfig,
    SigningConfig,
)
from orchestrator.core.config.settings import (
    Settings,
    find_project_dir,
    flask_migrate_ini,
    load_settings,
    read_dotenv,
)
from orchestrator.core.config.targets import (
    Target,
    databases_file_path,
    env_summary,
    resolve_targets,
    target_names,
)
from orchestrator.core.config.urls import encode_raw_at, given_url, normalise_scheme

__all__ = [
    "MAX_NAME",
    "MAX_TEXT",
    "DatabaseConfig",
    "EnvironmentConfig",
    "Environments",
    "LockConfig",
    "NamedTarget",
    "PolicyConfig",
    "SessionConfig",
    "Settings",
    "SigningConfig",
    "Target",
    "databases_file_path",
    "describe_validation_error",
    "encode_raw_at",
    "env_summary",
    "find_project_dir",
    "flask_migrate_ini",
    "given_url",
    "load_environments",
    "load_settings",
    "normalise_scheme",
    "order_environments",
    "parse_environment",
    "read_dotenv",
    "read_text_file",
    "resolve_targets",
    "target_names",
]
