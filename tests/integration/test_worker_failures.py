"""A deadline whose handler keeps failing can neither hang the worker nor starve the rest."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from aftersales.domain.errors import InvalidInput
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import Actor, ShippingMode
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from aftersales.service.worker import run_due
from tests.conftest import T0


def test_failing_deadlines_are_skipped_for_the_round_and_the_rest_still_fire(
        service: Service, monkeypatch: pytest.MonkeyPatch) -> None:  # rule: SH-2
    ids = []
    for n in range(5):
        placed = service.handle(c.PlaceOrder(
            actor=Actor.parse(f"buyer:b{n}"), seller_id="s1", mode=ShippingMode.IN_STOCK,
            lines=(LineSpec("A", 1, Money.parse("10.00")),)), T0 + timedelta(minutes=n))
        assert placed.order_id
        ids.append(placed.order_id)
    broken = set(ids[:3])  # the three oldest deadlines: they come first in every claim
    real = service.fire_order_deadline

    def fire(repo: Any, order_id: str, now: Any) -> Any:
        if order_id in broken:
            raise InvalidInput(f"cannot apply {order_id}")
        return real(repo, order_id, now)

    monkeypatch.setattr(service, "fire_order_deadline", fire)
    stats = run_due(service, T0 + timedelta(days=3), batch=2)  # returns: it does not loop
    assert stats.failed == broken
    assert stats.orders == 2  # the two healthy orders got their ship timeout
    for order_id in ids:
        assert service.order(order_id).violations == (
            () if order_id in broken else ("ship_timeout",))
