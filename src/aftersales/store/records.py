"""Rows of the intervention procedure, complaints, ratings and accounts (IN-3..IN-9, CP-1,
SR-3). `Repository` inherits these; they share its connection."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from aftersales.domain.complaints import Complaint
from aftersales.domain.errors import ActionNotAllowed, ConcurrencyConflict, NotFound
from aftersales.domain.jury import Account
from aftersales.domain.types import Event
from aftersales.policy.model import Policy
from aftersales.store import tables as t
from aftersales.store.fastsql import executemany

_INSERT_OUTBOX = insert(t.outbox).inline()
_COMPLAINT_FIELDS = ("id", "order_id", "buyer_id", "seller_id", "kind", "text", "status",
                     "opened_at", "seller_response", "resolved_at", "resolved_by", "resolution",
                     "penalty", "points")


class RecordsStore:
    conn: Connection

    # -- the outbox (webhooks) ----------------------------------------------------------------
    def add_outbox(self, events: Sequence[Any]) -> None:
        """Published events, in the transaction that made them (the worker delivers them)."""
        if events:
            executemany(self.conn, _INSERT_OUTBOX, [
                {"aggregate": e.aggregate, "aggregate_id": e.aggregate_id, "name": e.name,
                 "at": e.at, "actor": e.actor, "rule": e.rule, "data": e.data} for e in events])

    # -- evidence (IN-5) ----------------------------------------------------------------------
    def add_evidence(self, case_id: str, seq: int, actor: str, item: dict[str, Any],
                     at: datetime) -> None:
        self.conn.execute(insert(t.evidence).values(
            case_id=case_id, seq=seq, party=item["party"], actor=actor, kind=item["kind"],
            text=item["text"], sha256=item.get("sha256"), size=item.get("size"),
            media_type=item.get("media_type"), filename=item.get("filename"), at=at))

    def evidence_of(self, case_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(select(t.evidence).where(t.evidence.c.case_id == case_id)
                                 .order_by(t.evidence.c.id)).mappings()
        return [dict(r) for r in rows]

    # -- accounts and the jury (IN-3) ---------------------------------------------------------
    def put_user(self, account: Account) -> None:
        values = {"registered_at": account.registered_at, "verified": account.verified,
                  "standing": account.standing}
        if self.conn.execute(update(t.users).where(t.users.c.id == account.id)
                             .values(**values)).rowcount == 0:
            self.conn.execute(insert(t.users).values(id=account.id, **values))

    def jury_candidates(self, now: datetime, policy: Policy) -> list[Account]:
        """Accounts that pass the pack's eligibility filters (§9), read in SQL."""
        u, jury = t.users, policy.jury
        q = select(u).where(u.c.registered_at <= now - timedelta(days=jury.min_account_age_days))
        if jury.require_verified:
            q = q.where(u.c.verified.is_(True))
        if jury.require_good_standing:
            q = q.where(u.c.standing == "good")
        return [Account(r["id"], r["registered_at"], r["verified"], r["standing"])
                for r in self.conn.execute(q).mappings()]

    def linked_to(self, buyer_id: str, seller_id: str) -> set[str]:
        """Accounts with a link to either party: the parties themselves, anyone who bought from
        this seller, and any shop this buyer bought from (IN-3: no link to either party)."""
        o = t.orders
        rows = self.conn.execute(select(o.c.buyer_id, o.c.seller_id).where(or_(
            o.c.seller_id == seller_id, o.c.buyer_id == buyer_id)).distinct())
        linked = {buyer_id, seller_id}
        for b, s in rows:
            linked.update((b, s))
        return linked

    def add_jury_seats(self, case_id: str, panel: Sequence[str], task_ids: Sequence[str],
                       at: datetime) -> None:
        self.conn.execute(insert(t.jury_seats), [
            {"case_id": case_id, "juror_id": j, "task_id": task, "drawn_at": at}
            for j, task in zip(panel, task_ids, strict=True)])

    def record_vote(self, case_id: str, juror_id: str, side: str, reason: str,
                    at: datetime) -> None:
        s = t.jury_seats
        self.conn.execute(update(s).where(s.c.case_id == case_id, s.c.juror_id == juror_id)
                          .values(side=side, reason=reason, voted_at=at))

    def seat(self, task_id: str) -> dict[str, Any]:
        row = self.conn.execute(select(t.jury_seats).where(
            t.jury_seats.c.task_id == task_id)).mappings().first()
        if row is None:
            raise NotFound(f"unknown jury task {task_id!r}")
        return dict(row)

    def seats_of(self, juror_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(select(t.jury_seats).where(
            t.jury_seats.c.juror_id == juror_id).order_by(t.jury_seats.c.drawn_at)).mappings()
        return [dict(r) for r in rows]

    # -- complaints (CP-1) --------------------------------------------------------------------
    def add_complaint(self, c: Complaint) -> None:
        try:
            self.conn.execute(insert(t.complaints).values(
                **{k: getattr(c, k) for k in _COMPLAINT_FIELDS}, version=1, seq=c.seq))
        except IntegrityError:
            raise ConcurrencyConflict(f"complaint {c.id} already exists") from None
        c.version = 1
        self._complaint_log(c)

    def save_complaint(self, c: Complaint) -> None:
        done = self.conn.execute(update(t.complaints).where(
            t.complaints.c.id == c.id, t.complaints.c.version == c.version).values(
            **{k: getattr(c, k) for k in _COMPLAINT_FIELDS if k != "id"},
            version=c.version + 1, seq=c.seq)).rowcount
        if done != 1:
            raise ConcurrencyConflict(f"complaint {c.id} was changed by someone else; "
                                      "nothing was applied")
        c.version += 1
        self._complaint_log(c)

    def _complaint_log(self, c: Complaint) -> None:
        from aftersales.store.repository import _events_rows  # one encoder for every log

        first = c.seq - len(c.pending) + 1
        self.conn.execute(insert(t.complaint_events),
                          _events_rows("complaint", c.id, first, c.pending))
        c.pending.clear()

    def get_complaint(self, complaint_id: str) -> Complaint:
        row = self.conn.execute(select(t.complaints).where(
            t.complaints.c.id == complaint_id)).mappings().first()
        if row is None:
            raise NotFound(f"unknown complaint {complaint_id!r}")
        return Complaint(**{k: row[k] for k in _COMPLAINT_FIELDS}, version=row["version"],
                         seq=row["seq"])

    def open_complaint_kinds(self, order_id: str) -> list[str]:
        c = t.complaints
        return [r[0] for r in self.conn.execute(select(c.c.kind).where(
            c.c.order_id == order_id, c.c.status == "open"))]

    def complaints_of_orders(self, order_ids: Sequence[str]) -> list[dict[str, Any]]:
        c = t.complaints
        rows = self.conn.execute(select(c).where(c.c.order_id.in_(list(order_ids)))
                                 .order_by(c.c.opened_at, c.c.id)).mappings()
        return [dict(r) for r in rows]

    def complaint_events(self, complaint_id: str) -> list[Event]:
        from aftersales.store.repository import Repository

        ce = t.complaint_events
        return [Repository._event(r) for r in self.conn.execute(
            select(ce).where(ce.c.complaint_id == complaint_id).order_by(ce.c.seq)).mappings()]

    # -- ratings (SR-3) -----------------------------------------------------------------------
    def add_rating(self, order_id: str, buyer_id: str, seller_id: str, stars: int,
                   comment: str, at: datetime) -> None:
        try:
            with self.conn.begin_nested():
                self.conn.execute(insert(t.ratings).values(
                    order_id=order_id, buyer_id=buyer_id, seller_id=seller_id, stars=stars,
                    comment=comment, rated_at=at))
        except IntegrityError:
            raise ActionNotAllowed(f"order {order_id} is already rated: a buyer rates an order "
                                   "once", rule="SR-3", entity=order_id, action="rate",
                                   code="already_rated") from None

    def reply_to_rating(self, order_id: str, text: str, at: datetime) -> None:
        r = t.ratings
        row = self.conn.execute(select(r.c.reply).where(r.c.order_id == order_id)).first()
        if row is None:
            raise NotFound(f"order {order_id} has no rating to reply to")
        done = self.conn.execute(update(r).where(r.c.order_id == order_id, r.c.reply.is_(None))
                                 .values(reply=text, replied_at=at)).rowcount
        if done != 1:
            raise ActionNotAllowed(f"the rating of order {order_id} already has the seller's "
                                   "reply: a seller replies once", rule="SR-3",
                                   entity=order_id, action="reply", code="already_replied")



