"""A whole dispute over HTTP, with a token for each role: order, shipment, carrier scans, case,
rejection, escalation, evidence, staff ruling, refund; then what each party sees."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from aftersales.service import webhooks
from tests.conftest import T0
from tests.integration.api_support import Clock, live_api
from tests.integration.intervention_setup import JURY, Parties, escalated_dispute
from tests.integration.test_webhooks import Receiver, receiver  # noqa: F401 (fixture)
from tests.unit.test_evidence import png_bytes


def test_a_whole_dispute_over_http(db_url: str, tmp_path: Path,
                                   receiver: Receiver) -> None:  # noqa: F811
    clock = Clock(T0)
    with live_api(db_url, tmp_path, clock=clock) as live:
        buyer = live.client("buyer", "b1")
        seller = live.client("seller", "u-17", seller="s1")  # a shop employee acting for s1
        staff = live.client("staff", "x1")
        operator = live.client("operator", "carrier-feed")
        stranger = live.client("buyer", "b2")

        # The marketplace subscribes to every event (webhooks, signed with the secret).
        r = operator.post("/api/v1/webhooks/endpoints", json={
            "url": f"{receiver.base}/hooks", "event_types": ["*"]})
        assert r.status_code == 201, r.text
        secret = r.json()["secret"]
        assert buyer.post("/api/v1/webhooks/endpoints", json={
            "url": f"{receiver.base}/x", "event_types": ["*"]}).status_code == 403

        r = buyer.post("/api/v1/orders", json={
            "id": "o1", "seller": "s1", "mode": "in_stock", "ship_to_city": "Hangzhou",
            "lines": [{"sku": "A", "qty": 1, "unit_price": "59.00", "title": "canvas bag"}]})
        assert r.status_code == 201, r.text
        assert r.json()["order"]["paid"] == "59.00"
        assert r.headers["x-request-id"]

        clock.advance(hours=2)
        r = seller.post("/api/v1/orders/o1/shipments", json={"carrier": "SF",
                                                             "tracking": "SF0001"})
        assert r.status_code == 201, r.text
        assert r.json()["order"]["status"] == "shipped"

        clock.advance(hours=3)
        r = operator.post("/api/v1/tracking-events", json={"scans": [
            {"tracking": "SF0001", "event": "picked_up", "city": "Shanghai",
             "at": clock.now.isoformat()}]})
        assert r.status_code == 200, r.text
        clock.advance(days=1)
        r = operator.post("/api/v1/tracking-events", json={"scans": [
            {"tracking": "SF0001", "event": "signed", "city": "Hangzhou"}]})
        assert r.status_code == 200, r.text
        assert r.json()["applied"] == 1
        assert [o["status"] for o in r.json()["orders"]] == ["delivered"]

        clock.advance(days=1)
        r = buyer.post("/api/v1/cases", json={
            "order": "o1", "type": "refund_only", "reason": "not_as_described",
            "received": True, "description": "not the colour shown"})
        assert r.status_code == 201, r.text
        case = r.json()["case"]
        case_id = case["id"]
        assert case["status"] == "awaiting_seller"
        assert case["deadline_kind"] == "seller_response_after_shipment"

        clock.advance(hours=1)
        r = seller.post(f"/api/v1/cases/{case_id}/reject",
                        json={"reason": "it matches the listing"})
        assert r.status_code == 200, r.text
        assert r.json()["case"]["status"] == "rejected"

        # The seller may not escalate yet (IN-2: from day 15): a refusal names its rule.
        r = seller.post(f"/api/v1/cases/{case_id}/escalate")
        assert r.status_code == 409, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["rule"] == "IN-2"

        clock.advance(hours=1)
        r = buyer.post(f"/api/v1/cases/{case_id}/escalate")
        assert r.status_code == 200, r.text
        assert r.json()["case"]["status"] == "in_intervention"

        # Evidence: the file streams up first, then the item cites it.
        clock.advance(hours=1)
        r = buyer.post(f"/api/v1/cases/{case_id}/evidence/files?filename=zip.png",
                       content=png_bytes(), headers={"Content-Type": "image/png"})
        assert r.status_code == 201, r.text
        stored = r.json()
        assert stored["media_type"] == "image/png"
        r = buyer.post(f"/api/v1/cases/{case_id}/evidence", json={
            "kind": "photo", "text": "the colour in daylight",
            "file": {"sha256": stored["sha256"], "filename": "zip.png"}})
        assert r.status_code == 201, r.text
        assert r.json()["case"]["evidence"] == {"buyer": 1, "seller": 0}

        items = seller.get(f"/api/v1/cases/{case_id}/evidence").json()
        assert [i["kind"] for i in items] == ["photo"]
        r = seller.get(f"/api/v1/cases/{case_id}/evidence/{items[0]['id']}/file")
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/png"
        assert r.content == png_bytes()
        assert stranger.get(f"/api/v1/cases/{case_id}/evidence/{items[0]['id']}/file"
                            ).status_code == 404

        queue = staff.get("/api/v1/intervention/queue").json()
        assert [q["case"] for q in queue] == [case_id]

        clock.advance(hours=5)
        r = staff.post(f"/api/v1/cases/{case_id}/ruling",
                       json={"outcome": "refund", "return_required": False})
        assert r.status_code == 200, r.text
        ruled = r.json()
        assert ruled["case"]["status"] == "closed"
        assert ruled["case"]["outcome"] == "refunded"
        assert ruled["case"]["refunded"] == "59.00"
        assert ruled["case"]["decided_by"] == "staff"
        assert {("case", "CaseRuled"), ("order", "RefundIssued")} <= {
            (e["aggregate"], e["name"]) for e in ruled["events"]}

        order = buyer.get("/api/v1/orders/o1").json()
        assert order["refunded"] == "59.00"
        timeline = buyer.get(f"/api/v1/cases/{case_id}/timeline").json()
        names = [e["name"] for e in timeline]
        assert names[0] == "CaseOpened" and "CaseRuled" in names
        ruling = next(e for e in timeline if e["name"] == "CaseRuled")
        assert ruling["actor"] == "staff"  # parties see staff by role only (CP-2)
        staff_view = staff.get(f"/api/v1/cases/{case_id}/timeline").json()
        assert next(e for e in staff_view if e["name"] == "CaseRuled")["actor"] == "staff:x1"

        record = seller.get("/api/v1/sellers/s1/record").json()
        assert record["dispute_refunds"] == 1
        assert record["dispute_refund_amount"] == "59.00"
        assert stranger.get(f"/api/v1/cases/{case_id}").status_code == 404
        assert stranger.get("/api/v1/orders/o1").status_code == 404

        # The worker delivers every event of the dispute, signed, in order, exactly once.
        webhooks.run_round(live.service, clock.now)
        got = receiver.to("/hooks")
        for req in got:
            assert webhooks.verify_signature(secret, req.headers["Aftersales-Signature"],
                                             req.body, now=clock.now)
            assert not webhooks.verify_signature("another secret",
                                                 req.headers["Aftersales-Signature"],
                                                 req.body, now=clock.now)
        bodies = [json.loads(req.body) for req in got]
        case_events = [b["type"] for b in bodies if b["aggregate_id"] == case_id]
        assert case_events[0] == "CaseOpened"
        assert {"SellerRejected", "CaseEscalated", "EvidenceSubmitted", "CaseRuled"} <= set(
            case_events)
        assert {"OrderPlaced", "RefundIssued"} <= {b["type"] for b in bodies
                                                  if b["aggregate_id"] == "o1"}
        assert len({b["id"] for b in bodies}) == len(bodies)  # each event once
        webhooks.run_round(live.service, clock.now)
        assert len(receiver.to("/hooks")) == len(got)  # nothing sent twice


def test_a_return_over_http(db_url: str, tmp_path: Path) -> None:
    """Return and refund: agree, the buyer ships the goods back, the carrier scans the return
    parcel (no outbound order on that number), the seller confirms: refunded (RF-3..RF-5)."""
    clock = Clock(T0)
    with live_api(db_url, tmp_path, clock=clock) as live:
        buyer, seller = live.client("buyer", "b1"), live.client("seller", "s1")
        operator = live.client("operator", "feed")
        assert buyer.post("/api/v1/orders", json={
            "id": "o1", "seller": "s1",
            "lines": [{"sku": "A", "qty": 2, "unit_price": "59.00"}]}).status_code == 201
        clock.advance(hours=1)
        assert seller.post("/api/v1/orders/o1/shipments",
                           json={"carrier": "SF", "tracking": "SF1"}).status_code == 201
        clock.advance(days=1)
        assert operator.post("/api/v1/tracking-events", json={"scans": [
            {"tracking": "SF1", "event": "picked_up", "at": (clock.now - timedelta(hours=20)
                                                              ).isoformat()},
            {"tracking": "SF1", "event": "signed"}]}).status_code == 200
        clock.advance(days=1)
        r = buyer.post("/api/v1/cases", json={"order": "o1", "type": "return_refund",
                                               "reason": "not_as_described",
                                               "lines": [{"sku": "A", "qty": 1}]})
        assert r.status_code == 201, r.text
        case_id = r.json()["case"]["id"]
        assert r.json()["case"]["amount"] == "59.00"
        clock.advance(hours=2)
        r = seller.post(f"/api/v1/cases/{case_id}/agree",
                        json={"return_address": "No. 1 Wensan Road, Hangzhou"})
        assert r.json()["case"]["status"] == "awaiting_return", r.text
        clock.advance(days=1)
        r = buyer.post(f"/api/v1/cases/{case_id}/ship-return",
                       json={"carrier": "YTO", "tracking": "YT1"})
        assert r.json()["case"]["status"] == "return_shipped", r.text
        clock.advance(days=1)
        r = operator.post("/api/v1/tracking-events",
                          json={"scans": [{"tracking": "YT1", "event": "signed"}]})
        assert r.status_code == 200, r.text
        assert r.json()["applied"] == 1 and r.json()["orders"] == []
        kinds = [s["kind"] for s in buyer.get("/api/v1/orders/o1/shipments").json()]
        assert kinds == ["outbound", "return"]
        r = seller.post(f"/api/v1/cases/{case_id}/confirm-return")
        assert r.status_code == 200, r.text
        case = r.json()["case"]
        assert (case["status"], case["outcome"], case["refunded"]) == ("closed", "refunded",
                                                                      "59.00")
        assert case["rules"] == ["RF-3", "RF-5"]
        assert buyer.get("/api/v1/orders/o1").json()["refunded"] == "59.00"


def test_a_public_jury_over_http(db_url: str, tmp_path: Path) -> None:
    """Operator registers the jurors, staff send the case to a jury, each juror reads the
    anonymised task and votes; the majority decides (IN-3)."""
    clock = Clock(T0 + timedelta(days=3))
    with live_api(db_url, tmp_path, clock=clock, overrides=JURY,
                  configure=lambda s: escalated_dispute(s, Parties("b1", "s1", "o1", "c1",
                                                                   "SF1"), T0)) as live:
        operator, staff = live.client("operator", "op1"), live.client("staff", "x1")
        for juror in ("j1", "j2", "j3"):
            r = operator.post("/api/v1/accounts", json={
                "id": juror, "registered_at": "2024-01-01T00:00:00+08:00", "verified": True})
            assert r.status_code == 201, r.text
        r = staff.post("/api/v1/cases/c1/send-to-jury", json={"seed": "draw-1"})
        assert r.status_code == 200, r.text
        assert r.json()["case"]["status"] == "jury_voting"
        assert r.json()["case"]["jury"]["panel"] == 3

        jurors = {j: live.client("juror", j) for j in ("j1", "j2", "j3")}
        tasks = {}
        for j, client in jurors.items():
            mine = client.get("/api/v1/jury/tasks").json()
            assert len(mine) == 1 and mine[0]["open"] and not mine[0]["voted"]
            tasks[j] = mine[0]["task"]
            view = client.get(f"/api/v1/jury/tasks/{tasks[j]}")
            assert view.status_code == 200
            assert not {"b1", "s1", "o1", "c1", "SF1", "j1", "j2", "j3", "x1"} & set(
                view.text.replace('"', " ").replace(",", " ").split())
        assert jurors["j1"].get(f"/api/v1/jury/tasks/{tasks['j2']}").status_code == 404

        r = jurors["j1"].post(f"/api/v1/jury/tasks/{tasks['j1']}/vote",
                              json={"side": "buyer", "reason": "the photos show the defect"})
        assert r.status_code == 200 and r.json()["vote"]["voted"], r.text
        again = jurors["j1"].post(f"/api/v1/jury/tasks/{tasks['j1']}/vote",
                                  json={"side": "seller", "reason": "changed my mind"})
        assert again.status_code == 409 and again.json()["code"] == "already_voted"
        r = jurors["j2"].post(f"/api/v1/jury/tasks/{tasks['j2']}/vote",
                              json={"side": "buyer", "reason": "agree with the buyer"})
        assert r.status_code == 200, r.text
        case = staff.get("/api/v1/cases/c1").json()
        assert (case["status"], case["outcome"], case["decided_by"]) == ("closed", "refunded",
                                                                         "jury")
        late = jurors["j3"].post(f"/api/v1/jury/tasks/{tasks['j3']}/vote",
                                 json={"side": "seller", "reason": "too late"})
        assert late.status_code == 409
        timeline = live.client("buyer", "b1").get("/api/v1/cases/c1/timeline").json()
        votes = [e for e in timeline if e["name"] == "JurorVoted"]
        assert [e["actor"] for e in votes] == ["juror", "juror"]
