"""Errors are RFC 9457 problem details with a stable code (and the rule id for refusals):
404/405 routing, 422 bad input, 409 refused or concurrent, 413 too large, 403 wrong role,
503 without a database; request ids are echoed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from aftersales.api.app import create_app
from aftersales.service.handlers import Service
from aftersales.store.db import make_engine
from tests.conftest import T0
from tests.integration.api_support import Clock, live_api, make_settings, serve_app
from tests.integration.intervention_setup import Parties, delivered_order, escalated_dispute

PROBLEM = "application/problem+json"


def _problem(r: httpx.Response, status: int, code: str, rule: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"] == f"urn:aftersales:problem:{code}"
    assert body["code"] == code and body["status"] == status
    assert body["title"] and body["detail"]
    assert body["instance"] == r.request.url.path
    if rule is not None:
        assert body["rule"] == rule, body
    return body


def test_problem_details(db_url: str, tmp_path: Path) -> None:
    clock = Clock(T0 + timedelta(days=3))
    parties = Parties("b1", "s1", "o1", "c1", "SF1")

    def seed(service: Service) -> None:
        escalated_dispute(service, parties, T0)
        delivered_order(service, Parties("b1", "s1", "o2", "c2", "SF2"), T0)

    with live_api(db_url, tmp_path, clock=clock, configure=seed, max_body_bytes=4096) as live:
        buyer, seller = live.client("buyer", "b1"), live.client("seller", "s1")
        staff = live.client("staff", "x1")

        _problem(staff.get("/api/v1/nothing-here"), 404, "not_found")
        _problem(staff.delete("/api/v1/cases/c1"), 405, "method_not_allowed")
        _problem(staff.get("/api/v1/cases/c404"), 404, "not_found")
        _problem(buyer.post("/api/v1/cases/c1/ruling", json={"outcome": "refund"}), 403,
                 "forbidden")

        body = _problem(buyer.post("/api/v1/cases", json={"order": "o2", "type": "refund_only"}),
                        422, "invalid_input")
        assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "reason")}
        _problem(buyer.post("/api/v1/cases", content=b"{not json",
                            headers={"Content-Type": "application/json"}), 422, "invalid_input")
        _problem(buyer.post("/api/v1/orders", json={
            "seller": "s1", "lines": [{"sku": "A", "qty": 1, "unit_price": 59.0}]}),
            422, "invalid_input")  # money is a string, never a float
        _problem(buyer.post("/api/v1/orders", json={
            "seller": "s1", "lines": [{"sku": "A\x00", "qty": 1, "unit_price": "1.00"}]}),
            422, "invalid_input")
        _problem(staff.get("/api/v1/cases", params={"limit": 1000}), 422, "invalid_input")
        _problem(staff.get("/api/v1/cases", params={"cursor": "bm90LWEtY3Vyc29y"}), 422,
                 "invalid_input")

        # The rules refuse, naming the rule: out of order, too early, too much.
        refused = _problem(seller.post("/api/v1/cases/c1/confirm-return"), 409, "not_allowed")
        assert refused["entity"] == "c1" and refused["state"] == "in_intervention"
        r = buyer.post("/api/v1/cases", json={"order": "o2", "type": "refund_only",
                                               "reason": "quality", "received": True})
        assert r.status_code == 201, r.text
        case2 = r.json()["case"]["id"]
        assert seller.post(f"/api/v1/cases/{case2}/reject",
                           json={"reason": "fine when sent"}).status_code == 200
        _problem(seller.post(f"/api/v1/cases/{case2}/escalate"), 409, "too_early", "IN-2")
        _problem(staff.post("/api/v1/cases/c1/ruling", json={
            "outcome": "partial_refund", "amount": "999.00"}), 422, "amount_exceeds_paid",
            "IN-6")

        # Size limits: JSON bodies over max_body_bytes, declared or streamed.
        big = {"reason": "x" * 2000, "pad": "y" * 5000}
        _problem(seller.post(f"/api/v1/cases/{case2}/reject", json=big), 413, "body_too_large")

        def chunks() -> Iterator[bytes]:
            yield b'{"reason": "'
            for _ in range(10):
                yield b"z" * 1000
            yield b'"}'

        _problem(seller.post(f"/api/v1/cases/{case2}/reject", content=chunks(),
                             headers={"Content-Type": "application/json"}), 413,
                 "body_too_large")

        # Request ids: the caller's is echoed; a malformed one is replaced.
        r = staff.get("/api/v1/cases/c1", headers={"X-Request-ID": "req-42.a"})
        assert r.headers["x-request-id"] == "req-42.a"
        r = staff.get("/api/v1/cases/c1", headers={"X-Request-ID": "bad id\twith spaces"})
        assert r.headers["x-request-id"] != "bad id\twith spaces"
        assert len(r.headers["x-request-id"]) == 32


def test_concurrent_actions_on_one_case_give_one_success_and_409s(db_url: str,
                                                                   tmp_path: Path) -> None:
    clock = Clock(T0 + timedelta(days=2))

    def seed(service: Service) -> None:
        from aftersales.domain.types import CaseType, Reason
        from aftersales.service import commands as c

        p = Parties("b1", "s1", "o1", "c1", "SF1")
        delivered_order(service, p, T0)
        service.handle(c.OpenCase(actor=p.b, order_id=p.order, case_id=p.case,
                                  type=CaseType.REFUND_ONLY, reason=Reason.QUALITY,
                                  received=True), T0 + timedelta(days=1))

    with live_api(db_url, tmp_path, clock=clock, configure=seed) as live:
        sellers = [live.client("seller", f"clerk-{n}", seller="s1") for n in range(6)]
        barrier = threading.Barrier(len(sellers))
        results: list[httpx.Response] = []

        def act(n: int) -> None:
            barrier.wait()
            action = ("agree", None) if n % 2 else ("reject", {"reason": "no"})
            results.append(sellers[n].post(f"/api/v1/cases/c1/{action[0]}", json=action[1]))

        threads = [threading.Thread(target=act, args=(n,)) for n in range(len(sellers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(r.status_code for r in results)
        assert statuses.count(200) == 1, [r.text for r in results]
        assert set(statuses) == {200, 409}
        for r in results:
            if r.status_code == 409:
                assert r.json()["code"] in ("conflict", "not_allowed")


def test_without_a_database_the_api_answers_503(tmp_path: Path) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere?connect_timeout=2"
    service = Service(make_engine(url))
    settings = make_settings(url, tmp_path)
    app = create_app(settings, service)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        from aftersales.api.auth import issue_token

        token = issue_token(settings, "staff", "x1")
        r = client.get("/api/v1/cases", headers={"Authorization": f"Bearer {token}"})
        _problem(r, 503, "unavailable")
        assert r.headers["retry-after"] == "1"
        r = client.get("/readyz")
        assert r.status_code == 503 and "unreachable" in r.json()["detail"]
        assert client.get("/healthz").status_code == 200
        assert "aftersales_database_up 0.0" in client.get("/metrics").text
    service.engine.dispose()
