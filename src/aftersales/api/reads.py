"""Reads the API needs beyond `service.queries` and `service.views`: response bodies built from
aggregates, and the filtered, paginated lists (SQLAlchemy Core on a unit of work's connection)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, select

from aftersales.api import pagination
from aftersales.api.pagination import Sort
from aftersales.api.schemas import (
    CaseOut,
    CaseSummary,
    ComplaintOut,
    EventOut,
    JuryTaskSummary,
    OrderOut,
    OrderSummary,
    ShipmentOut,
)
from aftersales.domain.cases import Case
from aftersales.domain.money import Money
from aftersales.domain.orders import Order
from aftersales.service.commands import Published
from aftersales.service.queries import case_view, complaint_view, order_view
from aftersales.store import tables as t
from aftersales.store.fastsql import fetch
from aftersales.store.repository import Repository

SELLER_MOVES = ("awaiting_seller", "return_shipped", "awaiting_replacement")
# One order's violations, as `Repository.violations_of([id])` reads them, built once (fastsql).
_VIOLATIONS_OF_ORDER = select(t.violations).where(
    t.violations.c.order_id == bindparam("b_order")).order_by(t.violations.c.id)


def events_out(events: Sequence[Published]) -> list[EventOut]:
    """What an action produced: names, times and rules (no actors or payloads: a party's
    response never names staff or jurors)."""
    return [EventOut(aggregate=e.aggregate, id=e.aggregate_id, name=e.name, at=e.at, rule=e.rule)
            for e in events]


def order_out(repo: Repository, order: Order) -> OrderOut:
    found = fetch(repo.conn, _VIOLATIONS_OF_ORDER, {"b_order": order.id})
    due, kind = order.next_deadline()
    return OrderOut.model_validate({**order_view(order, None, found),
                                    "next_deadline": due, "deadline_kind": kind})


def case_out(case: Case) -> CaseOut:
    return CaseOut.model_validate({**case_view(case), "buyer": case.buyer_id,
                                   "seller": case.seller_id})


def complaint_out(repo: Repository, complaint_id: str) -> ComplaintOut:
    row = repo.conn.execute(select(t.complaints).where(
        t.complaints.c.id == complaint_id)).mappings().one()
    return ComplaintOut.model_validate(complaint_view(dict(row)))


def shipments_of(repo: Repository, order_id: str) -> list[ShipmentOut]:
    sh, te = t.shipments, t.tracking_events
    rows = repo.conn.execute(select(sh).where(sh.c.order_id == order_id)
                             .order_by(sh.c.shipped_at, sh.c.id)).mappings().all()
    numbers = sorted({r["tracking_no"] for r in rows})
    scans: dict[str, list[dict[str, Any]]] = {n: [] for n in numbers}
    if numbers:
        for s in repo.conn.execute(select(te).where(te.c.tracking_no.in_(numbers))
                                   .order_by(te.c.at, te.c.id)).mappings():
            scans[s["tracking_no"]].append({"event": s["kind"], "city": s["city"], "at": s["at"]})
    return [ShipmentOut.model_validate({
        "kind": r["kind"], "carrier": r["carrier"], "tracking": r["tracking_no"],
        "weight_g": r["weight_g"], "shipped_at": r["shipped_at"], "case": r["case_id"],
        "scans": scans[r["tracking_no"]]}) for r in rows]


# -- lists ----------------------------------------------------------------------------------------
CASE_SORTS = {
    "-opened_at": Sort("-opened_at", t.cases.c.opened_at, descending=True),
    "opened_at": Sort("opened_at", t.cases.c.opened_at, descending=False),
    "deadline": Sort("deadline", t.cases.c.deadline, descending=False, non_null=True),
}
ORDER_SORTS = {
    "-placed_at": Sort("-placed_at", t.orders.c.placed_at, descending=True),
    "placed_at": Sort("placed_at", t.orders.c.placed_at, descending=False),
    "next_deadline": Sort("next_deadline", t.orders.c.next_deadline, descending=False,
                          non_null=True),
}
COMPLAINT_SORT = Sort("-opened_at", t.complaints.c.opened_at, descending=True)


def list_cases(repo: Repository, *, sort: str, cursor: str | None, limit: int,
               statuses: Sequence[str] = (), buyer: str | None = None,
               seller: str | None = None, reason: str | None = None,
               case_type: str | None = None, order: str | None = None,
               deadline_before: datetime | None = None, seller_moves: bool = False
               ) -> tuple[list[CaseSummary], str | None]:
    cs = t.cases
    q = select(cs.c.id, cs.c.order_id, cs.c.buyer_id, cs.c.seller_id, cs.c.type, cs.c.reason,
               cs.c.status, cs.c.outcome, cs.c.currency, cs.c.amount, cs.c.refunded,
               cs.c.decided_by, cs.c.opened_at, cs.c.closed_at, cs.c.deadline,
               cs.c.deadline_kind)
    if statuses:
        q = q.where(cs.c.status.in_(list(statuses)))
    for col, value in ((cs.c.buyer_id, buyer), (cs.c.seller_id, seller), (cs.c.reason, reason),
                       (cs.c.type, case_type), (cs.c.order_id, order)):
        if value is not None:
            q = q.where(col == value)
    if deadline_before is not None:
        q = q.where(cs.c.deadline < deadline_before)
    if seller_moves:  # the seller's inbox: what waits on the seller
        q = q.where(or_(cs.c.status.in_(SELLER_MOVES),
                        (cs.c.status == "awaiting_proof") & (cs.c.proof_from == "seller")))
    chosen = CASE_SORTS[sort]
    rows = repo.conn.execute(pagination.page(q, chosen, cs.c.id, cursor, limit)
                             ).mappings().all()
    items = [CaseSummary.model_validate({
        "id": r["id"], "order": r["order_id"], "buyer": r["buyer_id"], "seller": r["seller_id"],
        "type": r["type"], "reason": r["reason"], "status": r["status"], "outcome": r["outcome"],
        "amount": str(Money(r["amount"], r["currency"])),
        "refunded": str(Money(r["refunded"], r["currency"])), "decided_by": r["decided_by"],
        "opened_at": r["opened_at"], "closed_at": r["closed_at"], "deadline": r["deadline"],
        "deadline_kind": r["deadline_kind"]}) for r in rows[:limit]]
    return items, pagination.next_cursor(rows, chosen, chosen.column.key, limit)


def list_orders(repo: Repository, *, sort: str, cursor: str | None, limit: int,
                statuses: Sequence[str] = (), buyer: str | None = None,
                seller: str | None = None, deadline_before: datetime | None = None
                ) -> tuple[list[OrderSummary], str | None]:
    o = t.orders
    q = select(o.c.id, o.c.status, o.c.buyer_id, o.c.seller_id, o.c.mode, o.c.currency,
               o.c.placed_at, o.c.ship_by, o.c.tracking_no, o.c.next_deadline,
               o.c.deadline_kind)
    if statuses:
        q = q.where(o.c.status.in_(list(statuses)))
    for col, value in ((o.c.buyer_id, buyer), (o.c.seller_id, seller)):
        if value is not None:
            q = q.where(col == value)
    if deadline_before is not None:
        q = q.where(o.c.next_deadline < deadline_before)
    chosen = ORDER_SORTS[sort]
    rows = repo.conn.execute(pagination.page(q, chosen, o.c.id, cursor, limit)
                             ).mappings().all()
    items = [OrderSummary.model_validate({
        "id": r["id"], "status": r["status"], "buyer": r["buyer_id"], "seller": r["seller_id"],
        "mode": r["mode"], "currency": r["currency"], "placed_at": r["placed_at"],
        "ship_by": r["ship_by"], "tracking": r["tracking_no"],
        "next_deadline": r["next_deadline"], "deadline_kind": r["deadline_kind"]})
        for r in rows[:limit]]
    return items, pagination.next_cursor(rows, chosen, chosen.column.key, limit)


def list_complaints(repo: Repository, *, cursor: str | None, limit: int,
                    buyer: str | None = None, seller: str | None = None,
                    status: str | None = None, order: str | None = None
                    ) -> tuple[list[ComplaintOut], str | None]:
    c = t.complaints
    q = select(c)
    for col, value in ((c.c.buyer_id, buyer), (c.c.seller_id, seller), (c.c.status, status),
                       (c.c.order_id, order)):
        if value is not None:
            q = q.where(col == value)
    rows = repo.conn.execute(pagination.page(q, COMPLAINT_SORT, c.c.id, cursor, limit)
                             ).mappings().all()
    items = [ComplaintOut.model_validate(complaint_view(dict(r))) for r in rows[:limit]]
    return items, pagination.next_cursor(rows, COMPLAINT_SORT, "opened_at", limit)


def jury_tasks(repo: Repository, juror_id: str) -> list[JuryTaskSummary]:
    """A juror's seats, newest first, without the case's id (IN-3)."""
    s, cs = t.jury_seats, t.cases
    rows = repo.conn.execute(
        select(s.c.task_id, s.c.drawn_at, s.c.side, s.c.voted_at, cs.c.status)
        .select_from(s.join(cs, cs.c.id == s.c.case_id))
        .where(s.c.juror_id == juror_id).order_by(s.c.drawn_at.desc(), s.c.task_id)).all()
    return [JuryTaskSummary(task=task, drawn_at=drawn, open=status == "jury_voting",
                            voted=voted is not None, side=side)
            for task, drawn, side, voted, status in rows]


def stored_policies(repo: Repository, policy_id: str) -> list[dict[str, Any]]:
    p = t.policy_packs
    rows = repo.conn.execute(select(p.c.id, p.c.version, p.c.digest, p.c.registered_at)
                             .where(p.c.id == policy_id).order_by(p.c.registered_at)).mappings()
    return [dict(r) for r in rows]

