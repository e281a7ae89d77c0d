"""add users.display_name and backfill it from name

Revision ID: c7e2f5a8d903
Revises: a41d7e9c0b12
Create Date: 2026-11-09 16:45:12.551890

A small data migration: the new column is nullable (no table rewrite, no long lock) and is
filled from the existing names.
"""
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "c7e2f5a8d903"
down_revision: str | Sequence[str] | None = "a41d7e9c0b12"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

users = sa.table("users", sa.column("name", sa.String), sa.column("display_name", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("display_name", sa.String(length=100), nullable=True))
    op.execute(users.update().values(display_name=users.c.name))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("display_name")
