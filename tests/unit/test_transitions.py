"""The case state machine, straight from its declaration (`domain.cases.TRANSITIONS`).

Pure domain, no database. The parametrization is generated from the table itself, so a new row
is covered without touching this file: every row x every case type it applies to is driven into
its source status by the shortest path through the table and then applied by its own actor.
"""

from __future__ import annotations

import copy
from collections import deque
from datetime import datetime, timedelta
from typing import Any

import pytest

from aftersales.domain.cases import (
    EVENT_NAMES,
    REPLACEMENT_OUTCOME,
    TRANSITIONS,
    Action,
    Case,
    CaseStatus,
    Outcome,
    Transition,
    deadline_for,
    find_transition,
)
from aftersales.domain.errors import ActionNotAllowed, WrongActor
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec, Order
from aftersales.domain.types import (
    SYSTEM,
    Actor,
    CaseType,
    Event,
    LedgerKind,
    OrderStatus,
    Reason,
    Role,
    ShippingMode,
)
from aftersales.policy import loader
from tests.conftest import T0

POLICY = loader.load("taobao")
BUYER = Actor(Role.BUYER, "b1")
SELLER = Actor(Role.SELLER, "s1")
OTHER_BUYER = Actor(Role.BUYER, "b2")
OTHER_SELLER = Actor(Role.SELLER, "s2")
STAFF = Actor(Role.STAFF, "x1")
PANEL = tuple(f"j{i}" for i in range(1, POLICY.jury.panel_size + 1))  # IN-3
JUROR = Actor(Role.JUROR, PANEL[0])
PARTY = {Role.BUYER: BUYER, Role.SELLER: SELLER, Role.SYSTEM: SYSTEM, Role.STAFF: STAFF,
         Role.JUROR: JUROR}
START = CaseStatus.AWAITING_SELLER
STEP = timedelta(hours=1)


# -- factories -------------------------------------------------------------------------------


def place_order(now: datetime = T0, *, shipped: bool = True) -> Order:
    """Two lines: 2 x 50.00 and 1 x 99.90, paid in full, shipped an hour later."""
    order = Order.place(
        order_id="o1", buyer=BUYER, seller_id=SELLER.id, mode=ShippingMode.IN_STOCK,
        lines=[LineSpec("sku-a", 2, Money.parse("50.00")),
               LineSpec("sku-b", 1, Money.parse("99.90"))],
        now=now, policy=POLICY)
    if shipped:
        order.ship(SELLER, "SF", "SF1000", now + STEP, POLICY)
    return order


def reason_for(case_type: CaseType) -> Reason:
    return Reason.SHORT_SHIPMENT if case_type is CaseType.RESHIP else Reason.QUALITY


def open_case(order: Order, case_type: CaseType, now: datetime,
              lines: tuple[tuple[int, int], ...] | None = ((1, 1),)) -> Case:
    """One unit of line 1 by default (50.00), so a refund leaves the order open."""
    return Case.open(case_id="c1", order=order, actor=BUYER, case_type=case_type,
                     reason=reason_for(case_type), now=now, policy=POLICY, lines=lines)


RULINGS = {  # the ruling each RULE row's condition names (IN-6)
    "rule_refund": {"outcome": "refund", "return_required": False},
    "rule_partial": {"outcome": "partial_refund", "return_required": False},
    "rule_with_return": {"outcome": "refund", "return_required": True},
    "rule_reject": {"outcome": "reject"},
}


def args_for(action: Action, case: Case, t: Transition | None = None) -> dict[str, Any]:
    """Valid arguments for `action` (for row `t`'s condition, when given), so that a refusal
    can only come from the state table."""
    half = Money(case.amount.minor // 2, case.amount.currency)
    ruling = dict(RULINGS.get(t.when or "", RULINGS["rule_reject"]) if t else
                  RULINGS["rule_reject"])
    if ruling["outcome"] == "partial_refund":
        ruling["amount"] = half
    valid: dict[Action, dict[str, Any]] = {
        Action.SUBMIT_EVIDENCE: {"kind": "photo", "text": "the seam is torn, photo attached"},
        Action.REQUEST_PROOF: {"from_party": "seller", "due": timedelta(days=2)},
        Action.RULE: ruling,
        Action.SEND_TO_JURY: {"panel": PANEL, "seed": "test"},
        Action.VOTE: {"side": "seller" if t is not None and "seller" in (t.when or "")
                      else "buyer", "reason": "the photos show the defect"},
        Action.AGREE: {"return_address": "Hangzhou, 1 West Lake Road"},
        Action.REJECT: {"reason": "the goods left the shop intact"},
        Action.OFFER: {"amount": Money(case.amount.minor // 2, case.amount.currency)},
        Action.RESUBMIT: {"description": "photos attached"},
        Action.SHIP_RETURN: {"carrier": "YTO", "tracking": "YT1", "method": "express"},
        Action.SHIP_REPLACEMENT: {"carrier": "SF", "tracking": "SF2"},
    }
    return valid.get(action, {})


def role_of(t: Transition) -> Role:
    for role in (Role.BUYER, Role.SELLER, Role.SYSTEM, Role.STAFF, Role.JUROR):
        if role in t.by:
            return role
    raise AssertionError(f"row {t} names nobody")


def actor_for(t: Transition, case: Case) -> Actor:
    """Who takes row `t` on this case: the party its condition names, a juror yet to vote."""
    if t.when in ("asked", "not_asked"):
        asked = case.proof_from == "buyer"
        return BUYER if asked == (t.when == "asked") else SELLER
    if role_of(t) is Role.JUROR:
        voted = {j for j, _ in case.jury_votes}
        return Actor(Role.JUROR, next(j for j in case.jury_panel if j not in voted))
    return PARTY[role_of(t)]


def decider(t: Transition) -> str:
    """`decided_by` after row `t` closed the case (or the platform decided it)."""
    if t.source is CaseStatus.JURY_VOTING and t.action in (Action.VOTE, Action.TIMEOUT):
        return "jury"
    if t.action is Action.TIMEOUT:
        return "timeout"
    return role_of(t).value


def prepare(t: Transition, case: Case, order: Order, now: datetime) -> datetime:
    """Bring the case, in `t`'s source status, to the state `t`'s condition names: proof asked
    of the right party (IN-4), the votes that make the next vote or the deadline decide (IN-3)."""
    wanted = {"asked": "seller", "not_asked": "seller", "seller_asked": "seller",
              "buyer_asked": "buyer"}.get(t.when or "")
    if wanted and case.proof_from != wanted:
        now += STEP
        case.act(Action.REQUEST_PROOF, STAFF, now, POLICY, order, from_party=wanted)
    majority, quorum = len(PANEL) // 2 + 1, POLICY.jury.quorum
    votes = {"vote_buyer_majority": ["buyer"] * (majority - 1),
             "vote_seller_majority": ["seller"] * (majority - 1),
             "jury_buyer": ["buyer"] * (majority - 1)
             + ["seller"] * max(1, quorum - majority + 1),
             "jury_seller": ["seller"] * (majority - 1)
             + ["buyer"] * max(1, quorum - majority + 1)}.get(t.when or "", [])
    for side, juror in zip(votes[len(case.jury_votes):], PANEL[len(case.jury_votes):],
                           strict=False):  # idempotent: votes already cast count
        now += STEP
        case.act(Action.VOTE, Actor(Role.JUROR, juror), now, POLICY, order, side=side,
                 reason="seen the evidence")
    return now


def when(t: Transition, case: Case, now: datetime) -> datetime:
    """The time at which row `t` may run: a timeout at its deadline, a seller's escalation
    from day 15 (IN-2), anything else an hour later."""
    if t.action is Action.TIMEOUT:
        assert case.deadline is not None, f"{case.status} has no timer"
        return case.deadline
    if t.action is Action.ESCALATE and role_of(t) is Role.SELLER:
        return max(now + STEP, case.opened_at + POLICY.deadlines.seller_escalation_after)
    return now + STEP


def apply_row(t: Transition, case: Case, order: Order, now: datetime) -> tuple[Event, datetime]:
    now = prepare(t, case, order, now)
    at = when(t, case, now)
    event = case.act(t.action, actor_for(t, case), at, POLICY, order,
                     **args_for(t.action, case, t))
    return event, at


def path_to(status: CaseStatus, case_type: CaseType) -> list[Transition] | None:
    """The shortest list of rows from a new case to `status` for this type (breadth first).
    A ruling with return makes any case a return-and-refund (IN-6): later rows follow that."""
    paths: dict[tuple[CaseStatus, CaseType], list[Transition]] = {(START, case_type): []}
    queue = deque([(START, case_type)])
    found: dict[CaseStatus, list[Transition]] = {START: []}
    while queue:
        here, ct = queue.popleft()
        for t in TRANSITIONS:
            if t.source is here and ct in t.types:
                after = CaseType.RETURN_REFUND if t.when == "rule_with_return" else ct
                if (t.target, after) not in paths:
                    paths[(t.target, after)] = [*paths[(here, ct)], t]
                    found.setdefault(t.target, paths[(t.target, after)])
                    queue.append((t.target, after))
    return found.get(status)


def type_after(status: CaseStatus, case_type: CaseType) -> CaseType:
    """The case's type once `drive_to` has brought it to `status`."""
    path = path_to(status, case_type) or []
    return CaseType.RETURN_REFUND if any(t.when == "rule_with_return" for t in path) \
        else case_type


def drive_to(status: CaseStatus, case_type: CaseType) -> tuple[Case, Order, datetime]:
    """A case of `case_type` in `status`, with its order and the current time."""
    path = path_to(status, case_type)
    assert path is not None, f"{status} cannot be reached by a {case_type} case"
    order = place_order()
    now = T0 + 2 * STEP
    case = open_case(order, case_type, now)
    for t in path:
        _, now = apply_row(t, case, order, now)
    assert case.status is status
    return case, order, now


# -- every row of the table ------------------------------------------------------------------

# The withdrawal (RF-6) and seller-escalation (IN-2) rows are declared for every type, but some
# of their source statuses do not exist for some types (an exchange never has an offer pending).
UNREACHABLE = [(t, ct) for t in TRANSITIONS for ct in sorted(t.types)
               if path_to(t.source, ct) is None]
ROWS = [pytest.param(t, ct, id=f"{t.source}-{t.action}-{ct}-{t.rule}")
        for t in TRANSITIONS for ct in sorted(t.types) if (t, ct) not in UNREACHABLE]


@pytest.mark.parametrize(("t", "case_type"), ROWS)
def test_each_row_of_the_state_table_moves_the_case_as_declared(
        t: Transition, case_type: CaseType) -> None:
    case, order, now = drive_to(t.source, case_type)
    now = prepare(t, case, order, now)
    refunded_before, case_refunded_before = order.refunded, case.refunded
    ledger_before, rules_before = len(order.pending_ledger), case.rules
    timer_before = (case.deadline, case.deadline_kind)
    expected_refund = {"none": Money.zero(),
                       "requested": args_for(t.action, case, t).get("amount", case.amount),
                       "offer": case.offer}[t.refund]
    assert expected_refund is not None

    event, at = apply_row(t, case, order, now)

    # The target status and the event, with the rule id that allowed it.
    assert case.status is t.target
    assert event is case.pending[-1]
    assert event.name == EVENT_NAMES[t.action]
    assert event.rule == t.rule
    assert event.actor.role in t.by
    assert event.at == at
    assert event.changes["status"] is t.target
    assert case.rules == ((*rules_before, t.rule) if t.decides and t.rule not in rules_before
                          else rules_before)
    # The outcome when the case closes; the next timer otherwise.
    if t.target is CaseStatus.CLOSED:
        assert case.outcome is (t.outcome or REPLACEMENT_OUTCOME[case_type])
        assert case.closed_at == at
        assert case.decided_by == decider(t)
        assert (case.deadline, case.deadline_kind) == (None, None)
        assert all(ln.open_case_id is None for ln in order.lines)
    else:
        assert case.outcome is Outcome.OPEN
        assert case.closed_at is None
        if t.target is t.source and t.action is not Action.REQUEST_PROOF:
            assert (case.deadline, case.deadline_kind) == timer_before  # evidence, a vote
        else:
            assert (case.deadline, case.deadline_kind) == deadline_for(case, t.target, at,
                                                                       POLICY)
        assert order.line(1).open_case_id == case.id
    # The refund: what the row says, on the order, its lines and the ledger.
    assert order.refunded - refunded_before == expected_refund
    assert case.refunded - case_refunded_before == expected_refund
    new_entries = order.pending_ledger[ledger_before:]
    if t.refund == "none":
        assert new_entries == []
    else:
        assert [e.kind for e in new_entries] == [LedgerKind.REFUND]
        (entry,) = new_entries
        assert (entry.amount, entry.rule, entry.case_id, entry.line_no, entry.at) == (
            expected_refund, t.rule, case.id, 1, at)
        assert order.line(1).refunded == expected_refund
        assert order.status is OrderStatus.SHIPPED  # the other line is still unrefunded


def test_the_generated_parametrization_covers_every_row_and_every_open_status() -> None:
    assert len(ROWS) + len(UNREACHABLE) == sum(len(t.types) for t in TRANSITIONS)
    # Only the generic rows may name a type that never reaches their source status; any other
    # unreachable row would be a mistake in the table.
    assert {(t.action, t.rule) for t, _ in UNREACHABLE} <= {(Action.WITHDRAW, "RF-6"),
                                                            (Action.ESCALATE, "IN-2"),
                                                            (Action.SUBMIT_EVIDENCE, "IN-5")}
    assert all(any(path_to(t.source, ct) is not None for ct in t.types) for t in TRANSITIONS)
    sources = {t.source for t in TRANSITIONS}
    assert sources == set(CaseStatus) - {CaseStatus.CLOSED}
    # Every status can be reached by at least one type, CLOSED by every type.
    for status in CaseStatus:
        assert any(path_to(status, ct) is not None for ct in CaseType), status
    assert all(path_to(CaseStatus.CLOSED, ct) is not None for ct in CaseType)


def test_a_full_refund_before_shipment_closes_the_order() -> None:  # rule: RF-2
    order = place_order(shipped=False)
    case = open_case(order, CaseType.REFUND_ONLY, T0 + STEP, lines=None)
    assert case.amount == order.paid  # rule: AS-2, before receipt the full amount
    case.act(Action.AGREE, SELLER, T0 + 2 * STEP, POLICY, order)
    assert case.outcome is Outcome.REFUNDED
    assert order.refunded == order.paid
    assert order.status is OrderStatus.CLOSED
    assert order.closed_at == T0 + 2 * STEP
    refunds = [e for e in order.pending_ledger if e.kind is LedgerKind.REFUND]
    assert [(e.line_no, e.amount) for e in refunds] == [(1, Money.parse("100.00")),
                                                        (2, Money.parse("99.90"))]


def test_an_accepted_offer_refunds_exactly_the_offer_and_the_buyer_keeps_the_goods() -> None:
    case, order, now = drive_to(CaseStatus.OFFER_PENDING, CaseType.RETURN_REFUND)
    assert case.offer == Money.parse("25.00")
    case.act(Action.ACCEPT_OFFER, BUYER, now + STEP, POLICY, order)
    assert (case.outcome, case.refunded) == (Outcome.PARTIALLY_REFUNDED, Money.parse("25.00"))
    assert case.return_tracking is None  # nothing was sent back
    assert order.line(1).refunded == Money.parse("25.00")


# -- refusals --------------------------------------------------------------------------------


def _actor_for(action: Action) -> Actor:
    """Somebody the table lets take `action` somewhere: a refusal is then about the status."""
    return PARTY[next(role_of(t) for t in TRANSITIONS if t.action is action)]


def _refused(case: Case, order: Order, action: Action, actor: Actor, now: datetime,
             error: type[ActionNotAllowed] = ActionNotAllowed) -> ActionNotAllowed:
    case_before, order_before = copy.deepcopy(case), copy.deepcopy(order)
    with pytest.raises(error) as err:
        case.act(action, actor, now, POLICY, order, **args_for(action, case))
    assert case == case_before  # status, seq, pending events and every other field
    assert order == order_before  # lines, refunds, pending events and ledger entries
    return err.value


NOT_IN_TABLE = [
    pytest.param(status, action, ct, id=f"{status}-{action}-{ct}")
    for status in CaseStatus for action in Action for ct in CaseType
    if path_to(status, ct) is not None
    and find_transition(status, action, type_after(status, ct)) is None
]


@pytest.mark.parametrize(("status", "action", "case_type"), NOT_IN_TABLE)
def test_an_action_the_table_does_not_list_for_the_status_is_refused_and_changes_nothing(
        status: CaseStatus, action: Action, case_type: CaseType) -> None:
    case, order, now = drive_to(status, case_type)
    later = now + timedelta(days=400)  # every timer and the IN-2 wait have long passed
    err = _refused(case, order, action, _actor_for(action), later)
    assert type(err) is ActionNotAllowed
    assert err.code == "not_allowed"
    assert (err.entity, err.action, err.status) == (case.id, action.value, status.value)


def test_every_status_and_action_pair_is_either_in_the_table_or_refused() -> None:
    listed = {(t.source, t.action) for t in TRANSITIONS}
    refused = {(p.values[0], p.values[1]) for p in NOT_IN_TABLE}
    assert listed | refused == {(s, a) for s in CaseStatus for a in Action}


def first_type(t: Transition) -> CaseType:
    return next(ct for ct in sorted(t.types) if (t, ct) not in UNREACHABLE)


def roles_for(t: Transition, ct: CaseType) -> frozenset[Role]:
    """Every role some row allows for this move (escalation: buyer row IN-1, seller row IN-2)."""
    return frozenset().union(*(r.by for r in TRANSITIONS
                               if (r.source, r.action) == (t.source, t.action) and ct in r.types))


ROLE_REFUSALS = [
    pytest.param(t, ct, role, id=f"{t.source}-{t.action}-{ct}-{t.rule}-by-{role}")
    for t in TRANSITIONS for ct in [first_type(t)]
    for role in (Role.BUYER, Role.SELLER, Role.SYSTEM, Role.STAFF, Role.JUROR)
    if role not in roles_for(t, ct)
]


@pytest.mark.parametrize(("t", "case_type", "role"), ROLE_REFUSALS)
def test_a_party_the_row_does_not_name_may_not_take_its_action(
        t: Transition, case_type: CaseType, role: Role) -> None:
    case, order, now = drive_to(t.source, case_type)
    now = prepare(t, case, order, now)
    err = _refused(case, order, t.action, PARTY[role], when(t, case, now))
    assert err.rule in {r.rule for r in TRANSITIONS
                        if (r.source, r.action) == (t.source, t.action) and case_type in r.types}


def test_a_timeout_before_its_deadline_is_refused() -> None:
    case, order, _ = drive_to(CaseStatus.AWAITING_SELLER, CaseType.REFUND_ONLY)
    assert case.deadline is not None
    err = _refused(case, order, Action.TIMEOUT, SYSTEM, case.deadline - timedelta(seconds=1))
    assert "deadline not reached" in str(err)


WRONG_PARTIES = [
    pytest.param(t, ct, other, id=f"{t.source}-{t.action}-{ct}-{t.rule}-by-{other}")
    for t in TRANSITIONS for ct in [first_type(t)]
    for role, other in ((Role.BUYER, OTHER_BUYER), (Role.SELLER, OTHER_SELLER),
                        (Role.JUROR, Actor(Role.JUROR, "j-not-on-the-panel")), (None, STAFF))
    if (role in t.by if role is not None else Role.STAFF not in t.by)
]


@pytest.mark.parametrize(("t", "case_type", "other"), WRONG_PARTIES)
def test_another_buyer_another_seller_or_staff_get_wrong_actor(
        t: Transition, case_type: CaseType, other: Actor) -> None:
    case, order, now = drive_to(t.source, case_type)
    now = prepare(t, case, order, now)
    err = _refused(case, order, t.action, other, when(t, case, now), WrongActor)
    assert err.code == "wrong_actor"
    assert (err.entity, err.action) == (case.id, t.action.value)


def test_only_the_orders_buyer_may_open_a_case() -> None:  # rule: AS-6
    for actor in (OTHER_BUYER, SELLER, STAFF):
        order = place_order()
        before = copy.deepcopy(order)
        with pytest.raises(WrongActor, match="only its buyer"):
            Case.open(case_id="c1", order=order, actor=actor, case_type=CaseType.REFUND_ONLY,
                      reason=Reason.NOT_RECEIVED, now=T0 + 2 * STEP, policy=POLICY)
        assert order == before


def test_only_the_orders_seller_ships_and_only_its_buyer_confirms_receipt() -> None:
    order = place_order(shipped=False)
    before = copy.deepcopy(order)
    for actor in (OTHER_SELLER, BUYER):
        with pytest.raises(WrongActor):
            order.ship(actor, "SF", "SF9", T0 + STEP, POLICY)
    assert order == before
    order.ship(SELLER, "SF", "SF9", T0 + STEP, POLICY)
    before = copy.deepcopy(order)
    for actor in (OTHER_BUYER, SELLER):
        with pytest.raises(WrongActor):
            order.confirm_receipt(actor, T0 + 2 * STEP)
    assert order == before
