"""Webhook endpoints, the delivery log and manual redelivery (docs/webhooks.md). Operators and
platform staff only; the worker does the sending (service/webhooks.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from aftersales.api.deps import PLATFORM, ApiDep, CallDep, PrincipalDep
from aftersales.api.routing import endpoint
from aftersales.service import webhooks as wh

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

EndpointId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$",
                                 examples=["wh_3f2a9c0d1e2b4a5f6789"])]
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1, examples=[4711])]
EventType = Annotated[str, StringConstraints(pattern=r"^(\*|[A-Z][A-Za-z]{1,47})$")]
MAX_PAGE = 100


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://erp.example.com/hooks/aftersales",
         "event_types": ["CaseOpened", "RefundIssued"]},
        {"url": "https://ops.example.com/all", "event_types": ["*"],
         "secret": "my-own-secret-of-32-characters!!"}]})
    url: str = Field(min_length=8, max_length=wh.MAX_URL, description="http or https")
    event_types: list[EventType] = Field(min_length=1, max_length=64,
                                         description='Event names, or ["*"] for every event')
    secret: str | None = Field(None, min_length=16, max_length=128,
                               description="Signing secret; default: a new random one")


class EndpointOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    active: bool
    created_at: datetime
    created_by: str


class EndpointCreated(EndpointOut):
    secret: str = Field(description="The HMAC-SHA256 key for Aftersales-Signature: shown once, "
                                    "here")


class AttemptOut(BaseModel):
    at: datetime
    status_code: int | None = Field(description="null: no HTTP response (network error or "
                                                "timeout)")
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: int
    endpoint_id: str
    event_id: int = Field(description="The event's id: the payload's `id`")
    event: str
    aggregate: str
    aggregate_id: str
    event_at: datetime
    status: Literal["pending", "sending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    log: list[AttemptOut] = Field(description="Every attempt, oldest first")


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at "
                                                "the end")


@endpoint(router, "POST", "/endpoints", roles=PLATFORM, status_code=201,
          response_model=EndpointCreated,
          summary="Register an endpoint for event types; returns its signing secret once")
def register(body: EndpointIn, call: CallDep) -> object:
    replayed = call.replay()
    if replayed is not None:
        return replayed
    created = wh.register_endpoint(call.api.service, call.principal.actor, body.url,
                                   body.event_types, body.secret, now=call.api.now())
    content = EndpointCreated(**created.as_dict(with_secret=True)).model_dump(mode="json")
    return call.remember(201, content)


@endpoint(router, "GET", "/endpoints", roles=PLATFORM, response_model=list[EndpointOut],
          summary="Registered endpoints, oldest first (never their secrets)")
def endpoints(principal: PrincipalDep, api: ApiDep,
              active: Annotated[bool, Query(description="Only active ones")] = False) -> Any:
    return [e.as_dict() for e in wh.list_endpoints(api.service, principal.actor,
                                                   include_disabled=not active)]


@endpoint(router, "GET", "/endpoints/{endpoint_id}", roles=PLATFORM, response_model=EndpointOut,
          summary="An endpoint")
def get_endpoint(endpoint_id: EndpointId, principal: PrincipalDep, api: ApiDep) -> Any:
    return wh.get_endpoint(api.service, principal.actor, endpoint_id).as_dict()


@endpoint(router, "DELETE", "/endpoints/{endpoint_id}", roles=PLATFORM,
          response_model=EndpointOut,
          summary="Disable an endpoint: nothing more is sent; its waiting deliveries fail")
def disable(endpoint_id: EndpointId, principal: PrincipalDep, api: ApiDep) -> Any:
    return wh.disable_endpoint(api.service, principal.actor, endpoint_id, api.now()).as_dict()


@endpoint(router, "GET", "/event-types", roles=PLATFORM, response_model=list[str],
          summary="The event names an endpoint can subscribe to")
def event_types() -> list[str]:
    return sorted(wh.EVENT_TYPES)


@endpoint(router, "GET", "/deliveries", roles=PLATFORM, response_model=DeliveryPage,
          summary="The delivery log, newest first, each delivery with its attempts")
def deliveries(
        principal: PrincipalDep, api: ApiDep,
        endpoint_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
                               ] = None,
        status: Literal["pending", "sending", "delivered", "failed"] | None = None,
        event: Annotated[EventType | None, Query()] = None,
        cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50) -> Any:
    items = wh.list_deliveries(api.service, principal.actor, endpoint_id=endpoint_id,
                               status=status, event=event, limit=limit + 1,
                               before=int(cursor) if cursor is not None else None)
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": str(items[-1]["id"]) if more else None}


@endpoint(router, "GET", "/deliveries/{delivery_id}", roles=PLATFORM,
          response_model=DeliveryOut, summary="A delivery and its attempts")
def delivery(delivery_id: DeliveryId, principal: PrincipalDep, api: ApiDep) -> Any:
    return wh.get_delivery(api.service, principal.actor, delivery_id)


@endpoint(router, "POST", "/deliveries/{delivery_id}/redeliver", roles=PLATFORM,
          status_code=202, response_model=DeliveryOut,
          summary="Send a delivery again now (whatever its status); the worker sends it")
def redeliver(delivery_id: DeliveryId, call: CallDep) -> JSONResponse:
    replayed = call.replay()
    if replayed is not None:
        return replayed
    queued = wh.redeliver(call.api.service, call.principal.actor, delivery_id, call.api.now())
    return call.remember(202, DeliveryOut(**queued).model_dump(mode="json"))
