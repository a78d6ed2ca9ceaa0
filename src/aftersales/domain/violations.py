"""Shipping violations (RULES.md sections 1-2), each defined once.

A deadline is the first instant of lateness: a tracking number uploaded exactly at `ship_by` is
late, one uploaded a second before is on time (the same convention as case timers, which fire
at `now >= deadline`).

A rule is a predicate over one order's *shipment facts* (below) and the pack's parameters. The
online worker evaluates it in Python (`expr.holds`); the batch scan renders the very same
expression to SQL for DuckDB. A test generates data, runs both paths and compares.

Shipment facts of an order (the columns both paths compute):
  order_id, seller_id, mode, placed_at, ship_by, ship_to_city, shipped_at, tracking_no,
  declared_weight_g, expected_weight_g, first_scan_at, first_pickup_at, last_scan_at,
  delivered_at, delivery_city, lost_at, max_scan_gap (longest silence between two scans before
  delivery), refund_requested_at (first after-sales request before shipment),
  tracking_orders (orders sharing the tracking number)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from aftersales.domain.expr import (
    All,
    Any_,
    Coalesce,
    Col,
    Expr,
    IsNull,
    Lit,
    Lower,
    Now,
    Param,
    compiled_all,
    eq,
    holds,
    ne,
    not_null,
)
from aftersales.policy.model import Policy

FACTS = (
    "order_id", "seller_id", "mode", "placed_at", "ship_by", "ship_to_city", "shipped_at",
    "tracking_no", "declared_weight_g", "expected_weight_g", "first_scan_at",
    "first_pickup_at", "last_scan_at", "delivered_at", "delivery_city", "lost_at",
    "max_scan_gap", "refund_requested_at", "tracking_orders",
)


@dataclass(frozen=True)
class ViolationRule:
    name: str  # the violation counted on the seller: ship_timeout, pickup_timeout, ...
    detector: str  # which check found it (fake_shipment has several)
    rule: str  # RULES.md id
    when: Expr  # fires when TRUE
    evidence: tuple[str, ...]  # facts recorded as evidence
    due: Expr | None = None  # the instant the online worker must look (None: on each scan)


placed, ship_by, shipped = Col("placed_at"), Col("ship_by"), Col("shipped_at")
first_pickup, first_scan = Col("first_pickup_at"), Col("first_scan_at")
delivered, last_scan = Col("delivered_at"), Col("last_scan_at")
in_stock = eq(Col("mode"), Lit("in_stock"))

PICKUP_IN_STOCK_DUE = placed + Param("pickup_in_stock")
PICKUP_AFTER_UPLOAD_DUE = shipped + Param("pickup_after_upload")
NO_SCAN_DUE = shipped + Param("no_scan_window")
STALL_DUE = last_scan + Param("stall_time")

RULES: tuple[ViolationRule, ...] = (
    # 发货超时, SH-2: no tracking number uploaded by the promised ship-by time. A refund the
    # buyer asked for before the ship-by time suspends the duty to ship (the order is in
    # after-sales, 退款中), so it is no ship timeout.
    ViolationRule("ship_timeout", "ship_timeout", "SH-2",
                  (Coalesce((shipped, Now())) >= ship_by)
                  & Any_((IsNull(Col("refund_requested_at")),
                          Col("refund_requested_at") >= ship_by)),
                  ("ship_by", "shipped_at", "refund_requested_at"), due=ship_by),
    # 揽件超时, SH-3: in-stock orders: the first pickup scan within 72 h of the order. Only a
    # shipped order has a parcel to pick up (as in SH-4); a never-shipped one is SH-2's.
    ViolationRule("pickup_timeout", "pickup_in_stock", "SH-3",
                  in_stock & not_null(shipped)
                  & (Coalesce((first_pickup, Now())) >= PICKUP_IN_STOCK_DUE),
                  ("placed_at", "first_pickup_at"), due=PICKUP_IN_STOCK_DUE),
    # SH-4: pre-sale / custom / tiered: the first pickup scan within 24 h of the upload.
    ViolationRule("pickup_timeout", "pickup_after_upload", "SH-4",
                  ~in_stock & not_null(shipped)
                  & (Coalesce((first_pickup, Now())) >= PICKUP_AFTER_UPLOAD_DUE),
                  ("shipped_at", "first_pickup_at"), due=PICKUP_AFTER_UPLOAD_DUE),
    # 虚假发货, SH-5: the logistics trail is clearly abnormal.
    ViolationRule("fake_shipment", "no_scan", "SH-5",
                  not_null(shipped) & (Coalesce((first_scan, Now())) >= NO_SCAN_DUE),
                  ("shipped_at", "first_scan_at"), due=NO_SCAN_DUE),
    ViolationRule("fake_shipment", "reused_tracking", "SH-5",
                  Col("tracking_orders") > Lit(1), ("tracking_no", "tracking_orders")),
    ViolationRule("fake_shipment", "wrong_city", "SH-5",
                  ne(Lower(Col("delivery_city")), Lower(Col("ship_to_city"))),
                  ("ship_to_city", "delivery_city")),
    ViolationRule("fake_shipment", "delivered_before_pickup", "SH-5",
                  delivered < first_pickup,  # both scanned, delivery first (a missing pickup
                  # scan is the pickup rules' business, SH-3/SH-4)
                  ("delivered_at", "first_pickup_at")),
    # 发空包, seed 003: declared weight far below what the lines weigh.
    ViolationRule("fake_shipment", "empty_parcel", "SH-5",
                  All((Col("expected_weight_g") > Lit(0),
                       Col("declared_weight_g") * Lit(100)
                       < Col("expected_weight_g") * Param("empty_parcel_weight_pct"))),
                  ("declared_weight_g", "expected_weight_g")),
    # SH-9: lost, or no new scan for the stall time while in transit.
    ViolationRule("lost_parcel", "lost", "SH-9", not_null(Col("lost_at")), ("lost_at",)),
    ViolationRule("stalled_parcel", "stalled", "SH-9",
                  Any_((Col("max_scan_gap") >= Param("stall_time"),
                        IsNull(delivered) & IsNull(Col("lost_at")) & (Now() >= STALL_DUE))),
                  ("last_scan_at", "max_scan_gap"), due=STALL_DUE),
)


def params_of(policy: Policy) -> Mapping[str, Any]:
    """The pack's values of the rules' `Param`s (read-only; one mapping per pack object, since
    every order save evaluates the rules)."""
    kept = _PARAMS.get(id(policy))
    if kept is not None and kept[0] is policy:
        return kept[1]
    if len(_PARAMS) >= 64:  # packs are few; scenario overrides make more
        _PARAMS.clear()
    params = MappingProxyType(_params_of(policy))
    _PARAMS[id(policy)] = (policy, params)
    return params


_PARAMS: dict[int, tuple[Policy, Mapping[str, Any]]] = {}


def _params_of(policy: Policy) -> dict[str, Any]:
    d = policy.deadlines
    return {"pickup_in_stock": d.pickup_in_stock, "pickup_after_upload": d.pickup_after_upload,
            "no_scan_window": d.no_scan_window, "stall_time": d.stall_time,
            "empty_parcel_weight_pct": policy.detection.empty_parcel_weight_pct}


@dataclass(frozen=True)
class Finding:
    name: str
    detector: str
    rule: str
    evidence: Mapping[str, Any]


def detect(facts: Mapping[str, Any], policy: Policy, now: datetime,
           already: frozenset[str] = frozenset()) -> list[Finding]:
    """Every rule that holds for these facts at `now`, once per (name, detector)."""
    # Every predicate in one evaluation (expr.compiled_all: each fact read once), then the
    # rules that fire (TRUE, not unknown: as expr.holds) and are new.
    values = compiled_all(_WHENS)(facts, params_of(policy), now)
    return [Finding(r.name, r.detector, r.rule, {k: facts.get(k) for k in r.evidence})
            for r, value in zip(RULES, values, strict=True)
            if value is True and r.name not in already]


def next_check(facts: Mapping[str, Any], policy: Policy, now: datetime,
               already: frozenset[str] = frozenset()) -> datetime | None:
    """The earliest future instant at which a time-based rule could start to hold."""
    params = params_of(policy)
    times = []
    for r, at in zip(_TIMED, compiled_all(_DUES)(facts, params, now), strict=True):
        if r.name in already:
            continue
        # Plan only a check that would fire if nothing new happens before it (an upload, a
        # scan): anything new re-plans, so a check the facts already rule out is never needed.
        if isinstance(at, datetime) and at > now and holds(r.when, facts, params, at):
            times.append(at)
    return min(times) if times else None


_WHENS = tuple(r.when for r in RULES)
_TIMED = tuple(r for r in RULES if r.due is not None)
_DUES = tuple(r.due for r in _TIMED if r.due is not None)
