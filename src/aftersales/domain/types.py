"""Shared vocabulary: actors, enums of the after-sales domain, the event record, ledger entries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from aftersales.domain.errors import InvalidInput
from aftersales.domain.money import Money


class Role(StrEnum):
    BUYER = "buyer"
    SELLER = "seller"
    STAFF = "staff"  # platform staff (小二)
    JUROR = "juror"  # public jury member (大众评审)
    OPERATOR = "operator"
    SYSTEM = "system"  # the deadline worker and carrier feeds


@dataclass(frozen=True, slots=True)
class Actor:
    role: Role
    id: str

    @classmethod
    def parse(cls, text: str) -> Actor:
        role, _, ident = text.partition(":")
        try:
            parsed = Role(role)
        except ValueError:
            raise InvalidInput(
                f"unknown actor {text!r}: use buyer:<id>, seller:<id>, staff:<id>, juror:<id>"
                " or system"
            ) from None
        if parsed is not Role.SYSTEM and not ident:
            raise InvalidInput(f"actor {text!r} needs an id, e.g. {role}:b1")
        return cls(parsed, ident or "system")

    def __str__(self) -> str:
        return f"{self.role.value}:{self.id}"


SYSTEM = Actor(Role.SYSTEM, "system")


class ShippingMode(StrEnum):
    """SH-1: the mode fixes the promised ship-by time."""

    IN_STOCK = "in_stock"  # 现货: ship-by = payment + policy in_stock_ship_by
    PRESALE = "presale"  # 预售: the listing's promised date
    CUSTOM = "custom"  # 自定义发货时间: the listing's promised date
    TIERED = "tiered"  # 阶梯发货: the listing's promised date for this tier


class OrderStatus(StrEnum):
    PAID = "paid"  # paid, waiting for the seller to ship
    SHIPPED = "shipped"  # tracking number uploaded
    DELIVERED = "delivered"  # carrier scanned delivered / signed
    COMPLETED = "completed"  # 交易成功: buyer confirmed receipt (or auto-confirmed)
    CLOSED = "closed"  # fully refunded before completion; nothing more happens


class CaseType(StrEnum):
    """AS-1."""

    REFUND_ONLY = "refund_only"  # 仅退款
    RETURN_REFUND = "return_refund"  # 退货退款
    EXCHANGE = "exchange"  # 换货
    REPAIR = "repair"  # 维修
    RESHIP = "reship"  # 补发 (short shipment)


class Reason(StrEnum):
    """AS-3."""

    NOT_RECEIVED = "not_received"
    NOT_SHIPPED = "not_shipped"
    SHORT_SHIPMENT = "short_shipment"  # 少发
    EMPTY_PARCEL = "empty_parcel"  # 空包
    WRONG_ITEM = "wrong_item"
    NOT_AS_DESCRIBED = "not_as_described"  # 描述不符
    QUALITY = "quality"
    DAMAGED_IN_TRANSIT = "damaged_in_transit"
    NO_REASON_7D = "no_reason_7d"  # 7天无理由
    OUT_OF_STOCK = "out_of_stock"


class ScanKind(StrEnum):
    PICKED_UP = "picked_up"
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"
    SIGNED = "signed"
    EXCEPTION = "exception"
    LOST = "lost"


class LedgerKind(StrEnum):
    PAYMENT = "payment"  # buyer paid the order line
    REFUND = "refund"  # money back to the buyer
    COMPENSATION = "compensation"  # seller pays the buyer for a violation (SH-6)
    COUPON = "coupon"  # compensation paid as a no-threshold coupon (Douyin)
    PENALTY = "penalty"  # penalty points against the seller (amount 0)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of an aggregate's append-only log. `changes` holds every field the event set,
    so folding the log from the first event reproduces the stored state."""

    name: str  # past tense: CaseOpened, SellerAgreed, DeadlinePassed
    at: datetime
    actor: Actor
    rule: str | None
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A money movement, always with its reason and rule. Refunds are positive amounts."""

    order_id: str
    kind: LedgerKind
    amount: Money
    buyer_id: str
    seller_id: str
    reason: str
    rule: str | None
    at: datetime
    case_id: str | None = None
    line_no: int | None = None
    points: int = 0


def require_aware(value: datetime, what: str = "time") -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be timezone-aware, got {value.isoformat()}")
    return value
