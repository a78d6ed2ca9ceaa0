"""A real HTTP server for the API tests: uvicorn in a background thread on a free loopback port,
and httpx clients holding a token per role."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from aftersales.api.app import create_app
from aftersales.api.auth import issue_token
from aftersales.bootstrap import bootstrap
from aftersales.domain.types import Actor
from aftersales.scenario.runner import counter_ids
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from aftersales.settings import Settings
from tests.integration.intervention_setup import (
    SYSTEM,
    Parties,
    escalated_dispute,
    evidence_file,
    register_jurors,
)

SECRET = "test-secret-of-at-least-thirty-two-bytes!"


class Clock:
    """A settable clock for the app (the domain takes time as an argument)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now = self.now + timedelta(**delta)
        return self.now


@dataclass
class Live:
    url: str
    settings: Settings
    service: Service
    clock: Clock | None
    app: Any = None
    clients: list[httpx.Client] = field(default_factory=list)

    def token(self, role: str, sub: str, seller: str | None = None) -> str:
        return issue_token(self.settings, role, sub, seller=seller)

    def client(self, role: str | None = None, sub: str | None = None,
               seller: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = dict(kwargs.pop("headers", {}))
        if role is not None:
            headers["Authorization"] = f"Bearer {self.token(role, sub or role[0] + '1', seller)}"
        c = httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)
        self.clients.append(c)
        return c


def free_socket() -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it every keep-alive response waits 40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Run `app` under uvicorn in a thread; yield its base URL."""
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def make_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(**{"database_url": db_url, "evidence_dir": str(tmp_path / "evidence"),
                       "jwt_secret": SECRET, **overrides})


@contextmanager
def live_api(db_url: str, tmp_path: Path, *, clock: Clock | None = None,
             overrides: dict[str, dict[str, Any]] | None = None,
             configure: Callable[[Service], None] | None = None,
             **settings_overrides: Any) -> Iterator[Live]:
    settings = make_settings(db_url, tmp_path, **settings_overrides)
    service = bootstrap(db_url, ids=counter_ids(), overrides=overrides,
                        evidence_dir=settings.evidence_dir)
    if service.blobs is not None and settings.evidence_max_bytes != service.blobs.max_bytes:
        service.blobs.max_bytes = settings.evidence_max_bytes
    if configure is not None:
        configure(service)
    app = create_app(settings, service, clock=clock)
    with serve_app(app) as url:
        live = Live(url, settings, service, clock, app)
        try:
            yield live
        finally:
            for c in live.clients:
                c.close()
    service.engine.dispose()


# -- a seeded marketplace: two independent worlds (parties, order, case, complaint, jury) -------
@dataclass(frozen=True)
class World:
    """One buyer and one seller with an escalated case (with an evidence file), a complaint,
    and a second case before a jury whose first juror is `juror`."""

    buyer: str
    seller: str
    order: str
    case: str
    complaint: str
    evidence_id: int
    jury_case: str
    juror: str
    task: str


def seed_world(service: Service, tag: str, jurors: tuple[str, ...], at: datetime,
               retire: tuple[str, ...] = ()) -> World:
    """Set up world `tag` through the service (jurors `jurors` become its panel; `retire` are
    suspended first, so that they cannot be drawn)."""
    hour = timedelta(hours=1)
    p = Parties(buyer=f"b{tag}", seller=f"s{tag}", order=f"o{tag}", case=f"c{tag}",
                tracking=f"SF{tag}")
    t = escalated_dispute(service, p, at)
    service.handle(c.SubmitEvidence(actor=p.b, case_id=p.case, kind="photo",
                                    text="the zip is broken",
                                    file=evidence_file(service, "zip.png")), t + hour)
    complaint = service.handle(c.Complain(actor=p.b, order_id=p.order, kind="broken_promise",
                                          text="promised a gift"), t + hour).complaint_id
    q = Parties(buyer=p.buyer, seller=p.seller, order=f"o{tag}j", case=f"c{tag}j",
                tracking=f"SF{tag}j")
    escalated_dispute(service, q, at)
    for old in retire:
        service.handle(c.RegisterUser(actor=SYSTEM, user_id=old,
                                      registered_at=at - 400 * 24 * hour, verified=True,
                                      standing="suspended"), t)
    register_jurors(service, *jurors, at=at)
    service.handle(c.SendToJury(actor=Actor.parse("staff:x1"), case_id=q.case,
                                seed=f"seed-{tag}"), t + 2 * hour)
    with service.uow() as uow:
        evidence_id = uow.repo.evidence_of(p.case)[0]["id"]
        task = next(s["task_id"] for s in uow.repo.seats_of(jurors[0])
                    if s["case_id"] == q.case)
    assert complaint is not None
    return World(p.buyer, p.seller, p.order, p.case, complaint, evidence_id, q.case,
                 jurors[0], task)
