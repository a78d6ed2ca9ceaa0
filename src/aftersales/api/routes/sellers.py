"""A seller's view: the inbox (nearest deadline first), the to-do list, the record (SR-1) and
stock (SH-7). A seller sees only its own shop; staff and operators any."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from aftersales.api import reads
from aftersales.api.deps import ApiDep, CallDep, OwnSeller, PrincipalDep
from aftersales.api.pagination import DEFAULT_LIMIT, MAX_LIMIT
from aftersales.api.routing import endpoint
from aftersales.api.schemas import CasePage, SellerRecordOut, StockIn, StockOut, Time, TodoOut
from aftersales.domain.errors import InvalidInput
from aftersales.domain.types import Role
from aftersales.service import commands as c
from aftersales.service import queries, views
from aftersales.service.commands import Result
from aftersales.store.repository import Repository

router = APIRouter(prefix="/api/v1/sellers", tags=["sellers"])
SELLER_AND_PLATFORM = (Role.SELLER, Role.STAFF, Role.OPERATOR)


@endpoint(router, "GET", "/{seller_id}/inbox", roles=SELLER_AND_PLATFORM,
          response_model=CasePage,
          summary="Cases waiting on the seller, nearest deadline first")
def inbox(seller_id: OwnSeller, api: ApiDep,
          deadline_before: Annotated[Time | None, Query()] = None,
          cursor: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_-]*$")] = None,
          limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT) -> CasePage:
    with api.service.uow(read_only=True) as uow:
        items, nxt = reads.list_cases(uow.repo, sort="deadline", cursor=cursor, limit=limit,
                                      seller=seller_id, deadline_before=deadline_before,
                                      seller_moves=True)
    return CasePage(items=items, next_cursor=nxt)


@endpoint(router, "GET", "/{seller_id}/todo", roles=SELLER_AND_PLATFORM, response_model=TodoOut,
          summary="What the seller must ship, prepare and answer, and what is at risk")
def todo(seller_id: OwnSeller, api: ApiDep,
         hours: Annotated[int, Query(ge=1, le=24 * 30, description="At-risk horizon")] = 24
         ) -> Any:
    with api.service.uow(read_only=True) as uow:
        return queries.seller_todo(uow.repo, seller_id, api.now(), hours)


@endpoint(router, "GET", "/{seller_id}/record", roles=SELLER_AND_PLATFORM,
          response_model=SellerRecordOut,
          summary="The seller's record (SR-1, IN-8, SR-3) over [from, to), all time without")
def record(seller_id: OwnSeller, api: ApiDep,
           start: Annotated[Time | None, Query(alias="from")] = None,
           end: Annotated[Time | None, Query(alias="to")] = None) -> Any:
    if start is not None and end is not None and start >= end:
        raise InvalidInput("from must be before to")
    currency = api.service.policies.current(None).currency
    with api.service.uow(read_only=True) as uow:
        return views.seller_report(uow.repo, seller_id, start, end, currency)


@endpoint(router, "GET", "/{seller_id}/stock", roles=SELLER_AND_PLATFORM,
          response_model=StockOut, summary="In-stock quantities (a sku not listed is unlimited)")
def stock(seller_id: OwnSeller, api: ApiDep) -> StockOut:
    with api.service.uow(read_only=True) as uow:
        return StockOut(seller=seller_id, stock=uow.repo.stock_of(seller_id))


@endpoint(router, "POST", "/{seller_id}/stock", roles=(Role.SELLER, Role.OPERATOR),
          response_model=StockOut, summary="Set a sku's in-stock quantity (SH-7)")
def set_stock(seller_id: OwnSeller, body: StockIn, call: CallDep,
              principal: PrincipalDep) -> object:
    def respond(repo: Repository, _result: Result) -> StockOut:
        return StockOut(seller=seller_id, stock=repo.stock_of(seller_id))

    return call.run(c.SetStock(actor=principal.actor, seller_id=seller_id, sku=body.sku,
                               quantity=body.quantity), respond)
