"""index orders.created_at

Revision ID: e19b6a3f4c70
Revises: c7e2f5a8d903
Create Date: 2026-11-12 11:30:07.260114

squawk flags a plain CREATE INDEX (it blocks writes to the table while it builds). Here
`orders` is new and small in every environment, so the rule is waived for this revision:

# orchestrator: allow require-concurrent-index-creation
"""
from collections.abc import Sequence

from alembic import op

revision: str = "e19b6a3f4c70"
down_revision: str | Sequence[str] | None = "c7e2f5a8d903"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_orders_created_at", "orders", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_orders_created_at", table_name="orders")
