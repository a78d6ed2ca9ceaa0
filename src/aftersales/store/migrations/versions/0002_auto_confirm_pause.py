"""orders.auto_confirm_paused_at: the auto-confirm timer stands still while a case is open

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

import aftersales.store.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch_op:
        batch_op.add_column(sa.Column("auto_confirm_paused_at",
                                      aftersales.store.tables.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch_op:
        batch_op.drop_column("auto_confirm_paused_at")
