"""shipment facts on orders, line weights, violations and stock (shipping issue)

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import aftersales.store.tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UTC = aftersales.store.tables.UTCDateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("orders") as b:
        b.add_column(sa.Column("declared_weight_g", sa.Integer(), nullable=True))
        b.add_column(sa.Column("first_scan_at", UTC, nullable=True))
        b.add_column(sa.Column("first_pickup_at", UTC, nullable=True))
        b.add_column(sa.Column("last_scan_at", UTC, nullable=True))
        b.add_column(sa.Column("delivery_city", sa.String(length=128), nullable=True))
        b.add_column(sa.Column("lost_at", UTC, nullable=True))
        b.add_column(sa.Column("max_scan_gap_s", sa.Integer(), nullable=True))
        b.add_column(sa.Column("refund_requested_at", UTC, nullable=True))
        b.add_column(sa.Column("violations", JSON, nullable=False, server_default="[]"))
        b.add_column(sa.Column("oos_lines", JSON, nullable=False, server_default="[]"))
        b.add_column(sa.Column("oos_answer_due", UTC, nullable=True))
        b.add_column(sa.Column("oos_choice", sa.String(length=16), nullable=True))
    with op.batch_alter_table("order_lines") as b:
        b.add_column(sa.Column("weight_g", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "violations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("seller_id", sa.String(length=64), nullable=False),
        sa.Column("buyer_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.String(length=16), nullable=False),
        sa.Column("detectors", JSON, nullable=False),
        sa.Column("evidence", JSON, nullable=False),
        sa.Column("detected_at", UTC, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("compensation", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("paid_as", sa.String(length=16), nullable=True),
        sa.Column("dispute_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"],
                                name=op.f("fk_violations_order_id_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_violations")),
        sa.UniqueConstraint("order_id", "name", name=op.f("uq_violations_order_id")),
    )
    with op.batch_alter_table("violations") as b:
        b.create_index(b.f("ix_violations_seller_id"), ["seller_id"], unique=False)
    op.create_table(
        "stock",
        sa.Column("seller_id", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=128), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity >= 0", name=op.f("ck_stock_never_negative")),
        sa.PrimaryKeyConstraint("seller_id", "sku", name=op.f("pk_stock")),
    )


def downgrade() -> None:
    op.drop_table("stock")
    op.drop_table("violations")
    with op.batch_alter_table("order_lines") as b:
        b.drop_column("weight_g")
    with op.batch_alter_table("orders") as b:
        for col in ("oos_choice", "oos_answer_due", "oos_lines", "violations", "refund_requested_at", "max_scan_gap_s", "lost_at", "delivery_city", "last_scan_at",
                    "first_pickup_at", "first_scan_at", "declared_weight_g"):
            b.drop_column(col)
