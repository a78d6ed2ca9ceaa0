"""Complaints about a shop (CP-1): filed by the buyer, answered by the seller, decided by staff."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from aftersales.api import reads
from aftersales.api.deps import (
    PARTIES_AND_PLATFORM,
    ApiDep,
    CallDep,
    PrincipalDep,
    VisibleComplaint,
    visible_order,
)
from aftersales.api.pagination import DEFAULT_LIMIT, MAX_LIMIT
from aftersales.api.routing import endpoint
from aftersales.api.schemas import (
    ID_PATTERN,
    AnswerComplaintIn,
    ComplainIn,
    ComplaintOut,
    ComplaintPage,
    ComplaintResult,
    ResolveComplaintIn,
    TimelineEntry,
)
from aftersales.domain.types import Role
from aftersales.service import commands as c
from aftersales.service import views
from aftersales.service.commands import Result
from aftersales.store.repository import Repository

router = APIRouter(prefix="/api/v1", tags=["complaints"])


def _result(repo: Repository, result: Result) -> ComplaintResult:
    assert result.complaint_id is not None
    return ComplaintResult(complaint=reads.complaint_out(repo, result.complaint_id),
                           events=reads.events_out(result.events))


@endpoint(router, "POST", "/complaints", roles=(Role.BUYER,), status_code=201,
          response_model=ComplaintResult, summary="Complain about the shop of an order (CP-1)")
def complain(body: ComplainIn, call: CallDep, api: ApiDep) -> object:
    order = visible_order(body.order, call.principal, api)
    return call.run(c.Complain(actor=call.principal.actor, order_id=order.id, kind=body.kind,
                               text=body.text), _result, 201)


@endpoint(router, "GET", "/complaints", roles=PARTIES_AND_PLATFORM, response_model=ComplaintPage,
          summary="List complaints (a buyer's or seller's own; staff and operators all)")
def list_complaints(
        principal: PrincipalDep, api: ApiDep,
        status: Literal["open", "upheld", "dismissed"] | None = None,
        order: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        cursor: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_-]*$")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT) -> ComplaintPage:
    actor = principal.actor
    buyer = actor.id if actor.role is Role.BUYER else None
    seller = actor.id if actor.role is Role.SELLER else None
    with api.service.uow(read_only=True) as uow:
        items, nxt = reads.list_complaints(uow.repo, cursor=cursor, limit=limit, buyer=buyer,
                                           seller=seller, status=status, order=order)
    return ComplaintPage(items=items, next_cursor=nxt)


@endpoint(router, "GET", "/complaints/{complaint_id}", roles=PARTIES_AND_PLATFORM,
          response_model=ComplaintOut, summary="A complaint")
def get_complaint(complaint: VisibleComplaint, api: ApiDep) -> ComplaintOut:
    with api.service.uow(read_only=True) as uow:
        return reads.complaint_out(uow.repo, complaint.id)


@endpoint(router, "GET", "/complaints/{complaint_id}/timeline", roles=PARTIES_AND_PLATFORM,
          response_model=list[TimelineEntry], summary="The complaint's log (CP-2)")
def complaint_timeline(complaint: VisibleComplaint, principal: PrincipalDep,
                       api: ApiDep) -> Any:
    with api.service.uow(read_only=True) as uow:
        return views.complaint_timeline(uow.repo, complaint.id, principal.actor)


@endpoint(router, "POST", "/complaints/{complaint_id}/answer", roles=(Role.SELLER,),
          response_model=ComplaintResult, summary="The seller contests the complaint, once")
def answer(complaint: VisibleComplaint, body: AnswerComplaintIn, call: CallDep) -> object:
    return call.run(c.AnswerComplaint(actor=call.principal.actor, complaint_id=complaint.id,
                                      text=body.text), _result)


@endpoint(router, "POST", "/complaints/{complaint_id}/resolve", roles=(Role.STAFF,),
          response_model=ComplaintResult,
          summary="Staff uphold (optionally with penalty points) or dismiss the complaint")
def resolve(complaint: VisibleComplaint, body: ResolveComplaintIn, call: CallDep) -> object:
    return call.run(c.ResolveComplaint(actor=call.principal.actor, complaint_id=complaint.id,
                                       upheld=body.upheld, text=body.text,
                                       penalty=body.penalty), _result)
