"""Health, readiness, metrics and the cheapest database round trip."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aftersales.api.deps import ApiDep
from aftersales.api.routing import endpoint, problems
from aftersales.api.schemas import Health, Ping
from aftersales.store import db

router = APIRouter(tags=["operations"])


def _select_one(api: Any) -> None:
    """One `SELECT 1` on a pooled DBAPI connection: no ORM and no transaction, so one round
    trip (psycopg would otherwise send BEGIN first and the pool a ROLLBACK after)."""
    raw = api.service.engine.raw_connection()
    try:
        driver = raw.driver_connection
        autocommit = getattr(driver, "autocommit", None)
        if autocommit is False:  # psycopg: a client-side switch, no round trip
            driver.autocommit = True
        try:
            cur = raw.cursor()
            try:
                cur.execute("SELECT 1")
                cur.fetchone()
            finally:
                cur.close()
        finally:
            if autocommit is False:
                driver.autocommit = False
    finally:
        raw.close()


@endpoint(router, "GET", "/api/v1/ping", roles=None, response_model=Ping,
          summary="One database round trip, unauthenticated (the benchmark's ceiling)")
def ping(api: ApiDep) -> Ping:
    _select_one(api)
    return Ping(ok=True)


@router.get("/healthz", response_model=Health, summary="The process is up (no dependencies)",
            openapi_extra={"x-roles": ["public"]})
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=problems(503),
            summary="Ready: the database answers and its schema is at the newest migration",
            openapi_extra={"x-roles": ["public"]})
def readyz(api: ApiDep) -> Any:
    head = api.ready.setdefault("head", db.head_revision())
    try:
        _select_one(api)
        current = db.current_revision(api.service.engine)
    except Exception as exc:
        return _not_ready({"database": f"unreachable: {str(exc).splitlines()[0]}"})
    if current != head:
        return _not_ready({"database": "ok",
                           "migrations": f"at {current}, newest is {head}: run "
                                         "`aftersales db upgrade`"})
    return Health(status="ready", checks={"database": "ok", "migrations": current})


def _not_ready(checks: dict[str, Any]) -> JSONResponse:
    detail = "; ".join(f"{k}: {v}" for k, v in checks.items())
    return JSONResponse({"type": "urn:aftersales:problem:unavailable",
                         "title": "The service is temporarily unavailable", "status": 503,
                         "detail": detail, "instance": "/readyz", "code": "unavailable",
                         "rule": None, "checks": checks},
                        status_code=503, media_type="application/problem+json")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {
                "schema": {"type": "string"}}}, "description": "Prometheus text format"}},
            openapi_extra={"x-roles": ["public"]})
def metrics(api: ApiDep) -> Response:
    return Response(generate_latest(api.metrics.registry), media_type=CONTENT_TYPE_LATEST)
