"""Every timer and window of the after-sales timeline, tested just before, at and just after it.

Spans are read from the policy pack, never written here. "At" semantics: a timeout fires when
now >= deadline; the AS-4 window admits now <= end; the 7-day no-reason window is the half-open
calendar range [day after signing 00:00, +7 days 00:00) in the pack's timezone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from aftersales.domain.cases import Action, Case, CaseStatus, Outcome, no_reason_deadline
from aftersales.domain.errors import ActionNotAllowed
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec, Order
from aftersales.domain.types import (
    Actor,
    CaseType,
    LedgerKind,
    OrderStatus,
    Reason,
    Role,
    ScanKind,
    ShippingMode,
)
from aftersales.policy import loader
from tests.conftest import T0

POLICY = loader.load("taobao")
D = POLICY.deadlines
BUYER = Actor(Role.BUYER, "b1")
SELLER = Actor(Role.SELLER, "s1")
SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)
SHANGHAI = ZoneInfo("Asia/Shanghai")
OFFSETS = [pytest.param(-SECOND, id="1s-before"), pytest.param(timedelta(0), id="at"),
           pytest.param(SECOND, id="1s-after")]


def place_order(now: datetime = T0, *, ship: bool = True) -> Order:
    order = Order.place(order_id="o1", buyer=BUYER, seller_id=SELLER.id,
                        mode=ShippingMode.IN_STOCK,
                        lines=[LineSpec("sku-a", 1, Money.parse("120.00"))], now=now,
                        policy=POLICY)
    if ship:
        order.ship(SELLER, "SF", "SF1", now + HOUR, POLICY)
    return order


def open_case(order: Order, case_type: CaseType, now: datetime,
              reason: Reason = Reason.QUALITY) -> Case:
    return Case.open(case_id="c1", order=order, actor=BUYER, case_type=case_type,
                     reason=reason, now=now, policy=POLICY)


# -- case timers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timer:
    span: str  # the Deadlines field
    status: CaseStatus  # the status the timer runs in
    then: CaseStatus  # where the timeout takes the case
    outcome: Outcome
    refunds: bool
    rule: str


def _refund_before_shipment() -> tuple[Case, Order, datetime]:
    order = place_order(ship=False)
    at = T0 + HOUR
    return open_case(order, CaseType.REFUND_ONLY, at, Reason.NOT_SHIPPED), order, at


def _opened(case_type: CaseType) -> Callable[[], tuple[Case, Order, datetime]]:
    def setup() -> tuple[Case, Order, datetime]:
        order = place_order()
        at = T0 + 3 * HOUR
        return open_case(order, case_type, at), order, at
    return setup


def _then(setup: Callable[[], tuple[Case, Order, datetime]], action: Action, actor: Actor,
          **args: object) -> Callable[[], tuple[Case, Order, datetime]]:
    """`setup`, then one day later `actor` takes `action`: the new status starts its timer."""
    def run() -> tuple[Case, Order, datetime]:
        case, order, at = setup()
        at += timedelta(days=1)
        case.act(action, actor, at, POLICY, order, **args)
        return case, order, at
    return run


_return_agreed = _then(_opened(CaseType.RETURN_REFUND), Action.AGREE, SELLER)
_reship_agreed = _then(_opened(CaseType.RESHIP), Action.AGREE, SELLER)
TIMERS: list[tuple[str, Timer, Callable[[], tuple[Case, Order, datetime]]]] = [
    ("seller_response_before_shipment_refunds",  # §9: 48 h, silence = refund
     Timer("seller_response_before_shipment", CaseStatus.AWAITING_SELLER, CaseStatus.CLOSED,
           Outcome.REFUNDED, True, "RF-1"), _refund_before_shipment),
    ("seller_response_after_shipment_refunds",  # rule: RF-1, silence is agreement
     Timer("seller_response_after_shipment", CaseStatus.AWAITING_SELLER, CaseStatus.CLOSED,
           Outcome.REFUNDED, True, "RF-1"), _opened(CaseType.REFUND_ONLY)),
    ("seller_response_after_shipment_agrees_to_the_return",  # rule: RF-1, RF-3
     Timer("seller_response_after_shipment", CaseStatus.AWAITING_SELLER,
           CaseStatus.AWAITING_RETURN, Outcome.OPEN, False, "RF-1"),
     _opened(CaseType.RETURN_REFUND)),
    ("buyer_after_rejection_closes_the_case",  # §9 / IN-1
     Timer("buyer_after_rejection", CaseStatus.REJECTED, CaseStatus.CLOSED, Outcome.REJECTED,
           False, "IN-1"),
     _then(_opened(CaseType.REFUND_ONLY), Action.REJECT, SELLER, reason="no fault")),
    ("buyer_offer_response_closes_without_refund",
     Timer("buyer_offer_response", CaseStatus.OFFER_PENDING, CaseStatus.CLOSED,
           Outcome.CLOSED_NO_REFUND, False, "§9:buyer_offer_response"),
     _then(_opened(CaseType.RETURN_REFUND), Action.OFFER, SELLER,
           amount=Money.parse("30.00"))),
    ("buyer_ship_return_closes_without_refund",  # rule: RF-4
     Timer("buyer_ship_return", CaseStatus.AWAITING_RETURN, CaseStatus.CLOSED,
           Outcome.CLOSED_NO_REFUND, False, "RF-4"), _return_agreed),
    ("seller_confirm_return_express_refunds",  # rule: RF-5
     Timer("seller_confirm_return_express", CaseStatus.RETURN_SHIPPED, CaseStatus.CLOSED,
           Outcome.REFUNDED, True, "RF-5"),
     _then(_return_agreed, Action.SHIP_RETURN, BUYER, carrier="YTO", tracking="YT1",
           method="express")),
    ("seller_confirm_return_surface_refunds",  # rule: RF-5 (surface mail)
     Timer("seller_confirm_return_surface", CaseStatus.RETURN_SHIPPED, CaseStatus.CLOSED,
           Outcome.REFUNDED, True, "RF-5"),
     _then(_return_agreed, Action.SHIP_RETURN, BUYER, carrier="EMS", tracking="E1",
           method="surface")),
    ("seller_send_replacement_refunds_instead",  # rule: RF-7, §9
     Timer("seller_send_replacement", CaseStatus.AWAITING_REPLACEMENT, CaseStatus.CLOSED,
           Outcome.REFUNDED, True, "§9:seller_send_replacement"), _reship_agreed),
    ("buyer_confirm_replacement_auto_confirms",  # rule: RF-7, §9 auto_confirm_receipt
     Timer("auto_confirm_receipt", CaseStatus.REPLACEMENT_SHIPPED, CaseStatus.CLOSED,
           Outcome.RESHIPPED, False, "§9:auto_confirm_receipt"),
     _then(_reship_agreed, Action.SHIP_REPLACEMENT, SELLER, carrier="SF", tracking="SF2")),
]


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize(("timer", "setup"),
                         [pytest.param(t, s, id=name) for name, t, s in TIMERS])
def test_a_case_timer_fires_at_its_deadline_and_not_a_second_before(
        timer: Timer, setup: Callable[[], tuple[Case, Order, datetime]],
        offset: timedelta) -> None:
    case, order, entered = setup()
    assert case.status is timer.status
    due = entered + getattr(D, timer.span)
    assert case.deadline == due
    now = due + offset
    case_before, order_before = copy.deepcopy(case), copy.deepcopy(order)

    event = case.on_deadline(now, POLICY, order)

    if offset < timedelta(0):
        assert event is None
        assert case == case_before
        assert order == order_before
        return
    assert event is not None
    assert (event.name, event.rule, event.at, event.actor.role) == (
        "DeadlinePassed", timer.rule, now, Role.SYSTEM)
    assert case.status is timer.then
    assert case.outcome is timer.outcome
    refunds = [e for e in order.pending_ledger if e.kind is LedgerKind.REFUND]
    if timer.refunds:
        assert case.refunded == case.amount == order.refunded
        assert [(e.amount, e.rule, e.at) for e in refunds] == [(case.amount, timer.rule, now)]
    else:
        assert (case.refunded, order.refunded, refunds) == (Money.zero(), Money.zero(), [])
    if timer.then is CaseStatus.CLOSED:
        assert (case.decided_by, case.closed_at) == ("timeout", now)
        assert case.deadline is None
    # Re-running at the same time does nothing: the transition moved the deadline.
    seq = case.seq
    assert case.on_deadline(now, POLICY, order) is None
    assert case.seq == seq


def test_the_next_timer_starts_when_the_timeout_lands_in_a_timed_status() -> None:
    # RF-1 silence agrees to a return; RF-4 then gives the buyer its time from that moment.
    case, order, entered = _opened(CaseType.RETURN_REFUND)()
    due = entered + D.seller_response_after_shipment
    case.on_deadline(due, POLICY, order)
    assert (case.deadline, case.deadline_kind) == (due + D.buyer_ship_return, "buyer_ship_return")


def test_a_refund_asked_before_shipment_keeps_the_48_hour_timer_if_the_order_ships() -> None:
    case, order, entered = _refund_before_shipment()
    order.ship(SELLER, "SF", "SF1", entered + HOUR, POLICY)
    assert case.deadline == entered + D.seller_response_before_shipment


# -- order timers and windows ---------------------------------------------------------------


@pytest.mark.parametrize("offset", OFFSETS)
def test_an_order_auto_confirms_receipt_ten_days_after_shipment(offset: timedelta) -> None:
    order = place_order()
    shipped = T0 + HOUR
    due = shipped + D.auto_confirm_receipt  # §9
    assert order.auto_confirm_at == due
    assert order.next_deadline() == (due, "auto_confirm")
    events = order.on_deadline(due + offset)
    if offset < timedelta(0):
        assert events == []
        assert order.status is OrderStatus.SHIPPED
        return
    assert [(e.name, e.rule) for e in events] == [("ReceiptAutoConfirmed",
                                                  "§9:auto_confirm_receipt")]
    assert (order.status, order.completed_at) == (OrderStatus.COMPLETED, due + offset)
    assert order.auto_confirm_at is None
    assert order.on_deadline(due + offset) == []


def test_auto_confirm_waits_while_a_case_is_open_and_resumes_after_it_closes() -> None:
    order = place_order()
    due = T0 + HOUR + D.auto_confirm_receipt
    case = open_case(order, CaseType.RETURN_REFUND, T0 + 2 * HOUR)
    assert order.next_deadline() == (None, None)
    assert order.on_deadline(due + timedelta(days=3)) == []
    assert order.status is OrderStatus.SHIPPED
    closed = due + timedelta(days=3)
    case.act(Action.WITHDRAW, BUYER, closed, POLICY, order)
    # The timer stood still while the case was open: the paused span is added back.
    resumed = due + (closed - (T0 + 2 * HOUR))
    assert order.next_deadline() == (resumed, "auto_confirm")
    assert order.on_deadline(resumed - timedelta(seconds=1)) == []
    assert [e.name for e in order.on_deadline(resumed)] == ["ReceiptAutoConfirmed"]


@pytest.mark.parametrize("offset", OFFSETS)
def test_an_in_stock_order_ships_by_48_hours_after_payment_unless_the_listing_promises_less(
        offset: timedelta) -> None:  # rule: SH-1
    limit = T0 + D.in_stock_ship_by
    assert place_order(ship=False).ship_by == limit
    listed = limit + offset
    order = Order.place(order_id="o2", buyer=BUYER, seller_id="s1", mode=ShippingMode.IN_STOCK,
                        lines=[LineSpec("a", 1, Money.parse("1.00"))], now=T0, policy=POLICY,
                        ship_by=listed)
    assert order.ship_by == min(listed, limit)


@pytest.mark.parametrize("mode", [ShippingMode.PRESALE, ShippingMode.CUSTOM, ShippingMode.TIERED])
def test_other_modes_ship_by_the_date_the_listing_promised(mode: ShippingMode) -> None:
    promised = T0 + timedelta(days=20)  # beyond the in-stock limit: the listing decides
    order = Order.place(order_id="o3", buyer=BUYER, seller_id="s1", mode=mode,
                        lines=[LineSpec("a", 1, Money.parse("1.00"))], now=T0, policy=POLICY,
                        ship_by=promised)
    assert order.ship_by == promised  # rule: SH-1


@pytest.mark.parametrize("offset", OFFSETS)
def test_after_completion_the_after_sales_window_is_15_days(offset: timedelta) -> None:
    order = place_order()
    completed = T0 + timedelta(days=3)
    order.confirm_receipt(BUYER, completed)
    end = completed + POLICY.after_sales.window_after_completion  # rule: AS-4
    before = copy.deepcopy(order)
    if offset > timedelta(0):
        with pytest.raises(ActionNotAllowed) as err:
            open_case(order, CaseType.RETURN_REFUND, end + offset)
        assert (err.value.rule, err.value.code) == ("AS-4", "window_closed")
        assert order == before
        return
    case = open_case(order, CaseType.RETURN_REFUND, end + offset)
    assert case.after_completion is True
    assert order.line(1).after_sales_used is True  # rule: AS-5


@pytest.mark.parametrize(("after", "allowed"), [
    pytest.param(lambda: D.seller_escalation_after - timedelta(days=1), False, id="day-14"),
    pytest.param(lambda: D.seller_escalation_after - SECOND, False, id="1s-before"),
    pytest.param(lambda: D.seller_escalation_after, True, id="at-day-15"),
    pytest.param(lambda: D.seller_escalation_after + SECOND, True, id="1s-after"),
])
def test_the_seller_may_ask_for_intervention_from_the_15th_day(
        after: Callable[[], timedelta], allowed: bool) -> None:  # rule: IN-2
    # A surface-mail return keeps the case open for 30 days, long enough to reach day 15.
    case, order, _ = _then(_return_agreed, Action.SHIP_RETURN, BUYER, carrier="EMS",
                           tracking="E1", method="surface")()
    now = case.opened_at + after()
    assert case.deadline is not None and now < case.deadline
    if not allowed:
        before = copy.deepcopy(case)
        with pytest.raises(ActionNotAllowed) as err:
            case.act(Action.ESCALATE, SELLER, now, POLICY, order)
        assert (err.value.rule, err.value.code) == ("IN-2", "too_early")
        assert case == before
        return
    event = case.act(Action.ESCALATE, SELLER, now, POLICY, order)
    assert (event.rule, case.status, case.escalated_by) == (
        "IN-2", CaseStatus.IN_INTERVENTION, "seller")


# -- the 7-day no-reason return (§9) ---------------------------------------------------------


def _delivered(at: datetime) -> Order:
    order = place_order(at - timedelta(days=2))
    order.scanned(ScanKind.SIGNED, at, "Hangzhou")
    assert order.delivered_at == at
    return order


@pytest.mark.parametrize(("delivered", "end"), [
    # Signed a minute before local midnight: day 1 is the next day, so the last day is the 12th.
    pytest.param(datetime(2026, 3, 5, 23, 59, tzinfo=SHANGHAI),
                 datetime(2026, 3, 13, 0, 0, tzinfo=SHANGHAI), id="signed-23:59"),
    # Signed a minute after local midnight: a whole extra day.
    pytest.param(datetime(2026, 3, 6, 0, 1, tzinfo=SHANGHAI),
                 datetime(2026, 3, 14, 0, 0, tzinfo=SHANGHAI), id="signed-00:01"),
    # The same instant written in UTC is still 00:01 in Shanghai: the pack's zone decides.
    pytest.param(datetime(2026, 3, 5, 16, 1, tzinfo=UTC),
                 datetime(2026, 3, 14, 0, 0, tzinfo=SHANGHAI), id="signed-16:01Z"),
])
def test_the_no_reason_window_runs_seven_calendar_days_from_the_day_after_signing(
        delivered: datetime, end: datetime) -> None:
    assert POLICY.after_sales.no_reason_days == 7
    assert no_reason_deadline(delivered, POLICY) == end


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("delivered", [
    pytest.param(datetime(2026, 3, 5, 23, 59, tzinfo=SHANGHAI), id="signed-23:59"),
    pytest.param(datetime(2026, 3, 6, 0, 1, tzinfo=SHANGHAI), id="signed-00:01"),
])
def test_a_no_reason_return_is_accepted_until_the_window_ends(
        delivered: datetime, offset: timedelta) -> None:
    order = _delivered(delivered)
    end = no_reason_deadline(delivered, POLICY)
    now = end + offset
    if offset < timedelta(0):
        case = open_case(order, CaseType.RETURN_REFUND, now, Reason.NO_REASON_7D)
        assert case.freight_payer == "buyer"  # rule: FR-3
        return
    before = copy.deepcopy(order)
    with pytest.raises(ActionNotAllowed) as err:  # the end is the first instant outside
        open_case(order, CaseType.RETURN_REFUND, now, Reason.NO_REASON_7D)
    assert err.value.code == "window_closed"
    assert order == before


@pytest.mark.parametrize("offset", OFFSETS)
def test_without_a_delivery_scan_confirming_receipt_starts_the_no_reason_days(
        offset: timedelta) -> None:
    order = place_order()
    confirmed = datetime(2026, 3, 3, 9, 0, tzinfo=SHANGHAI)
    order.confirm_receipt(BUYER, confirmed)
    assert order.delivered_at is None
    end = no_reason_deadline(confirmed, POLICY)
    assert end == datetime(2026, 3, 11, 0, 0, tzinfo=SHANGHAI)
    assert end < confirmed + POLICY.after_sales.window_after_completion  # 7 days, not AS-4's 15
    if offset < timedelta(0):
        open_case(order, CaseType.RETURN_REFUND, end + offset, Reason.NO_REASON_7D)
        return
    with pytest.raises(ActionNotAllowed) as err:
        open_case(order, CaseType.RETURN_REFUND, end + offset, Reason.NO_REASON_7D)
    assert err.value.code == "window_closed"
