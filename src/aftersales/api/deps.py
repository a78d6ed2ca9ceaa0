"""What every route needs: the app's context, the caller, access checks, and running a command
(with its idempotency record) in one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from aftersales.api import idempotency as idem
from aftersales.api.auth import AuthError, Principal, TokenVerifier
from aftersales.api.observability import Metrics
from aftersales.api.problems import ApiProblem
from aftersales.api.schemas import ID_PATTERN
from aftersales.domain.cases import Case
from aftersales.domain.complaints import Complaint
from aftersales.domain.errors import AftersalesError, NotFound
from aftersales.domain.orders import Order
from aftersales.domain.types import Role
from aftersales.service.commands import Command, Result
from aftersales.service.handlers import Service
from aftersales.settings import Settings
from aftersales.store.repository import Repository

ALL_ROLES = (Role.BUYER, Role.SELLER, Role.STAFF, Role.JUROR, Role.OPERATOR)
PARTIES_AND_PLATFORM = (Role.BUYER, Role.SELLER, Role.STAFF, Role.OPERATOR)
PLATFORM = (Role.STAFF, Role.OPERATOR)


@dataclass
class Api:
    """The app's context: settings, the service, the token verifier, the clock, metrics."""

    settings: Settings
    service: Service
    verifier: TokenVerifier
    clock: Callable[[], datetime]
    metrics: Metrics
    ready: dict[str, Any] = field(default_factory=dict)

    def now(self) -> datetime:
        return self.clock()


# The dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in the
# thread pool, one hand-off per dependency and request.
async def get_api(request: Request) -> Api:
    api: Api = request.app.state.api
    return api


ApiDep = Annotated[Api, Depends(get_api)]
bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="A JWT from the marketplace's identity service (docs/api.md)")


async def current_principal(request: Request, api: ApiDep,
                      credentials: Annotated[HTTPAuthorizationCredentials | None,
                                             Security(bearer)]) -> Principal:
    if credentials is None:
        raise ApiProblem(401, "unauthenticated", "send Authorization: Bearer <token>",
                         headers={"WWW-Authenticate": 'Bearer realm="aftersales"'})
    try:
        principal = api.verifier.verify(credentials.credentials)
    except AuthError as exc:
        raise ApiProblem(401, "unauthenticated", exc.detail, headers={
            "WWW-Authenticate": 'Bearer realm="aftersales", error="invalid_token"'}) from None
    request.state.principal = principal.key
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require(roles: Iterable[Role]) -> Callable[[Principal], Awaitable[Principal]]:
    allowed = frozenset(roles)
    names = ", ".join(r.value for r in ALL_ROLES if r in allowed)

    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in allowed:
            raise ApiProblem(403, "forbidden", f"this endpoint is for {names}; your token's "
                             f"role is {principal.role.value}")
        return principal

    return check


# -- object-level access: another party's object is "not found" -----------------------------------
CaseId = Annotated[str, Path(pattern=ID_PATTERN, examples=["case_1"])]
OrderId = Annotated[str, Path(pattern=ID_PATTERN, examples=["o1001"])]
ComplaintId = Annotated[str, Path(pattern=ID_PATTERN, examples=["cmp_1"])]
SellerId = Annotated[str, Path(pattern=ID_PATTERN, examples=["s1"])]
TaskId = Annotated[str, Path(pattern=ID_PATTERN, examples=["jt_0123456789abcdef0123"])]


def sees(principal: Principal, buyer: str, seller: str) -> bool:
    actor = principal.actor
    return (principal.platform or (actor.role is Role.BUYER and actor.id == buyer)
            or (actor.role is Role.SELLER and actor.id == seller))


def visible_order(order_id: OrderId, principal: PrincipalDep, api: ApiDep) -> Order:
    with api.service.uow(read_only=True) as uow:
        order = uow.repo.get_order(order_id)
    if not sees(principal, order.buyer_id, order.seller_id):
        raise NotFound(f"unknown order {order_id!r}")
    return order


def visible_case(case_id: CaseId, principal: PrincipalDep, api: ApiDep) -> Case:
    with api.service.uow(read_only=True) as uow:
        case = uow.repo.get_case(case_id)
    if not sees(principal, case.buyer_id, case.seller_id):
        raise NotFound(f"unknown case {case_id!r}")
    return case


def visible_complaint(complaint_id: ComplaintId, principal: PrincipalDep,
                      api: ApiDep) -> Complaint:
    with api.service.uow(read_only=True) as uow:
        complaint = uow.repo.get_complaint(complaint_id)
    if not sees(principal, complaint.buyer_id, complaint.seller_id):
        raise NotFound(f"unknown complaint {complaint_id!r}")
    return complaint


async def own_seller(seller_id: SellerId, principal: PrincipalDep) -> str:
    """A seller reads and manages only its own shop; staff and operators any."""
    if principal.platform or (principal.role is Role.SELLER
                              and principal.actor.id == seller_id):
        return seller_id
    raise NotFound(f"unknown seller {seller_id!r}")


def own_task(task_id: TaskId, principal: PrincipalDep, api: ApiDep) -> dict[str, Any]:
    """A juror's own seat (IN-3); any other task is "not found"."""
    with api.service.uow(read_only=True) as uow:
        try:
            seat = uow.repo.seat(task_id)
        except NotFound:
            seat = None
    if seat is None or principal.role is not Role.JUROR or seat["juror_id"] != principal.sub:
        raise NotFound(f"unknown jury task {task_id!r}")
    return seat


VisibleOrder = Annotated[Order, Depends(visible_order)]
VisibleCase = Annotated[Case, Depends(visible_case)]
VisibleComplaint = Annotated[Complaint, Depends(visible_complaint)]
OwnSeller = Annotated[str, Depends(own_seller)]
OwnTask = Annotated[dict[str, Any], Depends(own_task)]


# -- running a command ----------------------------------------------------------------------------
Respond = Callable[[Repository, Result], BaseModel]


@dataclass
class Call:
    """One POST: who calls, with which Idempotency-Key and body."""

    api: Api
    principal: Principal
    method: str
    path: str
    key: str | None
    body_sha256: str

    def idem(self) -> idem.Request | None:
        if self.key is None:
            return None
        return idem.Request(self.principal.key, self.key, self.method, self.path,
                            self.body_sha256)

    def replay(self) -> JSONResponse | None:
        req = self.idem()
        if req is None:
            return None
        with self.api.service.uow(read_only=True) as uow:
            return idem.lookup(uow.repo.conn, req)

    def run(self, cmd: Command, respond: Respond, status: int = 200) -> JSONResponse:
        """Run `cmd` in one transaction: the idempotency lookup first (a stored response is
        returned and nothing runs), then the command, its response (built inside that
        transaction) and the idempotency record, which commit together."""
        req = self.idem()
        now = self.api.now()
        out: dict[str, Any] = {}

        def before(repo: Repository) -> None:
            assert req is not None
            replayed = idem.lookup(repo.conn, req)
            if replayed is not None:
                raise _Replayed(replayed)

        def before_commit(repo: Repository, result: Result) -> None:
            content = respond(repo, result).model_dump(mode="json", by_alias=True)
            if req is not None:
                idem.store(repo.conn, req, status, content, now)
            out["content"] = content

        try:
            self.api.service.handle(cmd, now, before_commit=before_commit,
                                    before=before if req is not None else None)
        except _Replayed as stored:
            return stored.response
        except (AftersalesError, IntegrityError) as exc:
            if req is None:
                raise
            replayed = self.replay()  # a concurrent request with this key committed first
            if replayed is not None:
                return replayed
            if isinstance(exc, IntegrityError):
                raise ApiProblem(409, "idempotency_conflict", f"another request with "
                                 f"{idem.HEADER} {req.key!r} is in progress; retry") from None
            raise
        return JSONResponse(out["content"], status_code=status)

    def remember(self, status: int, content: Any) -> JSONResponse:
        """For a POST that runs no command (an upload): keep its response for the key."""
        req = self.idem()
        if req is not None:
            with self.api.service.uow() as uow:
                try:
                    idem.store(uow.repo.conn, req, status, content, self.api.now())
                    uow.commit()
                except IntegrityError:
                    uow.rollback()
        return JSONResponse(content, status_code=status)


class _Replayed(Exception):
    """Raised inside the command's transaction when the key already has a response."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__("replayed")
        self.response = response


IdempotencyKey = Annotated[str | None, Header(
    alias=idem.HEADER, description="Retries with the same key and body return the first "
    "response without acting again (1-128 printable ASCII characters)",
    examples=["3f7c2b1e-order-o1001"])]


async def json_call(request: Request, api: ApiDep, principal: PrincipalDep,
                    key: IdempotencyKey = None) -> Call:
    checked = idem.check_key(key)
    digest = idem.body_digest(await request.body()) if checked is not None else ""
    return Call(api, principal, request.method, request.url.path, checked, digest)


CallDep = Annotated[Call, Depends(json_call)]
