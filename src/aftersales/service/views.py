"""Who sees what of a case: the juror's anonymised task (IN-3), the parties' evidence and full
timeline (CP-2), and the staff's intervention queue ordered by what is due next.

Pure reads on a `Repository`; nothing here writes or commits. Access is decided here, once:
a viewer who may not see a case gets `NotFound` with the same message as for a case that does
not exist, so a refusal never confirms that another party's case exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from aftersales.domain import codec, jury
from aftersales.domain.cases import INTERVENTION, Case, CaseStatus
from aftersales.domain.errors import NotFound, NotSupported
from aftersales.domain.money import Money
from aftersales.domain.types import Actor, Event, Role
from aftersales.service.queries import seller_record
from aftersales.store import tables as t
from aftersales.store.blobs import BlobStore
from aftersales.store.repository import Repository

_PLATFORM_ROLES = frozenset({Role.STAFF, Role.OPERATOR})  # may see every case
# Case-log keys whose values identify a party, a parcel or an address (IN-3: redacted for jurors)
_IDENTIFYING_KEYS = frozenset({"id", "order_id", "buyer_id", "seller_id", "return_address",
                               "return_tracking", "replacement_tracking", "tracking",
                               "tracking_no"})
# What a party said at a step of the case (the request, a resubmission, a rejection's reason)
_STATEMENTS = ("description", "rejection_reason")
# What a juror's timeline calls each role: no names, only the part each plays in the case.
_JUROR_LABELS = {Role.BUYER: "buyer", Role.SELLER: "seller", Role.STAFF: "staff",
                 Role.JUROR: "juror", Role.OPERATOR: "platform", Role.SYSTEM: "platform"}


def _iso(value: datetime | None, tz: tzinfo | None) -> str | None:
    if value is None:
        return None
    return (value.astimezone(tz) if tz is not None else value).isoformat()


def _hours(delta: timedelta) -> int:
    return int(delta.total_seconds() // 3600)


def _no_case(case_id: str) -> NotFound:
    return NotFound(f"unknown case {case_id!r}")  # exactly what `Repository.get_case` says


# -- access ------------------------------------------------------------------------------------
def _is_party(case_buyer: str, case_seller: str, viewer: Actor) -> bool:
    return ((viewer.role is Role.BUYER and viewer.id == case_buyer)
            or (viewer.role is Role.SELLER and viewer.id == case_seller))


def _case_for(repo: Repository, case_id: str, viewer: Actor) -> Case:
    """The case when `viewer` is its buyer or seller, or platform staff / an operator; else
    NotFound, as if the case did not exist (CP-2)."""
    try:
        case = repo.get_case(case_id)
    except NotFound:
        raise _no_case(case_id) from None
    if viewer.role in _PLATFORM_ROLES or _is_party(case.buyer_id, case.seller_id, viewer):
        return case
    raise _no_case(case_id)


def _seat_for(repo: Repository, task_id: str, juror_id: str) -> dict[str, Any]:
    """The jury seat of this task when it is `juror_id`'s; NotFound otherwise (IN-3)."""
    try:
        seat = repo.seat(task_id)
    except NotFound:
        seat = None
    if seat is None or seat["juror_id"] != juror_id:
        raise NotFound(f"unknown jury task {task_id!r}")
    return seat


# -- the juror's task (IN-3) -------------------------------------------------------------------
def _strings(value: Any) -> Iterable[str]:
    """Every string inside a decoded change value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _secrets(repo: Repository, case: Case, events: Sequence[Event],
             evidence: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every string that identifies a party, a parcel or a person of the platform: the parties,
    the order and the case, every tracking number (outbound, return, replacement), every return
    address the case ever had, evidence file names, the jurors and the staff who acted."""
    found: set[str] = {case.id, case.order_id, case.buyer_id, case.seller_id, *case.jury_panel}
    for value in (case.return_address, case.return_tracking, case.replacement_tracking):
        if value:
            found.add(value)
    order_tracking = repo.conn.execute(select(t.orders.c.tracking_no).where(
        t.orders.c.id == case.order_id)).scalar_one_or_none()
    if order_tracking:
        found.add(order_tracking)
    found.update(trk for (trk,) in repo.conn.execute(select(t.shipments.c.tracking_no).where(
        t.shipments.c.order_id == case.order_id)) if trk)
    found.update(j for (j,) in repo.conn.execute(select(t.jury_seats.c.juror_id).where(
        t.jury_seats.c.case_id == case.id)))
    for event in events:
        if event.actor.role is not Role.SYSTEM:
            found.add(event.actor.id)
        for key, value in event.changes.items():
            if key in _IDENTIFYING_KEYS:
                found.update(_strings(value))
            elif key == "evidence" and isinstance(value, Mapping) and value.get("filename"):
                found.add(str(value["filename"]))
    found.update(str(row["filename"]) for row in evidence if row.get("filename"))
    return sorted(s for s in found if s)


def juror_task(repo: Repository, task_id: str, juror_id: str, blobs_present: bool,
               tz: tzinfo | None = None) -> dict[str, Any]:
    """What juror `juror_id` sees of the case behind `task_id` (IN-3): the dispute without any
    name, id, tracking number, address or file name; times relative to the opening of the case
    (the vote deadline excepted). NotFound when the task is not this juror's.

    Evidence items carry an `index`, which `juror_evidence_file` takes to fetch the file through
    the task; `blobs_present` says whether files can be fetched at all (an evidence store is
    configured). Every string passes through `jury.redact`."""
    seat = _seat_for(repo, task_id, juror_id)
    case = repo.get_case(seat["case_id"])
    events = repo.case_events(case.id)
    evidence = repo.evidence_of(case.id)
    secrets = _secrets(repo, case, events, evidence)
    opened = case.opened_at

    def since_opening(at: datetime) -> dict[str, int]:
        hours = _hours(at - opened)
        return {"day": hours // 24, "hours_since_opening": hours}

    escalated = next((e for e in events if e.name == "CaseEscalated"), None)
    steps = []
    for event in events:
        if event.name == "JurorVoted":
            continue  # each juror votes on the case, not on the other votes (IN-3)
        status = event.changes.get("status")
        said = next((event.changes[k] for k in _STATEMENTS if event.changes.get(k)), None)
        steps.append({**since_opening(event.at), "by": _JUROR_LABELS[event.actor.role],
                      "event": event.name, "rule": event.rule,
                      "status": str(status) if status is not None else None,
                      "statement": str(said) if said is not None else None})
    items = []
    for index, row in enumerate(evidence, start=1):
        file = None
        if row["sha256"]:
            file = {"media_type": row["media_type"], "size": row["size"],
                    "available": blobs_present}
        items.append({"index": index, "party": row["party"], "kind": row["kind"],
                      "text": row["text"], **since_opening(row["at"]), "file": file})
    voting = case.status is CaseStatus.JURY_VOTING
    view: dict[str, Any] = {
        "task": task_id,
        "case": {
            "type": case.type.value, "reason": case.reason.value,
            "amount": str(case.amount), "currency": case.amount.currency,
            "received": case.received, "after_completion": case.after_completion,
            "description": case.description, "rejection_reason": case.rejection_reason,
            "escalated_by": case.escalated_by,
            "escalated_day": (_hours(escalated.at - opened) // 24) if escalated else None,
            "days_open_when_drawn": _hours(seat["drawn_at"] - opened) // 24,
            "status": case.status.value,
        },
        "timeline": steps,
        "evidence": items,
        "vote": {
            "open": voting,
            "deadline": _iso(case.deadline, tz) if voting else None,
            "panel_size": len(case.jury_panel),
            "voted": seat["voted_at"] is not None,
            "side": seat["side"],
            "reason": seat["reason"],
        },
    }
    anonymous: dict[str, Any] = jury.anonymised(view, secrets)
    return anonymous


def juror_evidence_file(repo: Repository, blobs: BlobStore, task_id: str, juror_id: str,
                        index: int) -> tuple[Path, str]:
    """The file of evidence item `index` (as `juror_task` numbers them) of the task's case, and
    its media type sniffed again from the stored bytes. NotFound when the task is not this
    juror's, the item does not exist or has no file."""
    seat = _seat_for(repo, task_id, juror_id)
    evidence = repo.evidence_of(seat["case_id"])
    if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= len(evidence):
        raise NotFound(f"jury task {task_id!r} has no evidence item {index!r}")
    sha = evidence[index - 1]["sha256"]
    if not sha:
        raise NotFound(f"evidence item {index} of jury task {task_id!r} has no file")
    return blobs.path(sha), blobs.media_type(sha)


# -- the parties' evidence (IN-5) --------------------------------------------------------------
def case_evidence(repo: Repository, case_id: str, viewer: Actor,
                  tz: tzinfo | None = None) -> list[dict[str, Any]]:
    """Every evidence item of the case, oldest first: for its buyer and seller, and for staff
    and operators. Anyone else gets NotFound, as for a case that does not exist."""
    case = _case_for(repo, case_id, viewer)
    return [{"id": row["id"], "seq": row["seq"], "party": row["party"], "kind": row["kind"],
             "text": row["text"], "at": _iso(row["at"], tz),
             "file": None if not row["sha256"] else {
                 "sha256": row["sha256"], "size": row["size"], "media_type": row["media_type"],
                 "filename": row["filename"]}}
            for row in repo.evidence_of(case.id)]


def evidence_file(repo: Repository, blobs: BlobStore, case_id: str, evidence_id: int | str,
                  viewer: Actor) -> tuple[Path, str]:
    """The stored file of evidence item `evidence_id` of case `case_id` and its media type,
    sniffed again from the bytes (never taken from the file name). NotFound when the viewer may
    not see the case, or the item is not this case's or has no file."""
    case = _case_for(repo, case_id, viewer)
    try:
        wanted = int(evidence_id)
    except (TypeError, ValueError):
        raise NotFound(f"case {case_id!r} has no evidence {evidence_id!r}") from None
    ev = t.evidence
    sha = repo.conn.execute(select(ev.c.sha256).where(
        ev.c.id == wanted, ev.c.case_id == case.id)).scalar_one_or_none()
    if not sha:
        raise NotFound(f"case {case_id!r} has no evidence file {evidence_id!r}")
    return blobs.path(sha), blobs.media_type(sha)


# -- timelines (CP-2) --------------------------------------------------------------------------
def _actor_label(actor: Actor, platform_viewer: bool) -> str:
    """Staff see who acted; parties see the other party and the system, and only the role of
    staff, operators and jurors (IN-3: a juror is anonymous to the parties)."""
    if platform_viewer or actor.role in (Role.BUYER, Role.SELLER, Role.SYSTEM):
        return str(actor)
    return actor.role.value


def _masked_changes(changes: Any) -> Any:
    """A party's copy of an entry's changes: jurors' ids replaced by "juror"."""
    if not isinstance(changes, dict):
        return changes
    out = dict(changes)
    if isinstance(out.get("jury_panel"), list):
        out["jury_panel"] = ["juror" for _ in out["jury_panel"]]
    if isinstance(out.get("jury_votes"), list):
        out["jury_votes"] = [["juror", vote[1] if isinstance(vote, list) and len(vote) > 1
                              else None] for vote in out["jury_votes"]]
    return out


def _entries(events: Sequence[Event], platform_viewer: bool, hidden: Sequence[str],
             tz: tzinfo | None) -> list[dict[str, Any]]:
    out = []
    for seq, event in enumerate(events, start=1):
        changes = codec.encode(event.changes)
        if not platform_viewer:
            changes = jury.anonymised(_masked_changes(changes), hidden)
            if isinstance(changes, dict) and isinstance(changes.get("resolved_by"), str):
                changes["resolved_by"] = _actor_label(Actor.parse(changes["resolved_by"]),
                                                      platform_viewer)
        out.append({"seq": seq, "name": event.name, "at": _iso(event.at, tz),
                    "rule": event.rule, "actor": _actor_label(event.actor, platform_viewer),
                    "changes": changes})
    return out


def timeline(repo: Repository, case_id: str, viewer: Actor,
             tz: tzinfo | None = None) -> list[dict[str, Any]]:
    """CP-2: every entry of the case log (name, time, rule, who, what changed) for the case's
    buyer and seller and for staff / operators; anyone else gets NotFound. For the parties,
    jurors and staff are named by role only."""
    case = _case_for(repo, case_id, viewer)
    events = repo.case_events(case.id)
    platform_viewer = viewer.role in _PLATFORM_ROLES
    hidden: list[str] = []
    if not platform_viewer:
        hidden = sorted({*case.jury_panel, *(e.actor.id for e in events
                                             if e.actor.role in (Role.JUROR, Role.STAFF,
                                                                 Role.OPERATOR))}
                        - {case.buyer_id, case.seller_id})
    return _entries(events, platform_viewer, hidden, tz)


def complaint_timeline(repo: Repository, complaint_id: str, viewer: Actor,
                       tz: tzinfo | None = None) -> list[dict[str, Any]]:
    """CP-2: a complaint's log for the buyer and seller of its order and for staff / operators;
    anyone else gets NotFound, as for a complaint that does not exist."""
    unknown = NotFound(f"unknown complaint {complaint_id!r}")
    try:
        complaint = repo.get_complaint(complaint_id)
    except NotFound:
        raise unknown from None
    platform_viewer = viewer.role in _PLATFORM_ROLES
    if not platform_viewer and not _is_party(complaint.buyer_id, complaint.seller_id, viewer):
        raise unknown
    events = repo.complaint_events(complaint.id)
    hidden: list[str] = []
    if not platform_viewer:
        hidden = sorted({e.actor.id for e in events if e.actor.role in _PLATFORM_ROLES}
                        - {complaint.buyer_id, complaint.seller_id})
    return _entries(events, platform_viewer, hidden, tz)


# -- the staff's queue (IN-1..IN-9) ------------------------------------------------------------
def intervention_queue(repo: Repository, now: datetime, limit: int = 100,
                       tz: tzinfo | None = None) -> list[dict[str, Any]]:
    """Cases the platform holds (in intervention, awaiting proof, jury voting), the next due
    first: the running timer (proof window, vote window) or, while the case waits for a ruling,
    the staff's target (`staff_due`, kind "staff_ruling")."""
    cs = t.cases
    due = func.coalesce(cs.c.deadline, cs.c.staff_due)
    rows = repo.conn.execute(
        select(cs.c.id, cs.c.order_id, cs.c.type, cs.c.reason, cs.c.status, cs.c.amount,
               cs.c.currency, cs.c.escalated_by, cs.c.deadline, cs.c.deadline_kind,
               cs.c.staff_due, cs.c.proof_from, cs.c.proof_requests, cs.c.jury_panel,
               cs.c.jury_votes, cs.c.buyer_evidence, cs.c.seller_evidence)
        .where(cs.c.status.in_(sorted(s.value for s in INTERVENTION)))
        .order_by(due.is_(None), due, cs.c.id)
        .limit(limit)).mappings()
    out = []
    for row in rows:
        waiting_on_staff = row["deadline"] is None
        when = row["staff_due"] if waiting_on_staff else row["deadline"]
        votes = [str(side) for _, side in row["jury_votes"] or ()]
        out.append({
            "case": row["id"], "order": row["order_id"], "type": row["type"],
            "reason": row["reason"], "status": row["status"],
            "amount": str(Money(row["amount"], row["currency"])),
            "escalated_by": row["escalated_by"], "due": _iso(when, tz),
            "due_kind": "staff_ruling" if waiting_on_staff else row["deadline_kind"],
            "overdue": when is not None and when <= now,
            "proof_from": row["proof_from"], "proof_requests": row["proof_requests"],
            "evidence": {"buyer": row["buyer_evidence"], "seller": row["seller_evidence"]},
            "jury": {"panel": len(row["jury_panel"] or ()), "buyer": votes.count("buyer"),
                     "seller": votes.count("seller")},
        })
    return out


# -- the seller's record (SR-1) ----------------------------------------------------------------
def seller_report(repo: Repository, seller_id: str, start: datetime | None,
                  end: datetime | None, default_currency: str) -> dict[str, Any]:
    """`queries.seller_record` over [start, end), in the currency of the seller's orders
    (`default_currency` when the seller has none). A seller with orders in several currencies
    is refused (NotSupported): the record's amounts are sums in one currency."""
    currencies = sorted(c for (c,) in repo.conn.execute(
        select(t.orders.c.currency).where(t.orders.c.seller_id == seller_id).distinct()))
    if len(currencies) > 1:
        raise NotSupported(f"seller {seller_id} has orders in {', '.join(currencies)}; the "
                           "record sums amounts in one currency", rule="SR-1")
    return seller_record(repo, seller_id, start, end,
                         currencies[0] if currencies else default_currency)
