"""Who sees what of a dispute: the juror's anonymised task (IN-3), the parties' evidence and
timelines (CP-2, IN-5), and the staff's intervention queue. Everything runs through
`Service.handle` with real commands and real PNG files in a real evidence store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aftersales.domain.errors import NotFound
from aftersales.domain.types import Actor, CaseType, Reason
from aftersales.service import commands as c
from aftersales.service import views
from aftersales.service.handlers import Service
from tests.conftest import T0
from tests.integration.intervention_setup import (
    D,
    H,
    Parties,
    delivered_order,
    escalated_dispute,
    evidence_file,
    make_service,
    register_jurors,
)
from tests.unit.test_evidence import jpeg_bytes, png_bytes

runner = CliRunner()

# Distinctive strings: none of them may reach a juror (IN-3).
BUYER, SELLER = "buyer-Zyx4471", "shop-Qwv9902"
ORDER, CASE = "order-Kpl5513", "case-Mnb7720"
OUTBOUND, RETURN_TRK = "SFOUT88123X", "YTRET55501Q"
ADDRESS = "17 Hidden Willow Lane, Unit 9B"
FILENAME = "receipt-Hjk3321.png"
SELLER_FILE = "chatlog-Wqe8810.png"
JURORS = ("juror-Alpha101", "juror-Beta202", "juror-Gamma303")
OUTSIDER = "juror-Delta404"
STAFF = Actor.parse("staff:staff-Opq6060")
P = Parties(BUYER, SELLER, ORDER, CASE, OUTBOUND)


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Iterator[Service]:
    svc = make_service(db_url, tmp_path)
    yield svc
    svc.engine.dispose()


def _jury_case(service: Service) -> dict[str, str]:
    """A return-refund dispute that went through a rejection, a return parcel, evidence from
    both sides and the seller's escalation (IN-2) to a jury of three; returns juror -> task."""
    register_jurors(service, *JURORS)
    delivered_order(service, P, T0)
    opened = T0 + 2 * D
    service.handle(c.OpenCase(
        actor=P.b, order_id=ORDER, case_id=CASE, type=CaseType.RETURN_REFUND,
        reason=Reason.NOT_AS_DESCRIBED, received=True,
        description=f"I am {BUYER}; the shirt from {SELLER} (order {ORDER}, parcel {OUTBOUND}) "
                    "is polyester, the listing says cotton"), opened)
    service.handle(c.Reject(actor=P.s, case_id=CASE,
                            reason=f"{BUYER} washed it; see order {ORDER.upper()}"), opened + H)
    service.handle(c.Resubmit(actor=P.b, case_id=CASE,
                              description=f"please look again, {SELLER}: it is not cotton"),
                   opened + 2 * H)
    service.handle(c.Agree(actor=P.s, case_id=CASE, return_address=ADDRESS), opened + 3 * H)
    service.handle(c.ShipReturn(actor=P.b, case_id=CASE, carrier="YTO", tracking=RETURN_TRK),
                   opened + 6 * D)
    service.handle(c.SubmitEvidence(
        actor=P.b, case_id=CASE, kind="photo",
        text=f"Label photo, see {FILENAME}: 100% polyester. Sent back as {RETURN_TRK} to "
             f"{ADDRESS}", file=evidence_file(service, FILENAME)), opened + 7 * D)
    service.handle(c.SubmitEvidence(
        actor=P.s, case_id=CASE, kind="chat",
        text=f"Chat with {BUYER.lower()} ({SELLER}): the buyer agreed the fabric was fine",
        file=evidence_file(service, SELLER_FILE, jpeg_bytes())), opened + 7 * D + H)
    service.handle(c.SubmitEvidence(actor=P.b, case_id=CASE, kind="listing",
                                    text="The listing page says 100% cotton"),
                   opened + 7 * D + 2 * H)
    service.handle(c.Escalate(actor=P.s, case_id=CASE), opened + 15 * D + H)
    service.handle(c.SendToJury(actor=STAFF, case_id=CASE, seed="views"),
                   opened + 15 * D + 2 * H)
    with service.uow() as uow:
        return {j: uow.repo.seats_of(j)[0]["task_id"] for j in JURORS}


def _secrets(service: Service) -> list[str]:
    with service.uow() as uow:
        shas = [row["sha256"] for row in uow.repo.evidence_of(CASE) if row["sha256"]]
    return [BUYER, SELLER, ORDER, CASE, OUTBOUND, RETURN_TRK, ADDRESS, FILENAME, SELLER_FILE,
            *JURORS, STAFF.id, *shas]


# -- the juror (IN-3) --------------------------------------------------------------------------
def test_a_juror_sees_the_dispute_but_no_identity(service: Service) -> None:  # rule: IN-3
    tasks = _jury_case(service)
    first, second = JURORS[0], JURORS[1]
    service.handle(c.Vote(actor=Actor.parse(f"juror:{first}"), case_id=CASE, side="buyer",
                          reason=f"{FILENAME} shows polyester"), T0 + 17 * D + 3 * H)
    with service.uow() as uow:
        view = views.juror_task(uow.repo, tasks[first], first, blobs_present=True)
        other = views.juror_task(uow.repo, tasks[second], second, blobs_present=False)
    dump = json.dumps(view, ensure_ascii=False).lower()
    for secret in _secrets(service):
        assert secret.lower() not in dump, secret
    assert secret_free(other, _secrets(service))

    case = view["case"]
    assert (case["type"], case["reason"], case["amount"]) == ("return_refund",
                                                              "not_as_described", "60.00")
    assert case["description"] == "please look again, [redacted]: it is not cotton"
    assert case["rejection_reason"] == "[redacted] washed it; see order [redacted]"
    assert case["escalated_by"] == "seller" and case["escalated_day"] == 15
    assert case["days_open_when_drawn"] == 15
    # the timeline by role only, times relative to the opening
    steps = [(s["by"], s["event"]) for s in view["timeline"]]
    assert steps[:4] == [("buyer", "CaseOpened"), ("seller", "SellerRejected"),
                         ("buyer", "CaseResubmitted"), ("seller", "SellerAgreed")]
    assert ("staff", "SentToJury") in steps and ("seller", "CaseEscalated") in steps
    assert all(s["event"] != "JurorVoted" for s in view["timeline"])
    said = [s["statement"] for s in view["timeline"][:3]]
    assert "is polyester, the listing says cotton" in said[0] and "[redacted]" in said[0]
    assert said[1] == "[redacted] washed it; see order [redacted]"
    assert said[2] == case["description"]
    assert view["timeline"][0]["day"] == 0 and view["timeline"][-1]["day"] == 15
    # the evidence: text kept (identities masked), files by index, no hash, no name
    photo, chat, listing = view["evidence"]
    assert (photo["party"], photo["kind"], chat["party"], chat["kind"]) == (
        "buyer", "photo", "seller", "chat")
    assert photo["text"].startswith("Label photo, see [redacted]: 100% polyester.")
    assert "the buyer agreed the fabric was fine" in chat["text"]
    assert listing["text"] == "The listing page says 100% cotton" and listing["file"] is None
    assert photo["file"] == {"media_type": "image/png", "size": len(png_bytes()),
                             "available": True}
    assert chat["file"]["media_type"] == "image/jpeg"
    # the vote
    assert view["vote"]["open"] and view["vote"]["voted"] and view["vote"]["side"] == "buyer"
    assert view["vote"]["reason"] == "[redacted] shows polyester"
    assert view["vote"]["deadline"] is not None and view["vote"]["panel_size"] == 3
    assert other["vote"]["voted"] is False and other["vote"]["side"] is None
    assert other["evidence"][0]["file"]["available"] is False  # no evidence store to serve it

    # the file comes through the task, with the type sniffed from its bytes
    assert service.blobs is not None
    with service.uow() as uow:
        path, media = views.juror_evidence_file(uow.repo, service.blobs, tasks[first], first,
                                                photo["index"])
        chat_path, chat_media = views.juror_evidence_file(uow.repo, service.blobs,
                                                          tasks[first], first, chat["index"])
    assert path.read_bytes() == png_bytes() and media == "image/png"
    assert chat_path.read_bytes() == jpeg_bytes() and chat_media == "image/jpeg"
    assert FILENAME not in str(path)


def secret_free(view: object, secrets: list[str]) -> bool:
    dump = json.dumps(view, ensure_ascii=False).lower()
    return not [s for s in secrets if s.lower() in dump]


def test_only_the_panel_juror_of_a_task_can_open_it(service: Service) -> None:  # rule: IN-3
    tasks = _jury_case(service)
    register_jurors(service, OUTSIDER)
    assert service.blobs is not None
    with service.uow() as uow:
        repo = uow.repo
        for juror, task in ((OUTSIDER, tasks[JURORS[0]]),  # not on the panel
                            (JURORS[1], tasks[JURORS[0]]),  # on the panel, someone else's task
                            (JURORS[0], "jt_does_not_exist")):
            with pytest.raises(NotFound) as refused:
                views.juror_task(repo, task, juror, blobs_present=True)
            assert str(refused.value) == f"unknown jury task {task!r}"
            with pytest.raises(NotFound):
                views.juror_evidence_file(repo, service.blobs, task, juror, 1)
        with pytest.raises(NotFound):  # no such item, an item without a file
            views.juror_evidence_file(repo, service.blobs, tasks[JURORS[0]], JURORS[0], 4)
        with pytest.raises(NotFound):
            views.juror_evidence_file(repo, service.blobs, tasks[JURORS[0]], JURORS[0], 3)
        with pytest.raises(NotFound):  # a juror is not a party: no case evidence, no timeline
            views.case_evidence(repo, CASE, Actor.parse(f"juror:{JURORS[0]}"))
        with pytest.raises(NotFound):
            views.timeline(repo, CASE, Actor.parse(f"juror:{JURORS[0]}"))


# -- the parties' evidence (IN-5, CP-2) --------------------------------------------------------
A = Parties("bA", "sA", "oA", "cA", "SFA1")
B = Parties("bB", "sB", "oB", "cB", "SFB1")


def _two_disputes(service: Service) -> dict[str, int]:
    """Cases A and B, each with a file from its buyer; returns case -> that evidence id.
    B's file is a PNG uploaded under an HTML name: its type comes from its bytes."""
    ids = {}
    for p, name in ((A, "a.png"), (B, "invoice.html")):
        at = escalated_dispute(service, p, T0)
        service.handle(c.SubmitEvidence(actor=p.b, case_id=p.case, kind="photo",
                                        text=f"photo for {p.case}",
                                        file=evidence_file(service, name,
                                                           png_bytes(3 if p is B else 2))),
                       at + H)
        with service.uow() as uow:
            ids[p.case] = uow.repo.evidence_of(p.case)[0]["id"]
    return ids


def test_a_party_never_sees_another_cases_evidence(service: Service) -> None:  # rule: CP-2
    ids = _two_disputes(service)
    blobs = service.blobs
    assert blobs is not None
    with service.uow() as uow:
        repo = uow.repo
        for viewer in (A.b, A.s):
            own = views.case_evidence(repo, A.case, viewer)
            assert [e["id"] for e in own] == [ids[A.case]]
            path, media = views.evidence_file(repo, blobs, A.case, ids[A.case], viewer)
            assert path.read_bytes() == png_bytes(2) and media == "image/png"
            # B's case, as if it did not exist
            with pytest.raises(NotFound) as refused:
                views.case_evidence(repo, B.case, viewer)
            with pytest.raises(NotFound) as missing:
                views.case_evidence(repo, "no-such-case", viewer)
            assert str(refused.value) == f"unknown case {B.case!r}"
            assert str(missing.value) == "unknown case 'no-such-case'"
            with pytest.raises(NotFound):
                views.evidence_file(repo, blobs, B.case, ids[B.case], viewer)
            # B's evidence id under A's case
            with pytest.raises(NotFound):
                views.evidence_file(repo, blobs, A.case, ids[B.case], viewer)
        # a stranger buyer and a juror see nothing; a party of B sees B only
        for stranger in (Actor.parse("buyer:bZ"), Actor.parse("seller:sZ"),
                         Actor.parse("juror:bA")):
            with pytest.raises(NotFound):
                views.case_evidence(repo, A.case, stranger)
        assert [e["id"] for e in views.case_evidence(repo, B.case, B.b)] == [ids[B.case]]
        # staff see every case, still only through the case an item belongs to
        for case_id in (A.case, B.case):
            items = views.case_evidence(repo, case_id, Actor.parse("staff:x1"))
            assert items[0]["text"] == f"photo for {case_id}"
        path, media = views.evidence_file(repo, blobs, B.case, ids[B.case],
                                          Actor.parse("staff:x1"))
        assert media == "image/png"  # re-sniffed: never taken from "invoice.html"
        assert path.read_bytes() == png_bytes(3)
        with pytest.raises(NotFound):
            views.evidence_file(repo, blobs, A.case, ids[B.case], Actor.parse("staff:x1"))
        with pytest.raises(NotFound):
            views.evidence_file(repo, blobs, A.case, "not-a-number", Actor.parse("staff:x1"))


# -- timelines (CP-2) --------------------------------------------------------------------------
def test_the_parties_see_the_full_timeline_without_the_jurors(service: Service
                                                              ) -> None:  # rule: CP-2
    _jury_case(service)
    service.handle(c.Vote(actor=Actor.parse(f"juror:{JURORS[0]}"), case_id=CASE, side="seller",
                          reason=f"I am {JURORS[0]} and the chat convinces me"),
                   T0 + 17 * D + 3 * H)
    service.handle(c.Vote(actor=Actor.parse(f"juror:{JURORS[2]}"), case_id=CASE, side="seller",
                          reason="agree"), T0 + 17 * D + 4 * H)
    with service.uow() as uow:
        names = [e.name for e in uow.repo.case_events(CASE)]
        as_buyer = views.timeline(uow.repo, CASE, P.b)
        as_seller = views.timeline(uow.repo, CASE, P.s)
        as_staff = views.timeline(uow.repo, CASE, STAFF)
        for stranger in (Actor.parse("buyer:someone"), Actor.parse(f"seller:{BUYER}"),
                         Actor.parse(f"juror:{JURORS[0]}")):
            with pytest.raises(NotFound):
                views.timeline(uow.repo, CASE, stranger)
    assert names[-1] == "JurorVoted" and "EvidenceSubmitted" in names
    for seen in (as_buyer, as_seller, as_staff):
        assert [e["name"] for e in seen] == names  # every entry, in order
        assert [e["seq"] for e in seen] == list(range(1, len(names) + 1))
    for seen in (as_buyer, as_seller):
        assert secret_free(seen, [*JURORS, STAFF.id])
        votes = [e for e in seen if e["name"] == "JurorVoted"]
        assert [e["actor"] for e in votes] == ["juror", "juror"]
        assert votes[-1]["changes"]["jury_votes"] == [["juror", "seller"], ["juror", "seller"]]
        closing = seen[-1]["changes"]
        assert closing["status"] == "closed" and closing["decided_by"] == "jury"
        assert seen[0]["actor"] == f"buyer:{BUYER}"
        evidence = [e["changes"]["evidence"] for e in seen if e["name"] == "EvidenceSubmitted"]
        assert evidence[0]["filename"] == FILENAME  # the parties see their own case in full
    # staff see who did what
    assert f"juror:{JURORS[0]}" in [e["actor"] for e in as_staff]
    assert any(e["actor"] == str(STAFF) for e in as_staff)


def test_a_complaint_timeline_is_for_its_parties_and_staff(service: Service
                                                           ) -> None:  # rule: CP-2
    delivered_order(service, A, T0)
    done = service.handle(c.Complain(actor=A.b, order_id=A.order, kind="broken_promise",
                                     text="promised a gift"), T0 + 2 * D)
    assert done.complaint_id
    cid = done.complaint_id
    service.handle(c.AnswerComplaint(actor=A.s, complaint_id=cid, text="gift was sent"),
                   T0 + 3 * D)
    service.handle(c.ResolveComplaint(actor=Actor.parse("staff:staff-Opq6060"), complaint_id=cid,
                                      upheld=True, text="no gift in the parcel"), T0 + 4 * D)
    with service.uow() as uow:
        for viewer in (A.b, A.s):
            seen = views.complaint_timeline(uow.repo, cid, viewer)
            assert [e["name"] for e in seen] == ["ComplaintFiled", "ComplaintContested",
                                                 "ComplaintUpheld"]
            assert seen[2]["actor"] == "staff" and seen[2]["changes"]["resolved_by"] == "staff"
            assert secret_free(seen, ["staff-Opq6060"])
        staff = views.complaint_timeline(uow.repo, cid, Actor.parse("staff:x9"))
        assert staff[2]["actor"] == "staff:staff-Opq6060"
        for stranger in (B.b, B.s, Actor.parse("juror:j1")):
            with pytest.raises(NotFound) as refused:
                views.complaint_timeline(uow.repo, cid, stranger)
            assert str(refused.value) == f"unknown complaint {cid!r}"


def test_case_timeline_cli(service: Service, db_url: str) -> None:  # rule: CP-2
    from aftersales.cli import app

    escalated_dispute(service, A, T0)
    ok = runner.invoke(app, ["case", "timeline", A.case, "--as", "buyer:bA", "--db", db_url,
                             "--json"])
    assert ok.exit_code == 0, ok.output
    assert [e["name"] for e in json.loads(ok.output)] == ["CaseOpened", "SellerRejected",
                                                          "CaseEscalated"]
    text = runner.invoke(app, ["case", "timeline", A.case, "--as", "seller:sA", "--db", db_url])
    assert text.exit_code == 0 and "SellerRejected" in text.output
    assert "-> in_intervention" in text.output
    refused = runner.invoke(app, ["case", "timeline", A.case, "--as", "buyer:bB", "--db", db_url])
    assert refused.exit_code == 1 and f"unknown case '{A.case}'" in refused.output
    bad = runner.invoke(app, ["case", "timeline", A.case, "--as", "nobody", "--db", db_url])
    assert bad.exit_code == 2


# -- the staff's queue -------------------------------------------------------------------------
def test_the_intervention_queue_is_ordered_by_what_is_due_next(service: Service,
                                                               db_url: str) -> None:
    register_jurors(service, *JURORS)
    waiting, proof, jury, other = (Parties(f"b{i}", f"s{i}", f"o{i}", f"q{i}", f"SFQ{i}")
                                   for i in range(4))
    escalated = escalated_dispute(service, waiting, T0)  # staff target: +3d
    escalated_dispute(service, proof, T0)
    service.handle(c.RequestProof(actor=STAFF, case_id=proof.case, from_party="seller",
                                  due=timedelta(hours=24)), escalated + H)  # due +25h
    escalated_dispute(service, jury, T0)
    service.handle(c.SendToJury(actor=STAFF, case_id=jury.case, seed="q"),
                   escalated + 2 * H)  # vote window 48h: due +50h
    delivered_order(service, other, T0)  # an ordinary case: not in the queue
    service.handle(c.OpenCase(actor=other.b, order_id=other.order, case_id=other.case,
                              type=CaseType.REFUND_ONLY, reason=Reason.QUALITY, received=True),
                   T0 + 2 * D)
    now = escalated + 30 * H
    with service.uow() as uow:
        queue = views.intervention_queue(uow.repo, now)
        assert [q["case"] for q in views.intervention_queue(uow.repo, now, limit=2)] == [
            proof.case, jury.case]
    assert [(q["case"], q["status"], q["due_kind"], q["overdue"]) for q in queue] == [
        (proof.case, "awaiting_proof", "proof_window", True),
        (jury.case, "jury_voting", "vote_window", False),
        (waiting.case, "in_intervention", "staff_ruling", False)]
    due = {q["case"]: datetime.fromisoformat(q["due"]) for q in queue}
    assert due == {proof.case: escalated + 25 * H, jury.case: escalated + 50 * H,
                   waiting.case: escalated + 3 * D}
    assert queue[0]["proof_from"] == "seller" and queue[0]["escalated_by"] == "buyer"
    assert queue[1]["jury"] == {"panel": 3, "buyer": 0, "seller": 0}
    assert queue[2]["amount"] == "60.00"

    from aftersales.cli import app

    out = runner.invoke(app, ["intervention", "queue", "--db", db_url, "--json",
                              "--now", now.isoformat()])
    assert out.exit_code == 0, out.output
    assert [q["case"] for q in json.loads(out.output)] == [proof.case, jury.case, waiting.case]
    text = runner.invoke(app, ["intervention", "queue", "--db", db_url,
                               "--now", now.isoformat()])
    assert text.exit_code == 0 and "OVERDUE" in text.output and "proof from seller" in text.output
