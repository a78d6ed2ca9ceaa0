"""The HTTP API: `create_app(settings, service)` and `factory` for `uvicorn --factory`.

    uvicorn aftersales.api.app:factory --factory       # or: aftersales serve --workers 4
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.requests import ClientDisconnect

from aftersales import __version__
from aftersales.api import problems
from aftersales.api.auth import TokenVerifier
from aftersales.api.deps import Api
from aftersales.api.observability import Metrics, RequestMiddleware
from aftersales.api.routes import cases, complaints, jury, ops, orders, platform, sellers, webhooks
from aftersales.service.handlers import PolicySource, Service
from aftersales.settings import Settings
from aftersales.store.blobs import BlobStore
from aftersales.store.db import make_engine, upgrade

DESCRIPTION = """\
The after-sales and dispute engine over HTTP. Every rule has an id in RULES.md; refusals name it.

**Authentication.** `Authorization: Bearer <JWT>` from the marketplace's identity service
(HS256 shared secret or RS256 public key), with `sub`, `role` (buyer, seller, staff, juror,
operator), `exp`, and for a seller optionally `seller` (the shop). `aftersales token issue` makes
development tokens. A buyer sees only its orders and cases, a seller only its shop's, a juror only
the anonymised view of its tasks; staff and operators see everything. Another party's object
answers 404, as if it did not exist. Each operation lists its roles in `x-roles`.

**Errors** are RFC 9457 problem details (`application/problem+json`) with a stable `code` and,
when the rules refuse, the `rule` id: 401 no valid token, 403 wrong role or party, 404 not found,
409 refused now or changed concurrently, 413 too large, 422 invalid input.

**Idempotency.** Every POST takes `Idempotency-Key`: a retry with the same key and body returns
the first response (`Idempotent-Replayed: true`) without acting again; the same key with another
body is refused (`idempotency_key_reused`).

**Lists** page with an opaque `cursor` (`next_cursor` of the previous page) and `limit` <= 100.

**Money** is a string with two decimals ("59.00"); times are RFC 3339 with an offset.
"""

UPLOAD_PATH = re.compile(r"^/api/v1/cases/[^/]+/evidence/files$")


def build_service(settings: Settings) -> Service:
    """The service for `settings` (migrating the database when it is behind)."""
    engine = make_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    upgrade(engine)
    return Service(engine, policies=PolicySource(settings.policy),
                   blobs=BlobStore(Path(settings.evidence_dir), settings.evidence_max_bytes))


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings | None = None, service: Service | None = None, *,
               clock: Callable[[], datetime] | None = None) -> FastAPI:
    """The API on `service` (built from `settings` when None). `clock` gives the service its
    `now` (default: the wall clock in UTC). Refuses production settings with the development
    JWT secret (`auth.ConfigError`)."""
    settings = settings or Settings.from_env()
    verifier = TokenVerifier(settings)
    owned = service is None
    svc = service if service is not None else build_service(settings)
    now = clock or _utc_now
    metrics = Metrics(svc, now)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            svc.engine.dispose()

    app = FastAPI(title="aftersales", version=__version__, description=DESCRIPTION,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
                  lifespan=lifespan)
    app.state.api = Api(settings=settings, service=svc, verifier=verifier, clock=now,
                        metrics=metrics)
    problems.install(app)
    _more_handlers(app)
    for module in (orders, cases, jury, complaints, sellers, platform, webhooks, ops):
        app.include_router(module.router)
    blobs = svc.blobs

    def upload_limit(path: str) -> int | None:
        if blobs is not None and UPLOAD_PATH.match(path):
            return blobs.max_bytes + 1  # the store refuses the byte past its limit itself
        return None

    app.add_middleware(RequestMiddleware, metrics=metrics,
                       max_body_bytes=settings.max_body_bytes, upload_limit=upload_limit)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _more_handlers(app: FastAPI) -> None:
    @app.exception_handler(sa_exc.TimeoutError)
    async def _pool(request: Request, exc: sa_exc.TimeoutError) -> JSONResponse:
        return problems.problem(request, 503, "unavailable", "no database connection is free; "
                                "retry shortly", headers={"Retry-After": "1"})

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return problems.problem(request, 400, "invalid_input", "the client disconnected "
                                "before the body was complete")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document, with errors documented as application/problem+json only."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes, tags=[
                             {"name": "orders", "description": "Orders, shipments, scans"},
                             {"name": "cases", "description": "After-sales cases and evidence"},
                             {"name": "jury", "description": "The public jury (IN-3)"},
                             {"name": "complaints", "description": "Complaints (CP-1)"},
                             {"name": "sellers", "description": "Inbox, to-do, record, stock"},
                             {"name": "platform", "description": "Staff queue, accounts, "
                                                                 "policy packs"},
                             {"name": "operations", "description": "Health and metrics"}])
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict):
                continue
            for status, response in op.get("responses", {}).items():
                content = response.get("content", {})
                if status[:1] in "45" and problems.PROBLEM_JSON in content:
                    content.pop("application/json", None)
    app.openapi_schema = schema
    return schema


def factory() -> FastAPI:
    """For `uvicorn --factory aftersales.api.app:factory`: settings from the environment."""
    return create_app()
