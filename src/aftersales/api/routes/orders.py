"""Orders, shipments and carrier tracking events, out of stock, violations, ratings."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from aftersales.api import reads
from aftersales.api.deps import (
    PARTIES_AND_PLATFORM,
    ApiDep,
    CallDep,
    PrincipalDep,
    VisibleOrder,
)
from aftersales.api.pagination import DEFAULT_LIMIT, MAX_LIMIT
from aftersales.api.problems import ApiProblem
from aftersales.api.routing import endpoint
from aftersales.api.schemas import (
    ID_PATTERN,
    DisputeViolationIn,
    OrderOut,
    OrderPage,
    OrderResult,
    OutOfStockChoiceIn,
    OutOfStockIn,
    PlaceOrderIn,
    RatingIn,
    ReplyIn,
    ScansIn,
    ScansResult,
    ShipIn,
    ShipmentOut,
    Time,
)
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import SYSTEM, OrderStatus, Role
from aftersales.service import commands as c
from aftersales.service.commands import Result
from aftersales.store.repository import Repository

router = APIRouter(prefix="/api/v1", tags=["orders"])
B, S, OP = (Role.BUYER,), (Role.SELLER,), (Role.OPERATOR,)
FUTURE_SKEW = timedelta(minutes=5)  # a scan's own time may run this far ahead of the server


def _order_result(repo: Repository, result: Result) -> OrderResult:
    assert result.order_id is not None
    return OrderResult(order=reads.order_out(repo, repo.get_order(result.order_id)),
                       events=reads.events_out(result.events))


@endpoint(router, "POST", "/orders", roles=B, status_code=201, response_model=OrderResult,
          summary="Place a paid order (the caller is the buyer)")
def place_order(body: PlaceOrderIn, call: CallDep, api: ApiDep) -> object:
    currency = api.service.policies.current(body.policy).currency
    lines = tuple(LineSpec(
        sku=ln.sku, qty=ln.qty, unit_price=Money.parse(ln.unit_price, currency), title=ln.title,
        paid=Money.parse(ln.paid, currency) if ln.paid is not None else None,
        no_reason_7d=ln.no_reason_7d, category=ln.category, warranty_days=ln.warranty_days,
        warranty_kind=ln.warranty_kind, weight_g=ln.weight_g) for ln in body.lines)
    cmd = c.PlaceOrder(actor=call.principal.actor, seller_id=body.seller, mode=body.mode,
                       lines=lines, order_id=body.id, ship_by=body.ship_by,
                       ship_to_city=body.ship_to_city, policy_id=body.policy)
    return call.run(cmd, _order_result, 201)


@endpoint(router, "GET", "/orders", roles=PARTIES_AND_PLATFORM, response_model=OrderPage,
          summary="List orders (a buyer's or seller's own; staff and operators all)")
def list_orders(
        principal: PrincipalDep, api: ApiDep,
        status: Annotated[list[OrderStatus] | None, Query(description="Any of these")] = None,
        seller: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        buyer: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        deadline_before: Annotated[Time | None, Query(
            description="Only orders whose next deadline is before this time")] = None,
        sort: Literal["-placed_at", "placed_at", "next_deadline"] = "-placed_at",
        cursor: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_-]*$")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT) -> OrderPage:
    actor = principal.actor
    if actor.role is Role.BUYER:
        if buyer not in (None, actor.id):
            return OrderPage(items=[], next_cursor=None)
        buyer = actor.id
    elif actor.role is Role.SELLER:
        if seller not in (None, actor.id):
            return OrderPage(items=[], next_cursor=None)
        seller = actor.id
    with api.service.uow(read_only=True) as uow:
        items, nxt = reads.list_orders(uow.repo, sort=sort, cursor=cursor, limit=limit,
                                       statuses=[s.value for s in status or ()], buyer=buyer,
                                       seller=seller, deadline_before=deadline_before)
    return OrderPage(items=items, next_cursor=nxt)


@endpoint(router, "GET", "/orders/{order_id}", roles=PARTIES_AND_PLATFORM,
          response_model=OrderOut, summary="An order, its lines, violations and compensation")
def get_order(order: VisibleOrder, api: ApiDep) -> OrderOut:
    with api.service.uow(read_only=True) as uow:
        return reads.order_out(uow.repo, order)


@endpoint(router, "POST", "/orders/{order_id}/shipments", roles=S, status_code=201,
          response_model=OrderResult, summary="Ship the order: upload the tracking number")
def ship(order: VisibleOrder, body: ShipIn, call: CallDep) -> object:
    return call.run(c.Ship(actor=call.principal.actor, order_id=order.id, carrier=body.carrier,
                           tracking=body.tracking, weight_g=body.weight_g), _order_result, 201)


@endpoint(router, "GET", "/orders/{order_id}/shipments", roles=PARTIES_AND_PLATFORM,
          response_model=list[ShipmentOut],
          summary="The order's parcels (outbound, return, replacement) and their scans")
def shipments(order: VisibleOrder, api: ApiDep) -> list[ShipmentOut]:
    with api.service.uow(read_only=True) as uow:
        return reads.shipments_of(uow.repo, order.id)


@endpoint(router, "POST", "/tracking-events", roles=OP, response_model=ScansResult,
          summary="Carrier scans (the carrier feed): all apply, in time order, or none")
def tracking_events(body: ScansIn, call: CallDep, api: ApiDep) -> object:
    now = api.now()
    at = []
    for n, scan in enumerate(body.scans):
        when = scan.at or now
        if when > now + FUTURE_SKEW:
            raise ApiProblem(422, "invalid_input", f"scans.{n}.at: a scan cannot be in the "
                             "future")
        at.append(when)
    cmd = c.ImportScans(actor=SYSTEM, scans=tuple(
        c.RecordScan(actor=SYSTEM, tracking=s.tracking, event=s.event, city=s.city)
        for s in body.scans), at=tuple(at))
    return call.run(cmd, lambda repo, result: _scans_result(repo, result, len(body.scans)))


def _scans_result(repo: Repository, result: Result, applied: int) -> ScansResult:
    """The orders the scans touched (first touched first), and every event they produced."""
    order_ids = dict.fromkeys(e.aggregate_id for e in result.events if e.aggregate == "order")
    return ScansResult(applied=applied,
                       orders=[reads.order_out(repo, repo.get_order(oid)) for oid in order_ids],
                       events=reads.events_out(result.events))


@endpoint(router, "POST", "/orders/{order_id}/confirm-receipt", roles=B,
          response_model=OrderResult, summary="The buyer confirms receipt (AS-4)")
def confirm_receipt(order: VisibleOrder, call: CallDep) -> object:
    return call.run(c.ConfirmReceipt(actor=call.principal.actor, order_id=order.id),
                    _order_result)


@endpoint(router, "POST", "/orders/{order_id}/out-of-stock", roles=S,
          response_model=OrderResult, summary="Declare paid lines out of stock (OS-1)")
def declare_out_of_stock(order: VisibleOrder, body: OutOfStockIn, call: CallDep) -> object:
    return call.run(c.DeclareOutOfStock(actor=call.principal.actor, order_id=order.id,
                                        lines=tuple(body.lines) if body.lines else None),
                    _order_result)


@endpoint(router, "POST", "/orders/{order_id}/out-of-stock/choice", roles=B,
          response_model=OrderResult,
          summary="The buyer chooses: substitute, wait (new ship-by) or cancel (OS-2, OS-3)")
def choose(order: VisibleOrder, body: OutOfStockChoiceIn, call: CallDep) -> object:
    return call.run(c.ChooseOutOfStockOption(actor=call.principal.actor, order_id=order.id,
                                             option=body.option, sku=body.sku,
                                             ship_by=body.ship_by), _order_result)


@endpoint(router, "POST", "/orders/{order_id}/violations/{name}/dispute", roles=S,
          response_model=OrderResult, summary="Contest a detected violation (SH-5)")
def dispute_violation(order: VisibleOrder, body: DisputeViolationIn, call: CallDep,
                      name: Annotated[str, Path(pattern=r"^[a-z_]{1,32}$",
                                                examples=["fake_shipment"])]) -> object:
    return call.run(c.DisputeViolation(actor=call.principal.actor, order_id=order.id, name=name,
                                       reason=body.reason), _order_result)


@endpoint(router, "POST", "/orders/{order_id}/rating", roles=B, status_code=201,
          response_model=OrderResult, summary="Rate a completed order, once (SR-3)")
def rate(order: VisibleOrder, body: RatingIn, call: CallDep) -> object:
    return call.run(c.RateOrder(actor=call.principal.actor, order_id=order.id, stars=body.stars,
                                comment=body.comment), _order_result, 201)


@endpoint(router, "POST", "/orders/{order_id}/rating/reply", roles=S,
          response_model=OrderResult, summary="The seller replies to the rating, once (SR-3)")
def reply(order: VisibleOrder, body: ReplyIn, call: CallDep) -> object:
    return call.run(c.ReplyToRating(actor=call.principal.actor, order_id=order.id,
                                    text=body.text), _order_result)


@endpoint(router, "POST", "/orders/{order_id}/remind", roles=S, response_model=OrderResult,
          summary="Remind the buyer to confirm receipt, once, a week after delivery (SR-2)")
def remind(order: VisibleOrder, call: CallDep) -> object:
    return call.run(c.RemindBuyer(actor=call.principal.actor, order_id=order.id),
                    _order_result)
