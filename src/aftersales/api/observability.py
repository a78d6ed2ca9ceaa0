"""Operations: request ids, JSON logs, Prometheus metrics and request size limits.

One pure ASGI middleware does the per-request work (no BaseHTTPMiddleware: uploads stream
through it untouched): it takes the caller's X-Request-ID (or makes one) and echoes it back,
refuses a body over the limit, turns an unexpected exception into a 500 problem, counts the
request and writes one JSON log line. The database-backed gauges (open cases, overdue
deadlines, webhook backlog) are computed when Prometheus scrapes.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aftersales.api.problems import PROBLEM_JSON, TITLES, TYPE_PREFIX, ApiProblem
from aftersales.service.handlers import Service
from aftersales.store import tables as t

access_log = logging.getLogger("aftersales.access")
log = logging.getLogger("aftersales.api")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def log_config(level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for `aftersales serve` (uvicorn applies it per worker)."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": "aftersales.api.observability.JsonFormatter"}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stdout"}},
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {"uvicorn": {"handlers": ["stdout"], "level": level, "propagate": False},
                    "uvicorn.error": {"level": level},
                    "uvicorn.access": {"handlers": [], "propagate": False}},
    }


class BodyTooLarge(ApiProblem):
    def __init__(self, limit: int, code: str = "body_too_large") -> None:
        super().__init__(413, code, f"the request body is larger than the limit of {limit} "
                         "bytes")


class StateCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, service: Service, clock: Callable[[], datetime]) -> None:
        self.service = service
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("aftersales_database_up",
                               "1 when the scrape could read the database")
        try:
            now = self.clock()
            with self.service.uow() as uow:
                conn = uow.repo.conn
                by_status = conn.execute(select(t.cases.c.status, func.count()).where(
                    t.cases.c.status != "closed").group_by(t.cases.c.status)).all()
                overdue_cases = conn.execute(select(func.count()).select_from(t.cases).where(
                    t.cases.c.deadline <= now)).scalar_one()
                overdue_orders = conn.execute(select(func.count()).select_from(t.orders).where(
                    t.orders.c.next_deadline <= now)).scalar_one()
                outbox = conn.execute(select(func.count()).select_from(t.outbox).where(
                    t.outbox.c.fanned_out_at.is_(None))).scalar_one()
                pending = conn.execute(select(func.count()).select_from(
                    t.webhook_deliveries).where(
                    t.webhook_deliveries.c.status == "pending")).scalar_one()
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("metrics: database unavailable: %s", str(exc).splitlines()[0])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        cases = GaugeMetricFamily("aftersales_open_cases", "Open after-sales cases by status",
                                  labels=["status"])
        for status, n in by_status:
            cases.add_metric([status], n)
        yield cases
        overdue = GaugeMetricFamily("aftersales_overdue_deadlines",
                                    "Deadlines already due that the worker has not applied",
                                    labels=["kind"])
        overdue.add_metric(["case"], overdue_cases)
        overdue.add_metric(["order"], overdue_orders)
        yield overdue
        backlog = GaugeMetricFamily("aftersales_webhook_backlog",
                                    "Events not yet fanned out, and deliveries pending",
                                    labels=["stage"])
        backlog.add_metric(["outbox"], outbox)
        backlog.add_metric(["delivery"], pending)
        yield backlog


class Metrics:
    """The app's own registry, so that two apps (tests) never share counters."""

    def __init__(self, service: Service, clock: Callable[[], datetime]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("aftersales_http_requests", "HTTP requests served",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("aftersales_http_request_duration_seconds",
                                 "Time to serve a request", ["method", "route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(StateCollector(service, clock))


def _problem_message(status: int, code: str, detail: str, path: str,
                     request_id: str) -> tuple[Message, Message]:
    body = json.dumps({"type": TYPE_PREFIX + code, "title": TITLES.get(code, code),
                       "status": status, "detail": detail, "instance": path, "code": code,
                       "rule": None}).encode()
    start: Message = {"type": "http.response.start", "status": status, "headers": [
        (b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()), (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body}


class RequestMiddleware:
    """Request id, body limit, metrics and the access log, around every HTTP request."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int,
                 upload_limit: Callable[[str], int | None]) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.upload_limit = upload_limit  # a path's own limit (evidence uploads), or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or ())
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        path = scope.get("path", "")
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        own = self.upload_limit(path)
        limit = own if own is not None else self.max_body_bytes
        code = "file_too_large" if own is not None else "body_too_large"
        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        try:
            if length > limit:
                start, body = _problem_message(
                    413, code, f"the request body ({length} bytes) is larger than the limit "
                    f"of {limit} bytes", path, request_id)
                await send_with_id(start)
                await send(body)
                return
            received = 0

            async def counted() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(limit, code)
                return message

            await self.app(scope, counted, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": request_id}})
            if not response_started:
                start, body = _problem_message(500, "internal_error", "an internal error "
                                               f"occurred; quote request id {request_id}",
                                               path, request_id)
                await send_with_id(start)
                await send(body)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                path if "endpoint" in scope else "unmatched")  # /docs, /openapi.json: static
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            access_log.info("%s %s %s", method, path, status, extra={"fields": {
                "request_id": request_id, "method": method, "path": path, "route": template,
                "status": status, "duration_ms": round(elapsed * 1000, 2),
                "principal": state.get("principal")}})
