"""create user

Revision ID: 5c626978d652
Revises:
Create Date: 2026-11-02 09:12:44.118302

"""
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "5c626978d652"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("users")
