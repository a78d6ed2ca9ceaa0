"""Tables (SQLAlchemy Core). The domain never sees these; `repository` maps rows to objects.

Money is stored as integer minor units with the currency on the row. Times are stored in UTC.
The next deadline of every open case and order is an indexed column: the worker's only query.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: only timezone-aware times are stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON().with_variant(JSONB(), "postgresql")

metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

policy_packs = Table(
    "policy_packs", metadata,
    Column("id", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("body", Json, nullable=False),
    Column("registered_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("id", "version"),
)

orders = Table(
    "orders", metadata,
    Column("id", String(64), primary_key=True),
    Column("buyer_id", String(64), nullable=False, index=True),
    Column("seller_id", String(64), nullable=False, index=True),
    Column("mode", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("ship_to_city", String(128)),
    Column("placed_at", UTCDateTime, nullable=False),
    Column("ship_by", UTCDateTime, nullable=False),
    Column("shipped_at", UTCDateTime),
    Column("delivered_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("closed_at", UTCDateTime),
    Column("auto_confirm_at", UTCDateTime),
    Column("auto_confirm_paused_at", UTCDateTime),  # set while an after-sales case is open
    Column("carrier", String(64)),
    Column("tracking_no", String(128), index=True),
    Column("policy_id", String(64), nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("next_deadline", UTCDateTime, index=True),
    Column("deadline_kind", String(32)),
    Column("version", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
)

order_lines = Table(
    "order_lines", metadata,
    Column("order_id", String(64), ForeignKey("orders.id"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("sku", String(128), nullable=False),
    Column("title", String(256), nullable=False),
    Column("qty", Integer, nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    Column("paid", BigInteger, nullable=False),
    Column("refunded", BigInteger, nullable=False),
    Column("no_reason_7d", Boolean, nullable=False),
    Column("category", String(64)),
    Column("warranty_days", Integer, nullable=False),
    Column("warranty_kind", String(16)),
    Column("open_case_id", String(64)),
    Column("after_sales_used", Boolean, nullable=False),
    PrimaryKeyConstraint("order_id", "line_no"),
    # Money is never created: the database refuses a refund above what the line paid.
    CheckConstraint("refunded >= 0 AND refunded <= paid", name="refund_within_paid"),
    CheckConstraint("qty > 0", name="qty_positive"),
)

shipments = Table(
    "shipments", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), ForeignKey("orders.id"), nullable=False, index=True),
    Column("case_id", String(64)),
    Column("kind", String(16), nullable=False),  # outbound | return | replacement
    Column("carrier", String(64), nullable=False),
    Column("tracking_no", String(128), nullable=False, index=True),
    Column("weight_g", Integer),
    Column("shipped_at", UTCDateTime, nullable=False),
)

tracking_events = Table(
    "tracking_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tracking_no", String(128), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("city", String(128)),
    Column("at", UTCDateTime, nullable=False),
)

cases = Table(
    "cases", metadata,
    Column("id", String(64), primary_key=True),
    Column("order_id", String(64), ForeignKey("orders.id"), nullable=False, index=True),
    Column("buyer_id", String(64), nullable=False, index=True),
    Column("seller_id", String(64), nullable=False, index=True),
    Column("type", String(16), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("status", String(24), nullable=False, index=True),
    Column("outcome", String(24), nullable=False),
    Column("decided_by", String(16)),
    Column("received", Boolean, nullable=False),
    Column("lines", Json, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("refunded", BigInteger, nullable=False),
    Column("offer", BigInteger),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime),
    Column("after_completion", Boolean, nullable=False),
    Column("shipped_when_opened", Boolean, nullable=False),
    Column("freight_payer", String(8), nullable=False),
    Column("seller_responsible", Boolean, nullable=False),
    Column("policy_id", String(64), nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("rules", Json, nullable=False),
    Column("deadline", UTCDateTime, index=True),
    Column("deadline_kind", String(32)),
    Column("return_address", Text),
    Column("return_carrier", String(64)),
    Column("return_tracking", String(128)),
    Column("return_method", String(16)),
    Column("replacement_carrier", String(64)),
    Column("replacement_tracking", String(128)),
    Column("rejection_reason", Text),
    Column("escalated_by", String(16)),
    Column("version", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    CheckConstraint("refunded >= 0 AND refunded <= amount", name="refund_within_amount"),
)


def _event_table(name: str, owner: str) -> Table:
    """An append-only log: (owner, seq) is unique, rows are only ever inserted."""
    return Table(
        name, metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column(f"{owner}_id", String(64), nullable=False),
        Column("seq", Integer, nullable=False),
        Column("name", String(48), nullable=False),
        Column("at", UTCDateTime, nullable=False),
        Column("actor", String(80), nullable=False),
        Column("rule", String(48)),
        Column("changes", Json, nullable=False),
        UniqueConstraint(f"{owner}_id", "seq"),
    )


case_events = _event_table("case_events", "case")
order_events = _event_table("order_events", "order")

ledger = Table(
    "ledger", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("case_id", String(64), index=True),
    Column("line_no", Integer),
    Column("kind", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("points", Integer, nullable=False),
    Column("buyer_id", String(64), nullable=False, index=True),
    Column("seller_id", String(64), nullable=False, index=True),
    Column("reason", Text, nullable=False),
    Column("rule", String(48)),
    Column("at", UTCDateTime, nullable=False),
    CheckConstraint("amount >= 0", name="amount_not_negative"),
)
