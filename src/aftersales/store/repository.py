"""Row <-> aggregate mapping and the queries the service layer needs.

Saves use optimistic concurrency: `UPDATE ... WHERE id = :id AND version = :seen`; a lost race
raises `ConcurrencyConflict` and the unit of work rolls everything back.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import Enum
from operator import attrgetter, itemgetter
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    bindparam,
    func,
    insert,
    literal_column,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError

from aftersales.domain import codec
from aftersales.domain.cases import Case, CaseStatus, Outcome
from aftersales.domain.errors import (
    ActionNotAllowed,
    ConcurrencyConflict,
    NotFound,
    PolicyError,
)
from aftersales.domain.money import Money
from aftersales.domain.orders import Order, OrderLine
from aftersales.domain.types import (
    Actor,
    CaseType,
    Event,
    LedgerEntry,
    OrderStatus,
    Reason,
    ShippingMode,
)
from aftersales.policy import loader
from aftersales.policy.model import Policy
from aftersales.store import audit
from aftersales.store import tables as t
from aftersales.store.fastsql import execute, executemany, fetch, fetch_values, positions
from aftersales.store.records import RecordsStore

E = TypeVar("E", bound=Enum)
_CASE_SCALARS = (
    "id", "order_id", "buyer_id", "seller_id", "decided_by", "received", "opened_at",
    "closed_at", "after_completion", "shipped_when_opened", "freight_payer",
    "seller_responsible", "policy_id", "policy_version", "description", "deadline",
    "deadline_kind", "return_address", "return_carrier", "return_tracking", "return_method",
    "replacement_carrier", "replacement_tracking", "rejection_reason", "escalated_by",
    "version", "seq", "staff_due", "proof_from", "proof_due", "proof_requests",
    "buyer_evidence", "seller_evidence", "penalty", "log_head",
)
_ORDER_SCALARS = (
    "id", "buyer_id", "seller_id", "currency", "ship_to_city", "placed_at", "ship_by",
    "shipped_at", "delivered_at", "completed_at", "closed_at", "auto_confirm_at",
    "auto_confirm_paused_at", "carrier", "tracking_no", "policy_id", "policy_version",
    "version", "seq", "declared_weight_g", "first_scan_at", "first_pickup_at", "last_scan_at",
    "delivery_city", "lost_at", "refund_requested_at", "oos_answer_due", "oos_choice",
    "reminded_at",
)
_get_case_scalars = attrgetter(*_CASE_SCALARS)
# A `cases` row read by position (its columns in table order, as `select(cases)` gives them).
_C_POS = {c.key: i for i, c in enumerate(t.cases.c)}
_case_scalars_of = itemgetter(*(_C_POS[k] for k in _CASE_SCALARS))
_case_others_of = itemgetter(*(_C_POS[k] for k in (
    "currency", "type", "reason", "status", "outcome", "lines", "amount", "refunded", "offer",
    "rules", "jury_panel", "jury_votes")))
# Stored enum values back to members: a dict lookup (Enum's own call goes through its
# metaclass in Python); an unknown value still raises Enum's ValueError.
_MEMBERS: dict[type[Enum], dict[Any, Any]] = {
    cls: {m.value: m for m in cls}
    for cls in (CaseType, Reason, CaseStatus, Outcome, ShippingMode, OrderStatus)}


def _member(cls: type[E], value: Any) -> E:
    member: E | None = _MEMBERS[cls].get(value)
    return member if member is not None else cls(value)


_ORDER_LABELS = tuple((k, f"o_{k}") for k in _ORDER_SCALARS)  # as _SELECT_ORDER names them
# Order state written on every save (besides version/seq and the deadline columns).
_ORDER_MUTABLE = tuple(k for k in _ORDER_SCALARS
                       if k not in ("id", "buyer_id", "seller_id", "currency", "ship_to_city",
                                    "placed_at", "policy_id", "policy_version", "version", "seq"))
# The same fields read off the aggregate in one C call each (attrgetter) instead of a loop.
_ORDER_INSERTED = tuple(k for k in _ORDER_SCALARS if k not in ("version", "seq"))
_get_order_inserted = attrgetter(*_ORDER_INSERTED)
_get_order_mutable = attrgetter(*_ORDER_MUTABLE)


def _order_extra(order: Order) -> dict[str, Any]:
    """Columns that need converting: the longest scan gap in seconds, violation names."""
    gap = order.max_scan_gap
    return {"max_scan_gap_s": int(gap.total_seconds()) if gap is not None else None,
            "violations": list(order.violations), "oos_lines": list(order.oos_lines)}

# Statements are built once and executed with parameter dicts: building `.values(...)` or a
# `where(col == value)` per call costs more than the database round trip on SQLite, and a
# prebuilt statement hits the compiled cache without being re-keyed. UPDATEs take their SET
# clause from the parameter keys; the WHERE binds are prefixed `b_` so they never clash.
_O, _L, _C = t.orders, t.order_lines, t.cases
# An order and its lines come back in one round trip (order columns labelled o_*, line columns
# l_*; an order without lines would give one row of NULL l_*).
_ORDER_AND_LINES = (*(c.label(f"o_{c.key}") for c in _O.c),
                    *(c.label(f"l_{c.key}") for c in _L.c))
_SELECT_ORDER = (
    select(*_ORDER_AND_LINES).select_from(_O.outerjoin(_L, _L.c.order_id == _O.c.id))
    .where(_O.c.id == bindparam("b_id")).order_by(_L.c.line_no))
_SELECT_CASE = select(_C).where(_C.c.id == bindparam("b_id"))
_SELECT_CASE_ORDER = (  # a case action needs both: one round trip instead of two
    select(_C, *_ORDER_AND_LINES)
    .select_from(_C.outerjoin(_O, _O.c.id == _C.c.order_id)
                 .outerjoin(_L, _L.c.order_id == _O.c.id))
    .where(_C.c.id == bindparam("b_id")).order_by(_L.c.line_no))
_INSERT_ORDER = insert(_O)
_UPDATE_ORDER = update(_O).where(_O.c.id == bindparam("b_id"),
                                 _O.c.version == bindparam("b_version"))
_INSERT_LINES = insert(_L)
_UPDATE_LINE = update(_L).where(_L.c.order_id == bindparam("b_order_id"),
                                _L.c.line_no == bindparam("b_line_no"))
_INSERT_CASE = insert(_C)
_UPDATE_CASE = update(_C).where(_C.c.id == bindparam("b_id"),
                                _C.c.version == bindparam("b_version"))
# Rows with a generated id: nothing reads the new id back, so `inline()` spares PostgreSQL
# the `RETURNING id` a single-row INSERT would otherwise carry.
_INSERT_ORDER_EVENTS = insert(t.order_events).inline()
_INSERT_CASE_EVENTS = insert(t.case_events).inline()
_INSERT_LEDGER = insert(t.ledger).inline()
_INSERT_SHIPMENT = insert(t.shipments).inline()
_INSERT_TRACKING = insert(t.tracking_events).inline()
_OUTBOUND_BY_TRACKING = select(t.shipments.c.order_id).where(
    t.shipments.c.tracking_no == bindparam("b_tracking"), t.shipments.c.kind == "outbound")
_ANY_BY_TRACKING = select(t.shipments.c.id).where(
    t.shipments.c.tracking_no == bindparam("b_tracking")).limit(1)
_NEXT_DUE = select(  # one round trip; the simulated clock (advance) asks before every step
    select(func.min(_C.c.deadline)).scalar_subquery(),
    select(func.min(_O.c.next_deadline)).scalar_subquery())
def _claim_stmt(id_col: Any, due_col: Any, locking: bool) -> Any:
    q = (select(id_col).where(due_col <= bindparam("b_now"))
         .order_by(due_col).limit(bindparam("b_limit")))
    return q.with_for_update(skip_locked=True) if locking else q


# The worker's claims (oldest due first; on PostgreSQL locked, skipping rows others hold).
_CLAIMS = {(col.table.name, locking): _claim_stmt(col, due, locking)
           for col, due in ((_C.c.id, _C.c.deadline), (_O.c.id, _O.c.next_deadline))
           for locking in (False, True)}
_S = t.stock
_TAKE_STOCK = (update(_S).where(_S.c.seller_id == bindparam("b_seller"),
                                _S.c.sku == bindparam("b_sku"),
                                _S.c.quantity >= bindparam("b_qty"))
               .values(quantity=_S.c.quantity - bindparam("b_qty")))
# SQLite: the same decrement guarded by the table's CHECK (quantity >= 0) alone (see take_stock).
_TAKE_STOCK_CHECKED = (update(_S).where(_S.c.seller_id == bindparam("b_seller"),
                                        _S.c.sku == bindparam("b_sku"))
                       .values(quantity=_S.c.quantity - bindparam("b_qty")))
_STOCK_LEFT = select(_S.c.quantity).where(_S.c.seller_id == bindparam("b_seller"),
                                          _S.c.sku == bindparam("b_sku"))
_TE = t.tracking_events
_SCANS_OF = (select(_TE.c.kind, _TE.c.city, _TE.c.at)
             .where(_TE.c.tracking_no == bindparam("b_tracking"))
             .order_by(_TE.c.at, _TE.c.id))
# A tracking number's scans (src 0, oldest first, as _SCANS_OF) and the orders its outbound
# parcel is on (src 1, as _OUTBOUND_BY_TRACKING): what a shipment checks, in one round trip.
_SH = t.shipments
_TRAIL = union_all(
    select(literal_column("0").label("src"), _TE.c.kind, _TE.c.city, _TE.c.at,
           _TE.c.id.label("n"), null().label("order_id"))
    .where(_TE.c.tracking_no == bindparam("b_tracking")),
    select(literal_column("1"), null(), null(), null(), null(), _SH.c.order_id)
    .where(_SH.c.tracking_no == bindparam("b_tracking"), _SH.c.kind == "outbound"),
).order_by("src", "at", "n")
# The orders _OUTBOUND_BY_TRACKING names, each with its lines as _SELECT_ORDER reads them (a
# scan loads them all in one round trip instead of the ids and then each order).
_ORDERS_ON_TRACKING = (
    select(*_ORDER_AND_LINES).select_from(_O.outerjoin(_L, _L.c.order_id == _O.c.id))
    .where(_O.c.id.in_(select(_SH.c.order_id).where(
        _SH.c.tracking_no == bindparam("b_tracking"), _SH.c.kind == "outbound")))
    .order_by(_O.c.id, _L.c.line_no))
# Reading those rows by position (`fetch_values`): no dict per row, one C call per order and
# per line for the values.
_OL_POS = positions(_SELECT_ORDER)
assert positions(_ORDERS_ON_TRACKING) == _OL_POS
_ORDER_VALUES = itemgetter(*(_OL_POS[label] for _, label in _ORDER_LABELS))
_LINE_VALUES = itemgetter(*(_OL_POS[f"l_{k}"] for k in (
    "line_no", "sku", "title", "qty", "unit_price", "paid", "refunded", "no_reason_7d",
    "category", "warranty_days", "warranty_kind", "open_case_id", "after_sales_used",
    "weight_g")))
# `_SELECT_CASE_ORDER` rows by position: the case's columns, then `_ORDER_AND_LINES`'.
_N_CASE = len(_C.c)
assert positions(_SELECT_CASE) == _C_POS
assert {k: i for k, i in positions(_SELECT_CASE_ORDER).items() if i < _N_CASE} == _C_POS
assert {k: i - _N_CASE for k, i in positions(_SELECT_CASE_ORDER).items() if i >= _N_CASE} == _OL_POS
_P_ID, _P_CURRENCY, _P_MODE, _P_STATUS, _P_GAP, _P_VIOLATIONS, _P_OOS = (
    _OL_POS[f"o_{k}"] for k in ("id", "currency", "mode", "status", "max_scan_gap_s",
                                "violations", "oos_lines"))


# A command encodes each new event's changes twice: for its caller (`Published.data`) and for
# the log row. The service encodes first (`encode_changes`) and leaves the result here for the
# save right after it, found by identity (events are immutable records; nothing runs between).
_ENCODED: dict[int, tuple[Event, Any]] = {}


def encode_changes(event: Event) -> Any:
    """`codec.encode(event.changes)`, also kept for this event's log row."""
    value = codec.encode(event.changes)
    if len(_ENCODED) >= 1024:  # published but never saved (a command that failed): forget
        _ENCODED.clear()
    _ENCODED[id(event)] = (event, value)
    return value


def _stored_changes(event: Event) -> Any:
    kept = _ENCODED.pop(id(event), None)
    return kept[1] if kept is not None and kept[0] is event else codec.encode(event.changes)


def _events_rows(owner: str, owner_id: str, first_seq: int, events: Sequence[Event]
                 ) -> list[dict[str, Any]]:
    return [
        {f"{owner}_id": owner_id, "seq": first_seq + i, "name": e.name, "at": e.at,
         "actor": str(e.actor), "rule": e.rule, "changes": _stored_changes(e)}
        for i, e in enumerate(events)
    ]


class Repository(RecordsStore):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._policies: dict[tuple[str, str], Policy] = {}

    # -- orders -------------------------------------------------------------------------------
    def get_order(self, order_id: str) -> Order:
        rows = fetch_values(self.conn, _SELECT_ORDER, {"b_id": order_id})
        if not rows:
            raise NotFound(f"unknown order {order_id!r}")
        return self._order_from_values(rows)

    @staticmethod
    def _order_from_values(rows: Sequence[Sequence[Any]]) -> Order:
        """An order from its rows of `_ORDER_AND_LINES` (the order repeated on each, one line per
        row), read by position."""
        row = rows[0]
        cur = row[_P_CURRENCY]
        gap = row[_P_GAP]
        return Order(
            **dict(zip(_ORDER_SCALARS, _ORDER_VALUES(row), strict=True)),
            mode=_member(ShippingMode, row[_P_MODE]),
            status=_member(OrderStatus, row[_P_STATUS]),
            lines=[OrderLine(no, sku, title, qty, Money(unit, cur), Money(paid, cur),
                             Money(refunded, cur), no_reason, category, w_days, w_kind, case_id,
                             used, weight)
                   for (no, sku, title, qty, unit, paid, refunded, no_reason, category, w_days,
                        w_kind, case_id, used, weight) in map(_LINE_VALUES, rows)
                   if no is not None],
            max_scan_gap=timedelta(seconds=gap) if gap is not None else None,
            violations=tuple(row[_P_VIOLATIONS] or ()),
            oos_lines=tuple(row[_P_OOS] or ()),
        )

    def add_order(self, order: Order) -> None:
        due, kind = order.next_deadline()
        try:
            execute(self.conn, _INSERT_ORDER, {
                **dict(zip(_ORDER_INSERTED, _get_order_inserted(order), strict=True)),
                "mode": order.mode.value, "status": order.status.value, "next_deadline": due,
                "deadline_kind": kind, "version": 1, "seq": order.seq, **_order_extra(order)})
        except IntegrityError:
            raise ConcurrencyConflict(f"order {order.id} already exists") from None
        executemany(self.conn, _INSERT_LINES, [
            {"order_id": order.id, "line_no": ln.line_no, "sku": ln.sku, "title": ln.title,
             "qty": ln.qty, "unit_price": ln.unit_price.minor, "paid": ln.paid.minor,
             "refunded": ln.refunded.minor, "no_reason_7d": ln.no_reason_7d,
             "category": ln.category, "warranty_days": ln.warranty_days,
             "warranty_kind": ln.warranty_kind, "open_case_id": ln.open_case_id,
             "after_sales_used": ln.after_sales_used, "weight_g": ln.weight_g}
            for ln in order.lines])
        order.version = 1
        self._flush_order(order)

    def save_order(self, order: Order) -> None:
        if not order.pending and not order.pending_ledger:
            return
        due, kind = order.next_deadline()
        count = execute(self.conn, _UPDATE_ORDER, {
            "b_id": order.id, "b_version": order.version, "status": order.status.value,
            "mode": order.mode.value,
            **dict(zip(_ORDER_MUTABLE, _get_order_mutable(order), strict=True)),
            **_order_extra(order),
            "next_deadline": due, "deadline_kind": kind, "version": order.version + 1,
            "seq": order.seq})
        if count != 1:
            raise ConcurrencyConflict(f"order {order.id} was changed by someone else; "
                                      "nothing was applied")
        order.version += 1
        for no in sorted(order.dirty_lines):
            ln = order.line(no)
            execute(self.conn, _UPDATE_LINE, {
                "b_order_id": order.id, "b_line_no": no, "refunded": ln.refunded.minor,
                "open_case_id": ln.open_case_id, "after_sales_used": ln.after_sales_used})
        self._flush_order(order)

    def _flush_order(self, order: Order) -> None:
        if order.pending:
            first = order.seq - len(order.pending) + 1
            executemany(self.conn, _INSERT_ORDER_EVENTS,
                        _events_rows("order", order.id, first, order.pending))
        if order.pending_ledger:
            self.add_ledger(order.pending_ledger)
        if order.pending_violations:  # after the version check: a lost race never gets here
            self.add_violations(order, order.pending_violations)
            order.pending_violations.clear()
        order.pending.clear()
        order.pending_ledger.clear()
        order.dirty_lines.clear()

    def add_ledger(self, entries: Iterable[LedgerEntry]) -> None:
        executemany(self.conn, _INSERT_LEDGER, [
            {"order_id": e.order_id, "case_id": e.case_id, "line_no": e.line_no,
             "kind": e.kind.value, "amount": e.amount.minor, "currency": e.amount.currency,
             "points": e.points, "buyer_id": e.buyer_id, "seller_id": e.seller_id,
             "reason": e.reason, "rule": e.rule, "at": e.at} for e in entries])

    def orders_by_tracking(self, tracking_no: str) -> list[str]:
        rows = fetch(self.conn, _OUTBOUND_BY_TRACKING, {"b_tracking": tracking_no})
        return sorted({r["order_id"] for r in rows})

    def orders_on_tracking(self, tracking_no: str) -> list[Order]:
        """The orders `orders_by_tracking` names, in its order, each as `get_order` loads it:
        one round trip."""
        rows = fetch_values(self.conn, _ORDERS_ON_TRACKING, {"b_tracking": tracking_no})
        by_id: dict[str, list[list[Any]]] = {}
        for row in rows:
            by_id.setdefault(row[_P_ID], []).append(row)
        # sorted here, not by the database's collation: the same order as orders_by_tracking
        return [self._order_from_values(by_id[k]) for k in sorted(by_id)]

    def tracking_trail(self, tracking_no: str
                       ) -> tuple[list[tuple[str, str | None, datetime]], list[str]]:
        """`scans_of` and `orders_by_tracking` of one number, in one round trip."""
        scans: list[tuple[str, str | None, datetime]] = []
        order_ids: set[str] = set()
        for src, kind, city, at, _n, order_id in fetch_values(
                self.conn, _TRAIL, {"b_tracking": tracking_no}):
            if src == 0:
                scans.append((kind, city, at))
            else:
                order_ids.add(order_id)
        return scans, sorted(order_ids)

    def add_shipment(self, order_id: str, kind: str, carrier: str, tracking_no: str,
                     at: datetime, weight_g: int | None = None,
                     case_id: str | None = None) -> None:
        execute(self.conn, _INSERT_SHIPMENT, {
            "order_id": order_id, "case_id": case_id, "kind": kind, "carrier": carrier,
            "tracking_no": tracking_no, "weight_g": weight_g, "shipped_at": at})

    def add_tracking_event(self, tracking_no: str, kind: str, city: str | None,
                           at: datetime) -> None:
        execute(self.conn, _INSERT_TRACKING, {
            "tracking_no": tracking_no, "kind": kind, "city": city, "at": at})

    # -- cases --------------------------------------------------------------------------------
    def get_case(self, case_id: str) -> Case:
        rows = fetch_values(self.conn, _SELECT_CASE, {"b_id": case_id})
        if not rows:
            raise NotFound(f"unknown case {case_id!r}")
        return self._case_from_values(rows[0])

    def get_case_and_order(self, case_id: str) -> tuple[Case, Order]:
        """The case and its order, as `get_case` then `get_order` would load them."""
        rows = fetch_values(self.conn, _SELECT_CASE_ORDER, {"b_id": case_id})
        if not rows:
            raise NotFound(f"unknown case {case_id!r}")
        case = rows[0]  # the case's columns come first, as in _SELECT_CASE
        if case[_N_CASE + _P_ID] is None:
            raise NotFound(f"unknown order {case[_C_POS['order_id']]!r}")
        return (self._case_from_values(case),
                self._order_from_values([row[_N_CASE:] for row in rows]))

    @staticmethod
    def _case_from_values(row: Sequence[Any]) -> Case:
        """A case from a row that starts with the `cases` columns in table order."""
        (cur, type_, reason, status, outcome, lines, amount, refunded, offer, rules, panel,
         votes) = _case_others_of(row)
        return Case(
            **dict(zip(_CASE_SCALARS, _case_scalars_of(row), strict=True)),
            type=_member(CaseType, type_), reason=_member(Reason, reason),
            status=_member(CaseStatus, status), outcome=_member(Outcome, outcome),
            lines=tuple((int(a), int(b)) for a, b in lines),
            amount=Money(amount, cur), refunded=Money(refunded, cur),
            offer=Money(offer, cur) if offer is not None else None,
            rules=tuple(rules),
            jury_panel=tuple(panel or ()),
            jury_votes=tuple((str(j), str(v)) for j, v in votes or ()),
        )

    def _case_values(self, case: Case) -> dict[str, Any]:
        return {
            **dict(zip(_CASE_SCALARS, _get_case_scalars(case), strict=True)),
            "type": case.type.value, "reason": case.reason.value, "status": case.status.value,
            "outcome": case.outcome.value, "lines": [list(x) for x in case.lines],
            "currency": case.amount.currency, "amount": case.amount.minor,
            "refunded": case.refunded.minor,
            "offer": case.offer.minor if case.offer is not None else None,
            "rules": list(case.rules), "jury_panel": list(case.jury_panel),
            "jury_votes": [list(v) for v in case.jury_votes],
        }

    def add_case(self, case: Case) -> None:
        rows = self._chained_rows(case)
        values = self._case_values(case)
        values["version"] = 1
        try:
            execute(self.conn, _INSERT_CASE, values)
        except IntegrityError:
            raise ConcurrencyConflict(f"case {case.id} already exists") from None
        case.version = 1
        self._flush_case(case, rows)

    def save_case(self, case: Case) -> None:
        if not case.pending:
            return
        rows = self._chained_rows(case)
        values = self._case_values(case)
        values.update(version=case.version + 1, b_id=case.id, b_version=case.version)
        if execute(self.conn, _UPDATE_CASE, values) != 1:
            raise ConcurrencyConflict(f"case {case.id} was changed by someone else; "
                                      "nothing was applied")
        case.version += 1
        self._flush_case(case, rows)

    @staticmethod
    def _chained_rows(case: Case) -> list[dict[str, Any]]:
        """The log rows of the case's new events, each committing to the one before it (the
        first to GENESIS); moves `case.log_head`, which the case row stores with them."""
        first = case.seq - len(case.pending) + 1
        rows = _events_rows("case", case.id, first, case.pending)
        head = case.log_head or audit.GENESIS
        for row in rows:
            row["prev_hash"] = head
            head = row["hash"] = audit.entry_hash(head, case.id, row["seq"], row["name"],
                                                  row["at"], row["actor"], row["rule"],
                                                  row["changes"])
        case.log_head = head
        return rows

    def _flush_case(self, case: Case, rows: list[dict[str, Any]]) -> None:
        try:
            executemany(self.conn, _INSERT_CASE_EVENTS, rows)
        except IntegrityError:
            raise ConcurrencyConflict(f"case {case.id} log moved on; nothing was applied") from None
        case.pending.clear()

    def case_events(self, case_id: str) -> list[Event]:
        return [self._event(r) for r in self.conn.execute(
            select(t.case_events).where(t.case_events.c.case_id == case_id)
            .order_by(t.case_events.c.seq)).mappings()]

    def order_events(self, order_id: str) -> list[Event]:
        return [self._event(r) for r in self.conn.execute(
            select(t.order_events).where(t.order_events.c.order_id == order_id)
            .order_by(t.order_events.c.seq)).mappings()]

    @staticmethod
    def _event(row: Any) -> Event:
        return Event(row["name"], row["at"], Actor.parse(row["actor"]), row["rule"],
                     codec.decode(row["changes"]))

    # -- deadlines ----------------------------------------------------------------------------
    def claim_due_cases(self, now: datetime, limit: int,
                        exclude: Collection[str] = ()) -> list[str]:
        """Ids of cases whose deadline has passed, oldest first. On PostgreSQL the rows stay
        locked until commit and rows another worker holds are skipped (SKIP LOCKED). `exclude`
        holds ids that failed earlier in this round, so they cannot starve the rest."""
        return self._claim(_C.c.id, _C.c.deadline, now, limit, exclude)

    def claim_due_orders(self, now: datetime, limit: int,
                         exclude: Collection[str] = ()) -> list[str]:
        return self._claim(_O.c.id, _O.c.next_deadline, now, limit, exclude)

    def _claim(self, id_col: Any, due_col: Any, now: datetime, limit: int,
               exclude: Collection[str]) -> list[str]:
        locking = self.conn.dialect.name == "postgresql"
        if not exclude:  # the usual round: a prebuilt statement on the fast path
            stmt = _CLAIMS[(id_col.table.name, locking)]
            return [r[0] for r in fetch_values(self.conn, stmt,
                                               {"b_now": now, "b_limit": limit})]
        q = (select(id_col).where(due_col <= now, id_col.not_in(list(exclude)))
             .order_by(due_col).limit(limit))
        if locking:
            q = q.with_for_update(skip_locked=True)
        return [r[0] for r in self.conn.execute(q)]

    def next_due(self) -> datetime | None:
        (a, b), = fetch_values(self.conn, _NEXT_DUE)  # asked before every simulated step
        known = [x for x in (a, b) if x is not None]
        return min(known) if known else None

    # -- policy packs -------------------------------------------------------------------------
    def register_policy(self, policy: Policy, now: datetime) -> None:
        """Store a pack version so that cases pinned to it keep working after the file moves on.
        The same id and version with different numbers is refused: bump the version."""
        body = loader.to_dict(policy)
        dig = loader.digest(body)
        key = (policy.id, policy.version)
        if key in self._policies:
            return
        find = select(t.policy_packs.c.digest).where(
            t.policy_packs.c.id == policy.id, t.policy_packs.c.version == policy.version)
        row = self.conn.execute(find).first()
        if row is None:
            try:  # two first users at once: the loser re-reads what the winner stored
                with self.conn.begin_nested():
                    self.conn.execute(insert(t.policy_packs).values(
                        id=policy.id, version=policy.version, digest=dig, body=body,
                        registered_at=now))
            except IntegrityError:
                row = self.conn.execute(find).first()
        if row is not None and row[0] != dig:
            raise PolicyError(f"policy {policy.id} version {policy.version} is already in use "
                              "with different numbers; give the changed pack a new version")
        self._policies[key] = policy

    def get_policy(self, policy_id: str, version: str) -> Policy:
        key = (policy_id, version)
        if key not in self._policies:
            row = self.conn.execute(select(t.policy_packs.c.body).where(
                t.policy_packs.c.id == policy_id, t.policy_packs.c.version == version)).first()
            if row is None:
                raise NotFound(f"policy {policy_id} version {version} is not registered")
            body = row[0] if isinstance(row[0], dict) else json.loads(row[0])
            self._policies[key] = loader.build(body, f"{policy_id}@{version}")
        return self._policies[key]

    # -- shipping violations ------------------------------------------------------------------
    def add_violations(self, order: Order, found: Sequence[Mapping[str, Any]]) -> None:
        """Record violations (once per order and name: the table's unique key backs it)."""
        try:
            self._insert_violations(order, found)
        except IntegrityError:
            raise ConcurrencyConflict(f"order {order.id}: violation already recorded") from None

    def _insert_violations(self, order: Order, found: Sequence[Mapping[str, Any]]) -> None:
        self.conn.execute(insert(t.violations), [
            {"order_id": order.id, "seller_id": order.seller_id, "buyer_id": order.buyer_id,
             "name": v["name"], "rule": v["rule"], "detectors": list(v["detectors"]),
             "evidence": codec.encode(v["evidence"]), "detected_at": v["detected_at"],
             "status": "confirmed", "compensation": v["compensation"].minor,
             "currency": v["compensation"].currency,
             "paid_as": v["paid_as"].value if v["paid_as"] is not None else None}
            for v in found])

    def scans_of(self, tracking_no: str) -> list[tuple[str, str | None, datetime]]:
        """Every scan recorded for a tracking number, oldest first."""
        rows = fetch(self.conn, _SCANS_OF, {"b_tracking": tracking_no})
        return [(r["kind"], r["city"], r["at"]) for r in rows]

    def mark_violation_disputed(self, order_id: str, name: str, reason: str) -> None:
        self.conn.execute(update(t.violations).where(
            t.violations.c.order_id == order_id, t.violations.c.name == name)
            .values(status="disputed", dispute_reason=reason))

    def violations_of(self, order_ids: Sequence[str]) -> list[dict[str, Any]]:
        rows = self.conn.execute(select(t.violations).where(
            t.violations.c.order_id.in_(list(order_ids))).order_by(t.violations.c.id)).mappings()
        return [dict(r) for r in rows]

    # -- inventory (SH-7) ---------------------------------------------------------------------
    def set_stock(self, seller_id: str, sku: str, quantity: int) -> None:
        updated = self.conn.execute(update(t.stock).where(
            t.stock.c.seller_id == seller_id, t.stock.c.sku == sku).values(quantity=quantity))
        if updated.rowcount == 0:
            self.conn.execute(insert(t.stock).values(seller_id=seller_id, sku=sku,
                                                     quantity=quantity))

    def take_stock(self, seller_id: str, sku: str, qty: int) -> None:
        """Decrement atomically, never below zero (the UPDATE only matches while enough is
        left; on SQLite the table's CHECK refuses it), so two concurrent payments cannot both
        take the last unit. A sku with no stock row is unlimited."""
        key = {"b_seller": seller_id, "b_sku": sku}
        if self.conn.dialect.name == "sqlite":
            # One statement in the usual cases: a decrement below zero breaks the stock
            # table's CHECK (quantity >= 0), and SQLite undoes just that statement, so no match
            # means no stock row (unlimited) without reading the row again. (On PostgreSQL the
            # error would abort the transaction: there the WHERE guards the decrement.)
            try:
                execute(self.conn, _TAKE_STOCK_CHECKED, {**key, "b_qty": qty})
                return
            except IntegrityError:
                pass  # not enough left: say how many below
        elif execute(self.conn, _TAKE_STOCK, {**key, "b_qty": qty}) == 1:
            return
        left = next((r["quantity"] for r in fetch(self.conn, _STOCK_LEFT, key)), None)
        if left is not None:
            raise ActionNotAllowed(f"seller {seller_id} has {left} of {sku!r} in stock, "
                                   f"{qty} ordered", rule="SH-7", code="out_of_stock",
                                   action="place_order")

    def stock_of(self, seller_id: str) -> dict[str, int]:
        rows = self.conn.execute(select(t.stock.c.sku, t.stock.c.quantity).where(
            t.stock.c.seller_id == seller_id).order_by(t.stock.c.sku))
        return {r[0]: r[1] for r in rows}

    # -- small helpers used by the service ----------------------------------------------------
    def is_known_tracking(self, tracking_no: str) -> bool:
        return bool(fetch(self.conn, _ANY_BY_TRACKING, {"b_tracking": tracking_no}))

    def refresh_order_deadline(self, order: Order) -> None:
        """Recompute a stale next_deadline (e.g. auto-confirm frozen by an open case)."""
        due, kind = order.next_deadline()
        execute(self.conn, _UPDATE_ORDER, {"b_id": order.id, "b_version": order.version,
                                           "next_deadline": due, "deadline_kind": kind})
