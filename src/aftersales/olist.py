"""`aftersales import olist DIR`: replay the Olist marketplace data set through the engine.

The Olist Brazilian E-Commerce data set (Kaggle `olistbr/brazilian-ecommerce`) records what
really happened to real orders: each item's seller ship-by deadline (`shipping_limit_date`), when
the carrier took the parcel, when the customer got it, and the customer's review. This module
turns those rows into the commands a marketplace would have sent (docs/real-data.md has the full
mapping and the reasons behind it) and plays them through the real service layer
(`Service.handle`), one command after another in time order, advancing the real deadline worker
(`worker.advance`) up to each command's time first, so every shipping rule fires when it would
have fired online. The summary is then read back from the database.

Mapping, in short:
- one engine order per (Olist order, seller): id = the Olist `order_id` when one seller sold
  every item (nearly always), else `order_id:<first 8 characters of seller_id>`; buyer =
  `customer_unique_id`; mode custom with ship_by = the earliest `shipping_limit_date` of its
  items (each line keeps its own limit for the per-line counts); ship_to_city = customer_city;
- lines = items grouped by (product_id, price, shipping_limit_date): sku = product_id,
  qty = the number of such items, unit_price = price (BRL), weight_g = product_weight_g;
- `order_delivered_carrier_date` = the tracking upload (Ship) AND the first pickup scan at the
  same instant; `order_delivered_customer_date` = a `delivered` scan in the customer's city;
- `order_estimated_delivery_date` is a promise, not a scan: it is not sent to the engine; the
  summary uses it only to compare review scores of orders delivered after it;
- `unavailable` orders: the seller declares every line out of stock at payment approval and
  nobody answers, so the pack's default (cancel, full refund) applies when the answer is due.
Times are naive local times in Brazil: America/Sao_Paulo is attached, then they become UTC.
Orders the importer cannot use are counted by reason, never dropped silently.
"""

from __future__ import annotations

import csv
import math
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from aftersales.bootstrap import bootstrap
from aftersales.domain.errors import AftersalesError, InvalidInput
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import SYSTEM, Actor, Role, ScanKind, ShippingMode
from aftersales.policy import loader
from aftersales.policy.model import Policy
from aftersales.scenario.runner import counter_ids
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from aftersales.service.worker import advance
from aftersales.store import tables as t
from aftersales.store.db import normalise_url

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
CURRENCY = "BRL"
OVERRIDES = {"currency": CURRENCY, "timezone": "America/Sao_Paulo"}
CARRIER = "olist"  # Olist does not name the carrier
FILES = {
    "orders": "olist_orders_dataset.csv",
    "items": "olist_order_items_dataset.csv",
    "customers": "olist_customers_dataset.csv",
    "products": "olist_products_dataset.csv",
    "reviews": "olist_order_reviews_dataset.csv",
}
KNOWN_STATUSES = frozenset({"created", "approved", "invoiced", "processing", "shipped",
                            "delivered", "unavailable", "canceled"})
# Why an Olist order is not loaded (each reason counts the orders and their item rows).
REASONS = {
    "missing_purchase_time": "no (or an unreadable) order_purchase_timestamp",
    "bad_timestamp": "an unreadable approval, carrier or delivery time",
    "unknown_status": "an order_status outside Olist's documented ones",
    "unknown_customer": "customer_id not in the customers file",
    "canceled": "canceled: the data has no cancellation time nor who cancelled, so the "
                "engine cannot tell a buyer's cancellation from a seller who never shipped",
    "canceled_no_items": "canceled before any item was recorded",
    "unavailable_no_items": "unavailable (out of stock) but no items: seller and products "
                            "unknown, nothing to declare out of stock",
    "no_items": "no item rows",
    "item_without_price": "an item without a usable price",
    "item_without_shipping_limit": "an item without a usable shipping_limit_date",
    "delivered_before_purchase": "customer delivery before the purchase",
    "carrier_before_purchase": "carrier pickup before the purchase (clock skew in the data)",
    "delivered_without_carrier_date": "delivered to the customer with no carrier date",
    "unavailable_but_shipped": "unavailable (out of stock) yet handed to the carrier",
    "shipping_limit_not_after_purchase": "a seller's earliest shipping_limit_date is not "
                                         "after the purchase",
    "item_without_order": "item rows whose order_id is not in the orders file",
}
# Event priorities at the same instant: the order exists before anything happens to it.
_PLACE, _DECLARE, _SHIP, _PICKUP, _DELIVER = range(5)


class OlistError(Exception):
    """The directory is not an Olist layout, or the import cannot start."""


# -- reading ----------------------------------------------------------------------------------
def _rows(directory: Path, key: str) -> Iterator[dict[str, str]]:
    path = directory / FILES[key]
    if not path.is_file():
        raise OlistError(f"{path} not found: DIR must hold the Olist CSV files "
                         f"({', '.join(FILES.values())})")
    # newline="" lets the csv module keep the newlines embedded in quoted review comments
    with path.open(newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh)


def _time(text: str | None) -> datetime | None:
    """A naive Olist time ('2018-01-18 14:48:30') as local Brazil time, in UTC. '' -> None;
    ValueError when unreadable."""
    if not text or not text.strip():
        return None
    naive = datetime.fromisoformat(text.strip())
    if naive.tzinfo is not None:
        raise ValueError(f"unexpected offset in {text!r}")
    return naive.replace(tzinfo=SAO_PAULO).astimezone(UTC)


def _money(text: str | None) -> Money | None:
    """'199.0' -> Money 199.00 BRL; None when missing, negative or finer than a centavo."""
    try:
        value = Decimal((text or "").strip())
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.01")):
        return None
    return Money.parse(f"{value:.2f}", CURRENCY)


def _weight(text: str | None) -> int:
    try:
        grams = float(text or "")
    except ValueError:
        return 0
    return round(grams) if math.isfinite(grams) and grams > 0 else 0


@dataclass(frozen=True)
class Item:
    product_id: str
    seller_id: str
    limit: datetime | None
    price: Money | None


@dataclass(frozen=True)
class RawOrder:
    order_id: str
    customer_id: str
    status: str
    times: dict[str, str]
    items: tuple[Item, ...]


@dataclass
class Line:
    sku: str
    qty: int
    price: Money
    limit: datetime
    weight_g: int
    category: str | None


@dataclass
class Planned:
    """One engine order: the part of an Olist order sold by one seller."""

    id: str
    olist_id: str
    seller_id: str
    buyer_id: str
    city: str | None
    placed_at: datetime
    lines: list[Line]
    carrier_at: datetime | None
    delivered_at: datetime | None
    declare_at: datetime | None  # unavailable: declared out of stock

    @property
    def ship_by(self) -> datetime:
        return min(ln.limit for ln in self.lines)

    @property
    def tracking(self) -> str:
        return "OL" + self.id.replace(":", "-")


@dataclass
class Skipped:
    orders: int = 0
    items: int = 0


@dataclass
class Dataset:
    orders_read: int = 0
    items_read: int = 0
    planned: list[Planned] = field(default_factory=list)
    skipped: dict[str, Skipped] = field(default_factory=lambda: defaultdict(Skipped))
    reviews: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    late_vs_estimate: dict[str, bool] = field(default_factory=dict)  # delivered after it?

    def skip(self, reason: str, items: int, orders: int = 1) -> None:
        assert reason in REASONS, reason
        self.skipped[reason].orders += orders
        self.skipped[reason].items += items


def read(directory: Path, limit: int | None = None) -> Dataset:
    """Read the Olist files and plan the engine orders; `limit`: only the first N rows of the
    orders file (the shared sample is in random order, so this is a random subset)."""
    if not directory.is_dir():
        raise OlistError(f"{directory} is not a directory")
    data = Dataset()
    raw: dict[str, dict[str, str]] = {}
    for row in _rows(directory, "orders"):
        if limit is not None and len(raw) >= limit:
            break
        raw[row["order_id"]] = row
    data.orders_read = len(raw)
    items: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
    orphans: Counter[str] = Counter()
    for row in _rows(directory, "items"):
        if row["order_id"] in raw:
            items[row["order_id"]].append((int(row["order_item_id"] or 0), row))
        elif limit is None:
            orphans[row["order_id"]] += 1
    if orphans:
        data.skip("item_without_order", sum(orphans.values()), len(orphans))
    customers_wanted = {r["customer_id"] for r in raw.values()}
    customers = {r["customer_id"]: r for r in _rows(directory, "customers")
                 if r["customer_id"] in customers_wanted}
    products_wanted = {r["product_id"] for rows in items.values() for _, r in rows}
    products = {r["product_id"]: r for r in _rows(directory, "products")
                if r["product_id"] in products_wanted}
    for row in _rows(directory, "reviews"):
        if row["order_id"] in raw:
            try:
                data.reviews[row["order_id"]].append(int(row["review_score"]))
            except ValueError:
                continue  # an unreadable score is no verdict
    for order_id, row in raw.items():
        its = [r for _, r in sorted(items.get(order_id, []), key=lambda p: p[0])]
        data.items_read += len(its)
        _plan(data, row, its, customers.get(row["customer_id"]), products)
    data.planned.sort(key=lambda p: (p.placed_at, p.id))
    return data


def _plan(data: Dataset, row: dict[str, str], items: list[dict[str, str]],
          customer: dict[str, str] | None, products: dict[str, dict[str, str]]) -> None:
    order_id, status, n = row["order_id"], (row["order_status"] or "").strip(), len(items)
    try:
        placed = _time(row["order_purchase_timestamp"])
    except ValueError:
        placed = None
    if placed is None:
        return data.skip("missing_purchase_time", n)
    try:
        approved, carrier, delivered, estimated = (
            _time(row[k]) for k in ("order_approved_at", "order_delivered_carrier_date",
                                    "order_delivered_customer_date",
                                    "order_estimated_delivery_date"))
    except ValueError:
        return data.skip("bad_timestamp", n)
    if status not in KNOWN_STATUSES:
        return data.skip("unknown_status", n)
    if customer is None:
        return data.skip("unknown_customer", n)
    if status == "canceled":
        return data.skip("canceled" if items else "canceled_no_items", n)
    if not items:
        return data.skip("unavailable_no_items" if status == "unavailable" else "no_items", 0)
    parsed: list[tuple[dict[str, str], Money | None, datetime | None]] = []
    for it in items:
        try:
            limit = _time(it["shipping_limit_date"])
        except ValueError:
            limit = None
        parsed.append((it, _money(it["price"]), limit))
    if any(price is None for _, price, _ in parsed):
        return data.skip("item_without_price", n)
    if any(limit is None for _, _, limit in parsed):
        return data.skip("item_without_shipping_limit", n)
    if delivered is not None and delivered < placed:
        return data.skip("delivered_before_purchase", n)
    if carrier is not None and carrier < placed:
        return data.skip("carrier_before_purchase", n)
    if delivered is not None and carrier is None:
        return data.skip("delivered_without_carrier_date", n)
    if status == "unavailable" and carrier is not None:
        return data.skip("unavailable_but_shipped", n)
    by_seller: dict[str, dict[tuple[str, Money, datetime], Line]] = defaultdict(dict)
    for it, price, limit in parsed:
        assert price is not None and limit is not None
        key = (it["product_id"], price, limit)
        group = by_seller[it["seller_id"]]
        if key in group:
            group[key].qty += 1
            continue
        product = products.get(it["product_id"], {})
        group[key] = Line(it["product_id"], 1, price, limit,
                          _weight(product.get("product_weight_g")),
                          (product.get("product_category_name") or "").strip()[:64] or None)
    planned = [
        Planned(id=order_id if len(by_seller) == 1 else f"{order_id}:{seller[:8]}",
                olist_id=order_id, seller_id=seller, buyer_id=customer["customer_unique_id"],
                city=(customer.get("customer_city") or "").strip() or None, placed_at=placed,
                lines=list(lines.values()), carrier_at=carrier, delivered_at=delivered,
                declare_at=(max(approved or placed, placed) if status == "unavailable" else None))
        for seller, lines in by_seller.items()]
    if any(p.ship_by <= placed for p in planned):
        return data.skip("shipping_limit_not_after_purchase", n)
    data.planned.extend(planned)
    if delivered is not None and estimated is not None:
        data.late_vs_estimate[order_id] = delivered > estimated
    return None


# -- the commands -----------------------------------------------------------------------------
@dataclass(order=True)
class Step:
    at: datetime
    priority: int
    seq: int
    order_id: str = field(compare=False)
    command: c.Command = field(compare=False)


def steps(planned: Iterable[Planned]) -> list[Step]:
    """Every command of every order, in the order they happened."""
    out: list[Step] = []
    seq = 0

    def add(at: datetime, priority: int, order_id: str, cmd: c.Command) -> None:
        nonlocal seq
        seq += 1
        out.append(Step(at, priority, seq, order_id, cmd))

    for p in planned:
        buyer, seller = Actor(Role.BUYER, p.buyer_id), Actor(Role.SELLER, p.seller_id)
        add(p.placed_at, _PLACE, p.id, c.PlaceOrder(
            actor=buyer, order_id=p.id, seller_id=p.seller_id, mode=ShippingMode.CUSTOM,
            ship_by=p.ship_by, ship_to_city=p.city,
            lines=tuple(LineSpec(ln.sku, ln.qty, ln.price, title=ln.category or ln.sku,
                                 category=ln.category, weight_g=ln.weight_g)
                        for ln in p.lines)))
        if p.declare_at is not None:
            add(p.declare_at, _DECLARE, p.id, c.DeclareOutOfStock(actor=seller, order_id=p.id))
        if p.carrier_at is None:
            continue
        add(p.carrier_at, _SHIP, p.id, c.Ship(actor=seller, order_id=p.id, carrier=CARRIER,
                                              tracking=p.tracking))
        pickup = c.RecordScan(actor=SYSTEM, tracking=p.tracking, event=ScanKind.PICKED_UP)
        if p.delivered_at is not None and p.delivered_at < p.carrier_at:
            # Delivered before the carrier took it: both scans reach the engine together (a
            # delivery scan cannot precede the tracking upload), each at its own time (SH-5).
            delivered = c.RecordScan(actor=SYSTEM, tracking=p.tracking,
                                     event=ScanKind.DELIVERED, city=p.city)
            add(p.carrier_at, _PICKUP, p.id, c.ImportScans(
                actor=SYSTEM, scans=(pickup, delivered), at=(p.carrier_at, p.delivered_at)))
            continue
        add(p.carrier_at, _PICKUP, p.id, pickup)
        if p.delivered_at is not None:
            add(p.delivered_at, _DELIVER, p.id, c.RecordScan(
                actor=SYSTEM, tracking=p.tracking, event=ScanKind.DELIVERED, city=p.city))
    out.sort()
    return out


def check_window(policy: Policy) -> timedelta:
    """The longest a shipping check (or the out-of-stock answer, or auto-confirm) can come
    after the last command: the run goes that far past it so every timeout fires."""
    d = policy.deadlines
    return max(d.pickup_in_stock, d.pickup_after_upload, d.no_scan_window, d.stall_time,
               d.out_of_stock_answer, d.auto_confirm_receipt)


@dataclass
class Run:
    first: datetime | None = None
    last: datetime | None = None
    until: datetime | None = None
    commands: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    refused_orders: dict[str, str] = field(default_factory=dict)  # order -> refusal code
    worker_orders: int = 0
    worker_cases: int = 0


def play(service: Service, plan: list[Step], policy: Policy,
         tick: Callable[[int], None] | None = None) -> Run:
    """Send every step at its time; the worker fires what is due before each one."""
    run = Run()
    if not plan:
        return run
    clock = run.first = plan[0].at
    for n, step in enumerate(plan, start=1):
        if step.order_id in run.refused_orders:
            continue  # never placed: nothing else can happen to it
        stats = advance(service, step.at, start=clock)
        run.worker_orders += stats.orders
        run.worker_cases += stats.cases
        clock = max(clock, step.at)
        try:
            service.handle(step.command, step.at)
            run.commands += 1
        except AftersalesError as exc:
            run.refused[f"{type(step.command).__name__}:{exc.code}"] += 1
            if isinstance(step.command, c.PlaceOrder):
                run.refused_orders[step.order_id] = exc.code
        if tick is not None and n % 500 == 0:
            tick(n)
    run.last = plan[-1].at
    run.until = run.last + check_window(policy)
    stats = advance(service, run.until, start=clock)
    run.worker_orders += stats.orders
    run.worker_cases += stats.cases
    if tick is not None:
        tick(len(plan))
    return run


# -- the summary, from the database -----------------------------------------------------------
def _olist_id(engine_id: str) -> str:
    return engine_id.split(":", 1)[0]


def _scores(ids: Iterable[str], reviews: dict[str, list[int]]) -> dict[str, Any]:
    """Mean review score and share of 1-2 star reviews over the reviews of these orders."""
    ids = set(ids)
    scores = [s for i in ids for s in reviews.get(i, ())]
    reviewed = sum(1 for i in ids if reviews.get(i))
    return {"orders": len(ids), "reviewed_orders": reviewed, "reviews": len(scores),
            "mean_score": round(sum(scores) / len(scores), 3) if scores else None,
            "low_share": (round(sum(1 for s in scores if s <= 2) / len(scores), 4)
                          if scores else None)}


def summarize(engine: Engine, data: Dataset, run: Run, plan_lines: dict[str, list[Line]],
              policy: Policy) -> dict[str, Any]:
    with engine.connect() as conn:
        orders = {r.id: r for r in conn.execute(select(
            t.orders.c.id, t.orders.c.status, t.orders.c.shipped_at))}
        lines_of: dict[str, int] = {
            str(k): int(n) for k, n in conn.execute(
                select(t.order_lines.c.order_id, func.count())
                .group_by(t.order_lines.c.order_id))}
        units = conn.execute(select(func.coalesce(func.sum(t.order_lines.c.qty), 0))).scalar()
        found = conn.execute(select(
            t.violations.c.order_id, t.violations.c.name, t.violations.c.detectors,
            t.violations.c.compensation, t.violations.c.currency, t.violations.c.paid_as)
            .order_by(t.violations.c.id)).all()
        ledger = dict(conn.execute(select(t.ledger.c.kind, func.sum(t.ledger.c.amount))
                                   .group_by(t.ledger.c.kind)).all())
    status = Counter(str(r.status) for r in orders.values())
    by_name: dict[str, set[str]] = defaultdict(set)
    detectors: dict[str, Counter[str]] = defaultdict(Counter)
    comp: dict[str, dict[str, Any]] = {}
    paid_as: Counter[str] = Counter()
    for v in found:
        by_name[v.name].add(v.order_id)
        detectors[v.name].update(v.detectors or ())
        entry = comp.setdefault(v.name, {"amount": 0, "orders": 0, "paid_as": None})
        if v.compensation:
            entry["amount"] += int(v.compensation)
            entry["orders"] += 1
            entry["paid_as"] = v.paid_as
            paid_as[str(v.paid_as)] += int(v.compensation)

    def line_count(name: str, ids: set[str]) -> int:
        if name != "ship_timeout":
            return sum(lines_of.get(i, 0) for i in ids)
        # a line counts when its own shipping_limit_date passed before the upload (or, never
        # uploaded, before the end of the run): the order's ship_by is its earliest line's
        missed = 0
        for i in ids:
            shipped = orders[i].shipped_at if i in orders else None
            cutoff = shipped if shipped is not None else run.until
            missed += sum(1 for ln in plan_lines.get(i, ()) if cutoff and cutoff >= ln.limit)
        return missed

    violations = {name: {"orders": len(ids), "lines": line_count(name, ids)}
                  for name, ids in sorted(by_name.items())}
    with_v = {_olist_id(i) for ids in by_name.values() for i in ids}
    loaded = {_olist_id(i) for i in orders}
    cur = policy.currency
    late = {i for i, is_late in data.late_vs_estimate.items() if is_late and i in loaded}
    on_time = {i for i, is_late in data.late_vs_estimate.items() if not is_late and i in loaded}
    skipped = {k: {"orders": v.orders, "items": v.items, "why": REASONS[k]}
               for k, v in sorted(data.skipped.items(), key=lambda kv: -kv[1].orders)}
    skipped.update({f"refused:{code}": {"orders": n, "items": 0,
                                        "why": "the engine refused to place it"}
                    for code, n in Counter(run.refused_orders.values()).items()})
    return {
        "policy": {"id": policy.id, "version": policy.version},
        "currency": cur,
        "timezone": policy.timezone,
        "olist_orders_read": data.orders_read,
        "olist_items_read": data.items_read,
        "olist_orders_loaded": len(loaded),
        "orders_loaded": len(orders),
        "split_orders": sum(1 for i in orders if ":" in i),
        "lines_loaded": int(sum(lines_of.values())),
        "items_loaded": int(units or 0),
        "skipped_orders": sum(v["orders"] for k, v in skipped.items()
                              if k != "item_without_order"),
        "skipped": skipped,
        "refused": dict(sorted(run.refused.items())),
        "orders_by_status": dict(sorted(status.items())),
        "violations": violations,
        "detectors": {k: dict(sorted(v.items())) for k, v in sorted(detectors.items())},
        "orders_with_violations": len({i for ids in by_name.values() for i in ids}),
        "olist_orders_with_violations": len(with_v),
        "compensation": {
            "currency": cur,
            "total": str(Money(sum(paid_as.values()), cur)),
            "by_paid_as": {k: str(Money(v, cur)) for k, v in sorted(paid_as.items())},
            "by_violation": {k: {**v, "amount": str(Money(v["amount"], cur))}
                             for k, v in sorted(comp.items())},
            "ledger": {k: str(Money(int(ledger.get(k) or 0), cur))
                       for k in ("compensation", "coupon")},
        },
        "refunded": str(Money(int(ledger.get("refund") or 0), cur)),
        "paid": str(Money(int(ledger.get("payment") or 0), cur)),
        "reviews": {
            "with_violations": _scores(with_v, data.reviews),
            "without_violations": _scores(loaded - with_v, data.reviews),
            "by_violation": {name: _scores({_olist_id(i) for i in ids}, data.reviews)
                             for name, ids in sorted(by_name.items())},
            # from the CSV, not an engine finding: the estimate is a promise, not a scan
            "delivered_after_estimate": _scores(late, data.reviews),
            "delivered_by_estimate": _scores(on_time, data.reviews),
        },
        "clock": {"first_command": run.first.isoformat() if run.first else None,
                  "last_command": run.last.isoformat() if run.last else None,
                  "advanced_to": run.until.isoformat() if run.until else None},
        "commands": run.commands,
        "worker": {"order_deadlines": run.worker_orders, "case_deadlines": run.worker_cases},
    }


# -- entry point ------------------------------------------------------------------------------
def run_import(directory: Path, *, db: str | None = None, policy: str = "taobao",
               limit: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Load DIR into the database (a temporary SQLite file when `db` is None) and summarise."""
    if policy not in loader.BUILTIN:
        raise InvalidInput(f"--policy must be one of {', '.join(loader.BUILTIN)}")
    if limit is not None and limit < 1:
        raise InvalidInput("--limit must be at least 1")
    started = time.monotonic()
    data = read(directory, limit)
    tmp = None
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="aftersales-olist-")
        url = f"sqlite:///{tmp.name}/olist.db"
    else:
        url = normalise_url(db)
    try:
        service = bootstrap(url, policy=policy, overrides={policy: OVERRIDES}, ids=counter_ids())
        try:
            with service.engine.connect() as conn:
                existing = conn.execute(select(func.count()).select_from(t.orders)).scalar()
            if existing:
                raise InvalidInput(f"the database already holds {existing} orders: import into "
                                   "an empty database (a new SQLite file or schema)")
            pack = service.policies.current(policy)
            plan = steps(data.planned)
            read_s = time.monotonic() - started
            run = play(service, plan, pack, _progress(len(plan)) if progress else None)
            summary = summarize(service.engine, data, run,
                                {p.id: p.lines for p in data.planned}, pack)
        finally:
            service.engine.dispose()
    finally:
        if tmp is not None:
            tmp.cleanup()
    summary["source"] = str(directory)
    summary["limit"] = limit
    summary["database"] = ("temporary SQLite file (deleted)" if tmp is not None else
                           make_url(url).render_as_string(hide_password=True))
    summary["seconds"] = {"read": round(read_s, 1),
                          "total": round(time.monotonic() - started, 1)}
    return summary


def _progress(total: int) -> Callable[[int], None]:
    import sys

    def tick(n: int) -> None:
        if sys.stderr.isatty():
            end = "\n" if n >= total else ""
            sys.stderr.write(f"\rolist: {n:,}/{total:,} commands{end}")
            sys.stderr.flush()
    return tick


def format_summary(s: dict[str, Any]) -> str:
    """The summary as text (`--json` prints the dict)."""
    out = [f"olist import ({s['source']}) under {s['policy']['id']} {s['policy']['version']}, "
           f"amounts in {s['currency']}, {s['database']}",
           f"  read: {s['olist_orders_read']:,} orders, {s['olist_items_read']:,} items"
           + (f" (--limit {s['limit']})" if s["limit"] else ""),
           f"  loaded: {s['olist_orders_loaded']:,} Olist orders as {s['orders_loaded']:,} "
           f"engine orders ({s['split_orders']} split by seller), {s['lines_loaded']:,} lines, "
           f"{s['items_loaded']:,} items",
           f"  skipped: {s['skipped_orders']:,} orders"]
    for reason, v in s["skipped"].items():
        out.append(f"    {reason:<36} {v['orders']:>6,} orders {v['items']:>6,} items  "
                   f"({v['why']})")
    if s["refused"]:
        out.append("  refused by the engine: " + ", ".join(f"{k} {n}" for k, n in
                                                         s["refused"].items()))
    out.append("  orders by status: " + ", ".join(f"{k} {n:,}" for k, n in
                                                  s["orders_by_status"].items()))
    out.append(f"  violations ({s['orders_with_violations']:,} orders, "
               f"{s['olist_orders_with_violations']:,} Olist orders):")
    for name, v in s["violations"].items():
        comp = s["compensation"]["by_violation"].get(name, {})
        how = ", ".join(f"{d} {n:,}" for d, n in s["detectors"].get(name, {}).items())
        out.append(f"    {name:<16} {v['orders']:>6,} orders {v['lines']:>6,} lines  "
                   f"compensation {comp.get('amount', '0.00')} ({comp.get('paid_as') or '-'})"
                   f"  [{how}]")
    c_ = s["compensation"]
    out.append(f"  compensation owed: {c_['total']} {s['currency']} ("
               + (", ".join(f"{k} {v}" for k, v in c_["by_paid_as"].items()) or "none") + ")")
    out.append(f"  refunded (out of stock): {s['refunded']} of {s['paid']} paid")
    out.append("  reviews (mean score, share of 1-2 stars, reviews):")

    def score(label: str, r: dict[str, Any]) -> str:
        mean = "-" if r["mean_score"] is None else f"{r['mean_score']:.2f}"
        low = "-" if r["low_share"] is None else f"{r['low_share']:.1%}"
        return f"    {label:<28} {mean:>5} {low:>7} {r['reviews']:>7,}"

    rv = s["reviews"]
    out.append(score("with violations", rv["with_violations"]))
    out.append(score("without violations", rv["without_violations"]))
    for name, r in rv["by_violation"].items():
        out.append(score(f"  {name}", r))
    out.append(score("delivered after estimate*", rv["delivered_after_estimate"]))
    out.append(score("delivered by estimate*", rv["delivered_by_estimate"]))
    out.append("    * from the CSV, not an engine finding")
    out.append(f"  {s['commands']:,} commands, {s['worker']['order_deadlines']:,} order deadlines "
               f"fired, clock {s['clock']['first_command']} .. {s['clock']['advanced_to']}; "
               f"{s['seconds']['total']} s")
    return "\n".join(out)
