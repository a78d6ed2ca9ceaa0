"""A timer that ran out decides even when the worker is behind (production lag).

The service applies a due timer before judging an action, so the outcome never depends on how
quickly the worker ran: a late seller answer is refused, a buyer acting after the seller's
silence acts on the agreed case.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from aftersales.domain.errors import ActionNotAllowed
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import Actor, CaseType, Reason, ShippingMode
from aftersales.policy import load
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from tests.conftest import T0

BUYER, SELLER = Actor.parse("buyer:b1"), Actor.parse("seller:s1")
D = load().deadlines


def _shipped_case(service: Service) -> str:
    order = service.handle(c.PlaceOrder(actor=BUYER, seller_id="s1", mode=ShippingMode.IN_STOCK,
                                        lines=(LineSpec("A", 1, Money.parse("80.00")),)), T0)
    assert order.order_id
    service.handle(c.Ship(actor=SELLER, order_id=order.order_id, carrier="SF",
                          tracking="SF-LATE"), T0 + timedelta(hours=1))
    opened = service.handle(c.OpenCase(actor=BUYER, order_id=order.order_id,
                                       type=CaseType.RETURN_REFUND, reason=Reason.QUALITY),
                            T0 + timedelta(days=1))
    assert opened.case_id
    return opened.case_id


def test_a_seller_answer_after_the_five_days_is_refused_even_if_the_worker_is_behind(
        service: Service) -> None:  # rule: RF-1
    case_id = _shipped_case(service)
    late = T0 + timedelta(days=1) + D.seller_response_after_shipment
    with pytest.raises(ActionNotAllowed) as refused:
        service.handle(c.Reject(actor=SELLER, case_id=case_id, reason="too late"), late)
    assert "awaiting_return" in str(refused.value)  # silence already agreed
    case = service.case(case_id)
    assert case.status.value == "awaiting_seller"  # refusal changed nothing; the worker decides


def test_a_buyer_shipping_the_return_after_the_sellers_silence_finds_the_case_agreed(
        service: Service) -> None:  # rule: RF-1, RF-3
    case_id = _shipped_case(service)
    after = T0 + timedelta(days=1) + D.seller_response_after_shipment + timedelta(hours=2)
    service.handle(c.ShipReturn(actor=BUYER, case_id=case_id, carrier="YTO", tracking="Y1"),
                   after)
    case = service.case(case_id)
    assert case.status.value == "return_shipped"
    assert case.rules == ("RF-1",)
    with service.uow() as uow:
        names = [e.name for e in uow.repo.case_events(case_id)]
    assert names == ["CaseOpened", "DeadlinePassed", "ReturnShipped"]


def test_a_rating_after_a_due_auto_confirm_publishes_the_completion(
        service: Service) -> None:  # rule: SR-3, §9 auto_confirm_receipt
    placed = service.handle(c.PlaceOrder(actor=BUYER, seller_id="s1", mode=ShippingMode.IN_STOCK,
                                         lines=(LineSpec("A", 1, Money.parse("80.00")),)), T0)
    assert placed.order_id
    service.handle(c.Ship(actor=SELLER, order_id=placed.order_id, carrier="SF",
                          tracking="SF-late-rate"), T0 + timedelta(hours=1))
    at = T0 + timedelta(hours=1) + D.auto_confirm_receipt  # the worker has not run
    result = service.handle(c.RateOrder(actor=BUYER, order_id=placed.order_id, stars=5,
                                        comment="fine"), at)
    assert "ReceiptAutoConfirmed" in [e.name for e in result.events]  # webhooks see it too
