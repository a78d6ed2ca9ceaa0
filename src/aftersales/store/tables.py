"""Tables (SQLAlchemy Core). The domain never sees these; `repository` maps rows to objects.

Money is stored as integer minor units with the currency on the row. Times are stored in UTC.
The next deadline of every open case and order is an indexed column: the worker's only query.
"""

from __future__ import annotations

from datetime import UTC, datetime, timezone
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

    # SQLite stores text: SQLAlchemy chains process_bind_param with its DATETIME formatting
    # ("%(year)04d-...%(microsecond)06d") and fromisoformat with process_result_value. Each
    # pair is done here in one step with the same result (`isoformat(" ", "microseconds")` is
    # that format), which matters when a lifecycle binds and reads a few hundred times. Any other
    # dialect, or a DATETIME with a custom format, keeps SQLAlchemy's own chain.
    def _sqlite_default_text(self, dialect: Dialect) -> bool:
        impl = self.impl_instance  # on the dialect's copy: the dialect's own DATETIME
        return (dialect.name == "sqlite" and not getattr(dialect, "native_datetime", False)
                and getattr(impl, "_storage_format", None) == _SQLITE_DATETIME_FORMAT
                and getattr(impl, "_reg", True) is None)

    # Both remember recent conversions, in one memo for every column of every statement (an
    # order carries the same dozen times through all its saves and loads, and a command's `now`
    # goes into several columns and tables). A text depends only on the instant, and equal
    # aware datetimes are the same instant, except two readings of one wall time in a DST fold:
    # `fold` is in the key.
    def bind_processor(self, dialect: Dialect) -> Any:
        if not self._sqlite_default_text(dialect):
            return super().bind_processor(dialect)
        seen = _TEXT_OF

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError(f"naive datetime {value!r}: only timezone-aware times are stored")
            # fold only matters for zones with DST (zoneinfo), never for fixed offsets
            key = value if value.tzinfo.__class__ is timezone else (value, value.fold)
            text = seen.get(key)
            if text is None:
                if len(seen) >= _SEEN_MAX:
                    seen.clear()
                # "YYYY-MM-DD HH:MM:SS.ffffff+00:00": the first 26 characters are the text
                text = seen[key] = value.astimezone(UTC).isoformat(" ", "microseconds")[:26]
            return text
        return process

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if not self._sqlite_default_text(dialect):
            return super().result_processor(dialect, coltype)
        parse = datetime.fromisoformat
        seen = _TIME_OF  # datetimes are immutable: sharing one is safe

        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            parsed = seen.get(value)
            if parsed is None:
                if len(seen) >= _SEEN_MAX:
                    seen.clear()
                parsed = parse(value)
                parsed = seen[value] = (parsed.replace(tzinfo=UTC) if parsed.tzinfo is None
                                        else parsed.astimezone(UTC))
            return parsed
        return process


_SQLITE_DATETIME_FORMAT = ("%(year)04d-%(month)02d-%(day)02d "
                           "%(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d")
_SEEN_MAX = 4096
_TEXT_OF: dict[Any, str] = {}  # instant (with fold for zoneinfo times) -> SQLite's text
_TIME_OF: dict[str, datetime] = {}  # SQLite's text -> aware UTC datetime


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
    # shipment facts the violation rules read (domain.violations)
    Column("declared_weight_g", Integer),
    Column("first_scan_at", UTCDateTime),
    Column("first_pickup_at", UTCDateTime),
    Column("last_scan_at", UTCDateTime),
    Column("delivery_city", String(128)),
    Column("lost_at", UTCDateTime),
    Column("max_scan_gap_s", Integer),
    Column("refund_requested_at", UTCDateTime),
    Column("violations", Json, nullable=False, server_default="[]"),
    Column("oos_lines", Json, nullable=False, server_default="[]"),  # OS-1, awaiting the buyer
    Column("oos_answer_due", UTCDateTime),  # OS-2
    Column("oos_choice", String(16)),
    Column("reminded_at", UTCDateTime),  # SR-2
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
    Column("weight_g", Integer, nullable=False, server_default="0"),
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
    # platform intervention (IN-3..IN-9)
    Column("staff_due", UTCDateTime, index=True),  # the staff queue's order
    Column("proof_from", String(8)),
    Column("proof_due", UTCDateTime),
    Column("proof_requests", Integer, nullable=False, server_default="0"),
    Column("buyer_evidence", Integer, nullable=False, server_default="0"),
    Column("seller_evidence", Integer, nullable=False, server_default="0"),
    Column("jury_panel", Json, nullable=False, server_default="[]"),
    Column("jury_votes", Json, nullable=False, server_default="[]"),
    Column("penalty", String(32)),
    Column("log_head", String(64), nullable=False, server_default=""),  # tamper evidence
    Column("version", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    CheckConstraint("refunded >= 0 AND refunded <= amount", name="refund_within_amount"),
)


def _event_table(name: str, owner: str, *extra: Column[Any]) -> Table:
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
        *extra,
        UniqueConstraint(f"{owner}_id", "seq"),
    )


# A case's log is hash-chained: each entry commits to the one before it (store/audit.py).
case_events = _event_table("case_events", "case", Column("prev_hash", String(64)),
                           Column("hash", String(64)))
order_events = _event_table("order_events", "order")
complaint_events = _event_table("complaint_events", "complaint")

violations = Table(
    "violations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), ForeignKey("orders.id"), nullable=False),
    Column("seller_id", String(64), nullable=False, index=True),
    Column("buyer_id", String(64), nullable=False),
    Column("name", String(32), nullable=False),  # ship_timeout, pickup_timeout, fake_shipment...
    Column("rule", String(16), nullable=False),
    Column("detectors", Json, nullable=False),
    Column("evidence", Json, nullable=False),
    Column("detected_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),  # confirmed | disputed
    Column("compensation", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("paid_as", String(16)),  # compensation | coupon | None
    Column("dispute_reason", Text),
    UniqueConstraint("order_id", "name"),  # once per order and violation (SH-6)
)

stock = Table(
    "stock", metadata,
    Column("seller_id", String(64), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("quantity", Integer, nullable=False),
    PrimaryKeyConstraint("seller_id", "sku"),
    CheckConstraint("quantity >= 0", name="never_negative"),  # SH-7
)

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


# -- platform intervention (IN-1..IN-9), complaints (CP-1), seller record (SR-1..SR-3) -------------

evidence = Table(  # IN-5: a projection of EvidenceSubmitted events, for listing and access checks
    "evidence", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", String(64), ForeignKey("cases.id"), nullable=False, index=True),
    Column("seq", Integer, nullable=False),  # the case log entry that recorded it
    Column("party", String(8), nullable=False),  # buyer | seller
    Column("actor", String(80), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("sha256", String(64), index=True),  # the stored file (content-addressed)
    Column("size", BigInteger),
    Column("media_type", String(64)),
    Column("filename", String(256)),
    Column("at", UTCDateTime, nullable=False),
)

users = Table(  # accounts with what jury eligibility looks at (IN-3, §9)
    "users", metadata,
    Column("id", String(64), primary_key=True),
    Column("registered_at", UTCDateTime, nullable=False),
    Column("verified", Boolean, nullable=False),
    Column("standing", String(16), nullable=False),  # good | poor | suspended
)

jury_seats = Table(  # IN-3: who sits on which panel; a juror's tasks are found by task_id
    "jury_seats", metadata,
    Column("case_id", String(64), ForeignKey("cases.id"), nullable=False),
    Column("juror_id", String(64), nullable=False, index=True),
    Column("task_id", String(64), nullable=False, unique=True),
    Column("drawn_at", UTCDateTime, nullable=False),
    Column("side", String(8)),
    Column("reason", Text),
    Column("voted_at", UTCDateTime),
    PrimaryKeyConstraint("case_id", "juror_id"),
)

complaints = Table(  # CP-1, handled by staff (IN-3)
    "complaints", metadata,
    Column("id", String(64), primary_key=True),
    Column("order_id", String(64), ForeignKey("orders.id"), nullable=False, index=True),
    Column("buyer_id", String(64), nullable=False, index=True),
    Column("seller_id", String(64), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("status", String(16), nullable=False, index=True),  # open | upheld | dismissed
    Column("opened_at", UTCDateTime, nullable=False),
    Column("seller_response", Text),
    Column("resolved_at", UTCDateTime),
    Column("resolved_by", String(80)),
    Column("resolution", Text),
    Column("penalty", String(32)),
    Column("points", Integer, nullable=False, server_default="0"),
    Column("version", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
)

ratings = Table(  # SR-3: one rating per order after completion, one seller reply
    "ratings", metadata,
    Column("order_id", String(64), ForeignKey("orders.id"), primary_key=True),
    Column("buyer_id", String(64), nullable=False),
    Column("seller_id", String(64), nullable=False, index=True),
    Column("stars", Integer, nullable=False),
    Column("comment", Text, nullable=False),
    Column("rated_at", UTCDateTime, nullable=False),
    Column("reply", Text),
    Column("replied_at", UTCDateTime),
    CheckConstraint("stars BETWEEN 1 AND 5", name="stars_1_to_5"),
)

# -- the HTTP API (issue 5): outbox, webhooks, idempotency -----------------------------------------

outbox = Table(  # every published event, written in the transaction that made it
    "outbox", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("aggregate", String(16), nullable=False),  # order | case | complaint
    Column("aggregate_id", String(64), nullable=False, index=True),
    Column("name", String(48), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(80), nullable=False),
    Column("rule", String(48)),
    Column("data", Json, nullable=False),
    Column("fanned_out_at", UTCDateTime, index=True),  # copied to the deliveries of endpoints
)

webhook_endpoints = Table(
    "webhook_endpoints", metadata,
    Column("id", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("secret", String(128), nullable=False),  # HMAC-SHA256 key shared with the receiver
    Column("event_types", Json, nullable=False),  # event names, or ["*"]
    Column("active", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(80), nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("endpoint_id", String(64), ForeignKey("webhook_endpoints.id"), nullable=False,
           index=True),
    Column("outbox_id", BigInteger, ForeignKey("outbox.id"), nullable=False, index=True),
    Column("event_name", String(48), nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, index=True),  # null once delivered or given up
    Column("last_attempt_at", UTCDateTime),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("delivered_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("endpoint_id", "outbox_id"),
)

webhook_attempts = Table(  # the delivery log: one row per HTTP attempt
    "webhook_attempts", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("delivery_id", BigInteger, ForeignKey("webhook_deliveries.id"), nullable=False,
           index=True),
    Column("at", UTCDateTime, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer, nullable=False),
)

idempotency_keys = Table(  # a POST's first response, kept for its retries
    "idempotency_keys", metadata,
    Column("principal", String(80), nullable=False),
    Column("key", String(128), nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", Text, nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Json, nullable=False),
    Column("created_at", UTCDateTime, nullable=False, index=True),
    PrimaryKeyConstraint("principal", "key"),
)
