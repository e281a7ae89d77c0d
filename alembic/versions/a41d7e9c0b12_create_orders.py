"""create orders

Revision ID: a41d7e9c0b12
Revises: 8f3b1c2d4e5a
Create Date: 2026-11-05 10:02:51.004417

"""
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "a41d7e9c0b12"
down_revision: str | Sequence[str] | None = "8f3b1c2d4e5a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("total", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("orders")
