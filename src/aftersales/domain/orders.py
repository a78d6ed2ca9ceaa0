"""Orders, their lines and the money paid for them.

An order is an aggregate: every change goes through `_apply(Event)`, which is also how the stored
event log replays. Refunds are capped per line by what that line paid (money is never created).
"""

from __future__ import annotations

import dataclasses
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
from aftersales.domain.violations import Finding
from aftersales.policy.model import Policy

AUTO_CONFIRM = "auto_confirm"
SHIPPING_CHECK = "shipping_check"  # a shipping rule (SH-2..SH-5, SH-9) may fire
OOS_ANSWER = "oos_answer"  # the buyer's time to choose after an out-of-stock notice (OS-2)
FOLLOW_UP = "follow_up_after_delivery"  # SR-2: the automatic reminder to confirm receipt
OOS_OPTIONS = ("substitute", "wait", "cancel")
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
    weight_g: int = 0  # one unit's shipping weight (SH-5 empty-parcel check); 0 = unknown


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
    weight_g: int = 0  # one unit's weight

    @property
    def refundable(self) -> Money:
        return self.paid - self.refunded

    def value_of(self, qty: int) -> Money:
        """What `qty` units of this line paid, never more than is still refundable."""
        share = Money(self.paid.minor * qty // self.qty, self.paid.currency)
        return min(share, self.refundable)


LINE_FIELDS = ("refunded", "open_case_id", "after_sales_used")
# Shipment facts the violation rules read (domain.violations), kept on the order.
TRACKING_FACTS = ("declared_weight_g", "first_scan_at", "first_pickup_at", "last_scan_at",
                  "delivery_city", "lost_at", "max_scan_gap", "refund_requested_at")
# event payload that describes, not sets
INFO_KEYS = frozenset({"scan", "found", "substitute_sku", "disputed", "reason",
                       "penalty_points", "complaint", "rating"})
# Order fields an event may set after OrderPlaced.
ORDER_FIELDS = frozenset({"shipped_at", "delivered_at", "completed_at", "closed_at",
                          "auto_confirm_at", "auto_confirm_paused_at", "carrier", "tracking_no",
                          "ship_by", "violations", "oos_lines", "oos_answer_due", "oos_choice",
                          "reminded_at", *TRACKING_FACTS})


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
    declared_weight_g: int | None = None
    first_scan_at: datetime | None = None
    first_pickup_at: datetime | None = None
    last_scan_at: datetime | None = None
    delivery_city: str | None = None
    lost_at: datetime | None = None
    max_scan_gap: timedelta | None = None  # longest silence between scans before delivery
    refund_requested_at: datetime | None = None  # first after-sales request before shipment
    violations: tuple[str, ...] = ()  # violation names recorded (once per order and name)
    check_at: datetime | None = None  # derived, not logged: when a shipping rule may next fire
    follow_up_at: datetime | None = None  # derived, not logged: the automatic reminder (SR-2)
    reminded_at: datetime | None = None  # SR-2: the buyer was prompted to confirm receipt
    oos_lines: tuple[int, ...] = ()  # lines declared out of stock, awaiting the buyer (OS-1)
    oos_answer_due: datetime | None = None  # OS-2: the default applies after this
    oos_choice: str | None = None  # OS-2: substitute | wait | cancel (last answer)
    version: int = 0
    seq: int = 0
    pending: list[Event] = field(default_factory=list)
    pending_ledger: list[LedgerEntry] = field(default_factory=list)
    pending_violations: list[dict[str, Any]] = field(default_factory=list)
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
            if spec.weight_g < 0:
                raise InvalidInput(f"line {no}: weight cannot be negative")
            built.append(OrderLine(no, spec.sku, spec.title or spec.sku, spec.qty,
                                   spec.unit_price, paid, Money.zero(paid.currency),
                                   spec.no_reason_7d, spec.category, spec.warranty_days,
                                   spec.warranty_kind, weight_g=spec.weight_g))
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
                 "warranty_kind": ln.warranty_kind, "weight_g": ln.weight_g}
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
            if key in INFO_KEYS:
                continue  # what was scanned; the facts it changed follow as their own keys
            if key.startswith("line."):
                _, no, attr = key.split(".")
                if attr not in LINE_FIELDS:
                    raise ValueError(f"unknown line field {attr}")
                setattr(self.line(int(no)), attr, value)
                self.dirty_lines.add(int(no))
            elif key == "status":
                self.status = OrderStatus(value)
            elif key == "mode":
                self.mode = ShippingMode(value)
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
                             ln["category"], ln["warranty_days"], ln["warranty_kind"],
                             weight_g=ln.get("weight_g", 0))
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
        if self.oos_answer_due is not None and self.status is OrderStatus.PAID:
            return self.oos_answer_due, OOS_ANSWER
        auto = None
        if (self.status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED)
                and self.auto_confirm_at is not None and not self.has_open_case):
            auto = self.auto_confirm_at
        timers = [(at, kind) for at, kind in ((auto, AUTO_CONFIRM),
                                              (self.check_at, SHIPPING_CHECK),
                                              (self.follow_up_at, FOLLOW_UP)) if at is not None]
        return min(timers, key=lambda x: x[0]) if timers else (None, None)

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
             policy: Policy, weight_g: int | None = None) -> Event:
        """Upload the tracking number. SH-8: the buyer's shipping notice names carrier and
        number; the auto-confirm timer starts (§9)."""
        self._require(actor, Role.SELLER, "ship")
        if not order_can(self.status, OrderAction.SHIP):
            raise self._not_allowed("ship", "only a paid, unshipped order ships")
        if not carrier.strip() or not tracking_no.strip():
            raise InvalidInput("carrier and tracking number are required", rule="SH-2")
        return self._record("OrderShipped", now, actor, "SH-8", {
            "status": self._next(OrderAction.SHIP), "shipped_at": now, "carrier": carrier,
            "tracking_no": tracking_no, "declared_weight_g": weight_g,
            "auto_confirm_at": now + policy.deadlines.auto_confirm_receipt,
        })

    def scanned(self, kind: ScanKind, at: datetime, city: str | None) -> Event:
        """A carrier scan of this order's parcel: updates the shipment facts the violation
        rules read (SH-3..SH-5, SH-9). Delivery starts the 7-day no-reason clock."""
        changes: dict[str, Any] = {}
        if self.first_scan_at is None or at < self.first_scan_at:
            changes["first_scan_at"] = at
        if kind is ScanKind.PICKED_UP and (self.first_pickup_at is None
                                           or at < self.first_pickup_at):
            changes["first_pickup_at"] = at
        if self.last_scan_at is None or at > self.last_scan_at:
            if self.last_scan_at is not None and self.delivered_at is None:
                gap = at - self.last_scan_at  # SH-9: silence while in transit
                if self.max_scan_gap is None or gap > self.max_scan_gap:
                    changes["max_scan_gap"] = gap
            changes["last_scan_at"] = at
        if kind is ScanKind.LOST and self.lost_at is None:
            changes["lost_at"] = at
        name = "ParcelScanned"
        if kind in (ScanKind.DELIVERED, ScanKind.SIGNED) and self.delivered_at is None:
            changes.update(delivered_at=at, delivery_city=city)
            if order_can(self.status, OrderAction.DELIVER):
                changes["status"] = self._next(OrderAction.DELIVER)
                name = "ParcelDelivered"
        return self._record(name, at, SYSTEM, None, {"scan": kind, **changes})

    def dispute_violation(self, actor: Actor, name: str, reason: str, now: datetime) -> Event:
        """SH-5: the seller contests a detection; it goes to platform staff (intervention).
        The compensation already paid stands until staff rule."""
        self._require(actor, Role.SELLER, "dispute_violation")
        if name not in self.violations:
            raise InvalidInput(f"order {self.id} has no {name!r} violation to dispute")
        if not reason.strip():
            raise InvalidInput("a dispute needs the seller's reason", rule="SH-5")
        return self._record("ViolationDisputed", now, actor, "SH-5",
                            {"disputed": name, "reason": reason})

    # -- out of stock after payment (OS-1..OS-4) ---------------------------------------------
    def declare_out_of_stock(self, actor: Actor, line_nos: Sequence[int] | None,
                             now: datetime, policy: Policy) -> Event:
        """OS-1: the seller declares paid lines out of stock and the buyer is told at once (this
        event). The duty to ship pauses until the buyer chooses; it counts on the seller's
        record as a shipping violation (OS-4)."""
        self._require(actor, Role.SELLER, "declare_out_of_stock")
        if self.status is not OrderStatus.PAID:
            raise self._not_allowed("declare_out_of_stock", "only a paid, unshipped order",
                                    rule="OS-1")
        if self.oos_lines:
            raise self._not_allowed("declare_out_of_stock", "already declared; waiting for "
                                    "the buyer's choice", rule="OS-2")
        lines = list(line_nos) if line_nos else [ln.line_no for ln in self.lines]
        for no in lines:
            if not self.line(no).refundable.is_positive:
                raise InvalidInput(f"order {self.id} line {no} is already fully refunded")
        changes: dict[str, Any] = {
            "oos_lines": tuple(lines), "oos_answer_due": now + policy.deadlines.out_of_stock_answer,
            "oos_choice": None}
        if self.refund_requested_at is None:
            changes["refund_requested_at"] = now  # the ship-by duty pauses (SH-2)
        event = self._record("OutOfStockDeclared", now, actor, "OS-1", changes)
        self.record_violations([Finding("out_of_stock", "declared", "OS-4",
                                         {"lines": lines})], now, policy)
        return event

    def choose(self, actor: Actor, option: str, now: datetime, policy: Policy, *,
               sku: str | None = None, ship_by: datetime | None = None) -> Event:
        """OS-2: the buyer picks a substitute, waits (a new, later ship-by date) or cancels
        (OS-3: the full paid amount of those lines comes back). The system picks the pack's
        default when the buyer stays silent."""
        if actor.role is not Role.SYSTEM:
            self._require(actor, Role.BUYER, "choose")
        if not self.oos_lines or self.status is not OrderStatus.PAID:
            raise self._not_allowed("choose", "nothing was declared out of stock", rule="OS-2")
        if option not in OOS_OPTIONS:
            raise InvalidInput(f"option must be one of {', '.join(OOS_OPTIONS)}", rule="OS-2")
        lines = self.oos_lines
        clear = {"oos_lines": (), "oos_answer_due": None, "oos_choice": option}
        if option == "cancel":
            parts = [(no, self.line(no).refundable) for no in lines
                     if self.line(no).refundable.is_positive]
            self.refund(parts, case_id=None, actor=actor, at=now,
                        reason="out of stock: order cancelled", rule="OS-3")
            return self._record("OutOfStockCancelled", now, actor, "OS-3", clear)
        if option == "wait":
            new = ship_by or self.ship_by + policy.out_of_stock.wait_extension
            require_aware(new, "ship_by")
            if new <= max(now, self.ship_by):
                raise InvalidInput("waiting needs a ship-by date later than the current one",
                                   rule="OS-2")
        else:
            if not sku:
                raise InvalidInput("a substitute needs the sku offered", rule="OS-2")
            new = max(self.ship_by, now + policy.deadlines.in_stock_ship_by)
        # The duty to ship resumes against the new date (SH-2); a promised date makes it a
        # custom ship time (SH-1), so pickup is due 24 h after upload (SH-4).
        return self._record("OutOfStockResolved", now, actor, "OS-2", {
            **clear, "ship_by": new, "refund_requested_at": None, "mode": ShippingMode.CUSTOM,
            **({"substitute_sku": sku} if sku else {})})

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

    def remind(self, actor: Actor, now: datetime, policy: Policy) -> Event:
        """SR-2: a week after delivery without confirmation the seller may prompt the buyer
        (once); the system does it by itself when the seller has not."""
        if actor.role is not Role.SYSTEM:
            self._require(actor, Role.SELLER, "remind")
        if self.status is not OrderStatus.DELIVERED or self.delivered_at is None:
            raise self._not_allowed("remind", "only a delivered order awaiting the buyer's "
                                    "confirmation can be followed up", rule="SR-2")
        if self.reminded_at is not None:
            raise self._not_allowed("remind", f"the buyer was reminded at "
                                    f"{self.reminded_at.isoformat()}", rule="SR-2",
                                    code="already_reminded")
        due = self.delivered_at + policy.deadlines.follow_up_after_delivery
        if now < due:
            raise self._not_allowed("remind", f"the buyer may be prompted from "
                                    f"{due.isoformat()}, a week after delivery", rule="SR-2",
                                    code="too_early")
        return self._record("BuyerReminded", now, actor, "SR-2", {"reminded_at": now})

    def plan_follow_up(self, now: datetime, policy: Policy) -> Event | None:
        """SR-2: remind the buyer automatically once it is due; until then, plan it."""
        self.follow_up_at = None
        if (self.status is not OrderStatus.DELIVERED or self.delivered_at is None
                or self.reminded_at is not None):
            return None
        due = self.delivered_at + policy.deadlines.auto_follow_up_after_delivery
        if due > now:
            self.follow_up_at = due
            return None
        return self.remind(SYSTEM, now, policy)

    def on_deadline(self, now: datetime, policy: Policy | None = None) -> list[Event]:
        """Fire every order timer due at `now`; a second call at the same time does nothing."""
        due, kind = self.next_deadline()
        if due is None or due > now:
            return []
        if kind == OOS_ANSWER and policy is not None:  # OS-2: silence takes the pack's default
            return [self.choose(SYSTEM, policy.out_of_stock.default_choice, now, policy)]
        if kind == AUTO_CONFIRM:
            return [self._record("ReceiptAutoConfirmed", now, SYSTEM, RULE_AUTO_CONFIRM, {
                "status": self._next(OrderAction.AUTO_CONFIRM), "completed_at": now,
                "auto_confirm_at": None})]
        return []

    # -- shipping violations (SH-2..SH-6, SH-9) ----------------------------------------------
    @property
    def expected_weight_g(self) -> int:
        return sum(ln.qty * ln.weight_g for ln in self.lines)

    def facts(self, tracking_orders: int | None = None) -> dict[str, Any]:
        """The shipment facts of `domain.violations.FACTS`, as the batch scan computes them."""
        return {
            "order_id": self.id, "seller_id": self.seller_id, "mode": self.mode.value,
            "placed_at": self.placed_at, "ship_by": self.ship_by,
            "ship_to_city": self.ship_to_city, "shipped_at": self.shipped_at,
            "tracking_no": self.tracking_no, "declared_weight_g": self.declared_weight_g,
            "expected_weight_g": self.expected_weight_g, "first_scan_at": self.first_scan_at,
            "first_pickup_at": self.first_pickup_at, "last_scan_at": self.last_scan_at,
            "delivered_at": self.delivered_at, "delivery_city": self.delivery_city,
            "lost_at": self.lost_at, "max_scan_gap": self.max_scan_gap,
            "refund_requested_at": self.refund_requested_at, "tracking_orders": tracking_orders,
        }

    def compensation_for(self, name: str, policy: Policy) -> tuple[Money, LedgerKind] | None:
        """SH-6 (b): what the pack pays the buyer for this violation, once per order and
        violation: the schedule applied to the goods value paid (5 % floor 5 cap 30 on
        Taobao; Douyin's tiers as a no-threshold coupon)."""
        schedule = (policy.out_of_stock.compensation if name == "out_of_stock"
                    else policy.compensation.get(name))  # OS-3: none unless the pack says so
        if schedule is None:
            return None
        amount = schedule.for_price(self.paid)
        if not amount.is_positive:
            return None
        kind = LedgerKind.COUPON if schedule.paid_as == "coupon" else LedgerKind.COMPENSATION
        return amount, kind

    def record_violations(self, findings: Sequence[Any], now: datetime, policy: Policy
                          ) -> list[dict[str, Any]]:
        """Record what the rules found (once per order and violation name) and pay the
        compensation the pack says into the ledger. Returns the new violations."""
        new: dict[str, dict[str, Any]] = {}
        for f in findings:
            if f.name in self.violations:
                continue
            entry = new.setdefault(f.name, {"name": f.name, "rule": f.rule, "detectors": [],
                                            "evidence": {}, "detected_at": now})
            entry["detectors"].append(f.detector)
            entry["evidence"][f.detector] = dict(f.evidence)
        if not new:
            return []
        for entry in new.values():
            paid = self.compensation_for(entry["name"], policy)
            entry["compensation"], entry["paid_as"] = (paid if paid else
                                                       (Money.zero(self.currency), None))
            if paid:
                self.pending_ledger.append(self._entry(
                    paid[1], paid[0], now, f"{entry['name']} compensation "
                    f"({', '.join(entry['detectors'])})", "SH-6"))
        self.pending_violations.extend(new.values())
        rule = next(iter(new.values()))["rule"]
        self._record("ViolationDetected", now, SYSTEM, rule, {
            "violations": (*self.violations, *new), "found": list(new.values())})
        return list(new.values())

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

    def refund(self, parts: Sequence[tuple[int, Money]], *, case_id: str | None, actor: Actor,
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

    def penalize(self, points: int, *, at: datetime, actor: Actor, reason: str, rule: str,
                 case_id: str | None = None) -> Event:
        """Penalty points against the seller (IN-7, §9): a ledger entry of amount zero, so
        the seller's record adds them up with the money."""
        if points < 0:
            raise InvalidInput("penalty points cannot be negative")
        entry = self._entry(LedgerKind.PENALTY, Money.zero(self.currency), at, reason, rule,
                            case_id=case_id)
        self.pending_ledger.append(dataclasses.replace(entry, points=points))
        return self._record("PenaltyRecorded", at, actor, rule, {"penalty_points": points})

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
        if self.status is OrderStatus.PAID and self.refund_requested_at is None:
            changes["refund_requested_at"] = now  # the ship-by duty pauses (SH-2)
        return self._record("CaseOpened", now, actor, "AS-5", changes)

    def detach_case(self, line_nos: Sequence[int], now: datetime, actor: Actor,
                    rule: str | None) -> Event:
        """A case closed: its lines are free again. When no case is left open the auto-confirm
        timer resumes with the time it had left (the paused span is added back)."""
        changes: dict[str, Any] = {f"line.{no}.open_case_id": None for no in line_nos}
        still_open = any(ln.open_case_id for ln in self.lines if ln.line_no not in line_nos)
        if (not still_open and self.refund_requested_at is not None and not self.oos_lines
                and self.status is OrderStatus.PAID):
            changes["refund_requested_at"] = None  # no refund after all: the duty to ship is back
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
