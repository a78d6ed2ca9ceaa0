"""`aftersales demo`: simulate a marketplace through the real service layer and deadline worker.

Every order, shipment, scan and after-sales action is a command sent to `Service.handle`; every
timeout is applied by the real deadline worker (`service.worker.run_due`). Time is simulated: a
priority queue holds what buyers, sellers and carriers will do and when, ordered by time. Before
each action the worker is advanced to that time, one due time after the other, so each timeout
fires at its exact due time (and a buyer who acts after a timeout closed the case is refused,
as in production). Whatever a party does is decided by `random.Random(seed)` alone and engine ids
come from a counter, so the same seed gives the same database and the same summary.

Who acts how:
- sellers have a habit: *prompt* (answers within hours, mostly agrees), *slow* (answers after
  one to five days, often after the deadline), *silent* (rarely answers: the timeouts decide),
  *refusing* (answers fast, mostly rejects or offers a partial refund, confirms returns late,
  sometimes asks the platform to step in from day 15, IN-2);
- buyers confirm receipt or let it auto-confirm, ship returns on time, late or never, and after
  a rejection resubmit, escalate, withdraw or do nothing; they accept, decline or ignore offers;
- about one order in seven gets a case, with every request type (AS-1) and reason (AS-3), from
  before shipment (not shipped, out of stock) to after completion (AS-4 window, AS-7 warranty).
- the platform steps in on escalated cases (IN-1..IN-9): the buyer adds evidence, staff ask the
  party who must prove for proof by a deadline (sellers answer by habit; silence loses), send
  about a quarter of the disputes they hold to a public jury drawn from registered juror
  accounts (jurors vote over the vote window, some never), and rule the rest: a refund, a
  partial refund or a rejection, with "not as described" penalty points when upheld.

Orders arrive over the first `days` days; the simulation then runs until nothing more happens
(every scheduled action done and every deadline fired). The summary is read from the database
at the end (counts, money from the ledger, response times from the case event log).

Database: the demo always starts from an empty database and never mixes runs. Without `--db`
it uses the file `aftersales.db` in the working directory (it does NOT read
$AFTERSALES_DATABASE_URL, since it wipes what it uses). A SQLite file (and its -wal/-shm
files) is deleted first. On PostgreSQL (any non-SQLite URL) the aftersales tables and
`alembic_version` are DROPPED in the schema the URL resolves to (its search_path) and recreated
by the migrations: point `--db` at a database or schema meant for the demo. Being throwaway,
a SQLite demo database commits with `synchronous=NORMAL` (DEMO_SQLITE_SYNCHRONOUS) unless
AFTERSALES_SQLITE_SYNCHRONOUS is set; the summary says which (`durability`).
"""

from __future__ import annotations

import heapq
import json
import math
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.engine import make_url

from aftersales.bootstrap import bootstrap
from aftersales.domain.cases import CaseStatus, Outcome
from aftersales.domain.errors import AftersalesError, InvalidInput
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import (
    SYSTEM,
    Actor,
    CaseType,
    Reason,
    Role,
    ScanKind,
    ShippingMode,
)
from aftersales.scenario.runner import counter_ids
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from aftersales.service.worker import run_due
from aftersales.store import tables as t
from aftersales.store.db import durability, make_engine, normalise_url
from aftersales.store.repository import Repository

DEMO_URL = "sqlite:///aftersales.db"
# The demo's database is a throwaway simulation, emptied at the start of every run: its commits
# need not survive a power cut, so on SQLite they are flushed at checkpoints only (NORMAL; the
# file is never corrupted) unless AFTERSALES_SQLITE_SYNCHRONOUS names a level. The service,
# worker and schema are the production ones, and whatever opens the file afterwards (CLI, API,
# worker) runs at its own level, FULL by default. See docs/operations.md#databases.
DEMO_SQLITE_SYNCHRONOUS = "NORMAL"
HABITS = ("prompt", "slow", "silent", "refusing")
HABIT_WEIGHTS = (0.45, 0.25, 0.12, 0.18)
CASE_RATE = 0.15  # share of orders that get an after-sales request
CARRIERS = ("SF", "ZTO", "YTO", "STO", "YD", "JD", "EMS")
CITIES = ("Shanghai", "Hangzhou", "Beijing", "Shenzhen", "Guangzhou", "Chengdu", "Wuhan",
          "Nanjing", "Xi'an", "Chongqing", "Suzhou", "Tianjin")
REJECT_REASONS = ("item was used", "outside what the listing promised", "photos do not show a "
                  "defect", "buyer changed mind", "parcel was signed for in good condition")


@dataclass(frozen=True)
class Category:
    name: str
    weight: int
    price: tuple[int, int]  # yuan
    no_reason_7d: bool
    warranty_days: int = 0
    warranty_kind: str | None = None


CATEGORIES = (
    Category("apparel", 28, (29, 399), True),
    Category("shoes", 10, (79, 699), True),
    Category("electronics", 13, (99, 3999), True, 365, "manufacturer"),
    Category("home", 14, (15, 599), True),
    Category("beauty", 10, (19, 499), True),
    Category("fresh", 8, (9, 199), False),
    Category("custom_made", 4, (49, 999), False),
    Category("books", 8, (12, 128), True),
    Category("appliances", 5, (199, 4999), True, 730, "shop"),
)

# reason -> (weight, [(case type, weight)]). Reasons before shipment / before delivery are tied
# to an order's fate (never shipped, out of stock, parcel lost); the others come after delivery.
REASONS: dict[Reason, tuple[float, list[tuple[CaseType, float]]]] = {
    Reason.NOT_SHIPPED: (5, [(CaseType.REFUND_ONLY, 1)]),
    Reason.OUT_OF_STOCK: (4, [(CaseType.REFUND_ONLY, 1)]),
    Reason.NOT_RECEIVED: (9, [(CaseType.REFUND_ONLY, 0.8), (CaseType.RESHIP, 0.2)]),
    Reason.SHORT_SHIPMENT: (8, [(CaseType.RESHIP, 0.6), (CaseType.REFUND_ONLY, 0.4)]),
    Reason.EMPTY_PARCEL: (3, [(CaseType.REFUND_ONLY, 0.7), (CaseType.RESHIP, 0.3)]),
    Reason.WRONG_ITEM: (10, [(CaseType.EXCHANGE, 0.5), (CaseType.RETURN_REFUND, 0.5)]),
    Reason.NOT_AS_DESCRIBED: (14, [(CaseType.RETURN_REFUND, 0.55), (CaseType.REFUND_ONLY, 0.3),
                                   (CaseType.EXCHANGE, 0.15)]),
    Reason.QUALITY: (20, [(CaseType.RETURN_REFUND, 0.4), (CaseType.REPAIR, 0.25),
                          (CaseType.EXCHANGE, 0.2), (CaseType.REFUND_ONLY, 0.15)]),
    Reason.DAMAGED_IN_TRANSIT: (8, [(CaseType.REFUND_ONLY, 0.45), (CaseType.RETURN_REFUND, 0.35),
                                    (CaseType.EXCHANGE, 0.2)]),
    Reason.NO_REASON_7D: (19, [(CaseType.RETURN_REFUND, 0.85), (CaseType.EXCHANGE, 0.15)]),
}
BEFORE_SHIPMENT = (Reason.NOT_SHIPPED, Reason.OUT_OF_STOCK)
PLATFORM_STATUSES = frozenset(s.value for s in (CaseStatus.IN_INTERVENTION,
                                                CaseStatus.AWAITING_PROOF,
                                                CaseStatus.JURY_VOTING))


@dataclass
class Seller:
    id: str
    habit: str


@dataclass
class Buyer:
    id: str
    confirms: float  # chance to confirm receipt by hand (else it auto-confirms)
    diligence: float  # chance to ship a return in time
    persistence: float  # after a rejection: escalate/resubmit rather than give up


@dataclass
class CasePlan:
    reason: Reason
    type: CaseType
    after_completion: bool = False


@dataclass
class SimOrder:
    n: int
    buyer: Buyer
    seller: Seller
    mode: ShippingMode
    lines: tuple[LineSpec, ...]
    city: str
    fate: str = "normal"  # normal | never_ship | out_of_stock | lost
    plan: CasePlan | None = None
    id: str = ""
    status: str = "paid"
    tracking: str = ""
    shipped_at: datetime | None = None


@dataclass
class SimCase:
    id: str
    order: SimOrder
    type: CaseType
    reason: Reason
    amount: int  # minor units, what is asked now
    opened_at: datetime
    status: str = CaseStatus.AWAITING_SELLER.value
    resubmits: int = 0
    proof_from: str | None = None  # whom staff asked to prove (IN-4)
    proof_requests: int = 0
    panel: tuple[str, ...] = ()  # the jurors drawn (IN-3)


# What will happen: (when, sequence number, what, its arguments). Plain tuples, ordered by time
# and then by scheduling order (the sequence number is unique, so the rest is never compared).
_Item = tuple[datetime, int, Callable[..., None], tuple[Any, ...]]


class Simulation:
    """The marketplace: parties, the queue of what they will do, and the simulated clock."""

    def __init__(self, service: Service, *, orders: int, days: int, seed: int,
                 policy_id: str) -> None:
        self.service = service
        self.seed = seed
        self.rng = random.Random(seed)
        self.n_orders = orders
        self.days = days
        self.policy = service.policies.current(policy_id)
        self.currency = self.policy.currency
        self.start = datetime(2026, 3, 2, 0, 0, tzinfo=self.policy.zone)
        self.clock = self.start
        self.queue: list[_Item] = []
        self._seq = 0
        self.orders: dict[str, SimOrder] = {}
        self.cases: dict[str, SimCase] = {}
        self.accepted: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.refused_by_command: dict[str, Counter[str]] = defaultdict(Counter)
        self.worker = Counter[str]()
        self.placed = 0
        self._probe: Connection | None = None
        self._tracking = 0
        rng = self.rng
        n_sellers = max(4, min(400, orders // 50))
        self.sellers = [Seller(f"s{i:04d}", HABITS[i % 4] if i < 4 else
                               rng.choices(HABITS, HABIT_WEIGHTS)[0])
                        for i in range(1, n_sellers + 1)]
        self.seller_weights = [1 / (i + 1) ** 0.8 for i in range(n_sellers)]  # a few big shops
        n_buyers = max(10, orders * 2 // 5)
        self.buyers = [Buyer(f"b{i:05d}", rng.uniform(0.25, 0.85), rng.uniform(0.6, 0.98),
                             rng.random()) for i in range(1, n_buyers + 1)]
        self.catalog = self._catalog(max(20, min(600, orders // 15)))

    # -- queue and clock --------------------------------------------------------------------
    def schedule(self, at: datetime, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self.queue, (at, self._seq, fn, args))

    def later(self, lo_h: float, hi_h: float, fn: Callable[..., None], *args: Any,
              base: datetime | None = None) -> None:
        """Schedule `fn` between lo_h and hi_h hours after `base` (default: now)."""
        delay = timedelta(seconds=round(self.rng.uniform(lo_h, hi_h) * 3600))
        self.schedule((base or self.clock) + delay, fn, *args)

    def register_jurors(self) -> None:
        """Accounts the public jury is drawn from (IN-3): most of them eligible."""
        rng = self.rng
        for i in range(1, max(40, self.policy.jury.panel_size * 3) + 1):
            self.do(c.RegisterUser(
                actor=SYSTEM, user_id=f"j{i:04d}",
                registered_at=self.start - timedelta(days=rng.randint(20, 2000)),
                verified=rng.random() < 0.9, standing="good" if rng.random() < 0.92 else "poor"))

    def run(self, tick: Callable[[Simulation], None] | None = None) -> None:
        self.register_jurors()
        for n in range(1, self.n_orders + 1):
            at = self.start + timedelta(seconds=self.rng.randrange(self.days * 86400))
            self.schedule(at, self.place_order, n)
        steps = 0
        while self.queue:
            at, _seq, fn, args = heapq.heappop(self.queue)
            self.advance(at)
            self.clock = max(self.clock, at)
            fn(*args)
            steps += 1
            if tick is not None and steps % 250 == 0:
                tick(self)
        self.advance(None)  # fire what is still due (auto-confirm, last timeouts)
        if tick is not None:
            tick(self)

    def advance(self, until: datetime | None) -> None:
        """The real worker, due time after due time, up to `until` (None: until idle)."""
        while True:
            due = self.next_due()
            if due is None or (until is not None and due > until):
                return
            at = max(due, self.clock)  # never backwards: a revived timer fires now
            stats = run_due(self.service, at)
            self.clock = at
            self.worker["case_timeouts"] += stats.cases
            self.worker["order_timeouts"] += stats.orders
            self.worker["conflicts"] += stats.conflicts
            # items due at the same instant react in id order, whatever order the database
            # claimed them in (ties in ORDER BY deadline differ between SQLite and PostgreSQL)
            self.react(sorted(stats.events, key=lambda e: (e.aggregate, e.aggregate_id)))
            if not stats.events and not stats.conflicts:
                return  # nothing fired although something looked due: never spin

    def next_due(self) -> datetime | None:
        """`Repository.next_due` on one long-lived connection: asked before every step, so
        no pool checkout each time; the read transaction ends at once (never holds a lock)."""
        if self._probe is None:
            self._probe = self.service.engine.connect()
        try:
            return Repository(self._probe).next_due()
        finally:
            self._probe.rollback()

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def do(self, cmd: c.Command) -> c.Result | None:
        """Send one command at the current simulated time; a refusal is counted, not raised."""
        name = type(cmd).__name__
        try:
            result = self.service.handle(cmd, self.clock)
        except AftersalesError as exc:
            self.refused[exc.code] += 1
            self.refused_by_command[name][exc.code] += 1
            return None
        self.accepted[name] += 1
        self.react(result.events)
        return result

    def react(self, events: list[c.Published]) -> None:
        """Parties see what happened (their own action or a timeout) and plan what to do.
        Order events first: a case reaction looks at the order's new status."""
        for ev in events:
            status = ev.data.get("status")
            order = self.orders.get(ev.aggregate_id) if ev.aggregate == "order" else None
            if order is not None and status is not None:
                order.status = str(status)
        for ev in events:
            if ev.aggregate != "case":
                continue
            status = ev.data.get("status")
            case = self.cases.get(ev.aggregate_id)
            if case is None:
                continue
            if "amount" in ev.data and isinstance(ev.data["amount"], dict):
                case.amount = int(ev.data["amount"]["$money"])
            if "jury_panel" in ev.data:
                case.panel = tuple(ev.data["jury_panel"])
            if status is not None:
                before, case.status = case.status, str(status)
                if before == case.status and case.status in PLATFORM_STATUSES:
                    continue  # evidence or a vote: the platform's plan for this step stands
                self.on_case_status(case, CaseStatus(str(status)))

    # -- the market -------------------------------------------------------------------------
    def _catalog(self, size: int) -> list[tuple[str, Category, int]]:
        out = []
        weights = [cat.weight for cat in CATEGORIES]
        for i in range(1, size + 1):
            cat = self.rng.choices(CATEGORIES, weights)[0]
            lo, hi = cat.price
            price = round(math.exp(self.rng.uniform(math.log(lo), math.log(hi))), 0) - 0.1
            out.append((f"{cat.name}-{i:04d}", cat, max(100, round(price * 100))))
        return out

    def money(self, minor: int) -> Money:
        return Money(minor, self.currency)

    def buyer_actor(self, order: SimOrder) -> Actor:
        return Actor(Role.BUYER, order.buyer.id)

    def seller_actor(self, order: SimOrder) -> Actor:
        return Actor(Role.SELLER, order.seller.id)

    def next_tracking(self, carrier: str) -> str:
        self._tracking += 1
        return f"{carrier}{self._tracking:09d}"

    def place_order(self, n: int) -> None:
        rng = self.rng
        seller = rng.choices(self.sellers, self.seller_weights)[0]
        buyer = rng.choice(self.buyers)
        lines: list[LineSpec] = []
        for _ in range(rng.choices((1, 2, 3), (70, 22, 8))[0]):
            sku, cat, price = rng.choice(self.catalog)
            if any(ln.sku == sku for ln in lines):
                continue
            qty = rng.choices((1, 2, 3), (80, 15, 5))[0]
            discount = rng.choice((0, 0, 0, 5, 10))  # percent off at checkout
            paid = price * qty * (100 - discount) // 100
            lines.append(LineSpec(sku=sku, qty=qty, unit_price=self.money(price),
                                  paid=self.money(paid), no_reason_7d=cat.no_reason_7d,
                                  category=cat.name, warranty_days=cat.warranty_days,
                                  warranty_kind=cat.warranty_kind))
        mode = rng.choices((ShippingMode.IN_STOCK, ShippingMode.PRESALE, ShippingMode.CUSTOM),
                           (88, 8, 4))[0]
        order = SimOrder(n, buyer, seller, mode, tuple(lines), rng.choice(CITIES))
        ship_by = None
        if mode is not ShippingMode.IN_STOCK:
            ship_by = self.clock + timedelta(days=rng.randint(3, 15))
        if rng.random() < CASE_RATE:
            reason = rng.choices(list(REASONS), [w for w, _ in REASONS.values()])[0]
            types, weights = zip(*REASONS[reason][1], strict=True)
            case_type = rng.choices(types, weights)[0]
            warranty = any(ln.warranty_days for ln in lines)
            if reason is Reason.QUALITY and warranty and rng.random() < 0.5:
                case_type = CaseType.REPAIR  # AS-7: under warranty, repair is the usual ask
            elif case_type is CaseType.REPAIR and not warranty:
                case_type = CaseType.EXCHANGE
            after = (reason not in (*BEFORE_SHIPMENT, Reason.NOT_RECEIVED, Reason.NO_REASON_7D)
                     and rng.random() < (0.6 if case_type is CaseType.REPAIR else 0.2))
            order.plan = CasePlan(reason, case_type, after)
            order.fate = {Reason.NOT_SHIPPED: "never_ship", Reason.OUT_OF_STOCK: "out_of_stock",
                          Reason.NOT_RECEIVED: "lost"}.get(reason, "normal")
        result = self.do(c.PlaceOrder(actor=self.buyer_actor(order), seller_id=seller.id,
                                      mode=mode, lines=order.lines, ship_by=ship_by,
                                      ship_to_city=order.city))
        self.placed += 1
        if result is None or result.order_id is None:
            return
        order.id = result.order_id
        self.orders[order.id] = order
        if order.fate == "never_ship":  # the seller never ships: the buyer asks for the money
            self.later(50, 120, self.open_case, order)
        elif order.fate == "out_of_stock":  # the seller says it is out of stock (OS-1)
            self.later(3, 30, self.open_case, order)
        else:
            self.schedule_shipment(order, ship_by)

    def schedule_shipment(self, order: SimOrder, ship_by: datetime | None) -> None:
        habit = order.seller.habit
        if ship_by is not None:  # pre-sale / custom: ships close to the promised date
            self.later(-60, -2, self.ship, order, base=ship_by)
        elif habit == "prompt":
            self.later(0.5, 20, self.ship, order)
        elif habit == "slow":
            self.later(18, 70, self.ship, order)
        else:
            self.later(3, 40, self.ship, order)

    def ship(self, order: SimOrder) -> None:
        carrier = self.rng.choice(CARRIERS)
        order.tracking = self.next_tracking(carrier)
        if self.do(c.Ship(actor=self.seller_actor(order), order_id=order.id, carrier=carrier,
                          tracking=order.tracking, weight_g=self.rng.randint(100, 8000))):
            order.shipped_at = self.clock
            self.later(1, 14, self.scan, order, ScanKind.PICKED_UP)

    def scan(self, order: SimOrder, kind: ScanKind) -> None:
        rng = self.rng
        city = order.city if kind in (ScanKind.DELIVERED, ScanKind.SIGNED) else None
        if self.do(c.RecordScan(actor=SYSTEM, tracking=order.tracking, event=kind, city=city)) \
                is None:
            return
        if kind is ScanKind.PICKED_UP:
            if order.fate == "lost":  # stalls in transit, then the carrier reports it lost
                if rng.random() < 0.5:
                    self.later(48, 130, self.scan, order, ScanKind.LOST)
                self.later(110, 200, self.open_case, order)  # before auto-confirm (10 days)
            else:
                delivered = ScanKind.SIGNED if rng.random() < 0.3 else ScanKind.DELIVERED
                self.later(20, 100, self.scan, order, delivered)
        elif kind in (ScanKind.DELIVERED, ScanKind.SIGNED):
            self.after_delivery(order)

    def after_delivery(self, order: SimOrder) -> None:
        plan = order.plan
        if plan is None:
            if self.rng.random() < order.buyer.confirms:
                self.later(1, 120, self.confirm_receipt, order)
            return  # else the worker auto-confirms 10 days after shipment
        if plan.after_completion:  # confirmed first; the problem shows up later (AS-4, AS-7)
            self.later(1, 48, self.confirm_receipt, order)
            self.later(60, 480 if plan.type is CaseType.REPAIR else 400, self.open_case, order)
        elif plan.reason is Reason.NO_REASON_7D:
            self.later(2, 170, self.open_case, order)  # 7 days from the day after signing
        else:
            self.later(1, 110, self.open_case, order)

    def confirm_receipt(self, order: SimOrder) -> None:
        self.do(c.ConfirmReceipt(actor=self.buyer_actor(order), order_id=order.id))

    def open_case(self, order: SimOrder) -> None:
        plan = order.plan
        assert plan is not None
        rng = self.rng
        received = None
        if plan.reason in (Reason.NOT_RECEIVED, Reason.EMPTY_PARCEL, *BEFORE_SHIPMENT):
            received = False
        lines: tuple[tuple[int, int], ...] | None = None
        if len(order.lines) > 1 and rng.random() < 0.5:
            no = rng.randrange(len(order.lines))
            lines = ((no + 1, rng.randint(1, order.lines[no].qty)),)
        chosen = lines or tuple((i + 1, ln.qty) for i, ln in enumerate(order.lines))
        value = sum(_paid(order.lines[no - 1]) * q // order.lines[no - 1].qty for no, q in chosen)
        amount = value
        if plan.type is CaseType.REFUND_ONLY and received is None and plan.reason in (
                Reason.SHORT_SHIPMENT, Reason.NOT_AS_DESCRIBED, Reason.QUALITY,
                Reason.DAMAGED_IN_TRANSIT):
            amount = max(100, value * rng.randint(15, 70) // 100)  # keeps the goods: part back
            amount = min(amount, value)
        description = f"{plan.reason.value.replace('_', ' ')} ({plan.type.value})"
        result = self.do(c.OpenCase(actor=self.buyer_actor(order), order_id=order.id,
                                    type=plan.type, reason=plan.reason, received=received,
                                    lines=lines, amount=self.money(amount) if amount != value
                                    else None, description=description))
        if result is None or result.case_id is None:
            return
        case = SimCase(result.case_id, order, plan.type, plan.reason, amount, self.clock)
        self.cases[case.id] = case
        self.react([ev for ev in result.events if ev.aggregate == "case"])

    # -- after-sales behaviour --------------------------------------------------------------
    def on_case_status(self, case: SimCase, status: CaseStatus) -> None:
        rng = self.rng
        habit = case.order.seller.habit
        buyer = case.order.buyer
        if status is CaseStatus.AWAITING_SELLER:
            self.seller_answers(case, habit)
            if rng.random() < 0.04:  # sorted out in chat
                self.later(1, 40, self.case_action, case, c.Withdraw, "buyer")
        elif status is CaseStatus.OFFER_PENDING:
            roll = rng.random()
            if roll < 0.55:
                self.later(1, 60, self.case_action, case, c.AcceptOffer, "buyer")
            elif roll < 0.85:
                self.later(1, 60, self.case_action, case, c.DeclineOffer, "buyer")
            # else the buyer ignores the offer: the case closes without refund
        elif status is CaseStatus.REJECTED:
            roll = rng.random() * (0.6 + buyer.persistence * 0.6)
            if roll < 0.12:
                self.later(2, 72, self.case_action, case, c.Withdraw, "buyer")
            elif roll < 0.4:
                pass  # gives up: the case closes as rejected after the window
            elif case.resubmits < 2 and roll < 0.8:
                self.later(2, 150, self.resubmit, case)
            else:
                self.later(2, 150, self.case_action, case, c.Escalate, "buyer")
        elif status is CaseStatus.AWAITING_RETURN:
            roll = rng.random()
            if roll < 0.04:
                self.later(2, 72, self.case_action, case, c.Withdraw, "buyer")
            elif roll < buyer.diligence:
                self.later(3, 150, self.ship_return, case)
            elif roll < buyer.diligence + (1 - buyer.diligence) / 2:
                self.later(170, 290, self.ship_return, case)  # too late (RF-4)
            # else never ships it back
        elif status is CaseStatus.RETURN_SHIPPED:
            self.seller_receives_return(case, habit)
        elif status is CaseStatus.AWAITING_REPLACEMENT:
            lo_hi = {"prompt": (4, 72), "slow": (60, 220), "refusing": (48, 190)}.get(habit)
            if lo_hi is not None and (habit != "slow" or rng.random() < 0.85):
                self.later(*lo_hi, self.ship_replacement, case)
            elif habit == "silent" and rng.random() < 0.2:
                self.later(100, 260, self.ship_replacement, case)
        elif status is CaseStatus.REPLACEMENT_SHIPPED:
            if rng.random() < buyer.confirms + 0.15:
                self.later(24, 150, self.case_action, case, c.ConfirmReplacement, "buyer")
        elif status is CaseStatus.IN_INTERVENTION:
            if rng.random() < 0.05:
                self.later(24, 240, self.case_action, case, c.Withdraw, "buyer")
            if case.proof_requests == 0 and not case.panel and rng.random() < 0.8:
                self.later(1, 12, self.evidence, case, "buyer")  # photos for the platform
            self.later(4, 60, self.staff_review, case)
        elif status is CaseStatus.AWAITING_PROOF:
            self.proof_answer(case, habit)
        elif status is CaseStatus.JURY_VOTING:
            favour = self.buyer_favoured(case)
            window_h = self.policy.jury.vote_window.total_seconds() / 3600
            for juror in case.panel:
                if rng.random() < 0.65:  # the rest never vote
                    side = "buyer" if rng.random() < favour else "seller"
                    self.later(1, window_h + 6, self.vote, case, juror, side)
        elif status is CaseStatus.CLOSED:  # receipt: by hand, or auto-confirm resumes
            order = case.order
            auto = order.shipped_at + self.policy.deadlines.auto_confirm_receipt \
                if order.shipped_at else self.clock
            left_h = (auto - self.clock).total_seconds() / 3600
            if order.status in ("shipped", "delivered") and left_h > 3 \
                    and rng.random() < buyer.confirms:
                self.later(2, min(72, left_h - 1), self.confirm_receipt, order)

    def seller_answers(self, case: SimCase, habit: str) -> None:
        rng = self.rng
        if habit == "silent" and rng.random() < 0.85:
            return  # the timeout answers for the seller (RF-1)
        delay = {"prompt": (0.5, 14), "slow": (20, 130), "silent": (60, 200),
                 "refusing": (1, 36)}[habit]
        odds = {"prompt": (0.80, 0.08), "slow": (0.65, 0.15), "silent": (0.7, 0.1),
                "refusing": (0.15, 0.25)}[habit]  # (agree, offer); the rest rejects
        if case.reason in (*BEFORE_SHIPMENT, Reason.NOT_RECEIVED, Reason.EMPTY_PARCEL):
            odds = (min(1.0, odds[0] + 0.25), odds[1] / 2)  # hard to argue with
        if case.resubmits:
            odds = (min(1.0, odds[0] + 0.2), odds[1])
        roll = rng.random()
        offerable = case.type in (CaseType.REFUND_ONLY, CaseType.RETURN_REFUND)
        if roll < odds[0]:
            self.later(*delay, self.agree, case)
        elif roll < odds[0] + odds[1] and offerable and case.amount > 200:
            share = rng.randint(30, 70)
            self.later(*delay, self.offer, case, share)
        else:
            self.later(*delay, self.reject, case)

    def seller_receives_return(self, case: SimCase, habit: str) -> None:
        rng = self.rng
        if habit == "prompt":
            self.later(40, 130, self.case_action, case, c.ConfirmReturn, "seller")
        elif habit == "slow":
            self.later(100, 320, self.case_action, case, c.ConfirmReturn, "seller")
        elif habit == "refusing":
            if rng.random() < 0.25:  # asks the platform to step in once allowed (IN-2)
                opens = case.opened_at + self.policy.deadlines.seller_escalation_after
                self.later(1, 30, self.case_action, case, c.Escalate, "seller",
                           base=max(self.clock, opens))
            else:
                self.later(90, 230, self.case_action, case, c.ConfirmReturn, "seller")
        elif rng.random() < 0.1:  # silent: mostly the RF-5 timeout refunds
            self.later(150, 300, self.case_action, case, c.ConfirmReturn, "seller")

    # -- the platform (IN-3..IN-9) ----------------------------------------------------------
    def buyer_favoured(self, case: SimCase) -> float:
        """How likely the platform finds for the buyer: seller-fault reasons mostly win, a
        refusing seller loses more often."""
        fault = case.reason.value in self.policy.after_sales.seller_fault_reasons
        return min(0.95, (0.7 if fault else 0.25)
                   + (0.1 if case.order.seller.habit == "refusing" else 0.0))

    def staff_review(self, case: SimCase) -> None:
        if case.status != CaseStatus.IN_INTERVENTION.value:
            return  # withdrawn, or already moved on
        rng = self.rng
        staff = Actor(Role.STAFF, f"x{1 + case.order.n % 5}")
        if case.proof_requests == 0 and rng.random() < 0.45:  # IN-4: whoever claims proves
            fault = case.reason.value in self.policy.after_sales.seller_fault_reasons
            case.proof_from = "seller" if fault else "buyer"
            case.proof_requests += 1
            self.do(c.RequestProof(actor=staff, case_id=case.id, from_party=case.proof_from))
        elif not case.panel and rng.random() < 0.3:  # IN-3: a public jury
            self.do(c.SendToJury(actor=staff, case_id=case.id, seed=f"demo-{case.id}"))
        elif rng.random() < self.buyer_favoured(case):
            if rng.random() < 0.2 and case.amount > 200:
                self.do(c.Rule(actor=staff, case_id=case.id, outcome="partial_refund",
                               amount=self.money(case.amount // 2)))
            else:
                self.do(c.Rule(actor=staff, case_id=case.id, outcome="refund"))
        else:
            self.do(c.Rule(actor=staff, case_id=case.id, outcome="reject",
                           subjective=case.reason is Reason.NOT_AS_DESCRIBED))

    def proof_answer(self, case: SimCase, habit: str) -> None:
        """The asked party answers, late or never depending on who it is (IN-4)."""
        rng = self.rng
        odds = ({"prompt": 0.85, "slow": 0.55, "silent": 0.15, "refusing": 0.7}[habit]
                if case.proof_from == "seller" else case.order.buyer.diligence)
        if rng.random() < odds:
            window_h = self.policy.intervention.proof_window_default.total_seconds() / 3600
            self.later(1, window_h * 1.1, self.evidence, case, case.proof_from or "buyer")

    def evidence(self, case: SimCase, who: str) -> None:
        kind = self.rng.choice(("photo", "chat", "waybill") if who == "buyer"
                               else ("inspection", "chat", "listing", "measurement"))
        actor = self.buyer_actor(case.order) if who == "buyer" else self.seller_actor(case.order)
        self.do(c.SubmitEvidence(actor=actor, case_id=case.id, kind=kind,
                                 text=f"{kind} from the {who}"))

    def vote(self, case: SimCase, juror: str, side: str) -> None:
        self.do(c.Vote(actor=Actor(Role.JUROR, juror), case_id=case.id, side=side,
                       reason="seen the evidence"))

    def case_action(self, case: SimCase, cls: type[c.CaseCommand], who: str) -> None:
        actor = self.buyer_actor(case.order) if who == "buyer" else self.seller_actor(case.order)
        self.do(cls(actor=actor, case_id=case.id))

    def agree(self, case: SimCase) -> None:
        self.do(c.Agree(actor=self.seller_actor(case.order), case_id=case.id,
                        return_address=f"{case.order.seller.id} warehouse"))

    def reject(self, case: SimCase) -> None:
        self.do(c.Reject(actor=self.seller_actor(case.order), case_id=case.id,
                         reason=self.rng.choice(REJECT_REASONS)))

    def offer(self, case: SimCase, share: int) -> None:
        amount = max(100, case.amount * share // 100)
        if amount >= case.amount:
            amount = case.amount - 1
        self.do(c.MakeOffer(actor=self.seller_actor(case.order), case_id=case.id,
                            amount=self.money(amount)))

    def resubmit(self, case: SimCase) -> None:
        amount = None
        if case.type is CaseType.REFUND_ONLY and self.rng.random() < 0.5:
            amount = self.money(max(100, case.amount * self.rng.randint(60, 90) // 100))
        case.resubmits += 1
        self.do(c.Resubmit(actor=self.buyer_actor(case.order), case_id=case.id, amount=amount,
                           description="more photos attached"))

    def ship_return(self, case: SimCase) -> None:
        carrier = self.rng.choice(CARRIERS)
        method = "surface" if self.rng.random() < 0.08 else "express"
        self.do(c.ShipReturn(actor=self.buyer_actor(case.order), case_id=case.id,
                             carrier=carrier, tracking=self.next_tracking(carrier),
                             method=method))

    def ship_replacement(self, case: SimCase) -> None:
        carrier = self.rng.choice(CARRIERS)
        self.do(c.ShipReplacement(actor=self.seller_actor(case.order), case_id=case.id,
                                  carrier=carrier, tracking=self.next_tracking(carrier)))


def _paid(line: LineSpec) -> int:
    return (line.paid or line.unit_price.times(line.qty)).minor


# -- the database -----------------------------------------------------------------------------
def fresh_database(url: str) -> str:
    """Empty the demo database (see the module docstring); returns the URL to use."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(parsed.database + suffix).unlink(missing_ok=True)
        return url
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            t.metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()
    return url


# -- the summary, from the database -----------------------------------------------------------
def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(p * len(ordered)) - 1)], 1)


def _counts(engine: Engine, column: Any) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(column, func.count()).group_by(column).order_by(column))
        return {str(k): int(n) for k, n in rows}


def summarize(sim: Simulation) -> dict[str, Any]:
    engine = sim.service.engine
    cur = sim.currency
    with engine.connect() as conn:
        n_orders = conn.execute(select(func.count()).select_from(t.orders)).scalar_one()
        money = dict(conn.execute(select(t.ledger.c.kind, func.sum(t.ledger.c.amount))
                                  .group_by(t.ledger.c.kind)).all())
        case_rows = conn.execute(select(
            t.cases.c.id, t.cases.c.seller_id, t.cases.c.opened_at, t.cases.c.outcome,
            t.cases.c.decided_by, t.cases.c.refunded).order_by(t.cases.c.id)).all()
        first_seller = dict(conn.execute(
            select(t.case_events.c.case_id, func.min(t.case_events.c.at))
            .where(t.case_events.c.actor.like("seller:%"))
            .group_by(t.case_events.c.case_id)).all())
        escalated = dict(conn.execute(select(t.cases.c.escalated_by, func.count())
                                      .where(t.cases.c.escalated_by.is_not(None))
                                      .group_by(t.cases.c.escalated_by)).all())
        juries = conn.execute(select(func.count(func.distinct(t.jury_seats.c.case_id)))).scalar()
        votes = conn.execute(select(func.count()).select_from(t.jury_seats)
                             .where(t.jury_seats.c.voted_at.is_not(None))).scalar()
        proofs = conn.execute(select(func.coalesce(func.sum(t.cases.c.proof_requests), 0))
                              ).scalar()
        evidence = conn.execute(select(func.count()).select_from(t.evidence)).scalar()
        points = conn.execute(select(func.coalesce(func.sum(t.ledger.c.points), 0))).scalar()
        queue = conn.execute(select(func.count()).select_from(t.cases).where(
            t.cases.c.status.in_(sorted(PLATFORM_STATUSES)))).scalar()
        n_case_events = conn.execute(select(func.count()).select_from(t.case_events)).scalar()
        n_order_events = conn.execute(select(func.count()).select_from(t.order_events)).scalar()
    habit_of = {s.id: s.habit for s in sim.sellers}
    orders_per_habit = Counter(o.seller.habit for o in sim.orders.values())
    per: dict[str, dict[str, Any]] = {h: {"hours": [], "outcomes": Counter(), "cases": 0,
                                          "timeout": 0, "refunded": 0} for h in HABITS}
    decided = Counter(str(r.decided_by) for r in case_rows if r.decided_by)
    for r in case_rows:
        p = per[habit_of.get(r.seller_id, "slow")]
        p["cases"] += 1
        p["outcomes"][r.outcome] += 1
        p["refunded"] += int(r.refunded)
        p["timeout"] += r.decided_by == "timeout"
        if r.id in first_seller:
            p["hours"].append((first_seller[r.id] - r.opened_at).total_seconds() / 3600)
    opened = len(case_rows)
    closed = sum(1 for r in case_rows if r.outcome != Outcome.OPEN.value)
    timeouts = decided.get("timeout", 0)
    paid = int(money.get("payment") or 0)
    refunded = int(money.get("refund") or 0)
    return {
        "seed": sim.seed, "policy": {"id": sim.policy.id, "version": sim.policy.version},
        "durability": durability(engine),
        "days": sim.days,
        "simulated": {"start": sim.start.isoformat(),
                      "end": sim.clock.astimezone(sim.policy.zone).isoformat()},
        "orders": int(n_orders),
        "orders_by_status": _counts(engine, t.orders.c.status),
        "sellers": dict(sorted(Counter(s.habit for s in sim.sellers).items())),
        "buyers": len({o.buyer.id for o in sim.orders.values()}),
        "cases_opened": opened,
        "case_rate": round(opened / n_orders, 4) if n_orders else 0.0,
        "cases_closed": closed,
        "cases_open": opened - closed,
        "cases_by_type": _counts(engine, t.cases.c.type),
        "cases_by_reason": _counts(engine, t.cases.c.reason),
        "cases_by_outcome": _counts(engine, t.cases.c.outcome),
        "cases_by_status": _counts(engine, t.cases.c.status),
        "decided_by": dict(sorted(decided.items())),
        "decided_by_timeout": timeouts,
        "decided_by_timeout_share": round(timeouts / closed, 4) if closed else 0.0,
        "currency": cur,
        "paid": str(Money(paid, cur)),
        "refunded": str(Money(refunded, cur)),
        "refunded_share": round(refunded / paid, 4) if paid else 0.0,
        "by_seller_habit": {
            h: {"sellers": sum(1 for s in sim.sellers if s.habit == h),
                "orders": orders_per_habit.get(h, 0), "cases": p["cases"],
                "seller_acted": len(p["hours"]),
                "response_hours_median": _percentile(p["hours"], 0.5),
                "response_hours_p90": _percentile(p["hours"], 0.9),
                "decided_by_timeout": p["timeout"],
                "refunded": str(Money(p["refunded"], cur)),
                "outcomes": dict(sorted(p["outcomes"].items()))}
            for h, p in per.items()},
        "actions": {"accepted": sum(sim.accepted.values()),
                    "refused": sum(sim.refused.values()),
                    "by_command": dict(sorted(sim.accepted.items())),
                    "refused_by_command": {k: dict(sorted(v.items())) for k, v in
                                           sorted(sim.refused_by_command.items())}},
        "refused_by_code": dict(sorted(sim.refused.items())),
        "worker": dict(sorted(sim.worker.items())),
        "events": {"case": int(n_case_events or 0), "order": int(n_order_events or 0)},
        "intervention": {  # IN-1..IN-9
            "escalated": {str(k): int(v) for k, v in sorted(escalated.items())},
            "decided_by_staff": decided.get("staff", 0),
            "decided_by_jury": decided.get("jury", 0),
            "juries": int(juries or 0), "votes": int(votes or 0),
            "proof_requests": int(proofs or 0), "evidence_items": int(evidence or 0),
            "still_with_the_platform": int(queue or 0),
            "penalty_points": int(points or 0)},
        "shipping": {  # SH-2..SH-9
            "violations": _counts(engine, t.violations.c.name),
            "compensation": str(Money(int(money.get("compensation") or 0), cur)),
            "coupons": str(Money(int(money.get("coupon") or 0), cur))},
    }


# -- entry point ------------------------------------------------------------------------------
def run_demo(*, orders: int = 10_000, days: int = 60, seed: int = 7, db: str | None = None,
             as_json: bool = False, policy: str = "taobao") -> dict[str, Any]:
    """Run the simulation on a fresh database, print the summary, return it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if orders < 1 or days < 1:
        raise InvalidInput(f"--orders and --days must be at least 1 (got {orders}, {days})")
    url = fresh_database(db or DEMO_URL)
    shown = make_url(url).render_as_string(hide_password=True)
    if not as_json and not url.startswith("sqlite"):
        sys.stderr.write(f"demo: dropped and recreated the aftersales tables at {shown}\n")
    service = bootstrap(url, policy=policy, ids=counter_ids(),
                        sqlite_synchronous=DEMO_SQLITE_SYNCHRONOUS)
    try:
        sim = Simulation(service, orders=orders, days=days, seed=seed, policy_id=policy)
        err = Console(stderr=True)
        show = not as_json and sys.stderr.isatty()
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TextColumn("orders"), TimeElapsedColumn(),
                      console=err, disable=not show, transient=False) as progress:
            task = progress.add_task("day 0", total=orders)

            def tick(s: Simulation) -> None:
                day = (s.clock - s.start).days
                what = f"day {day}" if s.placed < s.n_orders else f"settling, day {day}"
                progress.update(task, completed=s.placed, description=what)

            try:
                sim.run(tick)
            finally:
                sim.close()
        summary = summarize(sim)
    finally:
        service.engine.dispose()
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    else:
        print_summary(summary, shown)
    return summary


def print_summary(s: dict[str, Any], url: str) -> None:
    from rich.columns import Columns
    from rich.console import Console
    from rich.table import Table

    out = Console()
    opened = s["cases_opened"] or 1
    head = Table(title=f"aftersales demo: seed {s['seed']}, policy {s['policy']['id']} "
                       f"{s['policy']['version']}", show_header=False)
    head.add_column(style="bold")
    head.add_column(justify="right")
    rows = [
        ("simulated", f"{s['simulated']['start'][:16]} .. {s['simulated']['end'][:16]}"),
        ("orders", f"{s['orders']:,} ({s['days']} days, {s['buyers']:,} buyers, "
                   f"{sum(s['sellers'].values())} sellers)"),
        ("cases opened", f"{s['cases_opened']:,} ({s['case_rate']:.1%} of orders)"),
        ("cases still open", f"{s['cases_open']:,} "
                             f"({s['intervention']['still_with_the_platform']:,} with the "
                             "platform)"),
        ("platform decisions (staff / jury)",
         f"{s['intervention']['decided_by_staff']:,} / {s['intervention']['decided_by_jury']:,}"
         f" ({s['intervention']['juries']:,} juries, {s['intervention']['votes']:,} votes, "
         f"{s['intervention']['proof_requests']:,} proof requests)"),
        ("penalty points", f"{s['intervention']['penalty_points']:,}"),
        ("shipping violations", ", ".join(f"{k} {v:,}" for k, v in
                                          s["shipping"]["violations"].items()) or "none"),
        ("compensation / coupons", f"{s['shipping']['compensation']} / "
                                   f"{s['shipping']['coupons']} {s['currency']}"),
        ("decided by timeout", f"{s['decided_by_timeout']:,} "
                               f"({s['decided_by_timeout_share']:.1%} of closed cases)"),
        ("paid", f"{s['paid']} {s['currency']}"),
        ("refunded", f"{s['refunded']} {s['currency']} ({s['refunded_share']:.1%} of paid)"),
        ("actions accepted / refused", f"{s['actions']['accepted']:,} / "
                                       f"{s['actions']['refused']:,}"),
        ("worker timeouts (cases / orders)", f"{s['worker'].get('case_timeouts', 0):,} / "
                                             f"{s['worker'].get('order_timeouts', 0):,}"),
        ("database", f"{url} ({s['durability']})"),
    ]
    for k, v in rows:
        head.add_row(k, v)
    out.print(head)

    def breakdown(title: str, counts: dict[str, int]) -> Table:
        table = Table(title=title)
        table.add_column(title.split(" by ")[-1])
        table.add_column("cases", justify="right")
        table.add_column("share", justify="right")
        for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(k, f"{n:,}", f"{n / opened:.1%}")
        return table

    out.print(Columns([breakdown("cases by type", s["cases_by_type"]),
                       breakdown("cases by outcome", s["cases_by_outcome"])]))
    out.print(breakdown("cases by reason", s["cases_by_reason"]))
    habits = Table(title="sellers by habit (response = case opened -> seller's first action)")
    for col in ("habit", "sellers", "orders", "cases", "seller acted", "median h", "p90 h",
                "by timeout", "refunded", "outcomes"):
        habits.add_column(col, justify="left" if col in ("habit", "outcomes") else "right")
    for habit, h in s["by_seller_habit"].items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(h["outcomes"].items(),
                                                           key=lambda kv: -kv[1]))
        med, p90 = h["response_hours_median"], h["response_hours_p90"]
        habits.add_row(habit, str(h["sellers"]), f"{h['orders']:,}", f"{h['cases']:,}",
                       f"{h['seller_acted']:,}", "-" if med is None else f"{med:.1f}",
                       "-" if p90 is None else f"{p90:.1f}", f"{h['decided_by_timeout']:,}",
                       h["refunded"], outcomes)
    out.print(habits)
    if s["refused_by_code"]:
        refused = Table(title="refused actions (expected in a simulation)")
        refused.add_column("error code")
        refused.add_column("count", justify="right")
        for k, n in sorted(s["refused_by_code"].items(), key=lambda kv: (-kv[1], kv[0])):
            refused.add_row(k, f"{n:,}")
        by_cmd = Table(title="refused by command")
        by_cmd.add_column("command")
        by_cmd.add_column("count", justify="right")
        by_cmd.add_column("codes")
        for k, codes in sorted(s["actions"]["refused_by_command"].items(),
                               key=lambda kv: (-sum(kv[1].values()), kv[0])):
            by_cmd.add_row(k, f"{sum(codes.values()):,}",
                           ", ".join(f"{c} {n}" for c, n in codes.items()))
        out.print(Columns([refused, by_cmd]))
