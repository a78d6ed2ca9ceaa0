"""RFC 9457 problem details: every error the API returns, as application/problem+json.

Each problem carries the stable `code` of `domain.errors` (or of the API: `unauthenticated`,
`forbidden`, `idempotency_key_reused`, ...), and for an action the rules refuse, the `rule` id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from aftersales.domain.errors import (
    ActionNotAllowed,
    AftersalesError,
    ConcurrencyConflict,
    InvalidInput,
    NotFound,
    WrongActor,
)

log = logging.getLogger("aftersales.api")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:aftersales:problem:"

# Codes of domain.errors (and the API's own) and their HTTP status.
STATUS_OF_CODE = {
    "invalid_input": 422, "amount_exceeds_paid": 422, "unsupported_media_type": 422,
    "bad_policy": 422, "not_supported": 422, "file_too_large": 413, "body_too_large": 413,
    "not_found": 404, "wrong_actor": 403, "forbidden": 403, "unauthenticated": 401,
    "conflict": 409, "idempotency_key_reused": 422, "idempotency_conflict": 409,
    "unavailable": 503, "internal_error": 500, "method_not_allowed": 405,
}
TITLES = {
    "invalid_input": "The request is not valid",
    "amount_exceeds_paid": "The amount exceeds what was paid",
    "unsupported_media_type": "This kind of file is not accepted",
    "file_too_large": "The file is too large",
    "body_too_large": "The request body is too large",
    "not_found": "Not found",
    "wrong_actor": "Not yours to do",
    "forbidden": "Your role may not use this endpoint",
    "unauthenticated": "A valid bearer token is required",
    "conflict": "Changed by someone else; nothing was applied",
    "not_allowed": "The rules do not allow this action now",
    "idempotency_key_reused": "This Idempotency-Key was used for a different request",
    "idempotency_conflict": "A request with this Idempotency-Key is in progress",
    "unavailable": "The service is temporarily unavailable",
    "internal_error": "Internal error",
}


class Problem(BaseModel):
    """RFC 9457 problem details, with the engine's stable error code."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "type": "urn:aftersales:problem:window_closed", "title": "The rules do not allow this "
        "action now", "status": 409, "detail": "case case_1 cannot escalate: the 7-day window "
        "after the rejection closed", "instance": "/api/v1/cases/case_1/escalate",
        "code": "window_closed", "rule": "IN-1"}]})

    type: str = Field(description="urn:aftersales:problem:<code>")
    title: str
    status: int
    detail: str
    instance: str
    code: str = Field(description="Stable error code (docs/api.md lists them)")
    rule: str | None = Field(None, description="The rule id (RULES.md) behind a refusal")


class ApiProblem(Exception):
    """An error raised by the API layer itself (auth, roles, idempotency, limits)."""

    def __init__(self, status: int, code: str, detail: str, *, rule: str | None = None,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.rule = status, code, detail, rule
        self.headers = dict(headers or {})
        self.extra = extra


def problem(request: Request | None, status: int, code: str, detail: str, *,
            rule: str | None = None, headers: Mapping[str, str] | None = None,
            title: str | None = None, **extra: Any) -> JSONResponse:
    instance = request.url.path if request is not None else ""
    body = {"type": TYPE_PREFIX + code,
            "title": title or TITLES.get(code) or HTTPStatus(status).phrase,
            "status": status, "detail": detail, "instance": instance, "code": code,
            "rule": rule, **extra}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}),
                        media_type=PROBLEM_JSON)


def status_for(exc: AftersalesError) -> int:
    if exc.code in STATUS_OF_CODE:
        return STATUS_OF_CODE[exc.code]
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, WrongActor):
        return 403
    if isinstance(exc, ActionNotAllowed | ConcurrencyConflict):
        return 409
    if isinstance(exc, InvalidInput):
        return 422
    return 400


def from_domain(request: Request | None, exc: AftersalesError) -> JSONResponse:
    extra: dict[str, Any] = {}
    if isinstance(exc, ActionNotAllowed):
        extra = {k: v for k, v in (("entity", exc.entity), ("action", exc.action),
                                   ("state", exc.status)) if v}
    title = TITLES.get(exc.code) or (TITLES["not_allowed"]
                                     if isinstance(exc, ActionNotAllowed) else None)
    return problem(request, status_for(exc), exc.code, exc.message, rule=exc.rule, title=title,
                   **extra)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        out.append({"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))})
    return out


def install(app: FastAPI) -> None:
    """Problem responses for every error the app can raise."""

    @app.exception_handler(AftersalesError)
    async def _domain(request: Request, exc: AftersalesError) -> JSONResponse:
        return from_domain(request, exc)

    @app.exception_handler(ApiProblem)
    async def _api(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem(request, exc.status, exc.code, exc.detail, rule=exc.rule,
                       headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"])
        return problem(request, 422, "invalid_input",
                       f"{where}: {first['msg']}" if where else str(first["msg"]),
                       errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__
        if isinstance(cause, ApiProblem):  # raised while FastAPI read the body (size limit)
            return problem(request, cause.status, cause.code, cause.detail, rule=cause.rule,
                           headers=cause.headers, **cause.extra)
        if exc.status_code == 400:  # a body FastAPI could not parse: bad input, like the rest
            return problem(request, 422, "invalid_input", "the request body cannot be parsed "
                           "as the endpoint's media type (JSON)")
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated",
                403: "forbidden", 413: "body_too_large"}.get(exc.status_code,
                                                             f"http_{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no endpoint {request.method} {request.url.path}"
        return problem(request, exc.status_code, code, detail, headers=exc.headers)

    @app.exception_handler(sa_exc.OperationalError)
    async def _db_down(request: Request, exc: sa_exc.OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", str(exc.orig or exc).splitlines()[0])
        return problem(request, 503, "unavailable", "the database is unavailable or busy; "
                       "retry shortly", headers={"Retry-After": "1"})

    @app.exception_handler(sa_exc.DataError)
    async def _db_data(request: Request, exc: sa_exc.DataError) -> JSONResponse:
        # A value the database cannot store (length, range): the input's fault.
        return problem(request, 422, "invalid_input", "a value in the request cannot be stored "
                       "(too long or out of range)")

    @app.exception_handler(sa_exc.IntegrityError)
    async def _db_integrity(request: Request, exc: sa_exc.IntegrityError) -> JSONResponse:
        return problem(request, 409, "conflict", "the change conflicts with the stored state; "
                       "nothing was applied")
