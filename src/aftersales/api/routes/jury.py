"""The public jury (IN-3): a juror's tasks, the anonymised case, its evidence files, the vote.

A juror never learns the case's id, the parties or the order: tasks are addressed by their own
ids, and everything shown passes through the anonymised view (`service.views.juror_task`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from aftersales.api import reads
from aftersales.api.deps import ApiDep, CallDep, OwnTask, PrincipalDep
from aftersales.api.routing import endpoint
from aftersales.api.schemas import JurorTaskOut, JuryTaskSummary, VoteIn
from aftersales.domain.errors import NotFound
from aftersales.domain.evidence import ALLOWED_MEDIA
from aftersales.domain.types import Role
from aftersales.service import commands as c
from aftersales.service import views
from aftersales.service.commands import Result
from aftersales.store.repository import Repository

router = APIRouter(prefix="/api/v1/jury", tags=["jury"])
J = (Role.JUROR,)


@endpoint(router, "GET", "/tasks", roles=J, response_model=list[JuryTaskSummary],
          summary="The caller's jury tasks, newest first")
def tasks(principal: PrincipalDep, api: ApiDep) -> list[JuryTaskSummary]:
    with api.service.uow(read_only=True) as uow:
        return reads.jury_tasks(uow.repo, principal.sub)


@endpoint(router, "GET", "/tasks/{task_id}", roles=J, response_model=JurorTaskOut,
          summary="The anonymised case of a task: no names, ids, tracking numbers or addresses")
def task(seat: OwnTask, principal: PrincipalDep, api: ApiDep) -> Any:
    with api.service.uow(read_only=True) as uow:
        return views.juror_task(uow.repo, seat["task_id"], principal.sub,
                                api.service.blobs is not None)


@endpoint(router, "GET", "/tasks/{task_id}/evidence/{index}/file", roles=J,
          summary="The file of evidence item `index` of the task's case",
          response_class=FileResponse,
          responses={200: {"description": "The file, typed from its bytes", "content": {
              m: {"schema": {"type": "string", "format": "binary"}} for m in ALLOWED_MEDIA}}})
def task_evidence_file(seat: OwnTask, principal: PrincipalDep, api: ApiDep,
                       index: Annotated[int, Path(ge=1, le=10_000)]) -> FileResponse:
    if api.service.blobs is None:
        raise NotFound("this server has no evidence store")
    with api.service.uow(read_only=True) as uow:
        path, media_type = views.juror_evidence_file(uow.repo, api.service.blobs,
                                                     seat["task_id"], principal.sub, index)
    return FileResponse(path, media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="evidence-{index}"',
        "X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"})


@endpoint(router, "POST", "/tasks/{task_id}/vote", roles=J, response_model=JurorTaskOut,
          summary="Vote for the buyer or the seller, with a reason, once (IN-3)")
def vote(seat: OwnTask, body: VoteIn, call: CallDep) -> object:
    task_id, juror = seat["task_id"], call.principal.sub

    def respond(repo: Repository, _result: Result) -> JurorTaskOut:
        return JurorTaskOut.model_validate(views.juror_task(
            repo, task_id, juror, call.api.service.blobs is not None))

    return call.run(c.Vote(actor=call.principal.actor, case_id=seat["case_id"], side=body.side,
                           reason=body.reason), respond)
