"""Orders, their lines and the money paid for them.

An order is an aggregate: every change goes through `_apply(Event)`, which is also how the stored
event log replays. Refunds are capped per line by what that line paid (money is never created).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from aftersales.domain.errors import (
    ActionNotAllowed,
    AmountExceedsPaid,
    InvalidInput,
    WrongActor,
)
from aftersales.domain.money import Money
from aftersales.domain.types import (
    SYSTEM,
    Actor,
    Event,
    LedgerEntry,
    LedgerKind,
    OrderStatus,
    Role,
    ScanKind,
    ShippingMode,
    require_aware,
)
from aftersales.policy.model import Policy

AUTO_CONFIRM = "auto_confirm"
RULE_AUTO_CONFIRM = "§9:auto_confirm_receipt"


class OrderAction(StrEnum):
    SHIP = "ship"  # tracking number uploaded (SH-8 notice)
    DELIVER = "deliver"  # carrier scanned delivered / signed
    CONFIRM_RECEIPT = "confirm_receipt"  # buyer confirms: 交易成功
    AUTO_CONFIRM = "auto_confirm"  # §9: nobody confirmed within the period
    CLOSE = "close"  # every line fully refunded before completion (RF-2)


_O = OrderStatus
# The order state machine, declared once: (status, action) -> (next status, rule).
ORDER_TRANSITIONS: dict[tuple[OrderStatus, OrderAction], tuple[OrderStatus, str | None]] = {
    (_O.PAID, OrderAction.SHIP): (_O.SHIPPED, "SH-8"),
    (_O.SHIPPED, OrderAction.DELIVER): (_O.DELIVERED, None),
    (_O.SHIPPED, OrderAction.CONFIRM_RECEIPT): (_O.COMPLETED, "AS-4"),
    (_O.DELIVERED, OrderAction.CONFIRM_RECEIPT): (_O.COMPLETED, "AS-4"),
    (_O.SHIPPED, OrderAction.AUTO_CONFIRM): (_O.COMPLETED, RULE_AUTO_CONFIRM),
    (_O.DELIVERED, OrderAction.AUTO_CONFIRM): (_O.COMPLETED, RULE_AUTO_CONFIRM),
    (_O.PAID, OrderAction.CLOSE): (_O.CLOSED, "RF-2"),
    (_O.SHIPPED, OrderAction.CLOSE): (_O.CLOSED, "RF-2"),
    (_O.DELIVERED, OrderAction.CLOSE): (_O.CLOSED, "RF-2"),
}


def order_can(status: OrderStatus, action: OrderAction) -> bool:
    return (status, action) in ORDER_TRANSITIONS


@dataclass(frozen=True, slots=True)
class LineSpec:
    """A line as the buyer ordered it."""

    sku: str
    qty: int
    unit_price: Money
    title: str = ""
    paid: Money | None = None  # after discounts; default qty * unit_price
    no_reason_7d: bool = True  # the listing offers the 7-day no-reason return
    category: str | None = None
    warranty_days: int = 0  # AS-7: manufacturer or shop warranty period
    warranty_kind: str | None = None  # "manufacturer" (联保) | "shop" (店保)


@dataclass(slots=True)
class OrderLine:
    line_no: int
    sku: str
    title: str
    qty: int
    unit_price: Money
    paid: Money
    refunded: Money
    no_reason_7d: bool = True
    category: str | None = None
    warranty_days: int = 0
    warranty_kind: str | None = None
    open_case_id: str | None = None  # one open after-sales case per line at a time
    after_sales_used: bool = False  # AS-5: the one chance after completion is spent

    @property
    def refundable(self) -> Money:
        return self.paid - self.refunded

    def value_of(self, qty: int) -> Money:
        """What `qty` units of this line paid, never more than is still refundable."""
        share = Money(self.paid.minor * qty // self.qty, self.paid.currency)
        return min(share, self.refundable)


LINE_FIELDS = ("refunded", "open_case_id", "after_sales_used")
# Order fields an event may set after OrderPlaced.
ORDER_FIELDS = frozenset({"shipped_at", "delivered_at", "completed_at", "closed_at",
                          "auto_confirm_at", "auto_confirm_paused_at", "carrier", "tracking_no",
                          "ship_by"})


@dataclass(slots=True)
class Order:
    id: str
    buyer_id: str
    seller_id: str
    mode: ShippingMode
    status: OrderStatus
    currency: str
    placed_at: datetime
    ship_by: datetime
    policy_id: str
    policy_version: str
    lines: list[OrderLine]
    ship_to_city: str | None = None
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None
    completed_at: datetime | None = None
    closed_at: datetime | None = None
    auto_confirm_at: datetime | None = None
    auto_confirm_paused_at: datetime | None = None  # the timer stands still while a case is open
    carrier: str | None = None
    tracking_no: str | None = None
    version: int = 0
    seq: int = 0
    pending: list[Event] = field(default_factory=list)
    pending_ledger: list[LedgerEntry] = field(default_factory=list)
    dirty_lines: set[int] = field(default_factory=set)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def place(
        cls,
        *,
        order_id: str,
        buyer: Actor,
        seller_id: str,
        mode: ShippingMode,
        lines: Sequence[LineSpec],
        now: datetime,
        policy: Policy,
        ship_by: datetime | None = None,
        ship_to_city: str | None = None,
    ) -> Order:
        """Place and pay an order. SH-1: the mode fixes the ship-by time."""
        require_aware(now)
        if buyer.role is not Role.BUYER:
            raise WrongActor(f"only a buyer places an order, not {buyer}", action="place_order")
        if not lines:
            raise InvalidInput("an order needs at least one line")
        if mode is ShippingMode.IN_STOCK:
            promised = now + policy.deadlines.in_stock_ship_by  # SH-1
            if ship_by is not None:
                promised = min(promised, require_aware(ship_by, "ship_by"))  # listing promises less
        else:
            if ship_by is None:
                raise InvalidInput(f"a {mode.value} order needs the ship_by the listing promised",
                                   rule="SH-1")
            promised = require_aware(ship_by, "ship_by")
        if promised <= now:
            raise InvalidInput("ship_by must be after the order time", rule="SH-1")
        built: list[OrderLine] = []
        for no, spec in enumerate(lines, start=1):
            if spec.qty <= 0:
                raise InvalidInput(f"line {no}: quantity must be positive")
            if spec.unit_price.currency != policy.currency:
                raise InvalidInput(f"line {no}: currency {spec.unit_price.currency} is not "
                                   f"the pack's {policy.currency}")
            if spec.unit_price.minor < 0:
                raise InvalidInput(f"line {no}: unit price cannot be negative")
            paid = spec.paid if spec.paid is not None else spec.unit_price.times(spec.qty)
            if paid.minor < 0 or paid > spec.unit_price.times(spec.qty):
                raise InvalidInput(f"line {no}: paid {paid} must be between 0 and qty x price")
            built.append(OrderLine(no, spec.sku, spec.title or spec.sku, spec.qty,
                                   spec.unit_price, paid, Money.zero(paid.currency),
                                   spec.no_reason_7d, spec.category, spec.warranty_days,
                                   spec.warranty_kind))
        order = cls(
            id=order_id, buyer_id=buyer.id, seller_id=seller_id, mode=mode,
            status=OrderStatus.PAID, currency=policy.currency, placed_at=now, ship_by=promised,
            policy_id=policy.id, policy_version=policy.version, lines=built,
            ship_to_city=ship_to_city,
        )
        order.seq = 1
        order.pending.append(Event("OrderPlaced", now, buyer, "SH-1", order.snapshot()))
        for line in built:
            order.pending_ledger.append(order._entry(LedgerKind.PAYMENT, line.paid, now,
                                                     "order paid", None, line_no=line.line_no))
        return order

    def snapshot(self) -> dict[str, Any]:
        """The full state as event changes (the first event of the log carries it)."""
        return {
            "id": self.id, "buyer_id": self.buyer_id, "seller_id": self.seller_id,
            "mode": self.mode, "status": self.status, "currency": self.currency,
            "placed_at": self.placed_at, "ship_by": self.ship_by, "policy_id": self.policy_id,
            "policy_version": self.policy_version, "ship_to_city": self.ship_to_city,
            "lines": [
                {"line_no": ln.line_no, "sku": ln.sku, "title": ln.title, "qty": ln.qty,
                 "unit_price": ln.unit_price, "paid": ln.paid, "no_reason_7d": ln.no_reason_7d,
                 "category": ln.category, "warranty_days": ln.warranty_days,
                 "warranty_kind": ln.warranty_kind}
                for ln in self.lines
            ],
        }

    # -- the one mutator ----------------------------------------------------------------------
    def _record(self, name: str, at: datetime, actor: Actor, rule: str | None,
                changes: Mapping[str, Any]) -> Event:
        event = Event(name, at, actor, rule, dict(changes))
        self.apply(event)
        self.pending.append(event)
        return event

    def apply(self, event: Event) -> None:
        self.seq += 1
        for key, value in event.changes.items():
            if key.startswith("line."):
                _, no, attr = key.split(".")
                if attr not in LINE_FIELDS:
                    raise ValueError(f"unknown line field {attr}")
                setattr(self.line(int(no)), attr, value)
                self.dirty_lines.add(int(no))
            elif key == "status":
                self.status = OrderStatus(value)
            elif key in ORDER_FIELDS:
                setattr(self, key, value)
            elif event.name != "OrderPlaced":
                raise ValueError(f"event {event.name} sets unknown order field {key}")

    @classmethod
    def replay(cls, events: Iterable[Event]) -> Order:
        """Rebuild an order from its log alone."""
        it = iter(events)
        first = next(it)
        s = first.changes
        order = cls(
            id=s["id"], buyer_id=s["buyer_id"], seller_id=s["seller_id"],
            mode=ShippingMode(s["mode"]), status=OrderStatus(s["status"]),
            currency=s["currency"], placed_at=s["placed_at"], ship_by=s["ship_by"],
            policy_id=s["policy_id"], policy_version=s["policy_version"],
            ship_to_city=s["ship_to_city"],
            lines=[OrderLine(ln["line_no"], ln["sku"], ln["title"], ln["qty"], ln["unit_price"],
                             ln["paid"], Money.zero(ln["paid"].currency), ln["no_reason_7d"],
                             ln["category"], ln["warranty_days"], ln["warranty_kind"])
                   for ln in s["lines"]],
        )
        order.seq = 1
        for event in it:
            order.apply(event)
        order.status = OrderStatus(order.status)
        order.dirty_lines.clear()
        return order

    # -- queries ------------------------------------------------------------------------------
    def line(self, line_no: int) -> OrderLine:
        for ln in self.lines:
            if ln.line_no == line_no:
                return ln
        raise InvalidInput(f"order {self.id} has no line {line_no}")

    def line_by_sku(self, sku: str) -> OrderLine:
        for ln in self.lines:
            if ln.sku == sku:
                return ln
        raise InvalidInput(f"order {self.id} has no line with sku {sku!r}")

    @property
    def paid(self) -> Money:
        return sum((ln.paid for ln in self.lines), Money.zero(self.currency))

    @property
    def refunded(self) -> Money:
        return sum((ln.refunded for ln in self.lines), Money.zero(self.currency))

    @property
    def has_open_case(self) -> bool:
        return any(ln.open_case_id for ln in self.lines)

    def next_deadline(self) -> tuple[datetime | None, str | None]:
        """The order's next timer; the worker fires it. Auto-confirm waits while a case is open
        (the platform freezes it during after-sales)."""
        if (self.status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED)
                and self.auto_confirm_at is not None and not self.has_open_case):
            return self.auto_confirm_at, AUTO_CONFIRM
        return None, None

    # -- actions ------------------------------------------------------------------------------
    def _next(self, action: OrderAction) -> OrderStatus:
        """The only place an order's next status is read: from ORDER_TRANSITIONS."""
        try:
            return ORDER_TRANSITIONS[(self.status, action)][0]
        except KeyError:
            raise self._not_allowed(action.value, "not in the order state table") from None

    def _require(self, actor: Actor, role: Role, action: str) -> None:
        owner = self.buyer_id if role is Role.BUYER else self.seller_id
        if actor.role is not role or actor.id != owner:
            raise WrongActor(f"{actor} may not {action} order {self.id}: only its {role.value} "
                             f"may", entity=self.id, action=action, status=self.status.value)

    def _not_allowed(self, action: str, why: str, rule: str | None = None,
                     code: str | None = None) -> ActionNotAllowed:
        return ActionNotAllowed(f"order {self.id}: cannot {action} in status "
                                f"{self.status.value}: {why}", rule=rule, entity=self.id,
                                action=action, status=self.status.value, code=code)

    def ship(self, actor: Actor, carrier: str, tracking_no: str, now: datetime,
             policy: Policy) -> Event:
        """Upload the tracking number. SH-8: the buyer's shipping notice names carrier and
        number; the auto-confirm timer starts (§9)."""
        self._require(actor, Role.SELLER, "ship")
        if not order_can(self.status, OrderAction.SHIP):
            raise self._not_allowed("ship", "only a paid, unshipped order ships")
        if not carrier.strip() or not tracking_no.strip():
            raise InvalidInput("carrier and tracking number are required", rule="SH-2")
        return self._record("OrderShipped", now, actor, "SH-8", {
            "status": self._next(OrderAction.SHIP), "shipped_at": now, "carrier": carrier,
            "tracking_no": tracking_no,
            "auto_confirm_at": now + policy.deadlines.auto_confirm_receipt,
        })

    def scanned(self, kind: ScanKind, at: datetime, city: str | None) -> Event | None:
        """A carrier scan of this order's parcel. Delivery starts the 7-day no-reason clock."""
        if kind in (ScanKind.DELIVERED, ScanKind.SIGNED) and order_can(self.status,
                                                                       OrderAction.DELIVER):
            return self._record("ParcelDelivered", at, SYSTEM, None, {
                "status": self._next(OrderAction.DELIVER), "delivered_at": at})
        return None

    def confirm_receipt(self, actor: Actor, now: datetime) -> Event:
        self._require(actor, Role.BUYER, "confirm_receipt")
        if not order_can(self.status, OrderAction.CONFIRM_RECEIPT):
            raise self._not_allowed("confirm_receipt", "only a shipped order can be received")
        if self.has_open_case:
            raise self._not_allowed("confirm_receipt", "an after-sales case is open on it; "
                                    "withdraw or finish it first", code="case_open")
        return self._record("ReceiptConfirmed", now, actor, "AS-4", {
            "status": self._next(OrderAction.CONFIRM_RECEIPT), "completed_at": now,
            "auto_confirm_at": None})

    def on_deadline(self, now: datetime) -> list[Event]:
        """Fire every order timer due at `now`; a second call at the same time does nothing."""
        due, kind = self.next_deadline()
        if due is None or due > now:
            return []
        if kind == AUTO_CONFIRM:
            return [self._record("ReceiptAutoConfirmed", now, SYSTEM, RULE_AUTO_CONFIRM, {
                "status": self._next(OrderAction.AUTO_CONFIRM), "completed_at": now,
                "auto_confirm_at": None})]
        return []

    # -- money --------------------------------------------------------------------------------
    def _entry(self, kind: LedgerKind, amount: Money, at: datetime, reason: str,
               rule: str | None, *, case_id: str | None = None,
               line_no: int | None = None) -> LedgerEntry:
        return LedgerEntry(self.id, kind, amount, self.buyer_id, self.seller_id, reason, rule,
                           at, case_id=case_id, line_no=line_no)

    def allocate(self, line_qtys: Sequence[tuple[int, int]], amount: Money) -> list[
            tuple[int, Money]]:
        """Split a case amount over its lines, in line order, each capped by what that line
        can still refund. Raises when the amount exceeds what the lines paid."""
        parts: list[tuple[int, Money]] = []
        left = amount
        for line_no, qty in line_qtys:
            if not left.is_positive:
                break
            take = min(left, self.line(line_no).value_of(qty))
            if take.is_positive:
                parts.append((line_no, take))
                left = left - take
        if left.is_positive:
            raise AmountExceedsPaid(
                f"order {self.id}: refund {amount} exceeds what the lines can still refund "
                f"({amount - left})", rule="RF-2")
        return parts

    def refund(self, parts: Sequence[tuple[int, Money]], *, case_id: str, actor: Actor,
               at: datetime, reason: str, rule: str) -> Event:
        """Pay money back to the buyer, line by line. A full refund before completion closes
        the order (nothing is left to ship or receive)."""
        changes: dict[str, Any] = {}
        for line_no, amount in parts:
            line = self.line(line_no)
            if amount.minor <= 0:
                raise InvalidInput("a refund must be positive")
            if amount > line.refundable:
                raise AmountExceedsPaid(f"order {self.id} line {line_no}: refund {amount} "
                                        f"exceeds refundable {line.refundable}", rule="RF-2")
            changes[f"line.{line_no}.refunded"] = line.refunded + amount
            self.pending_ledger.append(self._entry(LedgerKind.REFUND, amount, at, reason, rule,
                                                   case_id=case_id, line_no=line_no))
        fully = all(
            (changes.get(f"line.{ln.line_no}.refunded", ln.refunded) == ln.paid)
            for ln in self.lines)
        if fully and order_can(self.status, OrderAction.CLOSE):
            changes.update(status=self._next(OrderAction.CLOSE), closed_at=at,
                           auto_confirm_at=None, auto_confirm_paused_at=None)
        return self._record("RefundIssued", at, actor, rule, changes)

    def attach_case(self, case_id: str, line_nos: Sequence[int], now: datetime, actor: Actor,
                    *, use_chance: bool) -> Event:
        """A case opened on these lines: one open case per line; after completion it spends the
        line's one chance (AS-5). The auto-confirm timer pauses while any case is open."""
        changes: dict[str, Any] = {f"line.{no}.open_case_id": case_id for no in line_nos}
        if use_chance:
            changes.update({f"line.{no}.after_sales_used": True for no in line_nos})
        if (not self.has_open_case and self.auto_confirm_at is not None
                and self.auto_confirm_paused_at is None):
            changes["auto_confirm_paused_at"] = now
        return self._record("CaseOpened", now, actor, "AS-5", changes)

    def detach_case(self, line_nos: Sequence[int], now: datetime, actor: Actor,
                    rule: str | None) -> Event:
        """A case closed: its lines are free again. When no case is left open the auto-confirm
        timer resumes with the time it had left (the paused span is added back)."""
        changes: dict[str, Any] = {f"line.{no}.open_case_id": None for no in line_nos}
        still_open = any(ln.open_case_id for ln in self.lines if ln.line_no not in line_nos)
        if not still_open and self.auto_confirm_paused_at is not None:
            changes["auto_confirm_paused_at"] = None
            if self.auto_confirm_at is not None:
                changes["auto_confirm_at"] = (self.auto_confirm_at
                                              + (now - self.auto_confirm_paused_at))
        return self._record("CaseClosed", now, actor, rule, changes)


def warranty_covers(line: OrderLine, completed_at: datetime | None, now: datetime) -> bool:
    """AS-7: a repair within the warranty period is not limited by the 15-day window."""
    if line.warranty_days <= 0 or completed_at is None:
        return False
    return now <= completed_at + timedelta(days=line.warranty_days)
