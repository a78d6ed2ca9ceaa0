"""Lists: keyset pagination with an opaque cursor, filters, each party's own rows only, and the
seller's inbox by nearest deadline."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import Actor, CaseType, Reason, ShippingMode
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from tests.conftest import T0
from tests.integration.api_support import Clock, live_api
from tests.integration.intervention_setup import Parties, delivered_order

H = timedelta(hours=1)


def _all_pages(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        r = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= params.get("limit", 50)
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def _seed(service: Service) -> None:
    """b1 buys 5 times from s1 (an hour apart), b2 twice from s2; cases on four orders."""
    for n in range(5):
        buyer = Actor.parse("buyer:b1")
        service.handle(c.PlaceOrder(actor=buyer, seller_id="s1", mode=ShippingMode.IN_STOCK,
                                    order_id=f"o1-{n}",
                                    lines=(LineSpec("A", 1, Money.parse("10.00")),)), T0 + n * H)
    for n in range(2):
        delivered_order(service, Parties("b2", "s2", f"o2-{n}", "", f"SF2{n}"), T0 + n * H)
    for n in range(3):  # b1: refund before shipment, opened an hour apart
        service.handle(c.OpenCase(actor=Actor.parse("buyer:b1"), order_id=f"o1-{n}",
                                  case_id=f"c1-{n}", type=CaseType.REFUND_ONLY,
                                  reason=Reason.NOT_SHIPPED), T0 + (10 + n) * H)
    service.handle(c.OpenCase(actor=Actor.parse("buyer:b2"), order_id="o2-0", case_id="c2-0",
                              type=CaseType.RETURN_REFUND, reason=Reason.QUALITY,
                              received=True), T0 + 2 * 24 * H)


def test_pagination_filters_and_scopes(db_url: str, tmp_path: Path) -> None:
    with live_api(db_url, tmp_path, clock=Clock(T0 + 3 * 24 * H), configure=_seed) as live:
        staff, b1 = live.client("staff", "x1"), live.client("buyer", "b1")
        s1 = live.client("seller", "clerk", seller="s1")

        every = _all_pages(staff, "/api/v1/orders", limit=2)
        ids = [o["id"] for o in every]
        assert len(ids) == len(set(ids)) == 7
        placed = [datetime.fromisoformat(o["placed_at"]) for o in every]
        assert placed == sorted(placed, reverse=True)  # newest first by default
        oldest_first = _all_pages(staff, "/api/v1/orders", limit=3, sort="placed_at")
        assert [o["id"] for o in oldest_first] == ids[::-1]  # ties broken by id, both ways

        assert {o["id"] for o in _all_pages(b1, "/api/v1/orders", limit=2)} == \
            {f"o1-{n}" for n in range(5)}
        assert b1.get("/api/v1/orders", params={"buyer": "b2"}).json()["items"] == []
        assert {o["seller"] for o in _all_pages(s1, "/api/v1/orders")} == {"s1"}
        assert {o["id"] for o in _all_pages(staff, "/api/v1/orders", seller="s2")} == \
            {"o2-0", "o2-1"}
        assert {o["id"] for o in _all_pages(staff, "/api/v1/orders", status="delivered")} \
            == {"o2-0", "o2-1"}
        assert {o["id"] for o in _all_pages(staff, "/api/v1/orders",
                                            status=["paid", "shipped"])} == \
            {f"o1-{n}" for n in range(5)}

        cases = _all_pages(staff, "/api/v1/cases", limit=1)
        assert {x["id"] for x in cases} == {"c1-0", "c1-1", "c1-2", "c2-0"}
        assert {x["id"] for x in _all_pages(staff, "/api/v1/cases", reason="quality")} == \
            {"c2-0"}
        assert {x["id"] for x in _all_pages(staff, "/api/v1/cases", type="return_refund",
                                            buyer="b2")} == {"c2-0"}
        assert {x["id"] for x in _all_pages(b1, "/api/v1/cases")} == {"c1-0", "c1-1", "c1-2"}
        by_deadline = _all_pages(staff, "/api/v1/cases", sort="deadline", limit=2)
        deadlines = [x["deadline"] for x in by_deadline]
        assert deadlines == sorted(deadlines) and None not in deadlines
        first_due = datetime.fromisoformat(deadlines[0])
        before = _all_pages(staff, "/api/v1/cases", deadline_before=(first_due + H).isoformat())
        assert [x["id"] for x in before] == [by_deadline[0]["id"]]

        # The seller's inbox: what waits on the seller, nearest deadline first.
        inbox = _all_pages(s1, "/api/v1/sellers/s1/inbox", limit=2)
        assert [x["id"] for x in inbox] == ["c1-0", "c1-1", "c1-2"]
        assert all(x["status"] == "awaiting_seller" for x in inbox)

        r = staff.get("/api/v1/orders", params={"limit": 2})
        cursor = r.json()["next_cursor"]
        wrong = staff.get("/api/v1/orders", params={"cursor": cursor, "sort": "placed_at"})
        assert wrong.status_code == 422 and wrong.json()["code"] == "invalid_input"
        assert staff.get("/api/v1/orders", params={"cursor": cursor[:-3] + "AAA"}
                         ).status_code == 422
        assert staff.get("/api/v1/orders", params={"limit": 0}).status_code == 422
        assert staff.get("/api/v1/orders", params={"limit": 101}).status_code == 422
