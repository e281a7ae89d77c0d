"""Alembic environment: plain `alembic` commands and the orchestrator both run through here."""

from app.models import Base
from orchestrator.alembic_env import run_migrations

run_migrations(target_metadata=Base.metadata)
