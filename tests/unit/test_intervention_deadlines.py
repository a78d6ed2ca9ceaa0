"""The intervention timers and limits of the pack (IN-2..IN-5, IN-3 / §9 jury, SR-2), each
just before, at and just after it. Spans come from the pack, never written here."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

import pytest

from aftersales.domain import jury
from aftersales.domain.cases import Action, Case, CaseStatus, Outcome
from aftersales.domain.errors import ActionNotAllowed, InvalidInput
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec, Order
from aftersales.domain.types import SYSTEM, Actor, CaseType, Reason, Role, ScanKind, ShippingMode
from aftersales.policy import loader
from tests.conftest import T0

POLICY = loader.load("taobao", {"jury.panel_size": 3, "jury.quorum": 2})
IV, D = POLICY.intervention, POLICY.deadlines
BUYER, SELLER = Actor(Role.BUYER, "b1"), Actor(Role.SELLER, "s1")
STAFF = Actor(Role.STAFF, "x1")
SECOND, HOUR = timedelta(seconds=1), timedelta(hours=1)
OFFSETS = [pytest.param(-SECOND, id="1s-before"), pytest.param(timedelta(0), id="at"),
           pytest.param(SECOND, id="1s-after")]


def escalated(case_type: CaseType = CaseType.REFUND_ONLY) -> tuple[Case, Order, datetime]:
    """A case the seller rejected and the buyer escalated (IN-1), an hour apart."""
    order = Order.place(order_id="o1", buyer=BUYER, seller_id=SELLER.id,
                        mode=ShippingMode.IN_STOCK,
                        lines=[LineSpec("sku-a", 1, Money.parse("120.00"))], now=T0,
                        policy=POLICY)
    order.ship(SELLER, "SF", "SF1", T0 + HOUR, POLICY)
    order.scanned(ScanKind.SIGNED, T0 + 5 * HOUR, "Hangzhou")
    now = T0 + 6 * HOUR
    case = Case.open(case_id="c1", order=order, actor=BUYER, case_type=case_type,
                     reason=Reason.QUALITY, now=now, policy=POLICY, received=True)
    case.act(Action.REJECT, SELLER, now + HOUR, POLICY, order, reason="no defect")
    case.act(Action.ESCALATE, BUYER, now + 2 * HOUR, POLICY, order)
    return case, order, now + 2 * HOUR


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize(("party", "outcome"), [("seller", Outcome.REFUNDED),
                                                ("buyer", Outcome.REJECTED)])
def test_missing_proof_decides_against_the_party_asked_at_the_deadline(
        party: str, outcome: Outcome, offset: timedelta) -> None:  # rule: IN-4
    case, order, at = escalated()
    case.act(Action.REQUEST_PROOF, STAFF, at, POLICY, order, from_party=party)  # pack default
    due = at + IV.proof_window_default
    assert (case.status, case.deadline, case.deadline_kind) == (
        CaseStatus.AWAITING_PROOF, due, "proof_window")
    before = copy.deepcopy(case)
    event = case.on_deadline(due + offset, POLICY, order)
    if offset < timedelta(0):
        assert event is None and case == before
        return
    assert event is not None and event.rule == "IN-4"
    assert (case.status, case.outcome, case.decided_by) == (CaseStatus.CLOSED, outcome, "timeout")
    assert order.refunded == (Money.parse("120.00") if party == "seller" else Money.zero())


@pytest.mark.parametrize(("extra", "accepted"), [(-SECOND, True), (timedelta(0), True),
                                                 (SECOND, False)])
def test_staff_may_give_up_to_the_longest_proof_window(extra: timedelta, accepted: bool) -> None:
    case, order, at = escalated()
    due = IV.proof_window_max + extra
    if not accepted:
        before = copy.deepcopy(case)
        with pytest.raises(InvalidInput) as err:
            case.act(Action.REQUEST_PROOF, STAFF, at, POLICY, order, from_party="seller", due=due)
        assert err.value.rule == "IN-4" and case == before
        return
    case.act(Action.REQUEST_PROOF, STAFF, at, POLICY, order, from_party="seller", due=due)
    assert case.deadline == at + due


def jury_case(votes: list[str]) -> tuple[Case, Order, datetime]:
    case, order, at = escalated()
    case.act(Action.SEND_TO_JURY, STAFF, at, POLICY, order, panel=("j1", "j2", "j3"), seed="s")
    for i, side in enumerate(votes):
        case.act(Action.VOTE, Actor(Role.JUROR, f"j{i + 1}"), at + HOUR, POLICY, order,
                 side=side, reason="seen")
    return case, order, at


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize(("votes", "status", "outcome"), [
    pytest.param([], CaseStatus.IN_INTERVENTION, Outcome.OPEN, id="no-quorum-to-staff"),
    pytest.param(["buyer"], CaseStatus.IN_INTERVENTION, Outcome.OPEN, id="one-vote-to-staff"),
])
def test_the_jury_vote_window_ends_in_a_fallback_to_staff_without_quorum(
        votes: list[str], status: CaseStatus, outcome: Outcome,
        offset: timedelta) -> None:  # rule: IN-3, §9 vote_window
    case, order, at = jury_case(votes)
    due = at + POLICY.jury.vote_window
    assert (case.deadline, case.deadline_kind) == (due, "vote_window")
    before = copy.deepcopy(case)
    event = case.on_deadline(due + offset, POLICY, order)
    if offset < timedelta(0):
        assert event is None and case == before
        return
    assert (case.status, case.outcome, case.decided_by) == (status, outcome, None)
    assert case.staff_due == due + offset + IV.staff_ruling  # back in the staff queue


def test_a_quorum_with_a_tie_cannot_decide() -> None:  # rule: IN-3
    policy = loader.load("taobao", {"jury.panel_size": 5, "jury.quorum": 2})
    case, order, at = escalated()
    case.act(Action.SEND_TO_JURY, STAFF, at, policy, order, panel=tuple("abcde"), seed="s")
    case.act(Action.VOTE, Actor(Role.JUROR, "a"), at, policy, order, side="buyer")
    case.act(Action.VOTE, Actor(Role.JUROR, "b"), at, policy, order, side="seller")
    case.on_deadline(at + policy.jury.vote_window, policy, order)
    assert case.status is CaseStatus.IN_INTERVENTION


@pytest.mark.parametrize("offset", OFFSETS)
def test_the_staff_queue_target_orders_the_queue_but_decides_nothing(offset: timedelta) -> None:
    case, order, at = escalated()
    assert (case.status, case.staff_due, case.deadline) == (
        CaseStatus.IN_INTERVENTION, at + IV.staff_ruling, None)
    assert case.on_deadline(at + IV.staff_ruling + offset, POLICY, order) is None


@pytest.mark.parametrize("offset", OFFSETS)
def test_the_seller_may_prompt_the_buyer_a_week_after_delivery(
        offset: timedelta) -> None:  # rule: SR-2
    _, order, _ = escalated()
    assert order.delivered_at is not None
    due = order.delivered_at + D.follow_up_after_delivery
    fresh = copy.deepcopy(order)
    fresh.line(1).open_case_id = None
    if offset < timedelta(0):
        with pytest.raises(ActionNotAllowed) as err:
            fresh.remind(SELLER, due + offset, POLICY)
        assert (err.value.code, err.value.rule) == ("too_early", "SR-2")
        return
    event = fresh.remind(SELLER, due + offset, POLICY)
    assert (event.name, event.rule, fresh.reminded_at) == ("BuyerReminded", "SR-2", due + offset)


@pytest.mark.parametrize("offset", OFFSETS)
def test_the_system_reminds_the_buyer_when_the_seller_did_not(offset: timedelta) -> None:
    _, order, _ = escalated()
    assert order.delivered_at is not None
    due = order.delivered_at + D.auto_follow_up_after_delivery
    event = order.plan_follow_up(due + offset, POLICY)
    if offset < timedelta(0):
        assert event is None and (order.follow_up_at, order.reminded_at) == (due, None)
        return
    assert event is not None and event.actor == SYSTEM and order.reminded_at == due + offset
    assert order.plan_follow_up(due + offset, POLICY) is None  # once


@pytest.mark.parametrize(("length", "accepted"), [(IV.evidence_text_max, True),
                                                  (IV.evidence_text_max + 1, False)])
def test_evidence_text_is_limited_by_the_pack(length: int, accepted: bool) -> None:  # IN-5
    case, order, at = escalated()
    if accepted:
        case.act(Action.SUBMIT_EVIDENCE, BUYER, at, POLICY, order, kind="photo", text="x" * length)
        assert case.buyer_evidence == 1
    else:
        with pytest.raises(InvalidInput):
            case.act(Action.SUBMIT_EVIDENCE, BUYER, at, POLICY, order, kind="photo",
                     text="x" * length)


def test_a_party_may_submit_at_most_the_packs_number_of_items() -> None:  # rule: IN-5
    case, order, at = escalated()
    for i in range(IV.evidence_items_max):
        case.act(Action.SUBMIT_EVIDENCE, SELLER, at, POLICY, order, kind="chat", text=f"#{i}")
    with pytest.raises(ActionNotAllowed) as err:
        case.act(Action.SUBMIT_EVIDENCE, SELLER, at, POLICY, order, kind="chat", text="more")
    assert err.value.code == "too_much_evidence"
    case.act(Action.SUBMIT_EVIDENCE, BUYER, at, POLICY, order, kind="chat", text="mine")


# -- jury eligibility and the draw (IN-3, §9) --------------------------------------------------
AGE = timedelta(days=POLICY.jury.min_account_age_days)


@pytest.mark.parametrize(("registered", "verified", "standing", "ok"), [
    (T0 - AGE, True, "good", True),
    (T0 - AGE + SECOND, True, "good", False),  # one second too new
    (T0 - AGE - SECOND, True, "good", True),
    (T0 - 2 * AGE, False, "good", False),  # not real-name verified
    (T0 - 2 * AGE, True, "poor", False),  # not in good standing
])
def test_jury_eligibility_follows_the_pack(registered: datetime, verified: bool, standing: str,
                                           ok: bool) -> None:
    assert jury.eligible(jury.Account("u", registered, verified, standing), T0, POLICY) is ok


def test_the_draw_is_random_but_reproducible_and_never_picks_a_linked_account() -> None:
    pool = [f"u{i}" for i in range(50)]
    linked = {"u1", "u2", "u3"}
    first = jury.draw(pool, linked, 31, "seed-a")
    assert first == jury.draw(reversed(pool), linked, 31, "seed-a")  # order of reading ignored
    assert first != jury.draw(pool, linked, 31, "seed-b")
    assert len(set(first)) == 31 and not set(first) & linked
    assert len(jury.draw(pool[:10], linked, 31, "s")) == 7  # too few: the caller refuses


def test_a_ruling_cannot_refund_more_than_the_lines_paid() -> None:  # rule: IN-6
    case, order, at = escalated()
    before = copy.deepcopy(case), copy.deepcopy(order)
    with pytest.raises(InvalidInput):
        case.act(Action.RULE, STAFF, at, POLICY, order, outcome="refund",
                 amount=Money.parse("120.01"))
    assert (case, order) == before
    case.act(Action.RULE, STAFF, at, POLICY, order, outcome="refund")
    assert (case.refunded, order.refunded) == (Money.parse("120.00"), Money.parse("120.00"))


def test_evidence_text_and_vote_reasons_refuse_control_characters() -> None:  # rule: IN-5
    case, order, at = escalated()
    before = copy.deepcopy(case)
    with pytest.raises(InvalidInput) as err:
        case.act(Action.SUBMIT_EVIDENCE, BUYER, at, POLICY, order, kind="chat",
                 text="see\x00this")
    assert err.value.rule == "IN-5" and case == before
    case.act(Action.SEND_TO_JURY, STAFF, at, POLICY, order, panel=("j1", "j2", "j3"), seed="s")
    with pytest.raises(InvalidInput):
        case.act(Action.VOTE, Actor(Role.JUROR, "j1"), at, POLICY, order, side="buyer",
                 reason="\x1b[31mred")


def test_an_evidence_file_keeps_only_a_safe_short_name() -> None:  # rule: IN-5
    case, order, at = escalated()
    file = {"sha256": "a" * 64, "size": 10, "media_type": "image/png",
            "filename": "../../secret/\x07" + "x" * 300 + ".png"}
    event = case.act(Action.SUBMIT_EVIDENCE, BUYER, at, POLICY, order, kind="photo", file=file)
    name = event.changes["evidence"]["filename"]
    assert "/" not in name and "\x07" not in name and len(name) <= 200 and name.endswith(".png")
