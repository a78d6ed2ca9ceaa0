"""Complaints about a shop (CP-1), always decided by platform staff (IN-3), and ratings (SR-3).

A complaint is its own small aggregate with an append-only log, like a case: filed by the
order's buyer, answered (contested) by the seller, upheld or dismissed by staff. An upheld
complaint can carry penalty points (§9), which go to the seller's record through the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aftersales.domain.errors import ActionNotAllowed, InvalidInput, WrongActor
from aftersales.domain.evidence import evidence_text
from aftersales.domain.orders import Order
from aftersales.domain.types import Actor, Event, OrderStatus, Role, require_aware
from aftersales.policy.model import Policy

KINDS = ("broken_promise", "non_shipment", "infringement")
# Penalties staff may attach when upholding (§9): late shipment compensation not paid before
# staff upheld the complaint, a verified refusal to ship.
COMPLAINT_PENALTIES = ("late_shipment_unpaid", "refusal_to_ship")

# The machine, declared once: status -> action -> (next status, who may, rule).
TRANSITIONS: dict[str, dict[str, tuple[str, Role, str]]] = {
    "open": {"respond": ("open", Role.SELLER, "IN-3"),
             "uphold": ("upheld", Role.STAFF, "CP-1"),
             "dismiss": ("dismissed", Role.STAFF, "CP-1")},
    "upheld": {},
    "dismissed": {},
}


def _text(value: str | None, what: str, policy: Policy, required: bool = False) -> str:
    """Free text: normalised, no control characters, within the pack's limit (as evidence)."""
    try:
        text = evidence_text(value, policy.intervention.evidence_text_max)
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: {exc.message}") from None
    if required and not text:
        raise InvalidInput(f"{what} is required")
    return text


@dataclass(slots=True)
class Complaint:
    id: str
    order_id: str
    buyer_id: str
    seller_id: str
    kind: str
    text: str
    status: str
    opened_at: datetime
    seller_response: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    penalty: str | None = None
    points: int = 0
    version: int = 0
    seq: int = 0
    pending: list[Event] = field(default_factory=list)

    @classmethod
    def file(cls, *, complaint_id: str, order: Order, actor: Actor, kind: str, text: str,
             policy: Policy,
             now: datetime, open_kinds: Iterable[str] = ()) -> Complaint:
        """CP-1: the order's buyer complains about the shop; `open_kinds` are the kinds of this
        order's complaints still open (one open complaint per order and kind)."""
        require_aware(now)
        if actor.role is not Role.BUYER or actor.id != order.buyer_id:
            raise WrongActor(f"{actor} may not complain about order {order.id}: only its buyer "
                             "may", rule="CP-1", entity=order.id, action="complain")
        if kind not in KINDS:
            raise InvalidInput(f"complaint kind {kind!r} is not one of {', '.join(KINDS)}",
                               rule="CP-1")
        if kind == "non_shipment" and order.status is not OrderStatus.PAID \
                and "fake_shipment" not in order.violations:
            shipped = order.shipped_at.isoformat() if order.shipped_at else "?"
            raise ActionNotAllowed(
                f"order {order.id} shipped at {shipped}; a non-shipment complaint needs an "
                "unshipped order or a detected fake shipment", rule="CP-1", entity=order.id,
                action="complain", status=order.status.value)
        if kind in set(open_kinds):
            raise ActionNotAllowed(f"order {order.id} already has an open {kind} complaint",
                                   rule="CP-1", entity=order.id, action="complain",
                                   code="complaint_open")
        c = cls(id=complaint_id, order_id=order.id, buyer_id=order.buyer_id,
                seller_id=order.seller_id, kind=kind, text=_text(text, "complaint text", policy),
                status="open", opened_at=now)
        c._record("ComplaintFiled", now, actor, "CP-1", {
            "id": c.id, "order_id": c.order_id, "buyer_id": c.buyer_id,
            "seller_id": c.seller_id, "kind": kind, "text": c.text, "status": "open",
            "opened_at": now})
        return c

    def act(self, action: str, actor: Actor, now: datetime, policy: Policy, order: Order,
            *, text: str | None = None, penalty: str | None = None) -> Event:
        require_aware(now)
        row = TRANSITIONS[self.status].get(action)
        if row is None:
            raise ActionNotAllowed(f"complaint {self.id}: {action} is not allowed when "
                                   f"{self.status}", rule="CP-1", entity=self.id,
                                   action=action, status=self.status)
        target, role, rule = row
        if actor.role is not role or (role is Role.SELLER and actor.id != self.seller_id):
            raise WrongActor(f"{actor} may not {action} complaint {self.id}: only "
                             f"{'its seller' if role is Role.SELLER else 'platform staff'} "
                             "may", rule=rule, entity=self.id, action=action,
                             status=self.status)
        changes: dict[str, Any] = {"status": target}
        if action == "respond":
            if self.seller_response is not None:
                raise ActionNotAllowed(f"complaint {self.id}: the seller has answered already",
                                       rule="IN-3", entity=self.id, action=action,
                                       status=self.status, code="already_answered")
            changes["seller_response"] = _text(text, "the seller's answer", policy, required=True)
            return self._record("ComplaintContested", now, actor, rule, changes)
        if penalty in (None, "none"):
            penalty = None
        elif action != "uphold" or penalty not in COMPLAINT_PENALTIES:
            raise InvalidInput(f"penalty {penalty!r}: an upheld complaint may carry one of "
                               f"{', '.join(COMPLAINT_PENALTIES)}", rule="CP-1")
        points = getattr(policy.penalties, penalty) if penalty else 0
        changes.update(resolved_at=now, resolved_by=str(actor), penalty=penalty, points=points,
                       resolution=_text(text, "the resolution", policy))
        if points:
            order.penalize(points, at=now, actor=actor, rule="CP-1",
                           reason=f"complaint {self.id} ({self.kind}) upheld: "
                                  f"{penalty.replace('_', ' ') if penalty else ''}")
        name = "ComplaintUpheld" if action == "uphold" else "ComplaintDismissed"
        return self._record(name, now, actor, rule, changes)

    def _record(self, name: str, at: datetime, actor: Actor, rule: str | None,
                changes: Mapping[str, Any]) -> Event:
        event = Event(name, at, actor, rule, dict(changes))
        self.seq += 1
        for key, value in changes.items():
            setattr(self, key, value)
        self.pending.append(event)
        return event


def check_rating(order: Order, actor: Actor, stars: Any, comment: str | None,
                 policy: Policy) -> str:
    """SR-3: the order's buyer, after completion, 1-5 stars; returns the cleaned comment."""
    if actor.role is not Role.BUYER or actor.id != order.buyer_id:
        raise WrongActor(f"{actor} may not rate order {order.id}: only its buyer may",
                         rule="SR-3", entity=order.id, action="rate")
    if order.status is not OrderStatus.COMPLETED:
        raise ActionNotAllowed(f"order {order.id} is {order.status.value}: it can be rated "
                               "after completion", rule="SR-3", entity=order.id,
                               action="rate", status=order.status.value)
    if isinstance(stars, bool) or not isinstance(stars, int) or not 1 <= stars <= 5:
        raise InvalidInput(f"stars must be a whole number from 1 to 5, not {stars!r}",
                           rule="SR-3")
    return _text(comment, "the comment", policy)


def check_reply(order: Order, actor: Actor, text: str | None, policy: Policy) -> str:
    """SR-3: the order's seller replies once."""
    if actor.role is not Role.SELLER or actor.id != order.seller_id:
        raise WrongActor(f"{actor} may not reply to the rating of order {order.id}: only its "
                         "seller may", rule="SR-3", entity=order.id, action="reply")
    return _text(text, "the reply", policy, required=True)
