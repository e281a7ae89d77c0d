"""Promote Alembic migrations through environments: gated, locked, audited."""

__version__ = "0.1.0"
