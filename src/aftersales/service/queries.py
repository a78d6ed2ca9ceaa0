"""Read models: the final-state JSON of SCENARIOS.md and per-party totals, from the tables."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import case as sql_case
from sqlalchemy import func, select

from aftersales.domain.cases import Case
from aftersales.domain.money import Money
from aftersales.domain.orders import Order
from aftersales.store import tables as t
from aftersales.store.repository import Repository


def _iso(value: datetime | None, tz: tzinfo | None) -> str | None:
    if value is None:
        return None
    return (value.astimezone(tz) if tz is not None else value).isoformat()


def order_view(order: Order, tz: tzinfo | None = None,
               found: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An order as a party sees it; `found` are its violation rows (SH-5, SH-6)."""
    found = found or []
    compensation = sum((Money(v["compensation"], v["currency"]) for v in found),
                       Money.zero(order.currency))
    return {
        "id": order.id, "status": order.status.value, "paid": str(order.paid),
        "refunded": str(order.refunded), "seller": order.seller_id, "buyer": order.buyer_id,
        "mode": order.mode.value, "ship_by": _iso(order.ship_by, tz),
        "shipped_at": _iso(order.shipped_at, tz), "delivered_at": _iso(order.delivered_at, tz),
        "completed_at": _iso(order.completed_at, tz),
        "reminded_at": _iso(order.reminded_at, tz),
        "carrier": order.carrier, "tracking": order.tracking_no,
        "violations": [v["name"] for v in found], "compensation": str(compensation),
        "violation_details": [
            {"name": v["name"], "rule": v["rule"], "detectors": v["detectors"],
             "status": v["status"], "detected_at": _iso(v["detected_at"], tz),
             "compensation": str(Money(v["compensation"], v["currency"])),
             "paid_as": v["paid_as"]} for v in found],
        "lines": [{"line_no": ln.line_no, "sku": ln.sku, "qty": ln.qty, "paid": str(ln.paid),
                   "refunded": str(ln.refunded), "after_sales_used": ln.after_sales_used}
                  for ln in order.lines],
    }


def case_view(case: Case, tz: tzinfo | None = None) -> dict[str, Any]:
    return {
        "id": case.id, "order": case.order_id, "type": case.type.value,
        "reason": case.reason.value, "status": case.status.value,
        "outcome": case.outcome.value, "amount": str(case.amount),
        "refunded": str(case.refunded), "decided_by": case.decided_by,
        "freight_payer": case.freight_payer, "seller_responsible": case.seller_responsible,
        "rules": list(case.rules), "received": case.received,
        "opened_at": _iso(case.opened_at, tz), "closed_at": _iso(case.closed_at, tz),
        "deadline": _iso(case.deadline, tz),
        "deadline_kind": case.deadline_kind,
        "offer": str(case.offer) if case.offer is not None else None,
        "policy": {"id": case.policy_id, "version": case.policy_version},
        # platform intervention (IN-1..IN-9)
        "escalated_by": case.escalated_by, "staff_due": _iso(case.staff_due, tz),
        "proof_from": case.proof_from, "proof_due": _iso(case.proof_due, tz),
        "proof_requests": case.proof_requests,
        "evidence": {"buyer": case.buyer_evidence, "seller": case.seller_evidence},
        "jury": {"panel": len(case.jury_panel),
                 "buyer": sum(1 for _, side in case.jury_votes if side == "buyer"),
                 "seller": sum(1 for _, side in case.jury_votes if side == "seller")},
        "penalty": case.penalty,
    }


def complaint_view(row: Mapping[str, Any], tz: tzinfo | None = None) -> dict[str, Any]:
    return {"id": row["id"], "order": row["order_id"], "kind": row["kind"],
            "status": row["status"], "text": row["text"],
            "seller_response": row["seller_response"], "opened_at": _iso(row["opened_at"], tz),
            "resolved_at": _iso(row["resolved_at"], tz), "penalty": row["penalty"],
            "points": row["points"]}


def final_state(repo: Repository, orders: Mapping[str, str], cases: Mapping[str, str],
                tz: tzinfo | None = None, complaints: Mapping[str, str] | None = None
                ) -> dict[str, Any]:
    """The SCENARIOS.md final state for the named orders and cases (name -> engine id)."""
    order_objs = {name: repo.get_order(oid) for name, oid in orders.items()}
    case_objs = {name: repo.get_case(cid) for name, cid in cases.items()}
    currency = next((o.currency for o in order_objs.values()), "CNY")
    zero = Money.zero(currency)
    sums: dict[str, Money] = defaultdict(lambda: zero)
    buyers: dict[str, dict[str, Money]] = defaultdict(lambda: defaultdict(lambda: zero))
    ids = [o.id for o in order_objs.values()]
    rows = repo.conn.execute(select(t.ledger).where(t.ledger.c.order_id.in_(ids))).mappings()
    for row in rows:
        amount = Money(row["amount"], row["currency"])
        kind = row["kind"]
        sums[kind] = sums[kind] + amount
        if kind in ("refund", "compensation", "coupon"):
            key = {"refund": "refunded", "compensation": "compensation", "coupon": "coupons"}[kind]
            buyers[row["buyer_id"]][key] += amount
    sellers = {}
    for order in order_objs.values():
        if order.seller_id not in sellers:
            sellers[order.seller_id] = seller_record(repo, order.seller_id, currency=currency)
        buyers[order.buyer_id]
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in repo.violations_of(ids):
        found[v["order_id"]].append(v)
    by_id = {row["id"]: row for row in repo.complaints_of_orders(ids)}
    return {
        "orders": {name: order_view(o, tz, found[o.id]) for name, o in order_objs.items()},
        "cases": {name: {**case_view(c, tz), "log": [e.name for e in repo.case_events(c.id)]}
                  for name, c in case_objs.items()},
        "complaints": {name: {**complaint_view(by_id[cid], tz),
                              "log": [e.name for e in repo.complaint_events(cid)]}
                       for name, cid in (complaints or {}).items() if cid in by_id},
        "sellers": sellers,
        "buyers": {b: {k: str(v[k]) for k in ("refunded", "compensation", "coupons")}
                   for b, v in buyers.items()},
        "ledger": {"paid": str(sums["payment"]), "refunds": str(sums["refund"]),
                   "compensation": str(sums["compensation"]), "coupons": str(sums["coupon"])},
    }


VIOLATION_COUNTERS = {"ship_timeout": "ship_timeouts", "pickup_timeout": "pickup_timeouts",
                      "fake_shipment": "fake_shipments", "out_of_stock": "out_of_stock",
                      "lost_parcel": "lost_or_stalled", "stalled_parcel": "lost_or_stalled"}


def seller_record(repo: Repository, seller_id: str, start: datetime | None = None,
                  end: datetime | None = None, currency: str = "CNY") -> dict[str, Any]:
    """SR-1 / IN-8 / SR-3: a seller's record over [start, end) (all time without bounds):
    dispute refunds decided against them by the platform (staff, jury, or a party's missing
    proof) and their rate per paid order, shipping violations, out-of-stock declarations,
    penalty points and compensation from the ledger, complaints, and buyer ratings."""

    def within(col: Any) -> list[Any]:
        return [c for c in ((col >= start) if start else None, (col < end) if end else None)
                if c is not None]

    o, cs, lg, v, cp, rt = t.orders, t.cases, t.ledger, t.violations, t.complaints, t.ratings
    conn = repo.conn
    paid_orders = conn.execute(select(func.count()).select_from(o).where(
        o.c.seller_id == seller_id, *within(o.c.placed_at))).scalar_one()
    disputes = conn.execute(select(func.count(), func.coalesce(func.sum(cs.c.refunded), 0))
                            .where(cs.c.seller_id == seller_id, cs.c.escalated_by.is_not(None),
                                   cs.c.decided_by.in_(("staff", "jury", "timeout")),
                                   cs.c.seller_responsible.is_(True), cs.c.refunded > 0,
                                   *within(cs.c.closed_at))).one()
    escalated = conn.execute(select(func.count()).select_from(cs).where(
        cs.c.seller_id == seller_id, cs.c.escalated_by.is_not(None),
        *within(cs.c.opened_at))).scalar_one()
    record: dict[str, Any] = {
        "seller": seller_id, "from": start.isoformat() if start else None,
        "to": end.isoformat() if end else None, "paid_orders": paid_orders,
        "dispute_refunds": disputes[0],  # IN-8: 纠纷退款笔数
        "dispute_refund_amount": str(Money(int(disputes[1]), currency)),
        "dispute_rate": round(disputes[0] / paid_orders, 4) if paid_orders else 0.0,
        "escalated_cases": escalated,
        "ship_timeouts": 0, "pickup_timeouts": 0, "fake_shipments": 0, "out_of_stock": 0,
        "lost_or_stalled": 0,
    }
    for name, count in conn.execute(select(v.c.name, func.count()).where(
            v.c.seller_id == seller_id, *within(v.c.detected_at)).group_by(v.c.name)):
        if name in VIOLATION_COUNTERS:
            record[VIOLATION_COUNTERS[name]] += count
    points, paid = conn.execute(select(
        func.coalesce(func.sum(lg.c.points), 0),
        func.coalesce(func.sum(sql_case((lg.c.kind.in_(("compensation", "coupon")), lg.c.amount),
                                    else_=0)), 0))
        .where(lg.c.seller_id == seller_id, *within(lg.c.at))).one()
    record["penalty_points"] = int(points)
    record["compensation_paid"] = str(Money(int(paid), currency))
    complaints: dict[str, int] = dict(conn.execute(select(cp.c.status, func.count()).where(
        cp.c.seller_id == seller_id, *within(cp.c.opened_at)).group_by(cp.c.status)).all())
    record["complaints"] = sum(complaints.values())
    record["complaints_upheld"] = complaints.get("upheld", 0)
    stars: dict[int, int] = dict(conn.execute(select(rt.c.stars, func.count()).where(
        rt.c.seller_id == seller_id, *within(rt.c.rated_at)).group_by(rt.c.stars)).all())
    count = sum(stars.values())
    record["ratings"] = {
        "count": count,
        "average": round(sum(k * n for k, n in stars.items()) / count, 2) if count else None,
        "by_stars": {str(k): stars.get(k, 0) for k in range(1, 6)},
        "replied": conn.execute(select(func.count()).select_from(rt).where(
            rt.c.seller_id == seller_id, rt.c.reply.is_not(None),
            *within(rt.c.rated_at))).scalar_one()}
    return record


def seller_todo(repo: Repository, seller_id: str, now: datetime, hours: int,
                tz: tzinfo | None = None) -> dict[str, Any]:
    """What a seller must do, nearest deadline first: orders to ship (SH-1/SH-2), parcels
    awaiting pickup (SH-3/SH-4), pre-sale lines to prepare (SH-7), out-of-stock answers
    pending (OS-2) and cases awaiting the seller (RF-1); `at_risk` = due within `hours`."""
    horizon = now + timedelta(hours=hours)
    o, ln, cs = t.orders, t.order_lines, t.cases
    to_ship = []
    prepare: dict[str, int] = defaultdict(int)
    rows = repo.conn.execute(select(o.c.id, o.c.mode, o.c.ship_by, o.c.oos_lines).where(
        o.c.seller_id == seller_id, o.c.status == "paid").order_by(o.c.ship_by)).all()
    for oid, mode, ship_by, oos in rows:
        to_ship.append({"order": oid, "mode": mode, "ship_by": _iso(ship_by, tz),
                        "at_risk": ship_by <= horizon, "overdue": ship_by <= now,
                        "out_of_stock_pending": bool(oos)})
        if mode == "presale":  # SH-7: pre-sale lines go on the "to prepare" (待备货) list
            for sku, qty in repo.conn.execute(select(ln.c.sku, ln.c.qty).where(
                    ln.c.order_id == oid)):
                prepare[sku] += qty
    awaiting_pickup = [
        {"order": oid, "tracking": trk, "shipped_at": _iso(shipped, tz),
         "check_at": _iso(due, tz), "at_risk": due is not None and due <= horizon}
        for oid, trk, shipped, due in repo.conn.execute(
            select(o.c.id, o.c.tracking_no, o.c.shipped_at, o.c.next_deadline).where(
                o.c.seller_id == seller_id, o.c.status == "shipped",
                o.c.first_pickup_at.is_(None)).order_by(o.c.shipped_at))]
    cases = [
        {"case": cid, "order": oid, "status": status, "deadline": _iso(deadline, tz),
         "deadline_kind": kind, "at_risk": deadline is not None and deadline <= horizon}
        for cid, oid, status, deadline, kind in repo.conn.execute(
            select(cs.c.id, cs.c.order_id, cs.c.status, cs.c.deadline, cs.c.deadline_kind).where(
                cs.c.seller_id == seller_id,
                cs.c.status.in_(("awaiting_seller", "return_shipped", "awaiting_replacement")))
            .order_by(cs.c.deadline))]
    return {"seller": seller_id, "now": _iso(now, tz), "hours": hours,
            "to_ship": to_ship, "awaiting_pickup": awaiting_pickup,
            "to_prepare": [{"sku": k, "qty": v} for k, v in sorted(prepare.items())],
            "cases": cases, "stock": repo.stock_of(seller_id),
            "at_risk": sum(1 for x in (*to_ship, *awaiting_pickup, *cases) if x["at_risk"])}
