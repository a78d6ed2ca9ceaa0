"""Idempotency-Key: a retry with the same key and body returns the first response without acting
again; the same key with another body is refused; concurrent retries refund once."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select

from aftersales.service.handlers import Service
from aftersales.store import tables as t
from tests.conftest import T0
from tests.integration.api_support import Clock, Live, live_api
from tests.integration.intervention_setup import Parties, escalated_dispute

ORDER = {"seller": "s1", "lines": [{"sku": "A", "qty": 1, "unit_price": "59.00"}]}


def _count(live: Live, table: t.Table, *where: object) -> int:
    with live.service.uow() as uow:
        return int(uow.repo.conn.execute(
            select(func.count()).select_from(table).where(*where)).scalar_one())  # type: ignore[arg-type]


def _refunds(live: Live, case_id: str) -> int:
    return _count(live, t.ledger, t.ledger.c.kind == "refund", t.ledger.c.case_id == case_id)


def test_a_retry_replays_the_first_response(db_url: str, tmp_path: Path) -> None:
    with live_api(db_url, tmp_path, clock=Clock(T0)) as live:
        buyer = live.client("buyer", "b1")
        first = buyer.post("/api/v1/orders", json=ORDER, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        # The same body written differently (key order, spacing) is the same request.
        again = buyer.post("/api/v1/orders", headers={"Idempotency-Key": "k-1",
                                                      "Content-Type": "application/json"},
                           content=b'{"lines": [{"unit_price": "59.00", "qty": 1, "sku": "A"}],'
                                   b'   "seller": "s1"}')
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert _count(live, t.orders) == 1

        other = buyer.post("/api/v1/orders", json={**ORDER, "seller": "s2"},
                           headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 422
        assert other.json()["code"] == "idempotency_key_reused"
        elsewhere = buyer.post(f"/api/v1/orders/{first.json()['order']['id']}/confirm-receipt",
                               headers={"Idempotency-Key": "k-1"})
        assert elsewhere.json()["code"] == "idempotency_key_reused"
        assert _count(live, t.orders) == 1

        # Keys belong to their principal: another buyer's "k-1" is a new request.
        b2 = live.client("buyer", "b2").post("/api/v1/orders", json=ORDER,
                                             headers={"Idempotency-Key": "k-1"})
        assert b2.status_code == 201 and "idempotent-replayed" not in b2.headers
        assert _count(live, t.orders) == 2
        # Without a key every POST acts.
        assert buyer.post("/api/v1/orders", json=ORDER).status_code == 201
        assert _count(live, t.orders) == 3
        bad = buyer.post("/api/v1/orders", json=ORDER, headers={"Idempotency-Key": "a b"})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_input"
        assert buyer.post("/api/v1/orders", json=ORDER,
                          headers={"Idempotency-Key": "x" * 129}).status_code == 422


def test_a_retried_ruling_refunds_once(db_url: str, tmp_path: Path) -> None:
    def seed(service: Service) -> None:
        escalated_dispute(service, Parties("b1", "s1", "o1", "c1", "SF1"), T0)

    with live_api(db_url, tmp_path, clock=Clock(T0 + timedelta(days=3)),
                  configure=seed) as live:
        staff = live.client("staff", "x1")
        ruling = {"outcome": "refund", "return_required": False}
        first = staff.post("/api/v1/cases/c1/ruling", json=ruling,
                           headers={"Idempotency-Key": "rule-c1"})
        assert first.status_code == 200, first.text
        assert first.json()["case"]["refunded"] == "60.00"
        again = staff.post("/api/v1/cases/c1/ruling", json=ruling,
                           headers={"Idempotency-Key": "rule-c1"})
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert _refunds(live, "c1") == 1
        # A new request (no key) is judged on the case as it is now: already decided.
        late = staff.post("/api/v1/cases/c1/ruling", json=ruling)
        assert late.status_code == 409 and late.json()["code"] == "not_allowed"
        assert _refunds(live, "c1") == 1
        assert _count(live, t.idempotency_keys) == 1


def test_concurrent_retries_with_one_key_refund_once(db_url: str, tmp_path: Path) -> None:
    def seed(service: Service) -> None:
        escalated_dispute(service, Parties("b1", "s1", "o1", "c1", "SF1"), T0)

    with live_api(db_url, tmp_path, clock=Clock(T0 + timedelta(days=3)),
                  configure=seed) as live:
        clients = [live.client("staff", "x1") for _ in range(6)]
        barrier = threading.Barrier(len(clients))
        results: list[httpx.Response] = []

        def retry(c: httpx.Client) -> None:
            barrier.wait()
            results.append(c.post("/api/v1/cases/c1/ruling",
                                  json={"outcome": "refund", "return_required": False},
                                  headers={"Idempotency-Key": "rule-once"}))

        threads = [threading.Thread(target=retry, args=(c,)) for c in clients]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        ok = [r for r in results if r.status_code == 200]
        assert ok, [r.text for r in results]
        assert all(r.status_code in (200, 409) for r in results), [r.text for r in results]
        assert all(r.json() == ok[0].json() for r in ok)  # every success is the one response
        for r in results:
            if r.status_code == 409:
                assert r.json()["code"] in ("idempotency_conflict", "conflict")
        assert _refunds(live, "c1") == 1
