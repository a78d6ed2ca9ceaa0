"""Every shipping rule of `domain.violations.RULES`, pure domain (no database).

Time-based rules are checked just before, at and just after their due time; spans come from the
policy pack, never from literals here. The deadline is the first instant of lateness: an event
exactly at the due time is late. Missing facts never fire (SQL's three-valued logic). The tables
below are keyed by detector and checked against RULES, so a new rule fails until it is covered.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aftersales.domain import violations
from aftersales.domain.expr import compiled, compiled_all
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec, Order
from aftersales.domain.types import Actor, LedgerKind, Role, ScanKind, ShippingMode
from aftersales.domain.violations import RULES, ViolationRule, detect, next_check, params_of
from aftersales.policy import loader
from aftersales.policy.model import Policy
from tests.conftest import T0

TAOBAO = loader.load("taobao")
DOUYIN = loader.load("douyin")
D = TAOBAO.deadlines
BUYER = Actor(Role.BUYER, "b1")
SELLER = Actor(Role.SELLER, "s1")
SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
OFFSETS = [pytest.param(-SECOND, id="1s-before"), pytest.param(timedelta(0), id="at"),
           pytest.param(SECOND, id="1s-after")]
DETECTORS = {r.detector for r in RULES}
TIME_RULES = [pytest.param(r, id=r.detector) for r in RULES if r.due is not None]
EVENT_RULES = [pytest.param(r, id=r.detector) for r in RULES if r.due is None]
ALL_RULES = [pytest.param(r, id=r.detector) for r in RULES]


def clean(**changes: Any) -> dict[str, Any]:
    """An in-stock order that went right: shipped, picked up, moved and delivered in time."""
    facts: dict[str, Any] = {
        "order_id": "o1", "seller_id": "s1", "mode": "in_stock", "placed_at": T0,
        "ship_by": T0 + D.in_stock_ship_by, "ship_to_city": "Hangzhou",
        "shipped_at": T0 + HOUR, "tracking_no": "SF1", "declared_weight_g": 1000,
        "expected_weight_g": 1000, "first_scan_at": T0 + 2 * HOUR,
        "first_pickup_at": T0 + 2 * HOUR, "last_scan_at": T0 + DAY, "delivered_at": T0 + DAY,
        "delivery_city": "Hangzhou", "lost_at": None, "max_scan_gap": DAY - 2 * HOUR,
        "refund_requested_at": None, "tracking_orders": 1,
    }
    assert set(facts) == set(violations.FACTS)
    facts.update(changes)
    return facts


def found(facts: dict[str, Any], now: datetime, policy: Policy = TAOBAO,
          already: frozenset[str] = frozenset()) -> set[str]:
    return {f.detector for f in detect(facts, policy, now, already)}


def due_of(rule: ViolationRule, facts: dict[str, Any], policy: Policy = TAOBAO) -> datetime:
    assert rule.due is not None
    at = rule.due.eval(facts, params_of(policy), T0)
    assert isinstance(at, datetime)
    return at


# -- time-based rules ----------------------------------------------------------------------------
# For each time rule: facts where the awaited event has not happened yet (the rule is pending),
# the due time those facts give, read from the pack, and how the awaited event arriving at an
# instant changes the facts.
UPLOAD = T0 + HOUR
LAST_SCAN = T0 + DAY


def _pending_stall() -> dict[str, Any]:
    return clean(delivered_at=None, delivery_city=None, last_scan_at=LAST_SCAN,
                 max_scan_gap=LAST_SCAN - (T0 + 2 * HOUR))


def _moves(facts: dict[str, Any], at: datetime) -> dict[str, Any]:
    gap = at - facts["last_scan_at"]
    return {**facts, "last_scan_at": at, "delivered_at": at, "delivery_city": "Hangzhou",
            "max_scan_gap": max(gap, facts["max_scan_gap"])}


PENDING: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[Policy], datetime],
                         Callable[[dict[str, Any], datetime], dict[str, Any]]]] = {
    # SH-2: not uploaded; due at ship_by (in-stock: payment + in_stock_ship_by, SH-1)
    "ship_timeout": (
        lambda: clean(shipped_at=None, tracking_no=None, declared_weight_g=None,
                      first_scan_at=None, first_pickup_at=None, last_scan_at=None,
                      delivered_at=None, delivery_city=None, max_scan_gap=None,
                      tracking_orders=None),
        lambda p: T0 + p.deadlines.in_stock_ship_by,
        lambda f, at: {**f, "shipped_at": at}),
    # SH-3: in-stock, uploaded, never picked up; due 72 h after the order
    "pickup_in_stock": (
        lambda: clean(first_scan_at=None, first_pickup_at=None, last_scan_at=None,
                      delivered_at=None, delivery_city=None, max_scan_gap=None),
        lambda p: T0 + p.deadlines.pickup_in_stock,
        lambda f, at: {**f, "first_pickup_at": at, "first_scan_at": at}),
    # SH-4: pre-sale, uploaded, never picked up; due 24 h after the upload
    "pickup_after_upload": (
        lambda: clean(mode="presale", ship_by=T0 + 10 * DAY, first_scan_at=None,
                      first_pickup_at=None, last_scan_at=None, delivered_at=None,
                      delivery_city=None, max_scan_gap=None),
        lambda p: UPLOAD + p.deadlines.pickup_after_upload,
        lambda f, at: {**f, "first_pickup_at": at, "first_scan_at": at}),
    # SH-5 no_scan: uploaded, no scan of any kind; due no_scan_window after the upload
    "no_scan": (
        lambda: clean(mode="presale", ship_by=T0 + 10 * DAY, first_scan_at=None,
                      first_pickup_at=None, last_scan_at=None, delivered_at=None,
                      delivery_city=None, max_scan_gap=None),
        lambda p: UPLOAD + p.deadlines.no_scan_window,
        lambda f, at: {**f, "first_scan_at": at}),
    # SH-9 stalled: in transit, last scan at LAST_SCAN; due stall_time later
    "stalled": (_pending_stall, lambda p: LAST_SCAN + p.deadlines.stall_time, _moves),
}


def test_every_time_rule_has_a_pending_case() -> None:
    assert {r.detector for r in RULES if r.due is not None} == set(PENDING)


def test_every_detector_is_covered_by_a_table() -> None:
    assert set(PENDING) | set(EVENT_CASES) == DETECTORS


def test_a_clean_order_fires_nothing_even_long_after() -> None:
    for policy in (TAOBAO, DOUYIN):
        assert found(clean(), T0 + 60 * DAY, policy) == set()


@pytest.mark.parametrize("rule", TIME_RULES)
@pytest.mark.parametrize("policy", [TAOBAO, DOUYIN], ids=["taobao", "douyin"])
def test_the_due_time_is_the_packs_span(rule: ViolationRule, policy: Policy) -> None:
    make, expected_due, _ = PENDING[rule.detector]
    assert due_of(rule, make(), policy) == expected_due(policy)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("rule", TIME_RULES)
def test_a_pending_rule_fires_from_its_due_time(rule: ViolationRule, offset: timedelta) -> None:
    make, expected_due, _ = PENDING[rule.detector]
    due = expected_due(TAOBAO)
    fired = rule.detector in found(make(), due + offset)
    assert fired is (offset >= timedelta(0))


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("rule", TIME_RULES)
def test_the_awaited_event_exactly_at_the_due_time_is_late(rule: ViolationRule,
                                                          offset: timedelta) -> None:
    make, expected_due, arrive = PENDING[rule.detector]
    due = expected_due(TAOBAO)
    facts = arrive(make(), due + offset)
    # judged long afterwards (the batch scan's view): late iff the event came at or after due
    fired = rule.detector in found(facts, due + 30 * DAY)
    assert fired is (offset >= timedelta(0))


@pytest.mark.parametrize("rule", TIME_RULES)
def test_the_worker_looks_no_later_than_the_due_time(rule: ViolationRule) -> None:
    make, expected_due, _ = PENDING[rule.detector]
    facts, due = make(), expected_due(TAOBAO)
    at = next_check(facts, TAOBAO, due - SECOND)
    assert at is not None and at <= due


@pytest.mark.parametrize("rule", TIME_RULES)
def test_a_shorter_span_in_the_pack_moves_the_due_time(rule: ViolationRule) -> None:
    param = {"ship_timeout": "in_stock_ship_by", "pickup_in_stock": "pickup_in_stock",
             "pickup_after_upload": "pickup_after_upload", "no_scan": "no_scan_window",
             "stalled": "stall_time"}[rule.detector]
    fast = loader.load("taobao", overrides={f"deadlines.{param}": "23h"})
    make, expected_due, _ = PENDING[rule.detector]
    due = expected_due(fast)
    assert due < expected_due(TAOBAO)
    facts = make()
    if rule.detector == "ship_timeout":  # ship_by is fixed when the order is placed (SH-1)
        facts["ship_by"] = due
    assert rule.detector not in found(facts, due - SECOND, fast)
    assert rule.detector in found(facts, due, fast)


# -- next_check ----------------------------------------------------------------------------------
def test_next_check_of_an_unshipped_order_is_its_ship_by() -> None:
    facts = PENDING["ship_timeout"][0]()
    assert next_check(facts, TAOBAO, T0) == T0 + D.in_stock_ship_by


def test_next_check_skips_what_is_recorded_and_what_is_past() -> None:
    facts = PENDING["ship_timeout"][0]()
    ship_by = T0 + D.in_stock_ship_by
    assert next_check(facts, TAOBAO, T0) == ship_by
    # at the ship-by itself it is no longer in the future, and the pickup rule (SH-3) cannot
    # fire before an upload, which plans again: nothing is left to look at
    assert next_check(facts, TAOBAO, ship_by) is None
    assert next_check(facts, TAOBAO, T0, frozenset({"ship_timeout"})) is None


def test_next_check_plans_only_checks_the_facts_do_not_already_rule_out() -> None:
    shipped = {**PENDING["ship_timeout"][0](), "shipped_at": T0 + timedelta(hours=1),
               "first_scan_at": T0 + timedelta(hours=2), "last_scan_at": T0 + timedelta(hours=2),
               "first_pickup_at": T0 + timedelta(hours=2)}
    # shipped and picked up on time: only the stall check (SH-9) is left to plan
    assert next_check(shipped, TAOBAO, T0 + timedelta(hours=3)) == (
        T0 + timedelta(hours=2) + D.stall_time)
    delivered = {**shipped, "delivered_at": T0 + timedelta(days=1)}
    assert next_check(delivered, TAOBAO, T0 + timedelta(days=1)) is None


def test_next_check_of_an_uploaded_presale_order_is_its_pickup_time() -> None:
    facts = PENDING["pickup_after_upload"][0]()
    assert next_check(facts, TAOBAO, UPLOAD) == UPLOAD + D.pickup_after_upload
    after = UPLOAD + D.pickup_after_upload
    assert next_check(facts, TAOBAO, after, frozenset({"pickup_timeout"})) == min(
        UPLOAD + D.no_scan_window, T0 + 10 * DAY)


def test_next_check_is_none_when_every_time_rule_is_recorded() -> None:
    names = frozenset(r.name for r in RULES if r.due is not None)
    for make, _, _ in PENDING.values():
        assert next_check(make(), TAOBAO, T0, names) is None


# -- the rules' details --------------------------------------------------------------------------
def test_ship_timeout_is_suspended_by_a_refund_asked_before_ship_by() -> None:
    facts = PENDING["ship_timeout"][0]()
    ship_by = facts["ship_by"]
    later = ship_by + DAY
    assert "ship_timeout" not in found({**facts, "refund_requested_at": ship_by - SECOND}, later)
    assert "ship_timeout" in found({**facts, "refund_requested_at": ship_by}, later)
    assert "ship_timeout" in found({**facts, "refund_requested_at": ship_by + SECOND}, later)


def test_in_stock_pickup_needs_an_upload_and_the_in_stock_mode() -> None:
    late = T0 + D.pickup_in_stock
    unshipped = PENDING["ship_timeout"][0]()
    assert "pickup_in_stock" not in found(unshipped, late)  # SH-2's business, not SH-3's
    presale = PENDING["pickup_after_upload"][0]()
    assert "pickup_in_stock" not in found(presale, late)


def test_pickup_after_upload_is_not_for_in_stock_orders_nor_before_the_upload() -> None:
    in_stock = PENDING["pickup_in_stock"][0]()
    assert "pickup_after_upload" not in found(in_stock, UPLOAD + D.pickup_after_upload)
    not_uploaded = {**PENDING["pickup_after_upload"][0](), "shipped_at": None}
    assert "pickup_after_upload" not in found(not_uploaded, T0 + 9 * DAY)


def test_a_lost_parcel_does_not_also_stall() -> None:
    facts = {**_pending_stall(), "lost_at": LAST_SCAN}
    detectors = found(facts, LAST_SCAN + D.stall_time + DAY)
    assert "lost" in detectors and "stalled" not in detectors


W = 1000  # the lines' expected weight in grams
PCT = TAOBAO.detection.empty_parcel_weight_pct
THRESHOLD = W * PCT // 100  # declared weight at exactly the pack's percentage

# Non-time detectors: facts that fire, and facts that do not (each from a clean order).
EVENT_CASES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "reused_tracking": ([{"tracking_orders": 2}, {"tracking_orders": 3}],
                        [{"tracking_orders": 1}]),
    "wrong_city": ([{"delivery_city": "Shanghai"}, {"delivery_city": "Hangzhou West"}],
                   [{"delivery_city": "hangzhou"}, {"delivery_city": " HANGZHOU "}]),
    "delivered_before_pickup": (
        [{"delivered_at": T0 + 2 * HOUR - SECOND}],
        [{"delivered_at": T0 + 2 * HOUR}, {"delivered_at": T0 + 2 * HOUR + SECOND}]),
    "empty_parcel": ([{"declared_weight_g": THRESHOLD - 1}, {"declared_weight_g": 0},
                      {"declared_weight_g": 20}],
                     [{"declared_weight_g": THRESHOLD}, {"declared_weight_g": W}]),
    "lost": ([{"lost_at": T0 + 2 * DAY}, {"lost_at": T0 + 2 * DAY, "delivered_at": None}],
             [{"lost_at": None}]),
}
# Missing facts (None) on which the detector depends: it never fires, however late.
MISSING: dict[str, list[dict[str, Any]]] = {
    "reused_tracking": [{"tracking_orders": None}],
    "wrong_city": [{"delivery_city": "Shanghai", "ship_to_city": None},
                   {"delivery_city": None}],
    "delivered_before_pickup": [{"delivered_at": T0, "first_pickup_at": None},
                                {"delivered_at": None}],
    "empty_parcel": [{"declared_weight_g": None}, {"declared_weight_g": 1, "expected_weight_g": 0},
                     {"declared_weight_g": 1, "expected_weight_g": None}],
    "lost": [{"lost_at": None}],
    "ship_timeout": [{"shipped_at": None, "ship_by": None}],
    "pickup_in_stock": [{"first_pickup_at": None, "mode": None},
                        {"first_pickup_at": None, "placed_at": None}],
    "pickup_after_upload": [{"mode": "presale", "first_pickup_at": None, "shipped_at": None}],
    "no_scan": [{"first_scan_at": None, "shipped_at": None}],
    "stalled": [{"delivered_at": None, "last_scan_at": None, "max_scan_gap": None}],
}


@pytest.mark.parametrize("rule", EVENT_RULES)
def test_an_event_detector_fires_on_its_facts_only(rule: ViolationRule) -> None:
    fires, holds_not = EVENT_CASES[rule.detector]
    for changes in fires:
        assert found(clean(**changes), T0 + 3 * DAY) == {rule.detector}, changes
    for changes in holds_not:
        assert found(clean(**changes), T0 + 3 * DAY) == set(), changes


@pytest.mark.parametrize("rule", ALL_RULES)
def test_missing_facts_never_fire(rule: ViolationRule) -> None:
    assert set(MISSING) == DETECTORS
    for changes in MISSING[rule.detector]:
        assert rule.detector not in found(clean(**changes), T0 + 60 * DAY), changes
    nothing = dict.fromkeys(violations.FACTS)
    assert found(nothing, T0 + 60 * DAY) == set()


def test_the_empty_parcel_threshold_is_the_packs_percentage() -> None:
    strict = loader.load("taobao", overrides={"detection.empty_parcel_weight_pct": 50})
    half = W * 50 // 100
    assert "empty_parcel" in found(clean(declared_weight_g=half - 1), T0, strict)
    assert "empty_parcel" not in found(clean(declared_weight_g=half), T0, strict)
    assert "empty_parcel" not in found(clean(declared_weight_g=half - 1), T0, TAOBAO)


@pytest.mark.parametrize("offset", OFFSETS)
def test_a_silence_between_scans_of_stall_time_is_a_stall(offset: timedelta) -> None:
    """The batch scan sees a parcel that moved again (or arrived) after a long silence."""
    facts = clean(max_scan_gap=D.stall_time + offset)
    assert ("stalled" in found(facts, T0 + 30 * DAY)) is (offset >= timedelta(0))


def test_already_recorded_violations_are_not_found_again() -> None:
    facts = clean(tracking_orders=2, declared_weight_g=1, delivery_city="Shanghai")
    assert found(facts, T0) == {"reused_tracking", "empty_parcel", "wrong_city"}
    assert found(facts, T0, already=frozenset({"fake_shipment"})) == set()


def test_findings_carry_name_rule_and_evidence() -> None:
    for rule in RULES:
        assert rule.rule in {"SH-2", "SH-3", "SH-4", "SH-5", "SH-9"}
        assert set(rule.evidence) <= set(violations.FACTS)
    (finding,) = detect(clean(tracking_orders=2), TAOBAO, T0)
    assert (finding.name, finding.detector, finding.rule) == (
        "fake_shipment", "reused_tracking", "SH-5")
    assert finding.evidence == {"tracking_no": "SF1", "tracking_orders": 2}


# -- through the Order aggregate -----------------------------------------------------------------
def place(policy: Policy = TAOBAO, price: str = "120.00", qty: int = 1, weight_g: int = 0,
          mode: ShippingMode = ShippingMode.IN_STOCK, ship_by: datetime | None = None,
          paid: str | None = None) -> Order:
    line = LineSpec("A", qty, Money.parse(price), weight_g=weight_g,
                    paid=Money.parse(paid) if paid else None)
    return Order.place(order_id="o1", buyer=BUYER, seller_id="s1", mode=mode, lines=[line],
                       now=T0, policy=policy, ship_by=ship_by, ship_to_city="Hangzhou")


def test_order_facts_follow_the_scans() -> None:
    order = place(weight_g=600, qty=2)
    order.ship(SELLER, "SF", "SF1", UPLOAD, TAOBAO, weight_g=20)
    order.scanned(ScanKind.IN_TRANSIT, T0 + 2 * HOUR, "Shanghai")
    order.scanned(ScanKind.PICKED_UP, T0 + 3 * HOUR, "Shanghai")
    order.scanned(ScanKind.IN_TRANSIT, T0 + 3 * DAY, "Jiaxing")
    order.scanned(ScanKind.DELIVERED, T0 + 4 * DAY, "Ningbo")
    order.scanned(ScanKind.IN_TRANSIT, T0 + 20 * DAY, "Ningbo")  # after delivery: not a gap
    facts = order.facts(tracking_orders=1)
    assert set(facts) == set(violations.FACTS)
    assert facts["expected_weight_g"] == 1200 and facts["declared_weight_g"] == 20
    assert facts["first_scan_at"] == T0 + 2 * HOUR
    assert facts["first_pickup_at"] == T0 + 3 * HOUR
    assert facts["delivered_at"] == T0 + 4 * DAY and facts["delivery_city"] == "Ningbo"
    assert facts["max_scan_gap"] == 3 * DAY - 3 * HOUR
    assert found(facts, T0 + 20 * DAY) == {"empty_parcel", "wrong_city"}


def test_seed_003_an_order_marked_shipped_with_nothing_sent_is_a_fake_shipment() -> None:
    order = place(weight_g=600, qty=2, price="150.00")
    order.ship(SELLER, "YD", "YD1", UPLOAD, TAOBAO, weight_g=THRESHOLD * 1200 // W - 1)
    findings = detect(order.facts(1), TAOBAO, UPLOAD)
    assert [(f.name, f.detector) for f in findings] == [("fake_shipment", "empty_parcel")]
    new = order.record_violations(findings, UPLOAD, TAOBAO)
    assert [v["name"] for v in new] == ["fake_shipment"]
    assert order.violations == ("fake_shipment",)
    (entry,) = [e for e in order.pending_ledger if e.kind is LedgerKind.COMPENSATION]
    assert entry.amount == Money.parse("15.00") and entry.rule == "SH-6"


def test_record_violations_is_once_per_order_and_violation() -> None:
    order = place(price="200.00")
    order.ship(SELLER, "SF", "SF1", UPLOAD, TAOBAO, weight_g=1)
    first = detect(clean(tracking_orders=2, declared_weight_g=1), TAOBAO, UPLOAD)
    assert {f.detector for f in first} == {"reused_tracking", "empty_parcel"}
    new = order.record_violations(first, UPLOAD, TAOBAO)
    assert len(new) == 1 and new[0]["detectors"] == ["reused_tracking", "empty_parcel"]
    assert new[0]["compensation"] == Money.parse("10.00")
    ledger_before = list(order.pending_ledger)
    again = detect(clean(delivery_city="Shanghai"), TAOBAO, UPLOAD)
    assert order.record_violations(again, UPLOAD + HOUR, TAOBAO) == []
    assert order.pending_ledger == ledger_before
    # another violation on the same order pays its own compensation
    late = detect(PENDING["ship_timeout"][0](), TAOBAO, T0 + D.in_stock_ship_by)
    (v,) = order.record_violations(late, T0 + D.in_stock_ship_by, TAOBAO)
    assert v["name"] == "ship_timeout" and v["compensation"] == Money.parse("10.00")
    assert order.violations == ("fake_shipment", "ship_timeout")


def test_sh8_the_shipping_notice_names_carrier_and_tracking_number() -> None:
    order = place()
    event = order.ship(SELLER, "SF", "SF0001", UPLOAD, TAOBAO)
    assert event.rule == "SH-8" and event.name == "OrderShipped"
    assert event.changes["carrier"] == "SF" and event.changes["tracking_no"] == "SF0001"
    assert (order.carrier, order.tracking_no, order.shipped_at) == ("SF", "SF0001", UPLOAD)


# -- compensation (SH-6 b) -----------------------------------------------------------------------
COMPENSATION = [
    # Taobao: 5% of the paid goods value, floor 5.00, cap 30.00, in cash
    ("taobao", "ship_timeout", "50.00", "5.00"),
    ("taobao", "ship_timeout", "100.00", "5.00"),
    ("taobao", "ship_timeout", "300.00", "15.00"),
    ("taobao", "ship_timeout", "333.33", "16.67"),  # 16.6665 rounded half up
    ("taobao", "ship_timeout", "600.00", "30.00"),
    ("taobao", "ship_timeout", "1000.00", "30.00"),
    ("taobao", "fake_shipment", "50.00", "5.00"),
    ("taobao", "fake_shipment", "300.00", "15.00"),
    ("taobao", "fake_shipment", "1000.00", "30.00"),
    # Douyin: <= 3.00 none, up to 299.99 fixed 3.00, from 300.00 1% capped at 30.00, a coupon
    *((("douyin", name, price, want) for name in ("pickup_timeout", "ship_timeout")
       for price, want in (("2.00", None), ("3.00", None), ("3.01", "3.00"),
                           ("299.99", "3.00"), ("300.00", "3.00"), ("2000.00", "20.00"),
                           ("3000.00", "30.00"), ("5000.00", "30.00")))),
    # violations a pack does not compensate
    ("taobao", "pickup_timeout", "1000.00", None),
    ("taobao", "lost_parcel", "1000.00", None),
    ("taobao", "stalled_parcel", "1000.00", None),
    ("douyin", "fake_shipment", "1000.00", None),
]
PACKS = {"taobao": TAOBAO, "douyin": DOUYIN}


@pytest.mark.parametrize(("pack", "name", "price", "want"), COMPENSATION,
                         ids=[f"{p}-{n}-{pr}" for p, n, pr, _ in COMPENSATION])
def test_compensation_for(pack: str, name: str, price: str, want: str | None) -> None:
    policy = PACKS[pack]
    got = place(policy, price).compensation_for(name, policy)
    if want is None:
        assert got is None
        return
    assert got is not None
    amount, kind = got
    assert amount == Money.parse(want)
    schedule = policy.compensation[name]
    assert kind is (LedgerKind.COUPON if schedule.paid_as == "coupon" else LedgerKind.COMPENSATION)
    assert kind is {"taobao": LedgerKind.COMPENSATION, "douyin": LedgerKind.COUPON}[pack]


def test_compensation_is_on_the_goods_value_paid_not_the_list_price() -> None:
    # two units of 150.00: 300.00 paid -> 15.00; a discount to 200.00 paid -> 10.00
    assert place(price="150.00", qty=2).compensation_for(
        "ship_timeout", TAOBAO) == (Money.parse("15.00"), LedgerKind.COMPENSATION)
    assert place(price="150.00", qty=2, paid="200.00").compensation_for(
        "ship_timeout", TAOBAO) == (Money.parse("10.00"), LedgerKind.COMPENSATION)


# -- the compiled evaluator agrees with the reference interpreter -----------------------------
_T = st.one_of(st.none(), st.integers(-200, 200).map(lambda h: T0 + timedelta(hours=h)))
_FACT_VALUES: dict[str, Any] = {
    "mode": st.sampled_from([None, "in_stock", "presale", "custom", "tiered"]),
    "ship_to_city": st.sampled_from([None, "Hangzhou", " hangzhou ", "Shanghai"]),
    "delivery_city": st.sampled_from([None, "Hangzhou", "HANGZHOU", "Beijing"]),
    "declared_weight_g": st.one_of(st.none(), st.integers(0, 5000)),
    "expected_weight_g": st.one_of(st.none(), st.integers(0, 5000)),
    "tracking_orders": st.one_of(st.none(), st.integers(0, 3)),
    "max_scan_gap": st.one_of(st.none(), st.integers(0, 400).map(lambda h: timedelta(hours=h))),
}


@st.composite
def _facts(draw: Any) -> dict[str, Any]:
    return {name: draw(_FACT_VALUES.get(name, _T)) for name in violations.FACTS}


@settings(max_examples=300, deadline=None)
@given(facts=_facts(), hours=st.integers(-200, 400), pack=st.sampled_from([TAOBAO, DOUYIN]))
def test_compiled_rules_evaluate_as_the_interpreter(facts: dict[str, Any], hours: int,
                                                    pack: Policy) -> None:
    """`expr.compiled` (what the online worker runs) gives the value `Expr.eval` gives, unknown
    (None) included, for every rule's predicate and due time (SH-2..SH-5, SH-9)."""
    now, params = T0 + timedelta(hours=hours), params_of(pack)
    for r in RULES:
        for e in (r.when, r.due):
            if e is not None:
                got, want = compiled(e)(facts, params, now), e.eval(facts, params, now)
                # equal, and the same truth value: holds() asks `is True`
                assert got == want and type(got) is type(want), r.detector
    # all predicates in one function (what detect runs) give each one's value
    whens = tuple(r.when for r in RULES)
    together = compiled_all(whens)(facts, params, now)
    alone = tuple(e.eval(facts, params, now) for e in whens)
    assert together == alone and [type(v) for v in together] == [type(v) for v in alone]
