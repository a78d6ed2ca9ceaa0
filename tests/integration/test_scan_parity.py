"""The batch scan (DuckDB over files) finds exactly what the online service finds.

One seeded generator makes orders and carrier scans covering every shipping situation: on time,
late upload, never shipped, late pickup (in-stock and custom), no scans, a reused tracking
number, delivery in the wrong city, delivery scanned before pickup, an empty parcel by weight,
a lost parcel, stalled parcels (a long gap, and silence up to `as_of`), a refund asked before
the ship-by time, plus multi-line orders, cities in other letter case, and orders, uploads and
scans after `as_of`. Both paths run on the same data:

- online: the real service (PlaceOrder, Ship, RecordScan, OpenCase refund_only) in time order,
  the deadline worker advanced to each step's time and finally to `as_of`; violations read with
  `Repository.violations_of`;
- batch: `analytics.scan.scan` on CSV or Parquet files written from the same data.

Both must report the same (order_id, violation) pairs with the same compensation.

Where the paths are known to differ (test_known_divergence below), the generator keeps clear:
a parcel left silent is flagged before the order auto-completes (the worker plans no check for
a completed order), and a reused tracking number is scanned only after its last upload
(online, a scan reaches only the orders already shipped with that number).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest

from aftersales.analytics.scan import scan
from aftersales.bootstrap import bootstrap
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import SYSTEM, Actor, CaseType, Reason, Role, ScanKind, ShippingMode
from aftersales.domain.violations import RULES
from aftersales.policy import loader
from aftersales.scenario.runner import counter_ids
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from aftersales.service.worker import advance

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
AS_OF = T0 + timedelta(days=21)
H = timedelta(hours=1)
D = timedelta(days=1)
CST = timezone(timedelta(hours=8))
CITIES = ("Hangzhou", "Shanghai", "Beijing", "Shenzhen", "成都")
PRICES = ("0.50", "2.99", "3.00", "3.01", "19.90", "59.90", "99.99", "299.99", "300.00",
          "450.50", "1234.56", "4000.00")
SITUATIONS = ("on_time", "late_upload", "never_shipped", "late_pickup_in_stock",
              "late_pickup_custom", "no_scans", "reused_tracking", "wrong_city",
              "delivered_before_pickup", "empty_parcel", "lost", "stalled_gap",
              "stalled_silent", "refund_before_ship_by", "on_time", "placed_after_as_of",
              "shipped_after_as_of", "near_as_of")


@dataclass
class Line:
    sku: str
    qty: int
    price: str  # the line's paid amount
    weight_g: int


@dataclass
class GenOrder:
    id: str
    seller: str
    buyer: str
    mode: ShippingMode
    placed: datetime
    ship_by: datetime
    city: str
    lines: list[Line]
    promised: datetime | None = None  # what PlaceOrder is given (None: the pack's default)
    shipped: datetime | None = None
    tracking: str | None = None
    declared: int | None = None
    refund_at: datetime | None = None
    situation: str = ""

    @property
    def expected_weight(self) -> int:
        return sum(ln.qty * ln.weight_g for ln in self.lines)


@dataclass
class Data:
    orders: list[GenOrder] = field(default_factory=list)
    scans: list[tuple[datetime, str, ScanKind, str | None]] = field(default_factory=list)


def _between(rng: random.Random, a: timedelta, b: timedelta) -> timedelta:
    return timedelta(seconds=rng.randint(int(a.total_seconds()), int(b.total_seconds())))


def generate(seed: int, n: int) -> Data:
    rng = random.Random(seed)
    data = Data()
    i = 0
    while i < n:
        situation = SITUATIONS[i % len(SITUATIONS)]
        pair = 2 if situation == "reused_tracking" else 1
        group = [_order(rng, f"o{seed}-{i + k}", situation) for k in range(pair)]
        for o in group:
            _ship(rng, o, situation)
        if situation == "reused_tracking":
            shared = group[0].tracking
            for o in group[1:]:
                o.tracking = shared
                assert o.shipped is not None
        data.orders += group
        _trail(rng, data, group, situation)
        i += pair
    return data


def _order(rng: random.Random, order_id: str, situation: str) -> GenOrder:
    if situation in ("late_pickup_in_stock",):
        mode = ShippingMode.IN_STOCK
    elif situation == "late_pickup_custom":
        mode = ShippingMode.CUSTOM
    else:
        mode = rng.choice([ShippingMode.IN_STOCK, ShippingMode.IN_STOCK, ShippingMode.PRESALE,
                           ShippingMode.CUSTOM, ShippingMode.TIERED])
    if situation == "placed_after_as_of":
        placed = AS_OF + _between(rng, H, 2 * D)
    elif situation == "near_as_of":
        placed = AS_OF - _between(rng, H, 3 * D)
    elif situation == "shipped_after_as_of":
        placed = AS_OF - _between(rng, 2 * H, 20 * H)
    else:
        placed = T0 + _between(rng, timedelta(0), 9 * D)
    promised = None
    if mode is ShippingMode.IN_STOCK:
        ship_by = placed + 48 * H  # the pack's in_stock_ship_by
        if rng.random() < 0.2:
            promised = ship_by = placed + 24 * H  # the listing promises less
    else:
        promised = ship_by = placed + _between(rng, 36 * H, 6 * D)
    lines = [Line(f"sku{k}", rng.randint(1, 3), rng.choice(PRICES),
                  rng.choice([0, 120, 450, 900, 2000]))
             for k in range(rng.choice([1, 1, 1, 2, 3]))]
    return GenOrder(order_id, f"s{rng.randint(1, 4)}", f"b{rng.randint(1, 9)}", mode, placed,
                    ship_by, rng.choice(CITIES), lines, promised=promised, situation=situation)


def _ship(rng: random.Random, o: GenOrder, situation: str) -> None:
    if situation == "never_shipped":
        return
    if situation == "refund_before_ship_by":
        o.refund_at = o.placed + _between(rng, H, o.ship_by - o.placed - H)
        return
    window = o.ship_by - o.placed
    if situation == "late_upload":
        o.shipped = o.ship_by + _between(rng, timedelta(seconds=1), 30 * H)
    elif situation == "shipped_after_as_of":
        o.shipped = AS_OF + _between(rng, H, 10 * H)
    else:
        o.shipped = o.placed + _between(rng, 10 * 60 * timedelta(seconds=1), window - H)
    o.tracking = f"T{o.id}"
    expected = o.expected_weight
    if situation == "empty_parcel" and expected > 0:
        o.declared = max(1, expected * rng.randint(1, 25) // 100)
    elif situation == "empty_parcel":
        o.lines[0].weight_g = 500
        o.declared = 10
    elif rng.random() < 0.7 and expected > 0:
        o.declared = max(1, expected * rng.randint(90, 115) // 100)


def _trail(rng: random.Random, data: Data, group: list[GenOrder], situation: str) -> None:
    o = group[0]
    if o.shipped is None or situation == "no_scans":
        return
    start = max(g.shipped for g in group if g.shipped is not None)  # after the last upload
    tracking = o.tracking
    assert tracking is not None

    def add(at: datetime, kind: ScanKind, city: str | None) -> None:
        data.scans.append((at, tracking, kind, city))

    other = next(ct for ct in CITIES if ct != o.city)
    here = o.city if rng.random() < 0.7 else o.city.upper()  # case does not matter
    t = start + _between(rng, H, 20 * H)
    if situation == "late_pickup_in_stock":
        t = max(t, o.placed + 72 * H + _between(rng, H, 20 * H))
    if situation == "late_pickup_custom":
        t = start + 24 * H + _between(rng, H, 20 * H)
    if situation == "delivered_before_pickup":
        add(t, ScanKind.IN_TRANSIT, rng.choice(CITIES))
        t += _between(rng, 6 * H, 30 * H)
        add(t, ScanKind.DELIVERED, here)
        add(t + _between(rng, H, 10 * H), ScanKind.PICKED_UP, rng.choice(CITIES))
        return
    add(t, ScanKind.PICKED_UP, rng.choice(CITIES))
    if situation == "stalled_silent":
        # silent from here: the stall check falls before auto-confirm (shipped + 10 days)
        if rng.random() < 0.5:
            add(t + _between(rng, 2 * H, 40 * H), ScanKind.IN_TRANSIT, rng.choice(CITIES))
        return
    for _ in range(rng.randint(0, 1 if situation == "stalled_gap" else 3)):
        t += _between(rng, 2 * H, 40 * H)
        add(t, rng.choice([ScanKind.IN_TRANSIT, ScanKind.IN_TRANSIT, ScanKind.EXCEPTION]),
            rng.choice(CITIES))
    if situation == "stalled_gap":
        t += 5 * D + _between(rng, timedelta(0), D)
        add(t, ScanKind.IN_TRANSIT, rng.choice(CITIES))
    t += _between(rng, 2 * H, 40 * H)
    if situation == "lost":
        add(t, ScanKind.LOST, None)
        return
    kind = ScanKind.SIGNED if rng.random() < 0.3 else ScanKind.DELIVERED
    add(t, kind, other if situation == "wrong_city" else here)
    if rng.random() < 0.3:  # scans after delivery never count as a stall
        add(t + _between(rng, 6 * D, 8 * D), ScanKind.IN_TRANSIT, rng.choice(CITIES))


# -- the two paths ------------------------------------------------------------------------------
def run_online(service: Service, data: Data, as_of: datetime) -> dict[tuple[str, str], Any]:
    steps: list[tuple[datetime, int, c.Command]] = []
    for o in data.orders:
        if o.placed > as_of:
            continue
        buyer, seller = Actor(Role.BUYER, o.buyer), Actor(Role.SELLER, o.seller)
        specs = tuple(LineSpec(ln.sku, ln.qty, _unit(ln), paid=Money.parse(ln.price),
                               weight_g=ln.weight_g) for ln in o.lines)
        steps.append((o.placed, 0, c.PlaceOrder(actor=buyer, seller_id=o.seller, mode=o.mode,
                                                lines=specs, order_id=o.id, ship_by=o.promised,
                                                ship_to_city=o.city)))
        if o.shipped is not None and o.shipped <= as_of:
            assert o.tracking is not None
            steps.append((o.shipped, 1, c.Ship(actor=seller, order_id=o.id, carrier="SF",
                                               tracking=o.tracking, weight_g=o.declared)))
        if o.refund_at is not None and o.refund_at <= as_of:
            steps.append((o.refund_at, 2, c.OpenCase(actor=buyer, order_id=o.id,
                                                     type=CaseType.REFUND_ONLY,
                                                     reason=Reason.NOT_SHIPPED)))
    for at, tracking, kind, city in data.scans:
        if at <= as_of:
            steps.append((at, 3, c.RecordScan(actor=SYSTEM, tracking=tracking, event=kind,
                                              city=city)))
    steps.sort(key=lambda s: (s[0], s[1]))
    for at, _, cmd in steps:
        advance(service, at)
        service.handle(cmd, at)
    advance(service, as_of)
    with service.uow() as uow:
        rows = uow.repo.violations_of([o.id for o in data.orders])
    paid_as = {"compensation": "cash", "coupon": "coupon", None: None}
    return {(r["order_id"], r["name"]): (str(Money(r["compensation"], r["currency"])),
                                         paid_as[r["paid_as"]]) for r in rows}


def _unit(ln: Line) -> Money:
    """A unit price whose qty multiple covers the paid amount (paid <= qty x unit)."""
    paid = Money.parse(ln.price)
    return Money(-(-paid.minor // ln.qty), paid.currency)


def _ts(at: datetime | None, rng: random.Random) -> str:
    if at is None:
        return ""
    if rng.random() < 0.5:
        return at.astimezone(CST).isoformat()  # with an offset
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")  # naive = UTC


def write_files(data: Data, folder: Path, fmt: str, seed: int) -> tuple[Path, Path]:
    rng = random.Random(seed)
    orders_csv, events_csv = folder / "orders.csv", folder / "events.csv"
    with orders_csv.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["order_id", "line_no", "seller_id", "buyer_id", "mode", "placed_at",
                    "ship_by", "ship_to_city", "shipped_at", "tracking_no", "declared_weight_g",
                    "sku", "qty", "price", "weight_g", "refund_requested_at"])
        for o in data.orders:
            for no, ln in enumerate(o.lines, start=1):
                w.writerow([o.id, no, o.seller, o.buyer, o.mode.value, _ts(o.placed, rng),
                            _ts(o.ship_by, rng), o.city, _ts(o.shipped, rng), o.tracking or "",
                            "" if o.declared is None else o.declared, ln.sku, ln.qty, ln.price,
                            ln.weight_g, _ts(o.refund_at, rng)])
    scans = list(data.scans)
    rng.shuffle(scans)  # a feed is not sorted
    with events_csv.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["tracking_no", "event", "city", "at"])
        for at, tracking, kind, city in scans:
            w.writerow([tracking, kind.value, city or "", _ts(at, rng)])
    if fmt == "csv":
        return orders_csv, events_csv
    out = []
    con = duckdb.connect()
    for src in (orders_csv, events_csv):
        dst = src.with_suffix(".parquet")
        con.execute(f"COPY (SELECT * FROM read_csv('{src}', all_varchar = true)) TO '{dst}' "
                    "(FORMAT parquet)")
        out.append(dst)
    con.close()
    return out[0], out[1]


def run_batch(orders: Path, events: Path, policy_id: str,
              as_of: datetime) -> tuple[dict[tuple[str, str], Any], list[dict[str, Any]]]:
    result = scan(orders, events, loader.load(policy_id), as_of)
    assert result.violations is not None
    found = {(v["order_id"], v["name"]): (v["compensation"], v["paid_as"])
             for v in result.violations}
    return found, result.violations


# -- the tests --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("policy_id", "fmt", "seed"),
                         [("taobao", "csv", 11), ("douyin", "parquet", 12)])
def test_batch_scan_matches_the_online_service(db_url: str, tmp_path: Path, policy_id: str,
                                               fmt: str, seed: int) -> None:
    data = generate(seed, 90)
    service = bootstrap(db_url, policy=policy_id, ids=counter_ids())
    try:
        online = run_online(service, data, AS_OF)
    finally:
        service.engine.dispose()
    orders, events = write_files(data, tmp_path, fmt, seed)
    batch, violations = run_batch(orders, events, policy_id, AS_OF)

    only_online = sorted(set(online) - set(batch))
    only_batch = sorted(set(batch) - set(online))
    situation = {o.id: o.situation for o in data.orders}
    assert not only_online and not only_batch, (
        f"only online: {[(k, situation[k[0]]) for k in only_online]}; "
        f"only batch: {[(k, situation[k[0]]) for k in only_batch]}")
    differ = {k: (online[k], batch[k]) for k in online if online[k] != batch[k]}
    assert not differ, f"compensation (online, batch) differs: {differ}"

    # the data really covers every rule
    assert {name for _, name in online} == {r.name for r in RULES}
    detectors = {d for v in violations for d in v["detectors"]}
    assert detectors == {r.detector for r in RULES}
    assert any(comp != "0.00" for comp, _ in online.values())
    # lines and prices come from the files
    lines = {o.id: len(o.lines) for o in data.orders}
    assert all(v["lines"] == list(range(1, lines[v["order_id"]] + 1)) for v in violations)


@pytest.mark.slow
def test_as_of_moves_the_answer(tmp_path: Path) -> None:
    """Earlier `as_of`: fewer findings, and never one the later run lacks (the rules only
    ever start to hold as time passes and facts arrive)."""
    data = generate(5, 54)
    orders, events = write_files(data, tmp_path, "csv", 5)
    late, _ = run_batch(orders, events, "taobao", AS_OF)
    early, _ = run_batch(orders, events, "taobao", AS_OF - 8 * D)
    assert set(early) < set(late)


def _one(order_id: str, mode: ShippingMode, placed: datetime, **kw: Any) -> GenOrder:
    ship_by = placed + (48 * H if mode is ShippingMode.IN_STOCK else 3 * D)
    return GenOrder(order_id, "s1", "b1", mode, placed, ship_by, "Hangzhou",
                    [Line("sku", 1, "59.90", 300)],
                    promised=None if mode is ShippingMode.IN_STOCK else ship_by, **kw)


def _stall_after_auto_confirm() -> tuple[Data, datetime]:
    # scans 4 days apart (never a 5-day gap), the last 8 days after the upload, then silence:
    # the stall check is due at shipped + 13 days, but auto-confirm completed the order at
    # shipped + 10 days and the worker plans no check for a completed order
    shipped = T0 + 2 * H
    o = _one("stall", ShippingMode.IN_STOCK, T0, shipped=shipped, tracking="T1")
    scans = [(shipped + H, "T1", ScanKind.PICKED_UP, "Hangzhou"),
             (shipped + 4 * D, "T1", ScanKind.IN_TRANSIT, "Wuhan"),
             (shipped + 8 * D, "T1", ScanKind.IN_TRANSIT, "Wuhan")]
    return Data([o], scans), shipped + 14 * D


def _scan_between_uploads() -> tuple[Data, datetime]:
    # order a ships T9 and is picked up; order b (custom) ships with the same number an hour
    # later: online b never sees the earlier pickup scan, the batch reads T9's whole trail
    a = _one("a", ShippingMode.IN_STOCK, T0, shipped=T0 + H, tracking="T9")
    b = _one("b", ShippingMode.CUSTOM, T0, shipped=T0 + 3 * H, tracking="T9")
    return Data([a, b], [(T0 + 2 * H, "T9", ScanKind.PICKED_UP, "Hangzhou")]), T0 + 2 * D


@pytest.mark.parametrize("case", [
    pytest.param(_stall_after_auto_confirm, id="stall_after_auto_confirm"),
    pytest.param(_scan_between_uploads, id="scan_between_uploads"),
])
def test_edge_cases_agree_between_the_online_and_batch_paths(
        sqlite_url: str, tmp_path: Path, case: Any) -> None:
    data, as_of = case()
    service = bootstrap(sqlite_url, policy="taobao", ids=counter_ids())
    try:
        online = run_online(service, data, as_of)
    finally:
        service.engine.dispose()
    orders, events = write_files(data, tmp_path, "csv", 1)
    batch, _ = run_batch(orders, events, "taobao", as_of)
    assert online == batch


def write_typed_parquet(orders_csv: Path, events_csv: Path, folder: Path) -> tuple[Path, Path]:
    """The same files as typed Parquet (numbers, DECIMAL prices, TIMESTAMPTZ times), as an
    export would write them: here the scan skips the row checks the file's statistics prove."""
    o, e = folder / "typed_orders.parquet", folder / "typed_events.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")

    def ts(c: str) -> str:
        return f"CAST(nullif(\"{c}\", '') AS TIMESTAMPTZ) AS \"{c}\""

    con.execute(f"""COPY (SELECT order_id, CAST(line_no AS INTEGER) AS line_no, seller_id,
        buyer_id, mode, {ts('placed_at')}, {ts('ship_by')}, ship_to_city, {ts('shipped_at')},
        nullif(tracking_no, '') AS tracking_no,
        CAST(nullif(declared_weight_g, '') AS INTEGER) AS declared_weight_g, sku,
        CAST(qty AS SMALLINT) AS qty, CAST(price AS DECIMAL(12, 2)) AS price,
        CAST(weight_g AS INTEGER) AS weight_g, {ts('refund_requested_at')}
      FROM read_csv('{orders_csv}', all_varchar = true)) TO '{o}' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT tracking_no, event, nullif(city, '') AS city, {ts('at')}
      FROM read_csv('{events_csv}', all_varchar = true)) TO '{e}' (FORMAT parquet)""")
    con.close()
    return o, e


@pytest.mark.slow
def test_typed_parquet_gives_the_same_violations_as_csv(tmp_path: Path) -> None:
    """Typed Parquet takes the shortcuts (statistics instead of row checks, no '' to turn
    into NULL, exact DECIMAL amounts); every output column must still equal the CSV run's,
    including long trails (more than three scans) and shipments of three lines."""
    data = generate(7, 90)
    orders, events = write_files(data, tmp_path, "csv", 7)
    typed_orders, typed_events = write_typed_parquet(orders, events, tmp_path)
    policy = loader.load("taobao")
    from_csv = scan(orders, events, policy, AS_OF)
    from_parquet = scan(typed_orders, typed_events, policy, AS_OF)
    assert from_parquet.violations == from_csv.violations
    assert from_parquet.totals == from_csv.totals
    assert from_csv.violations
    assert any(len(v["lines"]) == 3 for v in from_csv.violations)
    trails: dict[str, int] = {}
    for _, tracking, _, _ in data.scans:
        trails[tracking] = trails.get(tracking, 0) + 1
    assert max(trails.values()) > 3
