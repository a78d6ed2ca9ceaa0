"""Declaring an endpoint: its roles (checked, and published as `x-roles` in the OpenAPI
document, which the authorisation matrix test reads), and its problem responses."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends

from aftersales.api.deps import require
from aftersales.api.problems import PROBLEM_JSON, Problem
from aftersales.domain.types import Role

F = TypeVar("F", bound=Callable[..., Any])

_DESCRIPTIONS = {
    401: "No valid bearer token (code `unauthenticated`)",
    403: "Your role may not use this endpoint (`forbidden`), or the rules say this is not "
         "yours to do (`wrong_actor`)",
    404: "Not found, or not yours to see (`not_found`)",
    409: "Refused by the rules now (`not_allowed`, `too_early`, `window_closed`, ... with the "
         "rule id), or changed concurrently (`conflict`)",
    413: "The body or file is larger than the limit (`body_too_large`, `file_too_large`)",
    422: "Invalid input (`invalid_input`, `amount_exceeds_paid`, `unsupported_media_type`, "
         "`idempotency_key_reused`, ...)",
    503: "The database is unavailable or busy (`unavailable`); retry",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": Problem, "description": _DESCRIPTIONS[s],
                "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            for s in statuses}


AUTHENTICATED = (401, 403, 404, 409, 413, 422, 503)
PUBLIC = (404, 422, 503)


def endpoint(router: APIRouter, method: str, path: str, *, roles: Iterable[Role] | None,
             status_code: int = 200, response_model: Any = None, summary: str,
             **kwargs: Any) -> Callable[[F], F]:
    """Register `fn` for METHOD path. `roles` None: a public endpoint (no token)."""
    role_list = [r.value for r in roles] if roles is not None else []
    extra = {"x-roles": role_list if roles is not None else ["public"],
             **kwargs.pop("openapi_extra", {})}
    responses = {**problems(*(AUTHENTICATED if roles is not None else PUBLIC)),
                 **kwargs.pop("responses", {})}

    def register(fn: F) -> F:
        router.add_api_route(
            path, fn, methods=[method], status_code=status_code, response_model=response_model,
            summary=summary,
            dependencies=[Depends(require(roles))] if roles is not None else [],
            responses=responses, openapi_extra=extra, **kwargs)
        return fn

    return register
