"""After-sales cases: opening, every action of SCENARIOS.md, evidence, rulings, the jury hand-off,
lists and the timeline (CP-2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel

from aftersales.api import reads
from aftersales.api.deps import (
    ALL_ROLES,
    PARTIES_AND_PLATFORM,
    ApiDep,
    Call,
    CallDep,
    IdempotencyKey,
    PrincipalDep,
    VisibleCase,
    visible_order,
)
from aftersales.api.idempotency import check_key
from aftersales.api.pagination import DEFAULT_LIMIT, MAX_LIMIT
from aftersales.api.routing import endpoint
from aftersales.api.schemas import (
    ID_PATTERN,
    AgreeIn,
    CaseOut,
    CasePage,
    CaseResult,
    EvidenceIn,
    EvidenceOut,
    OfferIn,
    OpenCaseIn,
    RejectIn,
    RequestProofIn,
    ResubmitIn,
    RulingIn,
    SendToJuryIn,
    ShipReplacementIn,
    ShipReturnIn,
    StoredFileOut,
    Time,
    TimelineEntry,
)
from aftersales.domain.cases import TRANSITIONS, Action, CaseStatus
from aftersales.domain.durations import parse_duration
from aftersales.domain.errors import InvalidInput, NotFound
from aftersales.domain.evidence import ALLOWED_MEDIA
from aftersales.domain.money import Money
from aftersales.domain.types import CaseType, Reason, Role
from aftersales.service import commands as c
from aftersales.service import views
from aftersales.service.commands import Result
from aftersales.store.blobs import BlobStore
from aftersales.store.repository import Repository

router = APIRouter(prefix="/api/v1", tags=["cases"])
EvidenceId = Annotated[int, Path(ge=1, le=2**31 - 1, examples=[1])]


def roles_for(action: Action) -> tuple[Role, ...]:
    """Who may take `action`, from the case state table (domain/cases.py: TRANSITIONS)."""
    by = frozenset().union(*(t.by for t in TRANSITIONS if t.action is action))
    return tuple(r for r in ALL_ROLES if r in by)


def case_result(repo: Repository, result: Result) -> CaseResult:
    assert result.case_id is not None
    return CaseResult(case=reads.case_out(repo.get_case(result.case_id)),
                      events=reads.events_out(result.events))


def _money(value: str | None, currency: str) -> Money | None:
    return Money.parse(value, currency) if value is not None else None


# -- opening and reading --------------------------------------------------------------------------
@endpoint(router, "POST", "/cases", roles=(Role.BUYER,), status_code=201,
          response_model=CaseResult, summary="Open an after-sales request on an order")
def open_case(body: OpenCaseIn, call: CallDep, api: ApiDep) -> object:
    order = visible_order(body.order, call.principal, api)
    lines = None
    if body.lines is not None:
        chosen = []
        for ln in body.lines:
            if ln.sku is not None:
                line = order.line_by_sku(ln.sku)
            else:
                assert ln.line_no is not None
                line = order.line(ln.line_no)
            chosen.append((line.line_no, ln.qty if ln.qty is not None else line.qty))
        lines = tuple(chosen)
    cmd = c.OpenCase(actor=call.principal.actor, order_id=order.id, type=body.type,
                     reason=body.reason, received=body.received, lines=lines,
                     amount=_money(body.amount, order.currency), description=body.description,
                     case_id=body.id)
    return call.run(cmd, case_result, 201)


@endpoint(router, "GET", "/cases", roles=PARTIES_AND_PLATFORM, response_model=CasePage,
          summary="List cases (a buyer's or seller's own; staff and operators all)")
def list_cases(
        principal: PrincipalDep, api: ApiDep,
        status: Annotated[list[CaseStatus] | None, Query(description="Any of these")] = None,
        seller: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        buyer: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        reason: Reason | None = None,
        type: CaseType | None = None,
        order: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        deadline_before: Annotated[Time | None, Query(
            description="Only cases whose running timer ends before this time")] = None,
        sort: Literal["-opened_at", "opened_at", "deadline"] = "-opened_at",
        cursor: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_-]*$")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT) -> CasePage:
    actor = principal.actor
    if actor.role is Role.BUYER:
        if buyer not in (None, actor.id):
            return CasePage(items=[], next_cursor=None)
        buyer = actor.id
    elif actor.role is Role.SELLER:
        if seller not in (None, actor.id):
            return CasePage(items=[], next_cursor=None)
        seller = actor.id
    with api.service.uow(read_only=True) as uow:
        items, nxt = reads.list_cases(
            uow.repo, sort=sort, cursor=cursor, limit=limit,
            statuses=[s.value for s in status or ()],
            buyer=buyer, seller=seller, reason=reason.value if reason else None,
            case_type=type.value if type else None, order=order,
            deadline_before=deadline_before)
    return CasePage(items=items, next_cursor=nxt)


@endpoint(router, "GET", "/cases/{case_id}", roles=PARTIES_AND_PLATFORM, response_model=CaseOut,
          summary="A case: status, outcome, money, running deadline, intervention state")
async def get_case(case: VisibleCase) -> CaseOut:  # no I/O: no thread hand-off
    return reads.case_out(case)


@endpoint(router, "GET", "/cases/{case_id}/timeline", roles=PARTIES_AND_PLATFORM,
          response_model=list[TimelineEntry],
          summary="The case's event log as the caller may see it (CP-2)")
def timeline(case: VisibleCase, principal: PrincipalDep, api: ApiDep) -> Any:
    with api.service.uow(read_only=True) as uow:
        return views.timeline(uow.repo, case.id, principal.actor)


# -- the parties' actions -------------------------------------------------------------------------
def _action(name: str, build: Callable[..., c.CaseCommand], body_model: type[BaseModel] | None,
            summary: str, action: Action) -> None:
    """Register POST /cases/{case_id}/<name> running the command `build` makes."""
    def without_body(case: VisibleCase, call: CallDep) -> object:
        return call.run(build(call, case, None), case_result)

    def with_body(case: VisibleCase, call: CallDep, body: Any) -> object:
        return call.run(build(call, case, body), case_result)

    def optional_body(case: VisibleCase, call: CallDep, body: Any = None) -> object:
        assert body_model is not None
        return call.run(build(call, case, body if body is not None else body_model()),
                        case_result)

    run: Callable[..., object] = without_body
    if body_model is not None and any(f.is_required() for f in body_model.model_fields.values()):
        run = with_body
        with_body.__annotations__["body"] = body_model  # the request body's model
    elif body_model is not None:  # every field optional: the body may be left out
        run = optional_body
        optional_body.__annotations__["body"] = body_model | None
    run.__name__ = name.replace("-", "_")
    endpoint(router, "POST", f"/cases/{{case_id}}/{name}", roles=roles_for(action),
             response_model=CaseResult, summary=summary)(run)


def _simple(cls: type[c.CaseCommand]) -> Callable[..., c.CaseCommand]:
    def build(call: Call, case: Any, _body: Any) -> c.CaseCommand:
        return cls(actor=call.principal.actor, case_id=case.id)
    return build


_action("agree", lambda call, case, b: c.Agree(
    actor=call.principal.actor, case_id=case.id, return_address=b.return_address),
    AgreeIn, "The seller agrees (RF-2, RF-3, RF-7)", Action.AGREE)
_action("reject", lambda call, case, b: c.Reject(
    actor=call.principal.actor, case_id=case.id, reason=b.reason),
    RejectIn, "The seller rejects, with a reason (RF-1)", Action.REJECT)
_action("offer", lambda call, case, b: c.MakeOffer(
    actor=call.principal.actor, case_id=case.id,
    amount=Money.parse(b.amount, case.amount.currency)),
    OfferIn, "The seller offers a partial refund instead", Action.OFFER)
_action("accept-offer", _simple(c.AcceptOffer), None, "The buyer accepts the offer",
        Action.ACCEPT_OFFER)
_action("decline-offer", _simple(c.DeclineOffer), None, "The buyer declines the offer",
        Action.DECLINE_OFFER)
_action("resubmit", lambda call, case, b: c.Resubmit(
    actor=call.principal.actor, case_id=case.id,
    amount=_money(b.amount, case.amount.currency), description=b.description),
    ResubmitIn, "The buyer changes and resubmits a rejected request", Action.RESUBMIT)
_action("ship-return", lambda call, case, b: c.ShipReturn(
    actor=call.principal.actor, case_id=case.id, carrier=b.carrier, tracking=b.tracking,
    method=b.method), ShipReturnIn, "The buyer ships the goods back (RF-4)", Action.SHIP_RETURN)
_action("confirm-return", _simple(c.ConfirmReturn), None,
        "The seller confirms the returned parcel: the refund is paid (RF-5)",
        Action.CONFIRM_RETURN)
_action("ship-replacement", lambda call, case, b: c.ShipReplacement(
    actor=call.principal.actor, case_id=case.id, carrier=b.carrier, tracking=b.tracking),
    ShipReplacementIn, "The seller ships the replacement or repaired goods (RF-7)",
    Action.SHIP_REPLACEMENT)
_action("confirm-replacement", _simple(c.ConfirmReplacement), None,
        "The buyer confirms receipt of the replacement (RF-7)", Action.CONFIRM_RECEIPT)
_action("withdraw", _simple(c.Withdraw), None, "The buyer withdraws the request",
        Action.WITHDRAW)
_action("escalate", _simple(c.Escalate), None,
        "Bring the case to the platform (IN-1 buyer after a rejection, IN-2 seller from day 15)",
        Action.ESCALATE)


# -- the platform's procedure (IN-3..IN-9) -------------------------------------------------------
def _request_proof(call: Call, case: Any, b: RequestProofIn) -> c.CaseCommand:
    return c.RequestProof(actor=call.principal.actor, case_id=case.id, from_party=b.from_party,
                          due=parse_duration(b.due) if b.due is not None else None)


def _rule(call: Call, case: Any, b: RulingIn) -> c.CaseCommand:
    return c.Rule(actor=call.principal.actor, case_id=case.id, outcome=b.outcome,
                  amount=_money(b.amount, case.amount.currency),
                  return_required=b.return_required, freight_payer=b.freight_payer,
                  seller_responsible=b.seller_responsible, penalty=b.penalty,
                  subjective=b.subjective)


_action("request-proof", _request_proof, RequestProofIn,
        "Staff ask a party to prove its claim by a deadline (IN-4)", Action.REQUEST_PROOF)
_action("ruling", _rule, RulingIn,
        "Staff decide: refund, partial refund or reject; freight, penalty (IN-6, IN-7, IN-9)",
        Action.RULE)


@endpoint(router, "POST", "/cases/{case_id}/send-to-jury", roles=roles_for(Action.SEND_TO_JURY),
          response_model=CaseResult, summary="Staff hand the case to a public jury (IN-3)")
def send_to_jury(case: VisibleCase, call: CallDep, body: SendToJuryIn | None = None) -> object:
    return call.run(c.SendToJury(actor=call.principal.actor, case_id=case.id,
                                 seed=body.seed if body else None), case_result)


# -- evidence (IN-5) ------------------------------------------------------------------------------
@endpoint(router, "GET", "/cases/{case_id}/evidence", roles=PARTIES_AND_PLATFORM,
          response_model=list[EvidenceOut], summary="The case's evidence items, oldest first")
def list_evidence(case: VisibleCase, principal: PrincipalDep, api: ApiDep) -> Any:
    with api.service.uow(read_only=True) as uow:
        return views.case_evidence(uow.repo, case.id, principal.actor)


def _blobs(api: ApiDep) -> BlobStore:
    if api.service.blobs is None:
        raise InvalidInput("this server has no evidence store configured: text only",
                           rule="IN-5")
    return api.service.blobs


BlobsDep = Annotated[BlobStore, Depends(_blobs)]
_BINARY = {"schema": {"type": "string", "format": "binary"}}


@endpoint(router, "POST", "/cases/{case_id}/evidence/files",
          roles=roles_for(Action.SUBMIT_EVIDENCE), status_code=201,
          response_model=StoredFileOut,
          summary="Upload an evidence file (the raw bytes as the body; streamed to disk)",
          description="The file's type is read from its bytes, never from its name or the "
          "Content-Type: JPEG, PNG, GIF, WebP, PDF or plain UTF-8 text. Then cite the returned "
          "sha256 in `POST /cases/{case_id}/evidence`.",
          openapi_extra={"requestBody": {"required": True, "content": {
              "application/octet-stream": _BINARY, **{m: _BINARY for m in ALLOWED_MEDIA}}}})
async def upload_evidence_file(
        request: Request, case: VisibleCase, principal: PrincipalDep, api: ApiDep,
        blobs: BlobsDep, key: IdempotencyKey = None,
        filename: Annotated[str, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f/\\]*$",
                                       description="The file's name, kept for the parties")
                            ] = "") -> JSONResponse:
    stream = request.stream().__aiter__()

    async def next_chunk() -> bytes | None:
        try:
            chunk: bytes = await stream.__anext__()
            return chunk
        except StopAsyncIteration:
            return None

    def chunks() -> Any:
        while (chunk := anyio.from_thread.run(next_chunk)) is not None:
            yield chunk

    stored = await anyio.to_thread.run_sync(blobs.put_stream, chunks())
    call = Call(api, principal, request.method, request.url.path, check_key(key), stored.sha256)
    replayed = await anyio.to_thread.run_sync(call.replay)
    if replayed is not None:
        return replayed
    content = StoredFileOut(sha256=stored.sha256, size=stored.size,
                            media_type=stored.media_type, filename=filename
                            ).model_dump(mode="json")
    return await anyio.to_thread.run_sync(call.remember, 201, content)


def _submit_evidence(call: Call, case: Any, b: EvidenceIn) -> c.CaseCommand:
    file = None
    if b.file is not None:
        blobs = _blobs(call.api)
        if not blobs.exists(b.file.sha256):
            raise NotFound(f"no stored evidence file {b.file.sha256}: upload it first")
        file = c.EvidenceFile(sha256=b.file.sha256, size=blobs.path(b.file.sha256).stat().st_size,
                              media_type=blobs.media_type(b.file.sha256),
                              filename=b.file.filename)
    return c.SubmitEvidence(actor=call.principal.actor, case_id=case.id, kind=b.kind.value,
                            text=b.text, file=file)


@endpoint(router, "POST", "/cases/{case_id}/evidence", roles=roles_for(Action.SUBMIT_EVIDENCE),
          status_code=201, response_model=CaseResult,
          summary="Add an evidence item: text, an uploaded file, or both (IN-5)")
def submit_evidence(case: VisibleCase, call: CallDep, body: EvidenceIn) -> object:
    return call.run(_submit_evidence(call, case, body), case_result, 201)


@endpoint(router, "GET", "/cases/{case_id}/evidence/{evidence_id}/file",
          roles=PARTIES_AND_PLATFORM, summary="Download an evidence item's file",
          response_class=FileResponse,
          responses={200: {"description": "The file, typed from its bytes",
                           "content": {m: _BINARY for m in ALLOWED_MEDIA}}})
def evidence_file(case: VisibleCase, evidence_id: EvidenceId, principal: PrincipalDep,
                  api: ApiDep, blobs: BlobsDep) -> FileResponse:
    with api.service.uow(read_only=True) as uow:
        path, media_type = views.evidence_file(uow.repo, blobs, case.id, evidence_id,
                                               principal.actor)
    return FileResponse(path, media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="evidence-{evidence_id}"',
        "X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"})
