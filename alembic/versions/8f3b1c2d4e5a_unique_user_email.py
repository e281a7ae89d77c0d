"""unique user email

Revision ID: 8f3b1c2d4e5a
Revises: 5c626978d652
Create Date: 2026-11-03 14:20:05.930211

On PostgreSQL the index is built CONCURRENTLY, outside the revision's transaction, so
that `users` stays writable while it builds.
"""
from collections.abc import Sequence

from alembic import op

revision: str = "8f3b1c2d4e5a"
down_revision: str | Sequence[str] | None = "5c626978d652"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(
                "ix_users_email", "users", ["email"], unique=True, postgresql_concurrently=True
            )
    else:
        op.create_index("ix_users_email", "users", ["email"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_users_email", table_name="users")
