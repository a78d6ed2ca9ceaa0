"""The platform's side: the staff queue, accounts (jury eligibility), policy packs (read)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from aftersales.api import reads
from aftersales.api.deps import ALL_ROLES, PLATFORM, ApiDep, CallDep
from aftersales.api.routing import endpoint
from aftersales.api.schemas import (
    AccountIn,
    AccountOut,
    PolicyOut,
    PolicySummary,
    QueueItem,
    StoredPolicy,
)
from aftersales.domain.errors import NotFound, PolicyError
from aftersales.domain.types import Role
from aftersales.policy import loader
from aftersales.service import commands as c
from aftersales.service import views
from aftersales.service.commands import Result
from aftersales.store.repository import Repository

router = APIRouter(prefix="/api/v1", tags=["platform"])
PolicyId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,31}$", examples=["taobao"])]
Version = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$",
                              examples=["2026.11.1"])]


@endpoint(router, "GET", "/intervention/queue", roles=PLATFORM, response_model=list[QueueItem],
          summary="Cases the platform holds, next due first (IN-1..IN-9)")
def queue(api: ApiDep, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Any:
    with api.service.uow(read_only=True) as uow:
        return views.intervention_queue(uow.repo, api.now(), limit)


@endpoint(router, "POST", "/accounts", roles=(Role.OPERATOR,), status_code=201,
          response_model=AccountOut,
          summary="Register or update an account (what jury eligibility looks at, IN-3)")
def register_account(body: AccountIn, call: CallDep) -> object:
    def respond(_repo: Repository, _result: Result) -> AccountOut:
        return AccountOut(id=body.id, registered_at=body.registered_at, verified=body.verified,
                          standing=body.standing)

    return call.run(c.RegisterUser(actor=call.principal.actor, user_id=body.id,
                                   registered_at=body.registered_at, verified=body.verified,
                                   standing=body.standing), respond, 201)


def _pack(policy_id: str) -> Any:
    if policy_id not in loader.BUILTIN:
        raise NotFound(f"unknown policy pack {policy_id!r}")
    try:
        return loader.load(policy_id)
    except PolicyError as exc:  # a broken pack file: the server's problem, reported as such
        raise NotFound(f"policy pack {policy_id!r} cannot be loaded: {exc}") from None


@endpoint(router, "GET", "/policies", roles=ALL_ROLES, response_model=list[PolicySummary],
          summary="The built-in policy packs and their current versions")
def policies() -> list[PolicySummary]:
    out = []
    for pid in loader.BUILTIN:
        pack = _pack(pid)
        out.append(PolicySummary(id=pack.id, version=pack.version, currency=pack.currency,
                                 timezone=str(pack.zone)))
    return out


@endpoint(router, "GET", "/policies/{policy_id}", roles=ALL_ROLES, response_model=PolicyOut,
          summary="A pack's current version: every number of RULES.md (docs/policy.md)")
def policy(policy_id: PolicyId) -> PolicyOut:
    pack = _pack(policy_id)
    return PolicyOut(id=pack.id, version=pack.version, body=loader.to_dict(pack))


@endpoint(router, "GET", "/policies/{policy_id}/versions", roles=ALL_ROLES,
          response_model=list[StoredPolicy],
          summary="The versions cases and orders are pinned to (stored on first use)")
def policy_versions(policy_id: PolicyId, api: ApiDep) -> Any:
    with api.service.uow(read_only=True) as uow:
        return reads.stored_policies(uow.repo, policy_id)


@endpoint(router, "GET", "/policies/{policy_id}/versions/{version}", roles=ALL_ROLES,
          response_model=PolicyOut, summary="A stored (pinned) version of a pack")
def policy_version(policy_id: PolicyId, version: Version, api: ApiDep) -> PolicyOut:
    with api.service.uow(read_only=True) as uow:
        pack = uow.repo.get_policy(policy_id, version)
    return PolicyOut(id=pack.id, version=pack.version, body=loader.to_dict(pack))
