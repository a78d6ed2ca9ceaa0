"""After-sales cases (售后单) and their state machine.

The machine is declared once, in `TRANSITIONS`: (status, action, case types) -> next status,
with the rule id that allows it, who may take it, and what it does with money. `DEADLINES`
says which timer runs in each status. Nothing else assigns a status: every change is an `Event`
applied by `Case.apply`, which is also how the stored log replays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any, Literal

from aftersales.domain.errors import ActionNotAllowed, AmountExceedsPaid, InvalidInput, WrongActor
from aftersales.domain.evidence import EvidenceKind, evidence_filename, evidence_text
from aftersales.domain.money import Money
from aftersales.domain.orders import Order, OrderLine, warranty_covers
from aftersales.domain.types import (
    SYSTEM,
    Actor,
    CaseType,
    Event,
    OrderStatus,
    Reason,
    Role,
    require_aware,
)
from aftersales.policy.model import Policy


class CaseStatus(StrEnum):
    AWAITING_SELLER = "awaiting_seller"  # seller must agree, reject or offer (RF-1)
    OFFER_PENDING = "offer_pending"  # seller offered a partial refund; buyer accepts/declines
    REJECTED = "rejected"  # seller said no; buyer may resubmit or escalate (IN-1)
    AWAITING_RETURN = "awaiting_return"  # buyer must ship the goods back (RF-3, RF-4)
    RETURN_SHIPPED = "return_shipped"  # seller must confirm the returned parcel (RF-5)
    AWAITING_REPLACEMENT = "awaiting_replacement"  # seller must send replacement/repair (RF-7)
    REPLACEMENT_SHIPPED = "replacement_shipped"  # buyer confirms the replacement (RF-7)
    IN_INTERVENTION = "in_intervention"  # in the staff queue: the platform decides (IN-1..IN-9)
    AWAITING_PROOF = "awaiting_proof"  # staff asked a party to prove its claim (IN-4)
    JURY_VOTING = "jury_voting"  # a public jury panel votes (IN-3)
    CLOSED = "closed"  # terminal; `outcome` says how it ended


OPEN_STATUSES = frozenset(s for s in CaseStatus if s is not CaseStatus.CLOSED)
# The platform has the case: the parties can add evidence or withdraw, nothing else (IN-1..IN-9).
INTERVENTION = frozenset({CaseStatus.IN_INTERVENTION, CaseStatus.AWAITING_PROOF,
                          CaseStatus.JURY_VOTING})


class Outcome(StrEnum):
    OPEN = "open"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"
    EXCHANGED = "exchanged"
    REPAIRED = "repaired"
    RESHIPPED = "reshipped"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    CLOSED_NO_REFUND = "closed_no_refund"


class Action(StrEnum):
    AGREE = "agree"
    REJECT = "reject"
    OFFER = "offer"
    ACCEPT_OFFER = "accept_offer"
    DECLINE_OFFER = "decline_offer"
    RESUBMIT = "resubmit"
    SHIP_RETURN = "ship_return"
    CONFIRM_RETURN = "confirm_return"
    SHIP_REPLACEMENT = "ship_replacement"
    CONFIRM_RECEIPT = "confirm_receipt"
    WITHDRAW = "withdraw"
    ESCALATE = "escalate"
    SUBMIT_EVIDENCE = "submit_evidence"  # IN-5
    REQUEST_PROOF = "request_proof"  # staff, IN-4
    RULE = "rule"  # staff, IN-6 / IN-7 / IN-9
    SEND_TO_JURY = "send_to_jury"  # staff, IN-3
    VOTE = "vote"  # juror, IN-3
    TIMEOUT = "timeout"  # the deadline worker: a party stayed silent
    ENTITLE = "entitle"  # a confirmed shipping violation entitles the buyer (SH-6, SH-9)


EVENT_NAMES = {
    Action.AGREE: "SellerAgreed", Action.REJECT: "SellerRejected", Action.OFFER: "OfferMade",
    Action.ACCEPT_OFFER: "OfferAccepted", Action.DECLINE_OFFER: "OfferDeclined",
    Action.RESUBMIT: "CaseResubmitted", Action.SHIP_RETURN: "ReturnShipped",
    Action.CONFIRM_RETURN: "ReturnConfirmed", Action.SHIP_REPLACEMENT: "ReplacementShipped",
    Action.CONFIRM_RECEIPT: "ReplacementReceived", Action.WITHDRAW: "CaseWithdrawn",
    Action.ESCALATE: "CaseEscalated", Action.TIMEOUT: "DeadlinePassed",
    Action.ENTITLE: "BuyerEntitled", Action.SUBMIT_EVIDENCE: "EvidenceSubmitted",
    Action.REQUEST_PROOF: "ProofRequested", Action.RULE: "CaseRuled",
    Action.SEND_TO_JURY: "SentToJury", Action.VOTE: "JurorVoted",
}

ALL = frozenset(CaseType)
RETURNS = frozenset({CaseType.RETURN_REFUND, CaseType.EXCHANGE, CaseType.REPAIR})
SWAPS = frozenset({CaseType.EXCHANGE, CaseType.REPAIR})
REFUNDS = frozenset({CaseType.REFUND_ONLY, CaseType.RETURN_REFUND})
REPLACE = frozenset({CaseType.EXCHANGE, CaseType.REPAIR, CaseType.RESHIP})

RefundKind = Literal["none", "requested", "offer"]
S = CaseStatus


@dataclass(frozen=True, slots=True)
class Transition:
    source: CaseStatus
    action: Action
    target: CaseStatus
    rule: str
    by: frozenset[Role]
    types: frozenset[CaseType] = ALL
    outcome: Outcome | None = None  # when target is CLOSED; None = by case type (RF-7)
    refund: RefundKind = "none"
    decides: bool = True  # counts among the rules that decided the outcome
    when: str | None = None  # a named condition (`WHEN`) that picks between rows of one move


B, SL, SY = frozenset({Role.BUYER}), frozenset({Role.SELLER}), frozenset({Role.SYSTEM})
BS = frozenset({Role.BUYER, Role.SELLER})
STAFF, JUROR = frozenset({Role.STAFF}), frozenset({Role.JUROR})
T = Transition


def _grant(src: CaseStatus, action: Action, rule: str, by: frozenset[Role], when: str
           ) -> tuple[Transition, ...]:
    """The buyer's request granted as asked, as if the seller had agreed (the agree rows):
    refund-only is refunded, returns wait for the goods, re-ships wait for the parcel."""
    return (
        T(src, action, S.CLOSED, rule, by, frozenset({CaseType.REFUND_ONLY}), Outcome.REFUNDED,
          "requested", when=when),
        T(src, action, S.AWAITING_RETURN, rule, by, RETURNS, when=when),
        T(src, action, S.AWAITING_REPLACEMENT, rule, by, frozenset({CaseType.RESHIP}),
          when=when),
    )


TRANSITIONS: tuple[Transition, ...] = (
    # The seller answers (RF-1). Silence is agreement: the timeout takes the agree path.
    T(S.AWAITING_SELLER, Action.AGREE, S.CLOSED, "RF-2", SL, frozenset({CaseType.REFUND_ONLY}),
      Outcome.REFUNDED, "requested"),
    T(S.AWAITING_SELLER, Action.AGREE, S.AWAITING_RETURN, "RF-3", SL, RETURNS),
    T(S.AWAITING_SELLER, Action.AGREE, S.AWAITING_REPLACEMENT, "RF-7", SL,
      frozenset({CaseType.RESHIP})),
    T(S.AWAITING_SELLER, Action.TIMEOUT, S.CLOSED, "RF-1", SY, frozenset({CaseType.REFUND_ONLY}),
      Outcome.REFUNDED, "requested"),
    T(S.AWAITING_SELLER, Action.TIMEOUT, S.AWAITING_RETURN, "RF-1", SY, RETURNS),
    T(S.AWAITING_SELLER, Action.TIMEOUT, S.AWAITING_REPLACEMENT, "RF-1", SY,
      frozenset({CaseType.RESHIP})),
    T(S.AWAITING_SELLER, Action.REJECT, S.REJECTED, "RF-1", SL),
    # After a confirmed violation (ship timeout, fake shipment, lost or stalled parcel) the
    # buyer's refund or re-ship needs no seller answer: SH-6 (a), SH-9.
    T(S.AWAITING_SELLER, Action.ENTITLE, S.CLOSED, "SH-6", SY, frozenset({CaseType.REFUND_ONLY}),
      Outcome.REFUNDED, "requested"),
    T(S.AWAITING_SELLER, Action.ENTITLE, S.AWAITING_REPLACEMENT, "SH-6", SY,
      frozenset({CaseType.RESHIP})),
    T(S.AWAITING_SELLER, Action.OFFER, S.OFFER_PENDING, "RF-1", SL, REFUNDS),
    # A partial refund offer: accepted, the buyer keeps the goods and the case closes.
    T(S.OFFER_PENDING, Action.ACCEPT_OFFER, S.CLOSED, "RF-2", B, REFUNDS,
      Outcome.PARTIALLY_REFUNDED, "offer"),
    T(S.OFFER_PENDING, Action.DECLINE_OFFER, S.REJECTED, "IN-1", B, REFUNDS, decides=False),
    T(S.OFFER_PENDING, Action.TIMEOUT, S.CLOSED, "§9:buyer_offer_response", SY, REFUNDS,
      Outcome.CLOSED_NO_REFUND),
    # After a rejection the buyer resubmits or escalates within the window, else it closes.
    T(S.REJECTED, Action.RESUBMIT, S.AWAITING_SELLER, "RF-1", B, decides=False),
    T(S.REJECTED, Action.ESCALATE, S.IN_INTERVENTION, "IN-1", B),
    T(S.REJECTED, Action.TIMEOUT, S.CLOSED, "IN-1", SY, outcome=Outcome.REJECTED),
    # Returns (RF-3..RF-5).
    T(S.AWAITING_RETURN, Action.SHIP_RETURN, S.RETURN_SHIPPED, "RF-3", B, RETURNS,
      decides=False),
    T(S.AWAITING_RETURN, Action.TIMEOUT, S.CLOSED, "RF-4", SY, RETURNS,
      Outcome.CLOSED_NO_REFUND),
    T(S.RETURN_SHIPPED, Action.CONFIRM_RETURN, S.CLOSED, "RF-5", SL,
      frozenset({CaseType.RETURN_REFUND}), Outcome.REFUNDED, "requested"),
    T(S.RETURN_SHIPPED, Action.TIMEOUT, S.CLOSED, "RF-5", SY,
      frozenset({CaseType.RETURN_REFUND}), Outcome.REFUNDED, "requested"),
    T(S.RETURN_SHIPPED, Action.CONFIRM_RETURN, S.AWAITING_REPLACEMENT, "RF-7", SL, SWAPS,
      decides=False),
    T(S.RETURN_SHIPPED, Action.TIMEOUT, S.AWAITING_REPLACEMENT, "RF-5", SY, SWAPS),
    # Exchange, repair, re-ship (RF-7): the seller sends, the buyer confirms.
    T(S.AWAITING_REPLACEMENT, Action.SHIP_REPLACEMENT, S.REPLACEMENT_SHIPPED, "RF-7", SL,
      REPLACE, decides=False),
    T(S.AWAITING_REPLACEMENT, Action.TIMEOUT, S.CLOSED, "§9:seller_send_replacement", SY,
      REPLACE, Outcome.REFUNDED, "requested"),
    T(S.REPLACEMENT_SHIPPED, Action.CONFIRM_RECEIPT, S.CLOSED, "RF-7", B, REPLACE),
    T(S.REPLACEMENT_SHIPPED, Action.TIMEOUT, S.CLOSED, "§9:auto_confirm_receipt", SY, REPLACE),
    # Withdrawal (RF-6) while nothing irreversible is under way.
    # Withdrawal (RF-6): the buyer may withdraw in any open status (after completion it spends
    # the line's one chance, AS-5, which was marked when the case opened).
    *(T(src, Action.WITHDRAW, S.CLOSED, "RF-6", B, outcome=Outcome.WITHDRAWN)
      for src in sorted(OPEN_STATUSES)),
    # The seller may ask the platform to step in from day 15 if the buyer has not (IN-2; the
    # day guard is in `act`).
    *(T(src, Action.ESCALATE, S.IN_INTERVENTION, "IN-2", SL)
      for src in sorted(OPEN_STATUSES - INTERVENTION)),
    # -- platform intervention (IN-1..IN-9) ---------------------------------------------------
    # Evidence (IN-5) can be added while the case is open. While staff wait for proof, the
    # asked party's evidence hands the case back to staff (IN-4); the other party's does not.
    *(T(src, Action.SUBMIT_EVIDENCE, src, "IN-5", BS, decides=False)
      for src in sorted(OPEN_STATUSES - {S.AWAITING_PROOF})),
    T(S.AWAITING_PROOF, Action.SUBMIT_EVIDENCE, S.IN_INTERVENTION, "IN-4", BS, decides=False,
      when="asked"),
    T(S.AWAITING_PROOF, Action.SUBMIT_EVIDENCE, S.AWAITING_PROOF, "IN-5", BS, decides=False,
      when="not_asked"),
    # Burden of proof (IN-4): staff ask a party to prove, with a deadline; a further request
    # may follow insufficient proof. Nothing by the deadline decides against the party asked.
    T(S.IN_INTERVENTION, Action.REQUEST_PROOF, S.AWAITING_PROOF, "IN-4", STAFF, decides=False),
    T(S.AWAITING_PROOF, Action.REQUEST_PROOF, S.AWAITING_PROOF, "IN-4", STAFF, decides=False),
    *_grant(S.AWAITING_PROOF, Action.TIMEOUT, "IN-4", SY, "seller_asked"),
    T(S.AWAITING_PROOF, Action.TIMEOUT, S.CLOSED, "IN-4", SY, outcome=Outcome.REJECTED,
      when="buyer_asked"),
    # Staff rulings (IN-6; IN-7 and IN-9 are cited by the ruling's guard when they apply).
    *(row for src in (S.IN_INTERVENTION, S.AWAITING_PROOF) for row in (
        T(src, Action.RULE, S.CLOSED, "IN-6", STAFF, outcome=Outcome.REFUNDED,
          refund="requested", when="rule_refund"),
        T(src, Action.RULE, S.CLOSED, "IN-6", STAFF, outcome=Outcome.PARTIALLY_REFUNDED,
          refund="requested", when="rule_partial"),
        T(src, Action.RULE, S.AWAITING_RETURN, "IN-6", STAFF, when="rule_with_return"),
        T(src, Action.RULE, S.CLOSED, "IN-6", STAFF, outcome=Outcome.REJECTED,
          when="rule_reject"))),
    # Public jury (IN-3): simple majority of the panel decides as soon as it exists; at the
    # deadline a quorum decides by majority of the votes cast; otherwise back to staff.
    T(S.IN_INTERVENTION, Action.SEND_TO_JURY, S.JURY_VOTING, "IN-3", STAFF, decides=False),
    T(S.JURY_VOTING, Action.VOTE, S.JURY_VOTING, "IN-3", JUROR, decides=False,
      when="vote_open"),
    *_grant(S.JURY_VOTING, Action.VOTE, "IN-3", JUROR, "vote_buyer_majority"),
    T(S.JURY_VOTING, Action.VOTE, S.CLOSED, "IN-3", JUROR, outcome=Outcome.REJECTED,
      when="vote_seller_majority"),
    *_grant(S.JURY_VOTING, Action.TIMEOUT, "IN-3", SY, "jury_buyer"),
    T(S.JURY_VOTING, Action.TIMEOUT, S.CLOSED, "IN-3", SY, outcome=Outcome.REJECTED,
      when="jury_seller"),
    T(S.JURY_VOTING, Action.TIMEOUT, S.IN_INTERVENTION, "IN-3", SY, decides=False,
      when="jury_no_quorum"),
)

_INDEX: dict[tuple[CaseStatus, Action], list[Transition]] = {}
_ROLES_BY_ACTION: dict[Action, frozenset[Role]] = {}  # who may ever take an action
for _t in TRANSITIONS:
    _INDEX.setdefault((_t.source, _t.action), []).append(_t)
    _ROLES_BY_ACTION[_t.action] = _ROLES_BY_ACTION.get(_t.action, frozenset()) | _t.by

REPLACEMENT_OUTCOME = {CaseType.EXCHANGE: Outcome.EXCHANGED, CaseType.REPAIR: Outcome.REPAIRED,
                       CaseType.RESHIP: Outcome.RESHIPPED}


def find_transition(status: CaseStatus, action: Action, case_type: CaseType,
                    role: Role | None = None, *, case: Case | None = None,
                    actor: Actor | None = None, args: Mapping[str, Any] | None = None,
                    policy: Policy | None = None) -> Transition | None:
    """The row for this move; with `role`, the row that role may take (escalation has one row
    for the buyer, IN-1, and one for the seller, IN-2). With `case`, rows whose `when`
    condition does not hold for this case, actor and arguments are left out."""
    rows = [t for t in _INDEX.get((status, action), ()) if case_type in t.types]
    if case is not None:
        assert actor is not None and policy is not None
        rows = [t for t in rows
                if t.when is None or WHEN[t.when](case, actor, args or {}, policy)]
    if role is not None:
        rows = sorted(rows, key=lambda t: role not in t.by)
    return rows[0] if rows else None


def allowed_actions(status: CaseStatus, case_type: CaseType) -> list[Action]:
    return [a for a in Action if a not in (Action.TIMEOUT, Action.ENTITLE)
            and find_transition(status, a, case_type)]


def deadline_for(case: Case, status: CaseStatus, entered: datetime, policy: Policy
                 ) -> tuple[datetime | None, str | None]:
    """The timer that runs in `status` (§9 and RF-1..RF-7), or none."""
    d = policy.deadlines
    if status is S.AWAITING_SELLER:
        if not case.shipped_when_opened:
            return entered + d.seller_response_before_shipment, "seller_response_before_shipment"
        return entered + d.seller_response_after_shipment, "seller_response_after_shipment"
    if status is S.OFFER_PENDING:
        return entered + d.buyer_offer_response, "buyer_offer_response"
    if status is S.REJECTED:
        return entered + d.buyer_after_rejection, "buyer_after_rejection"
    if status is S.AWAITING_RETURN:
        return entered + d.buyer_ship_return, "buyer_ship_return"
    if status is S.RETURN_SHIPPED:
        if case.return_method == "surface":
            return entered + d.seller_confirm_return_surface, "seller_confirm_return_surface"
        return entered + d.seller_confirm_return_express, "seller_confirm_return_express"
    if status is S.AWAITING_REPLACEMENT:
        return entered + d.seller_send_replacement, "seller_send_replacement"
    if status is S.REPLACEMENT_SHIPPED:
        return entered + d.auto_confirm_receipt, "auto_confirm_receipt"
    if status is S.AWAITING_PROOF:  # IN-4: the due staff gave (within proof_window_max)
        return case.proof_due, "proof_window"
    if status is S.JURY_VOTING:  # IN-3 / §9
        return entered + policy.jury.vote_window, "vote_window"
    return None, None


# -- the conditions that pick between rows of one move (`Transition.when`) -----------------------
RULINGS = ("refund", "partial_refund", "reject")
VOTE_SIDES = ("buyer", "seller")


def _tally(case: Case, extra: str | None = None) -> tuple[int, int]:
    """(buyer votes, seller votes), counting a vote about to be cast."""
    sides = [side for _, side in case.jury_votes] + ([extra] if extra else [])
    return sides.count("buyer"), sides.count("seller")


def _majority(case: Case) -> int:
    """More than half of the panel: decided, whatever the votes still to come (IN-3)."""
    return len(case.jury_panel) // 2 + 1


def _jury_verdict(case: Case, policy: Policy) -> str | None:
    """At the vote deadline: the side a quorum chose by majority of the votes cast; None
    when too few voted or the votes tie (the case falls back to staff, IN-3)."""
    buyer, seller = _tally(case)
    if buyer + seller < policy.jury.quorum or buyer == seller:
        return None
    return "buyer" if buyer > seller else "seller"


def _ruling(args: Mapping[str, Any], *outcomes: str, with_return: bool) -> bool:
    return args.get("outcome") in outcomes and bool(args.get("return_required")) is with_return


Condition = Callable[["Case", Actor, Mapping[str, Any], Policy], bool]
WHEN: dict[str, Condition] = {
    "asked": lambda c, a, args, p: a.role.value == c.proof_from,
    "not_asked": lambda c, a, args, p: a.role.value != c.proof_from,
    "seller_asked": lambda c, a, args, p: c.proof_from == "seller",
    "buyer_asked": lambda c, a, args, p: c.proof_from == "buyer",
    "rule_refund": lambda c, a, args, p: _ruling(args, "refund", with_return=False),
    "rule_partial": lambda c, a, args, p: _ruling(args, "partial_refund", with_return=False),
    "rule_with_return": lambda c, a, args, p: _ruling(args, "refund", "partial_refund",
                                                      with_return=True),
    "rule_reject": lambda c, a, args, p: args.get("outcome") == "reject",
    "vote_buyer_majority": lambda c, a, args, p: (
        _tally(c, args.get("side"))[0] >= _majority(c)),
    "vote_seller_majority": lambda c, a, args, p: (
        _tally(c, args.get("side"))[1] >= _majority(c)),
    "vote_open": lambda c, a, args, p: max(_tally(c, args.get("side"))) < _majority(c),
    "jury_buyer": lambda c, a, args, p: _jury_verdict(c, p) == "buyer",
    "jury_seller": lambda c, a, args, p: _jury_verdict(c, p) == "seller",
    "jury_no_quorum": lambda c, a, args, p: _jury_verdict(c, p) is None,
}


@dataclass(slots=True)
class Case:
    id: str
    order_id: str
    buyer_id: str
    seller_id: str
    type: CaseType
    reason: Reason
    status: CaseStatus
    received: bool
    lines: tuple[tuple[int, int], ...]  # (line_no, qty)
    amount: Money  # what the buyer asks for (or what is at stake for exchange/repair/reship)
    refunded: Money
    opened_at: datetime
    after_completion: bool  # opened after 交易成功: uses the line's one chance (AS-5)
    shipped_when_opened: bool  # picks the 48 h or the 5 d response timer
    freight_payer: str  # FR-1..FR-3
    seller_responsible: bool
    policy_id: str
    policy_version: str
    description: str = ""
    outcome: Outcome = Outcome.OPEN
    decided_by: str | None = None
    rules: tuple[str, ...] = ()
    deadline: datetime | None = None
    deadline_kind: str | None = None
    offer: Money | None = None
    return_address: str | None = None
    return_carrier: str | None = None
    return_tracking: str | None = None
    return_method: str | None = None  # express | surface (RF-5)
    replacement_carrier: str | None = None
    replacement_tracking: str | None = None
    rejection_reason: str | None = None
    escalated_by: str | None = None
    closed_at: datetime | None = None
    # platform intervention (IN-3..IN-9)
    staff_due: datetime | None = None  # staff's target while the case is in their queue
    proof_from: str | None = None  # IN-4: the party asked to prove ("buyer" | "seller")
    proof_due: datetime | None = None
    proof_requests: int = 0
    buyer_evidence: int = 0  # IN-5: items each party submitted
    seller_evidence: int = 0
    jury_panel: tuple[str, ...] = ()  # IN-3: the jurors drawn
    jury_votes: tuple[tuple[str, str], ...] = ()  # (juror, side) in voting order
    penalty: str | None = None  # IN-7 / §9: the penalty a ruling gave
    log_head: str = ""  # hash of the newest log entry: kept by the store (tamper evidence)
    version: int = 0
    seq: int = 0
    pending: list[Event] = field(default_factory=list)

    # -- the one mutator ----------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        self.seq += 1
        for key, value in event.changes.items():
            if key in RECORD_ONLY:
                continue
            if key not in _MUTABLE:
                raise ValueError(f"event {event.name} sets unknown case field {key}")
            if value is not None and key in _ENUMS:
                value = _ENUMS[key](value)
            elif key == "jury_panel":
                value = tuple(value)
            elif key == "jury_votes":
                value = tuple((str(j), str(v)) for j, v in value)
            setattr(self, key, value)

    def _record(self, name: str, at: datetime, actor: Actor, rule: str | None,
                changes: Mapping[str, Any]) -> Event:
        event = Event(name, at, actor, rule, dict(changes))
        self.apply(event)
        self.pending.append(event)
        return event

    @classmethod
    def replay(cls, events: Iterable[Event]) -> Case:
        it = iter(events)
        first = next(it)
        init = {k: v for k, v in first.changes.items() if k in _INIT_FIELDS}
        fields: dict[str, Any] = {k: (_ENUMS[k](v) if k in _ENUMS else v)
                                  for k, v in init.items()}
        case = cls(**fields)
        case.seq = 0
        case.apply(Event(first.name, first.at, first.actor, first.rule,
                         {k: v for k, v in first.changes.items() if k not in _INIT_FIELDS}))
        for event in it:
            case.apply(event)
        return case

    @property
    def is_open(self) -> bool:
        return self.status is not S.CLOSED

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        *,
        case_id: str,
        order: Order,
        actor: Actor,
        case_type: CaseType,
        reason: Reason,
        now: datetime,
        policy: Policy,
        received: bool | None = None,
        lines: Sequence[tuple[int, int]] | None = None,
        amount: Money | None = None,
        description: str = "",
    ) -> Case:
        """Open an after-sales request (AS-1..AS-7). Validates everything before changing
        anything; marks the order lines (one open case per line; AS-5 chance)."""
        require_aware(now)
        if actor.role is not Role.BUYER or actor.id != order.buyer_id:
            raise WrongActor(f"{actor} may not open a case on order {order.id}: only its buyer "
                             f"may", entity=order.id, action="open_case", rule="AS-6")
        if order.status is OrderStatus.CLOSED:
            raise ActionNotAllowed(f"order {order.id} is closed: nothing is left to claim",
                                   rule="AS-4", entity=order.id, action="open_case",
                                   status=order.status.value)
        shipped = order.status is not OrderStatus.PAID
        if not shipped and case_type is not CaseType.REFUND_ONLY:
            raise ActionNotAllowed(
                f"order {order.id} has not shipped: only a refund-only request is possible",
                rule="AS-2", entity=order.id, action="open_case", status=order.status.value)
        if received is None:
            received = order.status in (OrderStatus.DELIVERED, OrderStatus.COMPLETED)
        if received and not shipped:
            raise InvalidInput("goods cannot have been received: the order has not shipped",
                               rule="AS-2")
        after_completion = order.status is OrderStatus.COMPLETED
        chosen = cls._choose_lines(order, lines)
        line_objs = [order.line(no) for no, _ in chosen]
        for line in line_objs:
            if line.open_case_id:
                raise ActionNotAllowed(
                    f"order {order.id} line {line.line_no} already has open case "
                    f"{line.open_case_id}", rule="AS-5", entity=order.id, action="open_case",
                    code="case_already_open")
        if after_completion:
            cls._check_window(order, line_objs, case_type, now, policy)
        if reason is Reason.NO_REASON_7D:
            cls._check_no_reason(order, line_objs, case_type, now, policy)
        allowed = sum((order.line(no).value_of(q) for no, q in chosen),
                      Money.zero(order.currency))
        if amount is None:
            amount = allowed
        elif case_type is CaseType.REFUND_ONLY and not received and amount != allowed:
            raise InvalidInput(f"before receipt the refund is the full paid amount {allowed} "
                               f"and cannot be edited (asked {amount})", rule="AS-2")
        if amount.currency != order.currency:
            raise InvalidInput(f"amount currency {amount.currency} is not {order.currency}")
        if amount > allowed:
            raise AmountExceedsPaid(f"amount {amount} exceeds what the lines can still refund "
                                    f"({allowed})", rule="AS-6")
        if not amount.is_positive:
            raise InvalidInput(f"nothing to claim: amount is {amount}", rule="AS-6")
        seller_fault = reason.value in policy.after_sales.seller_fault_reasons
        case = cls(
            id=case_id, order_id=order.id, buyer_id=order.buyer_id, seller_id=order.seller_id,
            type=case_type, reason=reason, status=S.AWAITING_SELLER, received=received,
            lines=tuple(chosen), amount=amount, refunded=Money.zero(order.currency),
            opened_at=now, after_completion=after_completion, shipped_when_opened=shipped,
            freight_payer="seller" if seller_fault else "buyer",  # FR-1..FR-3
            seller_responsible=seller_fault, policy_id=policy.id,
            policy_version=policy.version, description=description,
        )
        deadline, kind = deadline_for(case, S.AWAITING_SELLER, now, policy)
        init = {k: getattr(case, k) for k in _INIT_FIELDS}
        case.seq = 0
        case._record("CaseOpened", now, actor, "AS-1",
                     {**init, "deadline": deadline, "deadline_kind": kind})
        order.attach_case(case_id, [no for no, _ in chosen], now, actor,
                          use_chance=after_completion
                          and policy.after_sales.once_per_line_after_completion)  # AS-5
        return case

    @staticmethod
    def _choose_lines(order: Order, lines: Sequence[tuple[int, int]] | None
                      ) -> list[tuple[int, int]]:
        if not lines:
            return [(ln.line_no, ln.qty) for ln in order.lines]
        seen: set[int] = set()
        chosen = []
        for no, qty in lines:
            line = order.line(no)
            if no in seen:
                raise InvalidInput(f"line {no} is listed twice")
            if not 0 < qty <= line.qty:
                raise InvalidInput(f"line {no}: quantity {qty} is not between 1 and {line.qty}")
            seen.add(no)
            chosen.append((no, qty))
        return chosen

    @staticmethod
    def _check_window(order: Order, lines: list[OrderLine], case_type: CaseType, now: datetime,
                      policy: Policy) -> None:
        """AS-4 window after completion, AS-5 once per line, AS-7 warranty repairs."""
        assert order.completed_at is not None
        window_end = order.completed_at + policy.after_sales.window_after_completion
        for line in lines:
            if case_type is CaseType.REPAIR and warranty_covers(line, order.completed_at, now):
                continue  # AS-7: warranty repairs are not limited by the window or AS-5
            if now > window_end:
                raise ActionNotAllowed(
                    f"order {order.id}: the after-sales window closed at "
                    f"{window_end.isoformat()} ({policy.after_sales.window_after_completion} "
                    f"after completion)", rule="AS-4", entity=order.id, action="open_case",
                    status=order.status.value, code="window_closed")
            if line.after_sales_used and policy.after_sales.once_per_line_after_completion:
                raise ActionNotAllowed(
                    f"order {order.id} line {line.line_no}: after-sales after completion is "
                    f"allowed once per line and was used", rule="AS-5", entity=order.id,
                    action="open_case", status=order.status.value, code="chance_used")

    @staticmethod
    def _check_no_reason(order: Order, lines: list[OrderLine], case_type: CaseType,
                         now: datetime, policy: Policy) -> None:
        """§9 7-day no-reason return: listing must offer it, goods must come back, and it runs
        7 calendar days from the day after signing (in the pack's timezone)."""
        if case_type not in (CaseType.RETURN_REFUND, CaseType.EXCHANGE):
            raise ActionNotAllowed("a no-reason request is a return (return_refund or exchange)",
                                   rule="FR-3", entity=order.id, action="open_case")
        for line in lines:
            if not no_reason_guaranteed(line, policy):
                raise ActionNotAllowed(
                    f"order {order.id} line {line.line_no}: the listing has no 7-day no-reason "
                    f"return", rule="IN-9", entity=order.id, action="open_case",
                    code="no_reason_excluded")
        signed = order.delivered_at or order.completed_at  # no scan: confirming receipt signs
        if signed is not None:
            end = no_reason_deadline(signed, policy)
            if now >= end:
                raise ActionNotAllowed(
                    f"order {order.id}: the no-reason return period ended {end.isoformat()}",
                    rule="AS-3", entity=order.id, action="open_case", code="window_closed")

    # -- acting -------------------------------------------------------------------------------
    def act(
        self,
        action: Action,
        actor: Actor,
        now: datetime,
        policy: Policy,
        order: Order,
        **args: Any,
    ) -> Event:
        """Take one action. Checks actor, status and guards first; a refusal changes nothing."""
        require_aware(now)
        self._check_actor(action, actor)
        given = _normalised(self, action, args, order, policy)
        t = find_transition(self.status, action, self.type, actor.role, case=self, actor=actor,
                            args=given, policy=policy)
        if t is not None and actor.role not in _ROLES_BY_ACTION[action]:
            raise WrongActor(  # e.g. a seller withdrawing, a buyer agreeing: never theirs to do
                f"{actor} may not {action.value} case {self.id}: only "
                f"{' or '.join(sorted(r.value for r in _ROLES_BY_ACTION[action]))} may",
                rule=t.rule, entity=self.id, action=action.value, status=self.status.value)
        if t is None or actor.role not in t.by:
            allowed = ", ".join(a.value for a in allowed_actions(self.status, self.type)) or "none"
            raise ActionNotAllowed(
                f"case {self.id}: {action.value} is not allowed in status {self.status.value} "
                f"for a {self.type.value} case (allowed: {allowed})",
                rule=t.rule if t else None, entity=self.id, action=action.value,
                status=self.status.value)
        if action is Action.TIMEOUT and (self.deadline is None or now < self.deadline):
            raise ActionNotAllowed(f"case {self.id}: deadline not reached", entity=self.id,
                                   action="timeout", status=self.status.value)
        changes = self._guard_and_collect(t, actor, now, policy, order, given)
        return self._transition(t, actor, now, policy, order, changes)

    def _check_actor(self, action: Action, actor: Actor) -> None:
        if actor.role is Role.BUYER and actor.id != self.buyer_id:
            raise WrongActor(f"{actor} is not the buyer of case {self.id}", entity=self.id,
                             action=action.value, status=self.status.value)
        if actor.role is Role.SELLER and actor.id != self.seller_id:
            raise WrongActor(f"{actor} is not the seller of case {self.id}", entity=self.id,
                             action=action.value, status=self.status.value)
        if actor.role is Role.JUROR and self.status is S.JURY_VOTING \
                and actor.id not in self.jury_panel:
            raise WrongActor(f"{actor} is not on the jury panel of case {self.id}", rule="IN-3",
                             entity=self.id, action=action.value, status=self.status.value)
        if actor.role not in (Role.BUYER, Role.SELLER, Role.SYSTEM, Role.STAFF, Role.JUROR):
            raise WrongActor(f"{actor} cannot {action.value} case {self.id}", entity=self.id,
                             action=action.value, status=self.status.value)

    def _guard_and_collect(self, t: Transition, actor: Actor, now: datetime, policy: Policy,
                           order: Order, args: Mapping[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        a = t.action
        if a is Action.AGREE and t.target is S.AWAITING_RETURN:
            changes["return_address"] = args.get("return_address") or "seller's default address"
        elif a is Action.REJECT:
            why = str(args.get("reason") or "").strip()
            if not why:
                raise InvalidInput("a rejection needs a reason", rule="RF-1")
            changes["rejection_reason"] = why
        elif a is Action.OFFER:
            offer = args.get("amount")
            if not isinstance(offer, Money) or not offer.is_positive:
                raise InvalidInput("an offer needs a positive amount", rule="RF-1")
            if offer >= self.amount:
                raise InvalidInput(f"an offer must be below the requested {self.amount}; "
                                   f"to give it all, agree", rule="RF-1")
            changes["offer"] = offer
        elif a is Action.RESUBMIT:
            amount = args.get("amount")
            if amount is not None:
                allowed = sum((order.line(no).value_of(q) for no, q in self.lines),
                              Money.zero(order.currency))
                if amount > allowed:
                    raise AmountExceedsPaid(f"amount {amount} exceeds {allowed}", rule="AS-6")
                if not amount.is_positive:
                    raise InvalidInput("amount must be positive", rule="AS-6")
                changes["amount"] = amount
            changes["offer"] = None
            if args.get("description"):
                changes["description"] = str(args["description"])
        elif a in (Action.SHIP_RETURN, Action.SHIP_REPLACEMENT):
            carrier = str(args.get("carrier") or "").strip()
            tracking = str(args.get("tracking") or "").strip()
            if not carrier or not tracking:
                raise InvalidInput("carrier and tracking number are required", rule=t.rule)
            if a is Action.SHIP_RETURN:
                method = str(args.get("method") or "express")
                if method not in ("express", "surface"):
                    raise InvalidInput("method is express or surface", rule="RF-5")
                changes.update(return_carrier=carrier, return_tracking=tracking,
                               return_method=method)
            else:
                changes.update(replacement_carrier=carrier, replacement_tracking=tracking)
        elif a is Action.ESCALATE and actor.role is Role.SELLER:
            opens = self.opened_at + policy.deadlines.seller_escalation_after
            if now < opens:
                raise ActionNotAllowed(
                    f"case {self.id}: the seller may ask for intervention from "
                    f"{opens.isoformat()} ({policy.deadlines.seller_escalation_after.days} days "
                    f"after the request), not before", rule="IN-2", entity=self.id,
                    action="escalate", status=self.status.value, code="too_early")
        if a is Action.ESCALATE:
            changes["escalated_by"] = actor.role.value
        elif a is Action.SUBMIT_EVIDENCE:
            changes.update(self._evidence(actor, now, policy, args))
        elif a is Action.REQUEST_PROOF:
            changes.update(self._proof_request(now, policy, args))
        elif a is Action.RULE:
            changes.update(self._ruling(t, order, policy, args))
        elif a is Action.SEND_TO_JURY:
            changes.update(self._jury(policy, args))
        elif a is Action.VOTE:
            changes.update(self._vote(actor, policy, args))
        return changes

    # -- intervention guards (IN-3..IN-9) -----------------------------------------------------
    def _evidence(self, actor: Actor, now: datetime, policy: Policy,
                  args: Mapping[str, Any]) -> dict[str, Any]:
        """IN-5: a typed item with text and/or a stored file (its hash, size, sniffed type)."""
        kind = str(args.get("kind") or "")
        if kind not in EVIDENCE_KINDS:
            raise InvalidInput(f"evidence kind {kind!r} is not one of "
                               f"{', '.join(EVIDENCE_KINDS)}", rule="IN-5")
        try:  # NFC, no control characters, within the pack's limit
            text = evidence_text(args.get("text") or "", policy.intervention.evidence_text_max)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, rule="IN-5") from None
        file = args.get("file")
        if not text and not file:
            raise InvalidInput("evidence needs text, a file or both", rule="IN-5")
        field_name = f"{actor.role.value}_evidence"
        count = getattr(self, field_name)
        if count >= policy.intervention.evidence_items_max:
            raise ActionNotAllowed(
                f"case {self.id}: the {actor.role.value} has submitted "
                f"{policy.intervention.evidence_items_max} items, the most a party may",
                rule="IN-5", entity=self.id, action="submit_evidence", status=self.status.value,
                code="too_much_evidence")
        item: dict[str, Any] = {"party": actor.role.value, "kind": kind, "text": text}
        if file:
            item.update(sha256=str(file["sha256"]), size=int(file["size"]),
                        media_type=str(file["media_type"]),
                        filename=evidence_filename(file.get("filename")))
        return {field_name: count + 1, "evidence": item}

    def _proof_request(self, now: datetime, policy: Policy,
                       args: Mapping[str, Any]) -> dict[str, Any]:
        """IN-4: whoever claims proves; staff name the party and the deadline."""
        party = str(args.get("from_party") or "")
        if party not in ("buyer", "seller"):
            raise InvalidInput(f"proof is requested from the buyer or the seller, not {party!r}",
                               rule="IN-4")
        due = args.get("due") or policy.intervention.proof_window_default
        if not isinstance(due, timedelta) or due <= timedelta(0):
            raise InvalidInput("the proof due must be a positive duration", rule="IN-4")
        if due > policy.intervention.proof_window_max:
            raise InvalidInput(f"the proof due {due} exceeds the pack's longest "
                               f"{policy.intervention.proof_window_max}", rule="IN-4")
        return {"proof_from": party, "proof_due": now + due,
                "proof_requests": self.proof_requests + 1}

    def _ruling(self, t: Transition, order: Order, policy: Policy,
                args: Mapping[str, Any]) -> dict[str, Any]:
        """IN-6 outcome, refund amount, return, freight (FR-1..FR-3), responsibility and
        penalty; IN-7 for an upheld not-as-described case; IN-9 for subjective complaints."""
        outcome = str(args["outcome"])
        rules: list[str] = []
        subjective = bool(args.get("subjective"))
        guaranteed = all(no_reason_guaranteed(order.line(no), policy) for no, _ in self.lines)
        if outcome == "reject":
            for key in ("amount", "penalty"):
                if args.get(key) not in (None, "none"):
                    raise InvalidInput(f"a rejection takes no {key}", rule="IN-6")
            if subjective and not guaranteed:
                rules.append("IN-9")  # not a quality problem: the seller's rejection stands
            return {"seller_responsible": bool(args.get("seller_responsible") or False),
                    "rules_extra": rules, "ruling": {"outcome": outcome,
                                                     "subjective": subjective}}
        if subjective and not guaranteed:
            raise ActionNotAllowed(
                f"case {self.id}: subjective dissatisfaction with an item sold without the "
                "7-day no-reason guarantee is not a quality problem; the seller's rejection "
                "stands", rule="IN-9", entity=self.id, action="rule", status=self.status.value,
                code="subjective_no_guarantee")
        allowed = sum((order.line(no).value_of(q) for no, q in self.lines),
                      Money.zero(order.currency))
        amount = args.get("amount")
        if outcome == "refund":
            amount = amount if amount is not None else self.amount
        elif amount is None:
            raise InvalidInput("a partial refund needs an amount", rule="IN-6")
        if not isinstance(amount, Money) or not amount.is_positive:
            raise InvalidInput("the refund amount must be positive", rule="IN-6")
        if amount.currency != order.currency:
            raise InvalidInput(f"amount currency {amount.currency} is not {order.currency}")
        if amount > allowed:
            raise AmountExceedsPaid(f"ruling refund {amount} exceeds what the case's lines can "
                                    f"still refund ({allowed})", rule="IN-6")
        if outcome == "partial_refund" and amount >= allowed:
            raise InvalidInput(f"a partial refund is below {allowed}; to give it all, rule "
                               "refund", rule="IN-6")
        responsible = args.get("seller_responsible")
        responsible = (not subjective and self.seller_responsible) if responsible is None \
            else bool(responsible)
        freight = args.get("freight_payer") or (
            "buyer" if subjective else ("seller" if responsible else self.freight_payer))
        if freight not in ("buyer", "seller"):
            raise InvalidInput(f"freight_payer is buyer or seller, not {freight!r}", rule="FR-1")
        penalty = args.get("penalty")
        if penalty is None and responsible and self.reason is Reason.NOT_AS_DESCRIBED:
            penalty = "not_as_described_minor"  # IN-7: upheld not-as-described, 3 points
        if penalty == "none":
            penalty = None
        if penalty is not None and penalty not in PENALTIES:
            raise InvalidInput(f"penalty {penalty!r} is not one of {', '.join(PENALTIES)}",
                               rule="IN-7")
        if penalty is not None and not responsible:
            raise InvalidInput("a penalty needs the seller judged responsible", rule="IN-6")
        if responsible and self.reason is Reason.NOT_AS_DESCRIBED:
            rules.append("IN-7")
        if subjective:
            rules.append("FR-3")
        changes: dict[str, Any] = {
            "amount": amount, "seller_responsible": responsible, "freight_payer": freight,
            "penalty": penalty, "rules_extra": rules,
            "ruling": {"outcome": outcome, "amount": amount,
                       "return_required": bool(args.get("return_required")),
                       "freight_payer": freight, "seller_responsible": responsible,
                       "penalty": penalty, "subjective": subjective}}
        if t.target is S.AWAITING_RETURN:  # refund after the goods come back (RF-3..RF-5)
            changes.update(type=CaseType.RETURN_REFUND,
                           return_address=args.get("return_address")
                           or "seller's default address")
        return changes

    def _jury(self, policy: Policy, args: Mapping[str, Any]) -> dict[str, Any]:
        """IN-3: the panel the service drew (odd, the pack's size, no party on it)."""
        if self.jury_panel:
            raise ActionNotAllowed(f"case {self.id}: a jury already sat on this case; staff "
                                   "decide it now", rule="IN-3", entity=self.id,
                                   action="send_to_jury", status=self.status.value,
                                   code="jury_used")
        panel = tuple(str(j) for j in args.get("panel") or ())
        size = policy.jury.panel_size
        if len(panel) != size or len(set(panel)) != size:
            raise ActionNotAllowed(f"case {self.id}: a jury needs {size} distinct eligible "
                                   f"jurors; {len(set(panel))} could be drawn", rule="IN-3",
                                   entity=self.id, action="send_to_jury",
                                   status=self.status.value, code="jury_unavailable")
        if {self.buyer_id, self.seller_id} & set(panel):
            raise InvalidInput("a party to the case cannot sit on its jury", rule="IN-3")
        return {"jury_panel": panel, "jury_votes": (), "jury_seed": args.get("seed")}

    def _vote(self, actor: Actor, policy: Policy, args: Mapping[str, Any]) -> dict[str, Any]:
        if any(j == actor.id for j, _ in self.jury_votes):
            raise ActionNotAllowed(f"{actor} has already voted on case {self.id}", rule="IN-3",
                                   entity=self.id, action="vote", status=self.status.value,
                                   code="already_voted")
        side = str(args.get("side") or "")
        if side not in VOTE_SIDES:
            raise InvalidInput(f"a vote is for the buyer or the seller, not {side!r}",
                               rule="IN-3")
        try:  # asked for; optional (SCENARIOS.md)
            reason = evidence_text(args.get("reason") or "", policy.intervention.evidence_text_max)
        except InvalidInput as exc:
            raise InvalidInput(f"vote reason: {exc.message}", rule="IN-3") from None
        return {"jury_votes": (*self.jury_votes, (actor.id, side)), "vote_reason": reason}

    def _transition(self, t: Transition, actor: Actor, now: datetime, policy: Policy,
                    order: Order, changes: dict[str, Any]) -> Event:
        target = t.target
        extra_rules = changes.pop("rules_extra", ())
        changes["status"] = target
        if t.refund != "none":
            amount = changes.get("amount", self.amount) if t.refund == "requested" else self.offer
            assert amount is not None
            parts = order.allocate(self.lines, amount)
            order.refund(parts, case_id=self.id, actor=actor, at=now,
                         reason=f"case {self.id} ({self.type.value}, {self.reason.value})",
                         rule=t.rule)
            changes["refunded"] = self.refunded + amount
        if changes.get("penalty"):  # IN-7 / §9: points on the seller's record, in the ledger
            name = changes["penalty"]
            order.penalize(getattr(policy.penalties, name), at=now, actor=actor,
                           reason=f"case {self.id}: {name.replace('_', ' ')}",
                           rule="IN-7" if name.startswith("not_as_described") else t.rule,
                           case_id=self.id)
        # The platform decided (a ruling, the jury, or a party's missing proof): that stays the
        # decider even when the case closes later (after the goods come back, say).
        platform = (t.source in INTERVENTION and target not in INTERVENTION
                    and t.action in (Action.RULE, Action.VOTE, Action.TIMEOUT))
        if platform:
            changes["decided_by"] = (
                "staff" if actor.role is Role.STAFF
                else "jury" if t.source is S.JURY_VOTING else "timeout")
        if target is S.CLOSED:
            outcome = t.outcome or REPLACEMENT_OUTCOME[self.type]
            changes.update(outcome=outcome, closed_at=now)
            if not platform:  # a withdrawal is the buyer's own decision, whatever came before
                keep = self.decided_by if t.action is not Action.WITHDRAW else None
                changes["decided_by"] = keep or (
                    "timeout" if t.action is Action.TIMEOUT
                    else actor.role.value)  # "system": a rule such as SH-6 decided
            order.detach_case([no for no, _ in self.lines], now, actor, t.rule)
        rules = list(self.rules)
        for rule in ((t.rule,) if t.decides else ()) + tuple(extra_rules):
            if rule not in rules:
                rules.append(rule)
        if len(rules) != len(self.rules):
            changes["rules"] = tuple(rules)
        if target is S.IN_INTERVENTION and t.source is not S.IN_INTERVENTION:
            changes["staff_due"] = now + policy.intervention.staff_ruling  # the queue's target
        elif target is not S.IN_INTERVENTION and self.staff_due is not None:
            changes["staff_due"] = None
        if target is t.source and t.action is not Action.REQUEST_PROOF:
            pass  # evidence, a vote: the running timer goes on
        else:
            probe = _Probe(self.shipped_when_opened,
                           changes.get("return_method", self.return_method),
                           changes.get("proof_due", self.proof_due))
            deadline, kind = deadline_for(probe, target, now, policy)  # type: ignore[arg-type]
            changes.update(deadline=deadline, deadline_kind=kind)
        return self._record(EVENT_NAMES[t.action], now, actor, t.rule, changes)

    def entitled_by(self, order: Order) -> str | None:
        """The violation that entitles this request without a seller answer, if any."""
        if find_transition(self.status, Action.ENTITLE, self.type) is None:
            return None
        return next((v for v in order.violations if v in ENTITLING_VIOLATIONS), None)

    def on_deadline(self, now: datetime, policy: Policy, order: Order) -> Event | None:
        """Apply the automatic outcome of the running timer if it is due; else nothing.
        Re-running at the same time does nothing: the transition moved the deadline."""
        if self.deadline is None or now < self.deadline or not self.is_open:
            return None
        return self.act(Action.TIMEOUT, SYSTEM, now, policy, order)


@dataclass(frozen=True, slots=True)
class _Probe:
    """The facts `deadline_for` reads, before the event that sets them is applied."""

    shipped_when_opened: bool
    return_method: str | None
    proof_due: datetime | None


def no_reason_guaranteed(line: OrderLine, policy: Policy) -> bool:
    """§9: the listing offers the 7-day no-reason return and its category is not excluded (the
    same test for opening a no-reason request, AS-3, and for a subjective complaint, IN-9)."""
    return line.no_reason_7d and line.category not in policy.after_sales.no_reason_excluded


def no_reason_deadline(delivered_at: datetime, policy: Policy) -> datetime:
    """7 calendar days from the day after signing, in the pack's timezone (§9)."""
    local = delivered_at.astimezone(policy.zone)
    first_day = local.date() + timedelta(days=1)
    end_day = first_day + timedelta(days=policy.after_sales.no_reason_days)
    return datetime.combine(end_day, time(0), tzinfo=policy.zone)


def _normalised(case: Case, action: Action, args: Mapping[str, Any], order: Order,
                policy: Policy) -> Mapping[str, Any]:
    """Arguments the row conditions read, checked and completed with their defaults."""
    if action is Action.RULE:
        outcome = str(args.get("outcome") or "")
        if outcome not in RULINGS:
            raise InvalidInput(f"a ruling's outcome is one of {', '.join(RULINGS)}, "
                               f"not {outcome!r}", rule="IN-6")
        back = args.get("return_required")
        if outcome == "reject":
            back = False
        elif back is None:  # the goods come back unless staff rule refund without return
            back = case.type in RETURNS and case.received
        return {**args, "outcome": outcome, "return_required": bool(back)}
    return args


EVIDENCE_KINDS = tuple(k.value for k in EvidenceKind)
PENALTIES = ("not_as_described_minor", "not_as_described_major", "not_as_described_serious")

# SH-6 (a) / SH-9: violations after which refund or re-ship is the buyer's to choose.
ENTITLING_VIOLATIONS = ("ship_timeout", "fake_shipment", "lost_parcel", "stalled_parcel")

_INIT_FIELDS = (
    "id", "order_id", "buyer_id", "seller_id", "type", "reason", "status", "received", "lines",
    "amount", "refunded", "opened_at", "after_completion", "shipped_when_opened",
    "freight_payer", "seller_responsible", "policy_id", "policy_version", "description",
)
_ENUMS: dict[str, type[StrEnum]] = {"status": CaseStatus, "outcome": Outcome, "type": CaseType,
                                     "reason": Reason}
_MUTABLE = frozenset({
    *_INIT_FIELDS, "outcome", "decided_by", "rules", "deadline", "deadline_kind", "offer",
    "return_address", "return_carrier", "return_tracking", "return_method",
    "replacement_carrier", "replacement_tracking", "rejection_reason", "escalated_by",
    "closed_at", "staff_due", "proof_from", "proof_due", "proof_requests", "buyer_evidence",
    "seller_evidence", "jury_panel", "jury_votes", "penalty",
})
# Keys an event may carry that record what happened without setting a case field: the
# evidence item (its file hash is what the tamper-evident log commits to), a vote's reason,
# a ruling's details, the seed of a jury draw.
RECORD_ONLY = frozenset({"evidence", "vote_reason", "ruling", "jury_seed"})
