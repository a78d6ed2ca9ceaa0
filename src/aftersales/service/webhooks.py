"""Webhooks: every published event, signed and delivered to the endpoints operators register.

The path of an event (docs/webhooks.md):

1. `Service.handle` and the deadline worker write each published event to `outbox` in the
   transaction that made it: an event exists if and only if its change was committed.
2. `fan_out` claims outbox rows not yet fanned out and creates one `pending` delivery per active
   endpoint whose event types match (`UNIQUE(endpoint_id, outbox_id)` keeps it once).
3. `deliver_due` claims due deliveries in a short transaction that leases them (status
   `sending`, `next_attempt_at` = lease expiry, `attempts` + 1), commits, and only then POSTs
   them, so a slow receiver never holds a row lock. Each result is recorded in its own short
   transaction: an attempt row (the delivery log) and the delivery's new state, written only if
   the lease is still ours (same `attempts`, still `sending`). 2xx is delivered; anything else is
   retried with exponential backoff and jitter until `max_attempts`, then `failed`.
4. `redeliver` puts a delivery back in the queue for an attempt now (operators and staff).

Two workers never send one delivery at the same time: on PostgreSQL the claim skips rows another
worker has locked (`FOR UPDATE SKIP LOCKED`), and once committed the lease makes the row not due;
on SQLite claims are serialised (BEGIN IMMEDIATE). A worker that dies mid-batch leaves its leases
to expire, after which the delivery is sent again: delivery is at least once, and receivers
de-duplicate by the event id (or the `Aftersales-Delivery` header).

Signatures follow Stripe's scheme: `Aftersales-Signature: t=<unix seconds>,v1=<hex>` where the hex
is HMAC-SHA256(key = the endpoint secret as UTF-8, message = f"{t}." + the raw body). The
timestamp is signed too, so a receiver that rejects old timestamps rejects replays
(`verify_signature`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Connection, and_, or_, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from aftersales.domain.cases import EVENT_NAMES
from aftersales.domain.errors import ActionNotAllowed, InvalidInput, NotFound, WrongActor
from aftersales.domain.types import Actor, Role, require_aware
from aftersales.service.handlers import Service
from aftersales.store import tables as t

log = logging.getLogger("aftersales.webhooks")

ALL_EVENTS = "*"
# Every event name the engine publishes (domain/cases.py, orders.py, complaints.py); a test
# checks this list against the domain's sources.
EVENT_TYPES: frozenset[str] = frozenset(EVENT_NAMES.values()) | frozenset({
    "CaseOpened", "CaseClosed",
    "OrderPlaced", "OrderShipped", "ParcelScanned", "ParcelDelivered", "ReceiptConfirmed",
    "ReceiptAutoConfirmed", "RefundIssued", "PenaltyRecorded", "BuyerReminded",
    "ViolationDetected", "ViolationDisputed",
    "OutOfStockDeclared", "OutOfStockResolved", "OutOfStockCancelled",
    "ComplaintFiled", "ComplaintContested", "ComplaintUpheld", "ComplaintDismissed",
})
MANAGERS = frozenset({Role.OPERATOR, Role.STAFF})
STATUSES = ("pending", "sending", "delivered", "failed")

EVENT_HEADER = "Aftersales-Event"
DELIVERY_HEADER = "Aftersales-Delivery"
SIGNATURE_HEADER = "Aftersales-Signature"
USER_AGENT = "aftersales-webhooks/1"
DEFAULT_TOLERANCE_S = 300
SECRET_PREFIX = "whsec_"
_SECRET_OK = re.compile(r"[\x21-\x7e]{16,128}")  # printable ASCII, no spaces
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(r"[0-9a-f]{64}")
MAX_URL = 2048
ERROR_SNIPPET = 500  # characters of a receiver's error response kept in the log


# -- signatures ------------------------------------------------------------------------------------
def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of f"{timestamp}." + body under the endpoint's secret."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify_signature(secret: str, header: str | None, body: bytes | str,
                     now: datetime | float | None = None,
                     tolerance: float = DEFAULT_TOLERANCE_S) -> bool:
    """The receiver's check: True when `header` (the Aftersales-Signature value) carries a v1
    signature of `body` (the raw request body, exactly as received) under `secret`, made within
    `tolerance` seconds of `now` (default: the current time; a datetime or unix seconds). An old
    timestamp (a replayed request), a changed body, a wrong secret or a malformed header all
    give False. Several v1 entries are allowed (any may match)."""
    if not header:
        return False
    raw = body.encode() if isinstance(body, str) else bytes(body)
    stamp: str | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            stamp = value
        elif key == "v1":
            candidates.append(value)
    if stamp is None or not _TIMESTAMP.fullmatch(stamp) or not candidates:
        return False
    current = (time.time() if now is None
               else now.timestamp() if isinstance(now, datetime) else float(now))
    if abs(current - int(stamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    # compare every candidate (constant time each), so timing says nothing about which matched
    matched = [hmac.compare_digest(expected, c) for c in candidates if _HEX.fullmatch(c)]
    return any(matched)


# -- sending -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Response:
    """What became of one POST: the HTTP status, or None when there was no response (a network
    error or a timeout), and an error text for anything but 2xx."""

    status_code: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender(Protocol):
    """POSTs one body. Must not raise for network trouble (return `Response(None, error)`);
    an exception is recorded as a failed attempt all the same."""

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response: ...


class HttpSender:
    """The real sender: httpx, a timeout for connecting and for each read and write, no
    redirects followed (a 3xx is a failure: register the final URL), keep-alive between calls."""

    def __init__(self, timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        self.timeout = timeout
        self.client = client or httpx.Client(timeout=httpx.Timeout(timeout),
                                             follow_redirects=False,
                                             headers={"User-Agent": USER_AGENT})

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        try:
            with self.client.stream("POST", url, content=body, headers=dict(headers)) as resp:
                code = resp.status_code
                if 200 <= code < 300:
                    return Response(code)
                snippet = b""
                for chunk in resp.iter_bytes():
                    snippet += chunk
                    if len(snippet) >= ERROR_SNIPPET:
                        break
        except httpx.TimeoutException as exc:
            return Response(None, f"timeout ({self.timeout:g} s): {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return Response(None, f"{type(exc).__name__}: {exc}"[:ERROR_SNIPPET])
        text = snippet.decode("utf-8", "replace")[:ERROR_SNIPPET].strip()
        return Response(code, f"HTTP {code}" + (f": {text}" if text else ""))

    def close(self) -> None:
        self.client.close()


# -- retries -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n (1-based) failed: wait base * 2^(n-1), times a random factor in
    [1 - jitter, 1 + jitter], at most `cap`. After `max_attempts` failed attempts: failed."""

    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=6)
    max_attempts: int = 16
    jitter: float = 0.2

    def delay(self, attempts: int, rng: random.Random | None = None) -> timedelta:
        raw = self.base * (2 ** min(max(attempts - 1, 0), 30))
        factor = 1.0 + self.jitter * (2.0 * (rng or _rng).random() - 1.0)
        wait: timedelta = min(raw, self.cap * 2) * factor
        return min(self.cap, wait)


DEFAULT_RETRY = RetryPolicy()
DEFAULT_LEASE = timedelta(minutes=5)
_rng = random.SystemRandom()


# -- endpoints -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    event_types: tuple[str, ...]
    active: bool
    created_at: datetime
    created_by: str
    secret: str = field(repr=False)  # only ever shown once, at registration

    def matches(self, event_name: str) -> bool:
        return ALL_EVENTS in self.event_types or event_name in self.event_types

    def as_dict(self, *, with_secret: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "url": self.url,
                               "event_types": list(self.event_types), "active": self.active,
                               "created_at": _iso(self.created_at),
                               "created_by": self.created_by}
        if with_secret:
            out["secret"] = self.secret
        return out


def _require_manager(actor: Actor, what: str) -> None:
    if actor.role not in MANAGERS:
        raise WrongActor(f"{actor} may not {what}: operators and platform staff do")


def check_url(url: str) -> str:
    url = url.strip()
    if not url or len(url) > MAX_URL or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidInput(f"webhook URL {url[:80]!r}: an http(s) URL of at most {MAX_URL} "
                           "characters, without spaces")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - a bad port raises ValueError
    except ValueError as exc:
        raise InvalidInput(f"webhook URL {url!r} is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(f"webhook URL {url!r}: the scheme must be http or https")
    if not host:
        raise InvalidInput(f"webhook URL {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(f"webhook URL {url!r}: no credentials in the URL (the signature "
                           "authenticates the sender)")
    return url


def check_event_types(event_types: Iterable[str] | str) -> tuple[str, ...]:
    items = event_types.split(",") if isinstance(event_types, str) else list(event_types)
    names = {str(n).strip() for n in items} - {""}
    if not names:
        raise InvalidInput("name at least one event type, or \"*\" for every event")
    unknown = sorted(names - EVENT_TYPES - {ALL_EVENTS})
    if unknown:
        raise InvalidInput(f"unknown event type(s) {', '.join(unknown)}; known: "
                           f"{', '.join(sorted(EVENT_TYPES))}, or \"*\"")
    return (ALL_EVENTS,) if ALL_EVENTS in names else tuple(sorted(names))


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_hex(32)


def register_endpoint(service: Service, actor: Actor, url: str,
                      event_types: Iterable[str] | str, secret: str | None = None, *,
                      now: datetime | None = None) -> Endpoint:
    """Register URL for EVENT_TYPES (names, or "*"); operators and staff only. Returns the
    endpoint with its signing secret (generated when not given): the only time it is shown.
    The endpoint receives the events recorded from `now` (its registration) on."""
    _require_manager(actor, "register webhook endpoints")
    now = _now(now)
    url = check_url(url)
    types = check_event_types(event_types)
    if secret is None:
        secret = new_secret()
    elif not _SECRET_OK.fullmatch(secret):
        raise InvalidInput("a webhook secret is 16 to 128 printable ASCII characters, "
                           "without spaces")
    endpoint = Endpoint(id=service.ids("wh"), url=url, event_types=types, active=True,
                        created_at=now, created_by=str(actor), secret=secret)
    with service.uow() as uow:
        _conn(uow.conn).execute(t.webhook_endpoints.insert().values(
            id=endpoint.id, url=url, secret=secret, event_types=list(types), active=True,
            created_at=now, created_by=endpoint.created_by))
        uow.commit()
    log.info("webhook endpoint %s registered by %s: %s for %s", endpoint.id, actor, url,
             ",".join(types))
    return endpoint


def list_endpoints(service: Service, actor: Actor, *, include_disabled: bool = True
                   ) -> list[Endpoint]:
    _require_manager(actor, "list webhook endpoints")
    e = t.webhook_endpoints
    q = select(e).order_by(e.c.created_at, e.c.id)
    if not include_disabled:
        q = q.where(e.c.active.is_(True))
    with service.uow() as uow:
        return [_endpoint(r) for r in _conn(uow.conn).execute(q).mappings()]


def get_endpoint(service: Service, actor: Actor, endpoint_id: str) -> Endpoint:
    _require_manager(actor, "read webhook endpoints")
    with service.uow() as uow:
        return _load_endpoint(_conn(uow.conn), endpoint_id)


def disable_endpoint(service: Service, actor: Actor, endpoint_id: str,
                     now: datetime | None = None) -> Endpoint:
    """Stop sending to an endpoint: nothing new is fanned out to it and its deliveries still
    waiting for an attempt end `failed` ("endpoint disabled"). Its delivery log stays."""
    _require_manager(actor, "disable webhook endpoints")
    now = _now(now)
    e, d = t.webhook_endpoints, t.webhook_deliveries
    with service.uow() as uow:
        conn = _conn(uow.conn)
        endpoint = _load_endpoint(conn, endpoint_id)
        conn.execute(update(e).where(e.c.id == endpoint_id).values(active=False))
        # waiting ones, and leases that expired (their worker died); a running send finishes
        conn.execute(update(d).where(
            d.c.endpoint_id == endpoint_id,
            or_(d.c.status == "pending", and_(d.c.status == "sending",
                                              d.c.next_attempt_at <= now)))
            .values(status="failed", next_attempt_at=None, last_error="endpoint disabled"))
        uow.commit()
    log.info("webhook endpoint %s disabled by %s", endpoint_id, actor)
    return Endpoint(endpoint.id, endpoint.url, endpoint.event_types, False,
                    endpoint.created_at, endpoint.created_by, endpoint.secret)


def _load_endpoint(conn: Connection, endpoint_id: str) -> Endpoint:
    e = t.webhook_endpoints
    row = conn.execute(select(e).where(e.c.id == endpoint_id)).mappings().first()
    if row is None:
        raise NotFound(f"unknown webhook endpoint {endpoint_id!r}")
    return _endpoint(row)


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(id=row["id"], url=row["url"], event_types=tuple(row["event_types"]),
                    active=bool(row["active"]), created_at=row["created_at"],
                    created_by=row["created_by"], secret=row["secret"])


# -- fan-out -------------------------------------------------------------------------------------
def fan_out(service: Service, now: datetime, *, batch: int = 500,
            max_batches: int | None = None) -> int:
    """Copy un-fanned outbox rows to deliveries: one per active endpoint whose event types match
    and that was registered at or before the event. Marks the rows fanned out (also when no
    endpoint wants them). Returns the number of deliveries created."""
    require_aware(now, "now")
    created = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        made, claimed = _fan_out_batch(service, now, batch)
        created += made
        if claimed < batch:
            break
    return created


def _fan_out_batch(service: Service, now: datetime, size: int) -> tuple[int, int]:
    o, e, d = t.outbox, t.webhook_endpoints, t.webhook_deliveries
    with service.uow() as uow:
        conn = _conn(uow.conn)
        q = (select(o.c.id, o.c.name, o.c.at).where(o.c.fanned_out_at.is_(None))
             .order_by(o.c.id).limit(size))
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        rows = conn.execute(q).all()
        if not rows:
            return 0, 0
        endpoints = [_endpoint(r) for r in conn.execute(
            select(e).where(e.c.active.is_(True))).mappings()]
        new = [{"endpoint_id": ep.id, "outbox_id": oid, "event_name": name,
                "status": "pending", "attempts": 0, "next_attempt_at": now,
                "created_at": now}
               for oid, name, at in rows for ep in endpoints
               if ep.matches(name) and at >= ep.created_at]
        if new:
            insert = (pg_dialect.insert(d) if conn.dialect.name == "postgresql"
                      else sqlite_dialect.insert(d))
            conn.execute(insert.on_conflict_do_nothing(
                index_elements=[d.c.endpoint_id, d.c.outbox_id]), new)
        conn.execute(update(o).where(o.c.id.in_([r[0] for r in rows]))
                     .values(fanned_out_at=now))
        uow.commit()
    return len(new), len(rows)


# -- delivery ------------------------------------------------------------------------------------
@dataclass
class DeliveryStats:
    attempted: int = 0
    delivered: int = 0
    retrying: int = 0  # failed this time, another attempt is scheduled
    failed: int = 0  # failed for good (max attempts reached)
    released: int = 0  # claimed but not sent this round (time budget or lease ran low)
    deferred: int = 0  # not sent: its endpoint was unreachable earlier in this round
    lost_lease: int = 0  # sent, but the delivery was taken over meanwhile: logged only


@dataclass(frozen=True)
class _Claimed:
    id: int
    attempts: int  # including this one: the lease's token
    endpoint_id: str
    url: str
    secret: str
    event: str
    body: bytes


def payload(outbox_row: Any) -> dict[str, Any]:
    """The JSON document POSTed for an outbox row."""
    return {"id": outbox_row["outbox_id"], "type": outbox_row["name"],
            "aggregate": outbox_row["aggregate"], "aggregate_id": outbox_row["aggregate_id"],
            "at": _iso(outbox_row["at"]), "actor": outbox_row["actor"],
            "rule": outbox_row["rule"], "data": outbox_row["data"]}


def encode_body(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def deliver_due(service: Service, now: datetime, sender: Sender, *, batch: int = 100,
                retry: RetryPolicy = DEFAULT_RETRY, lease: timedelta = DEFAULT_LEASE,
                budget: timedelta | None = None, rng: random.Random | None = None
                ) -> DeliveryStats:
    """Claim up to `batch` due deliveries at `now`, POST each (outside any transaction) and
    record the outcome. Time moves on from `now` as the round takes real time: signatures and
    the attempt log use `now` + the elapsed seconds. No send starts once `budget` or half the
    lease has passed; the rest is released, due at once. After a network error or timeout, the
    endpoint's other deliveries of the round are not tried: they wait for its retry time
    (without using an attempt), so a dead receiver costs one timeout per round, not one each."""
    require_aware(now, "now")
    started = time.monotonic()
    limit = lease.total_seconds() / 2
    if budget is not None:
        limit = min(limit, budget.total_seconds())

    def clock() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    stats = DeliveryStats()
    down: dict[str, datetime] = {}  # endpoint -> when to try it again (unreachable just now)
    claimed = _claim(service, now, batch, now + lease)
    for n, item in enumerate(claimed):
        if time.monotonic() - started >= limit:
            stats.released += _release(service, claimed[n:], clock())
            break
        if item.endpoint_id in down:
            stats.deferred += _release(service, [item], down[item.endpoint_id])
            continue
        at = clock()
        stamp = int(at.timestamp())
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   EVENT_HEADER: item.event, DELIVERY_HEADER: str(item.id),
                   SIGNATURE_HEADER: signature_header(item.secret, stamp, item.body)}
        t0 = time.monotonic()
        try:
            response = sender(item.url, item.body, headers)
        except Exception as exc:  # a sender bug must not stop the other deliveries
            response = Response(None, f"{type(exc).__name__}: {exc}"[:ERROR_SNIPPET])
        duration_ms = int((time.monotonic() - t0) * 1000)
        stats.attempted += 1
        outcome, retry_at = _record(service, item, at, response, duration_ms, retry, rng)
        setattr(stats, outcome, getattr(stats, outcome) + 1)
        if response.status_code is None:
            down[item.endpoint_id] = retry_at or clock() + retry.base
        if outcome == "lost_lease":
            log.warning("webhook delivery %s: lease lost while sending; attempt logged only",
                        item.id)
    return stats


def _claim(service: Service, now: datetime, size: int, lease_until: datetime
           ) -> list[_Claimed]:
    d, e, o = t.webhook_deliveries, t.webhook_endpoints, t.outbox
    with service.uow() as uow:
        conn = _conn(uow.conn)
        q = (select(d.c.id, d.c.attempts, d.c.endpoint_id, e.c.url, e.c.secret,
                    o.c.id.label("outbox_id"),
                    o.c.name, o.c.aggregate, o.c.aggregate_id, o.c.at, o.c.actor, o.c.rule,
                    o.c.data)
             .select_from(d.join(e, e.c.id == d.c.endpoint_id).join(o, o.c.id == d.c.outbox_id))
             .where(d.c.next_attempt_at <= now, d.c.status.in_(("pending", "sending")),
                    e.c.active.is_(True))
             .order_by(d.c.next_attempt_at, d.c.id).limit(size))
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(of=d, skip_locked=True)
        rows = conn.execute(q).mappings().all()
        if not rows:
            return []
        conn.execute(update(d).where(d.c.id.in_([r["id"] for r in rows])).values(
            status="sending", attempts=d.c.attempts + 1, next_attempt_at=lease_until))
        uow.commit()
    return [_Claimed(r["id"], r["attempts"] + 1, r["endpoint_id"], r["url"], r["secret"],
                     r["name"], encode_body(payload(r))) for r in rows]


def _record(service: Service, item: _Claimed, at: datetime, response: Response,
            duration_ms: int, retry: RetryPolicy, rng: random.Random | None
            ) -> tuple[str, datetime | None]:
    """Log the attempt and, if the lease is still ours, the delivery's new state. Returns the
    outcome (a DeliveryStats field) and the next attempt's time when one is scheduled."""
    d, a = t.webhook_deliveries, t.webhook_attempts
    retry_at: datetime | None = None
    error = None if response.ok else response.error or (
        f"HTTP {response.status_code}" if response.status_code is not None else "no response")
    values: dict[str, Any] = {"last_attempt_at": at, "last_status_code": response.status_code,
                              "last_error": error}
    if response.ok:
        outcome = "delivered"
        values.update(status="delivered", delivered_at=at, next_attempt_at=None)
    elif item.attempts >= retry.max_attempts:
        outcome = "failed"
        values.update(status="failed", next_attempt_at=None)
    else:
        outcome = "retrying"
        retry_at = at + retry.delay(item.attempts, rng)
        values.update(status="pending", next_attempt_at=retry_at)
    with service.uow() as uow:
        conn = _conn(uow.conn)
        conn.execute(a.insert().values(delivery_id=item.id, at=at,
                                       status_code=response.status_code, error=error,
                                       duration_ms=duration_ms))
        mine = conn.execute(update(d).where(d.c.id == item.id, d.c.status == "sending",
                                            d.c.attempts == item.attempts).values(**values))
        uow.commit()
    return (outcome, retry_at) if mine.rowcount == 1 else ("lost_lease", None)


def _release(service: Service, items: Sequence[_Claimed], now: datetime) -> int:
    """Give back claimed deliveries that were not sent: due again at `now`, attempt not used."""
    d = t.webhook_deliveries
    released = 0
    with service.uow() as uow:
        conn = _conn(uow.conn)
        for item in items:
            released += conn.execute(update(d).where(
                d.c.id == item.id, d.c.status == "sending", d.c.attempts == item.attempts)
                .values(status="pending", attempts=item.attempts - 1,
                        next_attempt_at=now)).rowcount
        uow.commit()
    return released


# -- redelivery and the delivery log -------------------------------------------------------------
def redeliver(service: Service, actor: Actor, delivery_id: int,
              now: datetime | None = None) -> dict[str, Any]:
    """Queue a delivery for an attempt at `now`, whatever its status (operators and staff).
    A delivery that had given up gets that one attempt (and its normal schedule only while
    attempts remain); one being sent right now is refused."""
    _require_manager(actor, "redeliver webhooks")
    now = _now(now)
    d, e = t.webhook_deliveries, t.webhook_endpoints
    with service.uow() as uow:
        conn = _conn(uow.conn)
        q = (select(d.c.status, d.c.next_attempt_at, e.c.active, e.c.id)
             .select_from(d.join(e, e.c.id == d.c.endpoint_id)).where(d.c.id == delivery_id))
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(of=d)
        row = conn.execute(q).first()
        if row is None:
            raise NotFound(f"unknown webhook delivery {delivery_id}")
        status, due, active, endpoint_id = row
        if not active:
            raise ActionNotAllowed(f"webhook delivery {delivery_id}: endpoint {endpoint_id} is "
                                   "disabled", code="endpoint_disabled", action="redeliver",
                                   entity=str(delivery_id), status=status)
        if status == "sending" and due is not None and due > now:
            raise ActionNotAllowed(f"webhook delivery {delivery_id} is being sent right now",
                                   code="in_flight", action="redeliver",
                                   entity=str(delivery_id), status=status)
        conn.execute(update(d).where(d.c.id == delivery_id)
                     .values(status="pending", next_attempt_at=now))
        uow.commit()
    log.info("webhook delivery %s queued again by %s", delivery_id, actor)
    return get_delivery(service, actor, delivery_id)


def get_delivery(service: Service, actor: Actor, delivery_id: int) -> dict[str, Any]:
    _require_manager(actor, "read the webhook delivery log")
    with service.uow() as uow:
        found = _deliveries(_conn(uow.conn), delivery_id=delivery_id, limit=1)
    if not found:
        raise NotFound(f"unknown webhook delivery {delivery_id}")
    return found[0]


def list_deliveries(service: Service, actor: Actor, *, endpoint_id: str | None = None,
                    status: str | None = None, event: str | None = None, limit: int = 50,
                    before: int | None = None) -> list[dict[str, Any]]:
    """The delivery log, newest first, each delivery with its attempts (oldest first).
    `before`: only deliveries with a smaller id (the next page)."""
    _require_manager(actor, "read the webhook delivery log")
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status is one of {', '.join(STATUSES)}, not {status!r}")
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit is between 1 and 1000")
    with service.uow() as uow:
        return _deliveries(_conn(uow.conn), endpoint_id=endpoint_id, status=status,
                           event=event, limit=limit, before=before)


def _deliveries(conn: Connection, *, delivery_id: int | None = None,
                endpoint_id: str | None = None, status: str | None = None,
                event: str | None = None, limit: int = 50, before: int | None = None
                ) -> list[dict[str, Any]]:
    d, o, a = t.webhook_deliveries, t.outbox, t.webhook_attempts
    q = (select(d, o.c.aggregate, o.c.aggregate_id, o.c.at.label("event_at"))
         .select_from(d.join(o, o.c.id == d.c.outbox_id)).order_by(d.c.id.desc()).limit(limit))
    if delivery_id is not None:
        q = q.where(d.c.id == delivery_id)
    if endpoint_id is not None:
        q = q.where(d.c.endpoint_id == endpoint_id)
    if status is not None:
        q = q.where(d.c.status == status)
    if event is not None:
        q = q.where(d.c.event_name == event)
    if before is not None:
        q = q.where(d.c.id < before)
    rows = conn.execute(q).mappings().all()
    attempts: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
    if attempts:
        for r in conn.execute(select(a).where(a.c.delivery_id.in_(list(attempts)))
                              .order_by(a.c.id)).mappings():
            attempts[r["delivery_id"]].append({
                "at": _iso(r["at"]), "status_code": r["status_code"], "error": r["error"],
                "duration_ms": r["duration_ms"]})
    return [{"id": r["id"], "endpoint_id": r["endpoint_id"], "event_id": r["outbox_id"],
             "event": r["event_name"], "aggregate": r["aggregate"],
             "aggregate_id": r["aggregate_id"], "event_at": _iso(r["event_at"]),
             "status": r["status"], "attempts": r["attempts"],
             "next_attempt_at": _iso(r["next_attempt_at"]),
             "last_attempt_at": _iso(r["last_attempt_at"]),
             "last_status_code": r["last_status_code"], "last_error": r["last_error"],
             "delivered_at": _iso(r["delivered_at"]), "created_at": _iso(r["created_at"]),
             "log": attempts[r["id"]]}
            for r in rows]


# -- the worker's round --------------------------------------------------------------------------
@dataclass
class RoundStats:
    fanned_out: int = 0
    delivery: DeliveryStats = field(default_factory=DeliveryStats)


_default_sender: HttpSender | None = None


def default_sender() -> HttpSender:
    """One HttpSender per process, with AFTERSALES_WEBHOOK_TIMEOUT."""
    global _default_sender
    if _default_sender is None:
        from aftersales.settings import Settings

        _default_sender = HttpSender(timeout=Settings.from_env().webhook_timeout_s)
    return _default_sender


def run_round(service: Service, now: datetime, *, sender: Sender | None = None,
              batch: int = 200, retry: RetryPolicy | None = None,
              budget: timedelta = timedelta(seconds=60)) -> RoundStats:
    """What the worker does each round: fan out new events, then send what is due, starting
    no send after `budget` (the deadlines of the next round must not wait long)."""
    if retry is None:
        from aftersales.settings import Settings

        retry = RetryPolicy(max_attempts=Settings.from_env().webhook_max_attempts)
    fanned = fan_out(service, now, batch=max(batch, 500))
    stats = deliver_due(service, now, sender or default_sender(), batch=batch, retry=retry,
                        budget=budget)
    if fanned or stats.attempted:
        log.info("webhooks: %d deliveries created, %d sent (%d delivered, %d to retry, "
                 "%d failed)", fanned, stats.attempted, stats.delivered, stats.retrying,
                 stats.failed)
    return RoundStats(fanned, stats)


# -- helpers -------------------------------------------------------------------------------------
def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else require_aware(now, "now")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _conn(conn: Connection | None) -> Connection:
    assert conn is not None
    return conn
