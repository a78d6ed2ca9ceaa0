"""Webhooks end to end: real commands write the outbox, the worker's functions fan out and POST
to a real HTTP server on a loopback port, which checks every signature (with the engine's helper
and with the recipe in docs/webhooks.md). Time moves through explicit `now` values."""

from __future__ import annotations

import ast
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from aftersales.bootstrap import bootstrap
from aftersales.cli import app
from aftersales.domain.errors import ActionNotAllowed, InvalidInput, NotFound, WrongActor
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import Actor, CaseType, Reason, ShippingMode
from aftersales.scenario.runner import counter_ids
from aftersales.service import commands as c
from aftersales.service import webhooks as wh
from aftersales.service.handlers import Service
from aftersales.service.worker import serve_forever
from aftersales.store import tables as t
from tests.conftest import ROOT, T0

OPERATOR = Actor.parse("operator:ops")
STAFF = Actor.parse("staff:x1")
BUYER, SELLER = Actor.parse("buyer:b1"), Actor.parse("seller:s1")
H = timedelta(hours=1)


# -- a real receiver ------------------------------------------------------------------------------
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1. `status[path]` is the answer for a path (default
    200; a list is consumed one per request, its last value repeating); `delay[path]` sleeps
    before answering."""

    base: str = ""
    requests: list[Received] = field(default_factory=list)
    status: dict[str, int | list[int]] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str) -> int:
        with self.lock:
            want = self.status.get(path, 200)
            if isinstance(want, list):
                return want.pop(0) if len(want) > 1 else want[0]
            return want

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            with rec.lock:
                rec.in_flight += 1
                rec.max_in_flight = max(rec.max_in_flight, rec.in_flight)
            try:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with rec.lock:
                    rec.requests.append(Received(self.path, dict(self.headers.items()), body,
                                                 time.time()))
                if self.path in rec.delay:
                    time.sleep(rec.delay[self.path])
                code = rec.answer(self.path)
                reply = b"ok" if code < 400 else b"receiver says no"
                self.send_response(code)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            finally:
                with rec.lock:
                    rec.in_flight -= 1

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that gave up (the timeout test) is not an error here

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sender() -> Iterator[wh.HttpSender]:
    s = wh.HttpSender(timeout=5.0)
    yield s
    s.close()


def docs_verify() -> Callable[..., bool]:
    """The verification snippet of docs/webhooks.md, run as a receiver would copy it."""
    text = (ROOT / "docs" / "webhooks.md").read_text(encoding="utf-8")
    code = next(block for block in re.findall(r"```python\n(.*?)```", text, re.S)
                if "def verify(" in block)
    assert len(code.strip().splitlines()) <= 12, "the docs promise a few lines"
    scope: dict[str, Any] = {}
    exec(code, scope)
    return scope["verify"]  # type: ignore[no-any-return]


# -- helpers ---------------------------------------------------------------------------------------
def place(service: Service, order: str, at: datetime, buyer: str = "b1") -> None:
    service.handle(c.PlaceOrder(actor=Actor.parse(f"buyer:{buyer}"), seller_id="s1",
                                order_id=order, mode=ShippingMode.IN_STOCK,
                                lines=(LineSpec("A", 1, Money.parse("59.00")),)), at)


def lifecycle(service: Service, at: datetime) -> None:
    """An order placed, shipped and disputed; the seller agrees: real commands, real events."""
    place(service, "o1", at)
    service.handle(c.Ship(actor=SELLER, order_id="o1", carrier="SF", tracking="SF1"), at + H)
    service.handle(c.OpenCase(actor=BUYER, order_id="o1", case_id="c1",
                              type=CaseType.REFUND_ONLY, reason=Reason.NOT_RECEIVED),
                   at + 2 * H)
    service.handle(c.Agree(actor=SELLER, case_id="c1"), at + 3 * H)


def outbox_count(service: Service) -> int:
    with service.uow() as uow:
        assert uow.conn is not None
        return int(uow.conn.execute(select(func.count()).select_from(t.outbox)).scalar_one())


def delivery_ids(service: Service) -> list[int]:
    with service.uow() as uow:
        assert uow.conn is not None
        return [r[0] for r in uow.conn.execute(select(t.webhook_deliveries.c.id)
                                               .order_by(t.webhook_deliveries.c.id))]


# -- delivery and signatures -----------------------------------------------------------------------
def test_events_of_real_commands_arrive_signed(service: Service, receiver: Receiver,
                                               sender: wh.HttpSender) -> None:
    endpoint = wh.register_endpoint(service, OPERATOR, receiver.base + "/all", ["*"], now=T0)
    assert endpoint.secret.startswith("whsec_") and len(endpoint.secret) == 70
    lifecycle(service, T0 + H)
    events = outbox_count(service)
    assert events >= 5  # OrderPlaced, OrderShipped, CaseOpened x2, SellerAgreed, RefundIssued...

    now = T0 + 5 * H
    assert wh.fan_out(service, now) == events
    assert wh.fan_out(service, now) == 0  # fanned out once
    stats = wh.deliver_due(service, now, sender)
    assert (stats.attempted, stats.delivered) == (events, events)
    assert wh.deliver_due(service, now, sender).attempted == 0  # nothing due any more

    verify = docs_verify()
    got = receiver.to("/all")
    assert len(got) == events
    seen = []
    for req in got:
        header = req.headers["Aftersales-Signature"]
        assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
        assert 0 <= int(header[2:header.index(",")]) - now.timestamp() < 5
        assert wh.verify_signature(endpoint.secret, header, req.body, now=now)
        assert verify(endpoint.secret, header, req.body, now=now.timestamp())
        assert req.headers["Content-Type"] == "application/json"
        doc = json.loads(req.body)
        assert set(doc) == {"id", "type", "aggregate", "aggregate_id", "at", "actor", "rule",
                            "data"}
        assert req.headers["Aftersales-Event"] == doc["type"]
        assert req.headers["Aftersales-Delivery"].isdigit()
        assert datetime.fromisoformat(doc["at"]).tzinfo is not None
        seen.append((doc["type"], doc["aggregate"], doc["aggregate_id"], doc["actor"]))
    assert ("OrderPlaced", "order", "o1", "buyer:b1") in seen
    assert ("OrderShipped", "order", "o1", "seller:s1") in seen
    assert ("CaseOpened", "case", "c1", "buyer:b1") in seen
    assert ("SellerAgreed", "case", "c1", "seller:s1") in seen
    ids = [json.loads(r.body)["id"] for r in got]
    assert len(set(ids)) == len(ids) == events

    log = wh.list_deliveries(service, STAFF)
    assert {d["status"] for d in log} == {"delivered"}
    assert all(d["attempts"] == 1 and len(d["log"]) == 1 and d["log"][0]["status_code"] == 200
               and d["log"][0]["error"] is None for d in log)


def test_replayed_tampered_or_foreign_requests_fail_verification(
        service: Service, receiver: Receiver, sender: wh.HttpSender) -> None:
    endpoint = wh.register_endpoint(service, OPERATOR, receiver.base + "/x", "OrderPlaced",
                                    now=T0)
    place(service, "o1", T0 + H)
    now = T0 + 2 * H
    wh.fan_out(service, now)
    wh.deliver_due(service, now, sender)
    (req,) = receiver.requests
    header, body, secret = req.headers["Aftersales-Signature"], req.body, endpoint.secret
    verify = docs_verify()
    for check in (lambda h, b, s, n: wh.verify_signature(s, h, b, now=n),
                  lambda h, b, s, n: verify(s, h, b, now=n.timestamp())):
        assert check(header, body, secret, now)
        assert check(header, body, secret, now + timedelta(seconds=299))
        assert not check(header, body, secret, now + timedelta(seconds=301))  # a replay
        assert not check(header, body, secret, now - timedelta(seconds=301))  # from the future
        assert not check(header, body.replace(b"o1", b"o2"), secret, now)  # tampered body
        assert not check(header, body + b" ", secret, now)
        assert not check(header, body, "whsec_" + "0" * 64, now)  # someone else's secret
        stamp = int(now.timestamp())  # a replay with a fresh timestamp but the old signature
        assert not check(f"t={stamp + 400},{header.split(',')[1]}", body, secret,
                         now + timedelta(seconds=400))
        assert not check(header.split(",")[1], body, secret, now)  # no timestamp
        assert not check(header.split(",")[0], body, secret, now)  # no signature
    assert not wh.verify_signature(secret, "", body, now=now)
    assert not wh.verify_signature(secret, None, body, now=now)
    assert not wh.verify_signature(secret, "t=abc,v1=zz", body, now=now)
    # several v1 entries (a receiver-side rotation): any may match; str bodies are accepted
    assert wh.verify_signature(secret, f"{header},v1={'ab' * 32}", body.decode(), now=now)
    # what it signs: f"{t}." + raw body, HMAC-SHA256, hex
    t_ = int(now.timestamp())
    assert header == f"t={t_},v1={wh.sign(secret, t_, body)}"


def test_event_types_filter_and_endpoints_get_only_later_events(
        service: Service, receiver: Receiver, sender: wh.HttpSender) -> None:
    cases = wh.register_endpoint(service, OPERATOR, receiver.base + "/cases", ["CaseOpened"],
                                 now=T0)
    orders = wh.register_endpoint(service, STAFF, receiver.base + "/orders",
                                  "OrderPlaced, OrderShipped", now=T0)
    everything = wh.register_endpoint(service, OPERATOR, receiver.base + "/all",
                                      ["SellerAgreed", "*"], now=T0)
    assert everything.event_types == ("*",)
    gone = wh.register_endpoint(service, OPERATOR, receiver.base + "/gone", ["*"], now=T0)
    wh.disable_endpoint(service, OPERATOR, gone.id, now=T0)
    late = wh.register_endpoint(service, OPERATOR, receiver.base + "/late", ["*"],
                                now=T0 + 3 * H)  # after the order and the shipment
    lifecycle(service, T0 + H)  # events at T0+1h .. T0+4h
    now = T0 + 5 * H
    wh.fan_out(service, now)
    wh.deliver_due(service, now, sender)

    def types(path: str) -> Counter[str]:
        return Counter(json.loads(r.body)["type"] for r in receiver.to(path))

    assert types("/cases") == Counter({"CaseOpened": 2})  # on the case and on its order
    assert types("/orders") == Counter({"OrderPlaced": 1, "OrderShipped": 1})
    assert sum(types("/all").values()) == outbox_count(service)
    assert types("/gone") == Counter()
    late_types = types("/late")
    assert "OrderPlaced" not in late_types and "OrderShipped" not in late_types
    assert "SellerAgreed" in late_types
    assert {e.id for e in wh.list_endpoints(service, OPERATOR, include_disabled=False)} == {
        cases.id, orders.id, everything.id, late.id}
    assert not wh.get_endpoint(service, STAFF, gone.id).active


def test_failing_endpoint_retries_with_growing_delays_then_fails_and_is_redelivered(
        service: Service, receiver: Receiver, sender: wh.HttpSender) -> None:
    receiver.status["/flaky"] = 500
    endpoint = wh.register_endpoint(service, OPERATOR, receiver.base + "/flaky",
                                    ["OrderPlaced"], now=T0)
    place(service, "o1", T0 + H)
    retry = wh.RetryPolicy(max_attempts=5)
    rng = random.Random(7)
    now = T0 + 2 * H
    wh.fan_out(service, now)
    (delivery_id,) = delivery_ids(service)
    delays = []
    for attempt in range(1, 6):
        stats = wh.deliver_due(service, now, sender, retry=retry, rng=rng)
        assert stats.attempted == 1
        d = wh.get_delivery(service, OPERATOR, delivery_id)
        assert d["attempts"] == attempt and d["last_status_code"] == 500
        assert d["last_error"] == "HTTP 500: receiver says no"
        if attempt < 5:
            assert (stats.retrying, d["status"]) == (1, "pending")
            due = datetime.fromisoformat(d["next_attempt_at"])
            delays.append(due - now)
            # not before it is due
            assert wh.deliver_due(service, due - timedelta(seconds=1), sender).attempted == 0
            now = due
        else:
            assert (stats.failed, d["status"], d["next_attempt_at"]) == (1, "failed", None)
    # 30 s, 1 min, 2 min, 4 min, each within +-20 %: strictly growing
    assert all(0.8 * 30 * 2 ** i <= delays[i].total_seconds() <= 1.2 * 30 * 2 ** i
               for i in range(4)), delays
    assert delays == sorted(delays) and len(set(delays)) == 4
    assert wh.deliver_due(service, now + 24 * H, sender).attempted == 0  # failed: never again

    log = wh.list_deliveries(service, OPERATOR, status="failed", endpoint_id=endpoint.id)
    assert [d["id"] for d in log] == [delivery_id]
    assert [a["status_code"] for a in log[0]["log"]] == [500] * 5
    assert all(a["duration_ms"] >= 0 and a["error"] for a in log[0]["log"])
    assert wh.list_deliveries(service, OPERATOR, status="delivered") == []
    assert len(receiver.to("/flaky")) == 5
    assert len({r.headers["Aftersales-Delivery"] for r in receiver.requests}) == 1

    # The receiver is fixed; staff send it again by hand.
    receiver.status["/flaky"] = 204
    with pytest.raises(WrongActor):
        wh.redeliver(service, SELLER, delivery_id, now)
    with pytest.raises(NotFound):
        wh.redeliver(service, OPERATOR, 999_999, now)
    later = now + 2 * H
    queued = wh.redeliver(service, STAFF, delivery_id, later)
    assert queued["status"] == "pending" and queued["next_attempt_at"] == later.isoformat()
    stats = wh.deliver_due(service, later, sender, retry=retry)
    assert (stats.attempted, stats.delivered) == (1, 1)
    d = wh.get_delivery(service, OPERATOR, delivery_id)
    assert (d["status"], d["attempts"], d["last_status_code"]) == ("delivered", 6, 204)
    # times in the log are `now` plus the real seconds the round took
    delivered = datetime.fromisoformat(d["delivered_at"])
    assert later <= delivered < later + timedelta(seconds=5) and d["last_error"] is None
    assert [a["status_code"] for a in d["log"]] == [500] * 5 + [204]
    # the same event, the same delivery id, freshly signed
    last = receiver.requests[-1]
    assert json.loads(last.body) == json.loads(receiver.requests[0].body)
    assert wh.verify_signature(endpoint.secret, last.headers["Aftersales-Signature"], last.body,
                               now=later)
    # a delivered one can be sent again too
    wh.redeliver(service, OPERATOR, delivery_id, later + H)
    assert wh.deliver_due(service, later + H, sender).delivered == 1
    assert len(receiver.to("/flaky")) == 7


def test_network_errors_and_timeouts_are_logged_and_retried(
        service: Service, receiver: Receiver) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    wh.register_endpoint(service, OPERATOR, dead, ["OrderPlaced"], now=T0)
    receiver.delay["/slow"] = 1.5
    wh.register_endpoint(service, OPERATOR, receiver.base + "/slow", ["OrderPlaced"], now=T0)
    place(service, "o1", T0 + H)
    place(service, "o2", T0 + H, buyer="b2")
    now = T0 + 2 * H
    wh.fan_out(service, now)
    quick = wh.HttpSender(timeout=0.3)
    try:
        stats = wh.deliver_due(service, now, quick)
    finally:
        quick.close()
    # one attempt per endpoint: after a network error or timeout the endpoint's other delivery
    # waits for the same retry time, without using an attempt
    assert (stats.attempted, stats.retrying, stats.deferred) == (2, 2, 2)
    tried = [d for d in wh.list_deliveries(service, OPERATOR) if d["attempts"]]
    waiting = [d for d in wh.list_deliveries(service, OPERATOR) if not d["attempts"]]
    assert len(tried) == len(waiting) == 2
    for d in tried:
        assert d["status"] == "pending" and d["last_status_code"] is None
        (attempt,) = d["log"]
        assert attempt["status_code"] is None and attempt["error"]
        (other,) = [w for w in waiting if w["endpoint_id"] == d["endpoint_id"]]
        assert other["status"] == "pending" and other["log"] == []
        assert other["next_attempt_at"] == d["next_attempt_at"]
    errors = sorted(d["log"][0]["error"] for d in tried)
    assert any(e.startswith("ConnectError") for e in errors), errors
    assert any(e.startswith("timeout") for e in errors), errors


def test_a_sender_that_raises_is_an_attempt_not_a_crash(service: Service) -> None:
    wh.register_endpoint(service, OPERATOR, "https://example.invalid/hook", ["*"], now=T0)
    place(service, "o1", T0 + H)
    now = T0 + 2 * H
    wh.fan_out(service, now)

    def broken(url: str, body: bytes, headers: Any) -> wh.Response:
        raise RuntimeError("boom")

    stats = wh.deliver_due(service, now, broken)
    assert (stats.attempted, stats.retrying) == (1, 1)
    (d,) = wh.list_deliveries(service, OPERATOR)
    assert d["last_error"] == "RuntimeError: boom"


# -- leases and concurrency ----------------------------------------------------------------------
def test_claimed_deliveries_are_leased_and_released(service: Service, receiver: Receiver,
                                                    sender: wh.HttpSender) -> None:
    wh.register_endpoint(service, OPERATOR, receiver.base + "/a", ["OrderPlaced"], now=T0)
    for n in range(3):
        place(service, f"o{n}", T0 + H, buyer=f"b{n}")
    now = T0 + 2 * H
    wh.fan_out(service, now)
    # A worker that claimed and then died: the rows are leased, nobody else sends them...
    claimed = wh._claim(service, now, 10, now + wh.DEFAULT_LEASE)
    assert len(claimed) == 3
    assert {d["status"] for d in wh.list_deliveries(service, OPERATOR)} == {"sending"}
    assert wh.deliver_due(service, now + timedelta(minutes=4), sender).attempted == 0
    with pytest.raises(ActionNotAllowed) as refused:
        wh.redeliver(service, OPERATOR, claimed[0].id, now + timedelta(minutes=1))
    assert refused.value.code == "in_flight"
    # ... until the lease runs out; then they go, and the dead worker's late result is ignored
    later = now + wh.DEFAULT_LEASE
    assert wh.deliver_due(service, later, sender).delivered == 3
    assert wh._record(service, claimed[0], now, wh.Response(500, "HTTP 500"), 1,
                      wh.DEFAULT_RETRY, None) == ("lost_lease", None)
    d = wh.get_delivery(service, OPERATOR, claimed[0].id)
    assert (d["status"], d["attempts"]) == ("delivered", 2)
    assert [a["status_code"] for a in d["log"]] == [200, 500]  # logged all the same
    # A round that runs out of lease time sends nothing more and hands the rest back
    for n in range(3, 5):
        place(service, f"o{n}", later + H, buyer=f"b{n}")
    wh.fan_out(service, later + 2 * H)
    stats = wh.deliver_due(service, later + 2 * H, sender, lease=timedelta(0))
    assert (stats.attempted, stats.released) == (0, 2)
    pending = wh.list_deliveries(service, OPERATOR, status="pending")
    assert len(pending) == 2 and all(d["attempts"] == 0 for d in pending)


def test_two_workers_never_send_the_same_delivery(db_url: str, receiver: Receiver) -> None:
    """Two services (two connection pools, as two processes would have) run deliver_due at
    the same `now`, in small batches, against a receiver that answers slowly."""
    one = bootstrap(db_url, ids=counter_ids())
    two = bootstrap(db_url, migrate=False)
    try:
        endpoint = wh.register_endpoint(one, OPERATOR, receiver.base + "/race", ["OrderPlaced"],
                                        now=T0)
        n = 24
        for i in range(n):
            place(one, f"o{i}", T0 + H, buyer=f"b{i}")
        now = T0 + 2 * H
        assert wh.fan_out(one, now) == n
        receiver.delay["/race"] = 0.02
        start = threading.Barrier(2)
        totals: list[wh.DeliveryStats] = []
        errors: list[BaseException] = []

        def work(service: Service) -> None:
            sender = wh.HttpSender(timeout=5)
            total = wh.DeliveryStats()
            try:
                start.wait()
                while True:
                    stats = wh.deliver_due(service, now, sender, batch=3)
                    if not stats.attempted:
                        break
                    total.attempted += stats.attempted
                    total.delivered += stats.delivered
            except BaseException as exc:
                errors.append(exc)
            finally:
                sender.close()
                totals.append(total)

        threads = [threading.Thread(target=work, args=(s,)) for s in (one, two)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert not errors, errors
        sent = Counter(r.headers["Aftersales-Delivery"] for r in receiver.to("/race"))
        assert len(sent) == n and set(sent.values()) == {1}, sent  # each once, none twice
        assert sum(x.delivered for x in totals) == n
        log = wh.list_deliveries(one, OPERATOR, endpoint_id=endpoint.id, limit=100)
        assert {d["status"] for d in log} == {"delivered"}
        assert all(d["attempts"] == 1 and len(d["log"]) == 1 for d in log)
        if one.engine.dialect.name == "postgresql":  # SKIP LOCKED: they really overlapped
            assert all(x.attempted > 0 for x in totals), totals
            assert receiver.max_in_flight == 2
    finally:
        one.engine.dispose()
        two.engine.dispose()


# -- the worker loop and the CLI ------------------------------------------------------------------
def test_the_worker_loop_fans_out_and_delivers(service: Service, receiver: Receiver,
                                               sender: wh.HttpSender) -> None:
    endpoint = wh.register_endpoint(service, OPERATOR, receiver.base + "/w", ["*"], now=T0)
    place(service, "o1", T0 + H)
    # the ship-by deadline (SH-2) passes: the worker's timeout events go out in the same round
    late = T0 + 30 * 24 * H
    stats = serve_forever(service, once=True, clock=lambda: late, sender=sender)
    assert stats.orders == 1
    types = [json.loads(r.body)["type"] for r in receiver.to("/w")]
    assert types[0] == "OrderPlaced" and "ViolationDetected" in types
    assert stats.webhooks == len(types) == outbox_count(service)
    assert all(wh.verify_signature(endpoint.secret, r.headers["Aftersales-Signature"], r.body,
                                   now=late) for r in receiver.requests)


def test_registration_is_checked(service: Service) -> None:
    for actor in (BUYER, SELLER, Actor.parse("juror:j1"), Actor.parse("system")):
        with pytest.raises(WrongActor):
            wh.register_endpoint(service, actor, "https://example.com/h", ["*"])
        with pytest.raises(WrongActor):
            wh.list_endpoints(service, actor)
        with pytest.raises(WrongActor):
            wh.list_deliveries(service, actor)
    for url in ("ftp://example.com/h", "example.com/h", "https:///nohost", "https://a b.com/",
                "https://user:pw@example.com/h", "https://example.com:99999/h",
                "javascript:alert(1)", "https://example.com/" + "x" * 2100):
        with pytest.raises(InvalidInput):
            wh.register_endpoint(service, OPERATOR, url, ["*"])
    for types in ([], "", ["NoSuchEvent"], ["OrderPlaced", "orderplaced"]):
        with pytest.raises(InvalidInput):
            wh.register_endpoint(service, OPERATOR, "https://example.com/h", types)
    for secret in ("short", "has spaces in it 1234", "x" * 129, "ünïcödé-secret-value"):
        with pytest.raises(InvalidInput):
            wh.register_endpoint(service, OPERATOR, "https://example.com/h", ["*"], secret)
    with pytest.raises(InvalidInput):
        wh.register_endpoint(service, OPERATOR, "https://example.com/h", ["*"],
                             now=datetime(2026, 3, 1))  # noqa: DTZ001 - naive on purpose
    mine = wh.register_endpoint(service, STAFF, "https://example.com/h", ["OrderPlaced"],
                                "s3cret-s3cret-s3cret")
    assert mine.secret == "s3cret-s3cret-s3cret" and mine.created_by == "staff:x1"
    assert "secret" not in mine.as_dict() and mine.as_dict(with_secret=True)["secret"]
    assert "s3cret" not in repr(mine)
    with pytest.raises(InvalidInput):
        wh.list_deliveries(service, OPERATOR, status="lost")
    with pytest.raises(NotFound):
        wh.disable_endpoint(service, OPERATOR, "wh_nope")


def test_disabling_an_endpoint_fails_its_waiting_deliveries(
        service: Service, receiver: Receiver, sender: wh.HttpSender) -> None:
    endpoint = wh.register_endpoint(service, OPERATOR, receiver.base + "/d", ["*"], now=T0)
    place(service, "o1", T0 + H)
    now = T0 + 2 * H
    wh.fan_out(service, now)
    wh.disable_endpoint(service, OPERATOR, endpoint.id, now)
    assert wh.deliver_due(service, now, sender).attempted == 0
    (d,) = wh.list_deliveries(service, OPERATOR)
    assert (d["status"], d["last_error"]) == ("failed", "endpoint disabled")
    with pytest.raises(ActionNotAllowed) as refused:
        wh.redeliver(service, OPERATOR, d["id"], now)
    assert refused.value.code == "endpoint_disabled"
    assert receiver.requests == []


def test_cli_add_list_deliveries_redeliver(db_url: str, receiver: Receiver,
                                           sender: wh.HttpSender) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["webhooks", "add", receiver.base + "/cli", "--events",
                              "OrderPlaced,OrderShipped", "--db", db_url, "--json"])
    assert out.exit_code == 0, out.output
    endpoint = json.loads(out.output)
    assert endpoint["event_types"] == ["OrderPlaced", "OrderShipped"]
    assert endpoint["secret"].startswith("whsec_") and endpoint["created_by"] == "operator:cli"
    bad = runner.invoke(app, ["webhooks", "add", "ftp://x", "--events", "*", "--db", db_url])
    assert bad.exit_code == 2 and "http or https" in bad.output
    bad = runner.invoke(app, ["webhooks", "add", receiver.base, "--events", "*", "--as",
                              "buyer:b1", "--db", db_url])
    assert bad.exit_code == 1
    listed = runner.invoke(app, ["webhooks", "list", "--db", db_url])
    assert listed.exit_code == 0 and endpoint["id"] in listed.output
    assert endpoint["secret"] not in listed.output

    service = bootstrap(db_url, migrate=False)
    try:
        receiver.status["/cli"] = 503
        now = datetime.now(UTC)  # the CLI registered the endpoint at the real time
        place(service, "o1", now)
        wh.fan_out(service, now)
        wh.deliver_due(service, now, sender)
        failed = runner.invoke(app, ["webhooks", "deliveries", "--status", "pending",
                                     "--json", "--db", db_url])
        assert failed.exit_code == 0, failed.output
        (d,) = json.loads(failed.output)
        assert d["log"][0]["status_code"] == 503
        text = runner.invoke(app, ["webhooks", "deliveries", "--db", db_url])
        assert "OrderPlaced" in text.output and "HTTP 503" in text.output
        receiver.status["/cli"] = 200
        again = runner.invoke(app, ["webhooks", "redeliver", str(d["id"]), "--db", db_url])
        assert again.exit_code == 0, again.output
        assert wh.deliver_due(service, datetime.now(UTC), sender).delivered == 1
        assert runner.invoke(app, ["webhooks", "redeliver", "424242", "--db",
                                   db_url]).exit_code == 1
        gone = runner.invoke(app, ["webhooks", "disable", endpoint["id"], "--db", db_url])
        assert gone.exit_code == 0
        active = runner.invoke(app, ["webhooks", "list", "--active", "--json", "--db", db_url])
        assert json.loads(active.output) == []
    finally:
        service.engine.dispose()


# -- the event list --------------------------------------------------------------------------------
def test_every_event_the_domain_publishes_can_be_subscribed_to() -> None:
    """EVENT_TYPES names every event name the domain records (the first argument of `Event(...)`
    / `_record(...)`, and the strings assigned to `name` in those modules)."""
    found: set[str] = set()
    domain = Path(wh.__file__).resolve().parents[1] / "domain"
    for module in ("cases.py", "orders.py", "complaints.py"):
        tree = ast.parse((domain / module).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets: list[ast.AST] = []
            if isinstance(node, ast.Call) and node.args:
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                if name in ("Event", "_record"):
                    targets.append(node.args[0])
            if isinstance(node, ast.Assign) and any(
                    isinstance(x, ast.Name) and x.id == "name" for x in node.targets):
                targets.append(node.value)
            for target in targets:
                found |= {n.value for n in ast.walk(target)  # CamelCase: not the "uphold"
                          if isinstance(n, ast.Constant) and isinstance(n.value, str)  # of a test
                          and re.fullmatch(r"(?:[A-Z][a-z]+){2,}", n.value)}
    from aftersales.domain.cases import EVENT_NAMES

    found |= set(EVENT_NAMES.values())
    assert found - wh.EVENT_TYPES == set()
    assert len(found) >= 35


# -- the HTTP API ----------------------------------------------------------------------------------
def test_api_routes(service: Service, receiver: Receiver, sender: wh.HttpSender) -> None:
    from fastapi.testclient import TestClient

    from aftersales.api.app import create_app
    from aftersales.api.auth import issue_token
    from aftersales.settings import Settings

    settings = Settings()
    clock = {"now": T0}
    api = TestClient(create_app(settings, service, clock=lambda: clock["now"]))

    def auth(role: str, sub: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(settings, role, sub)}"}

    ops, staff, buyer = auth("operator", "ops"), auth("staff", "x1"), auth("buyer", "b1")
    base = "/api/v1/webhooks"
    body = {"url": receiver.base + "/api", "event_types": ["OrderPlaced"]}
    assert api.post(f"{base}/endpoints", json=body).status_code == 401
    for method, path in (("POST", "/endpoints"), ("GET", "/endpoints"),
                         ("GET", "/deliveries"), ("POST", "/deliveries/1/redeliver"),
                         ("DELETE", "/endpoints/wh_1"), ("GET", "/event-types")):
        refused = api.request(method, base + path, headers=buyer, json=body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"

    created = api.post(f"{base}/endpoints", json=body, headers={**ops, "Idempotency-Key": "k1"})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and endpoint["created_by"] == "operator:ops"
    again = api.post(f"{base}/endpoints", json=body, headers={**ops, "Idempotency-Key": "k1"})
    assert again.json()["id"] == endpoint["id"]  # a retry registers nothing new
    assert len(api.get(f"{base}/endpoints", headers=staff).json()) == 1
    for bad in ({"url": "ftp://example.com/x", "event_types": ["*"]},
                {"url": "https://example.com/x", "event_types": ["NoSuchEvent"]},
                {"url": "https://example.com/x", "event_types": []},
                {"url": "https://example.com/x", "event_types": ["*"], "extra": 1}):
        refused = api.post(f"{base}/endpoints", json=bad, headers=ops)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["code"] == "invalid_input"
    listed = api.get(f"{base}/endpoints", headers=staff).json()
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
    one = api.get(f"{base}/endpoints/{endpoint['id']}", headers=staff).json()
    assert one["url"] == body["url"] and "secret" not in one
    assert api.get(f"{base}/endpoints/wh_nope", headers=staff).status_code == 404
    assert "RefundIssued" in api.get(f"{base}/event-types", headers=ops).json()

    receiver.status["/api"] = 500
    for n in range(3):
        place(service, f"o{n}", T0 + H, buyer=f"b{n}")
    now = T0 + 2 * H
    wh.fan_out(service, now)
    wh.deliver_due(service, now, sender)
    page = api.get(f"{base}/deliveries", params={"status": "pending", "limit": 2},
                   headers=ops).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = api.get(f"{base}/deliveries", params={"status": "pending", "limit": 2,
                                                 "cursor": page["next_cursor"]},
                   headers=ops).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    first = rest["items"][0]
    assert first["event"] == "OrderPlaced" and first["aggregate_id"] == "o0"
    assert first["log"][0]["status_code"] == 500 and first["attempts"] == 1
    assert api.get(f"{base}/deliveries", params={"endpoint_id": endpoint["id"],
                                                 "status": "delivered"},
                   headers=ops).json()["items"] == []
    assert api.get(f"{base}/deliveries", params={"status": "lost"},
                   headers=ops).status_code == 422
    assert api.get(f"{base}/deliveries/{first['id']}", headers=ops).json() == first

    receiver.status["/api"] = 200
    clock["now"] = now + timedelta(seconds=10)  # before the others' retries (30 s +- 20 %)
    queued = api.post(f"{base}/deliveries/{first['id']}/redeliver",
                      headers={**staff, "Idempotency-Key": "r1"})
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "pending"
    assert datetime.fromisoformat(queued.json()["next_attempt_at"]) == clock["now"]
    assert wh.deliver_due(service, clock["now"], sender).delivered == 1
    replay = api.post(f"{base}/deliveries/{first['id']}/redeliver",
                      headers={**staff, "Idempotency-Key": "r1"})
    assert replay.json() == queued.json()  # the retry of the request did not queue it again
    assert api.get(f"{base}/deliveries/{first['id']}", headers=ops).json()["status"] == (
        "delivered")
    assert api.post(f"{base}/deliveries/999999/redeliver", headers=ops).status_code == 404

    gone = api.delete(f"{base}/endpoints/{endpoint['id']}", headers=ops)
    assert gone.status_code == 200 and gone.json()["active"] is False
    refused = api.post(f"{base}/deliveries/{first['id']}/redeliver", headers=ops)
    assert refused.status_code == 409 and refused.json()["code"] == "endpoint_disabled"
    assert api.get(f"{base}/endpoints", params={"active": True}, headers=ops).json() == []
    doc = api.get("/openapi.json").json()
    ops_ = doc["paths"][f"{base}/deliveries/{{delivery_id}}/redeliver"]["post"]
    assert sorted(ops_["x-roles"]) == ["operator", "staff"]
