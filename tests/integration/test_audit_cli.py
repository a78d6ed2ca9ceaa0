"""The tamper-evident case log (`aftersales audit verify`) and the seller's record
(`aftersales seller report`, SR-1). Rows are edited and deleted directly with SQL, as an
attacker with database access would, bypassing the repository."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update
from typer.testing import CliRunner

from aftersales.cli import app
from aftersales.domain.types import Actor
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from aftersales.store import audit
from aftersales.store import tables as t
from tests.conftest import T0
from tests.integration.intervention_setup import (
    D,
    H,
    Parties,
    escalated_dispute,
    evidence_file,
    make_service,
)

runner = CliRunner()
STAFF = Actor.parse("staff:x1")
A = Parties("bA", "sA", "oA", "cA", "SFA1")
B = Parties("bB", "sA", "oB", "cB", "SFB1")


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Iterator[Service]:
    svc = make_service(db_url, tmp_path)
    yield svc
    svc.engine.dispose()


def _disputes_with_evidence(service: Service) -> None:
    """Two escalated cases; A has a file and a text item from its buyer and one from the seller."""
    at = escalated_dispute(service, A, T0)
    service.handle(c.SubmitEvidence(actor=A.b, case_id=A.case, kind="photo", text="the label",
                                    file=evidence_file(service, "label.png")), at + H)
    service.handle(c.SubmitEvidence(actor=A.s, case_id=A.case, kind="chat",
                                    text="the buyer agreed"), at + 2 * H)
    escalated_dispute(service, B, T0)


def _verify(service: Service, case_id: str | None = None) -> tuple[int, list[audit.Break]]:
    with service.uow() as uow:
        return audit.verify(uow.repo.conn, case_id)


def _row(service: Service, case_id: str, name: str) -> Any:
    ev = t.case_events
    with service.uow() as uow:
        return uow.repo.conn.execute(select(ev.c.seq, ev.c.changes).where(
            ev.c.case_id == case_id, ev.c.name == name).order_by(ev.c.seq)).first()


def _set_changes(service: Service, case_id: str, seq: int, changes: Any) -> None:
    ev = t.case_events
    with service.uow() as uow:
        done = uow.repo.conn.execute(update(ev).where(ev.c.case_id == case_id, ev.c.seq == seq)
                                     .values(changes=changes)).rowcount
        uow.commit()
    assert done == 1


def _cli(db_url: str, *args: str) -> Any:
    return runner.invoke(app, ["audit", "verify", "--db", db_url, *args])


def test_an_untouched_log_verifies(service: Service, db_url: str) -> None:  # rule: IN-5
    _disputes_with_evidence(service)
    checked, breaks = _verify(service)
    assert breaks == [] and checked == 8  # A: 3 + 2 evidence; B: 3
    assert _verify(service, A.case) == (5, [])
    result = _cli(db_url)
    assert result.exit_code == 0, result.output
    assert "8 log entries checked, the chain is intact" in result.output
    result = _cli(db_url, "--case", A.case, "--json")
    assert result.exit_code == 0
    assert json.loads(result.output) == {"checked": 5, "intact": True, "breaks": []}
    unknown = _cli(db_url, "--case", "no-such-case")
    assert unknown.exit_code == 1 and "unknown case 'no-such-case'" in unknown.output


def test_an_edited_entry_is_named(service: Service, db_url: str) -> None:
    _disputes_with_evidence(service)
    seq, changes = _row(service, A.case, "SellerRejected")
    _set_changes(service, A.case, seq, {**changes, "rejection_reason": "we never refused"})
    _, breaks = _verify(service)
    assert [(b.case_id, b.seq) for b in breaks] == [(A.case, seq)]
    assert "content does not match its hash" in breaks[0].reason
    result = _cli(db_url)
    assert result.exit_code == 1
    assert f"BROKEN case {A.case} entry {seq}:" in result.output
    assert "edited after it was written" in result.output
    assert B.case not in result.output  # the other case is intact
    assert _cli(db_url, "--case", B.case).exit_code == 0
    as_json = json.loads(_cli(db_url, "--case", A.case, "--json").output)
    assert as_json["intact"] is False and as_json["breaks"][0]["seq"] == seq


def test_a_deleted_last_entry_is_named(service: Service, db_url: str) -> None:
    _disputes_with_evidence(service)
    ev = t.case_events
    with service.uow() as uow:
        last = uow.repo.conn.execute(select(func.max(ev.c.seq)).where(
            ev.c.case_id == A.case)).scalar_one()
        uow.repo.conn.execute(delete(ev).where(ev.c.case_id == A.case, ev.c.seq == last))
        uow.commit()
    _, breaks = _verify(service)
    assert [(b.case_id, b.seq) for b in breaks] == [(A.case, last)]
    assert "deleted from the end" in breaks[0].reason
    result = _cli(db_url, "--case", A.case)
    assert result.exit_code == 1
    assert f"BROKEN case {A.case} entry {last}:" in result.output


def test_the_chain_commits_to_the_evidence_file_hash(service: Service,
                                                     db_url: str) -> None:  # rule: IN-5
    _disputes_with_evidence(service)
    seq, changes = _row(service, A.case, "EvidenceSubmitted")
    item = changes["evidence"]
    assert len(item["sha256"]) == 64  # the first item is the one with the file
    forged = {**changes, "evidence": {**item, "sha256": "0" * 64}}
    _set_changes(service, A.case, seq, forged)
    _, breaks = _verify(service, A.case)
    assert [(b.case_id, b.seq) for b in breaks] == [(A.case, seq)]
    result = _cli(db_url)
    assert result.exit_code == 1 and f"BROKEN case {A.case} entry {seq}:" in result.output
    _set_changes(service, A.case, seq, changes)  # put back exactly: intact again
    assert _cli(db_url).exit_code == 0


# -- the seller's record (SR-1) ----------------------------------------------------------------
def _ruled_against_seller(service: Service, p: Parties, at: datetime) -> None:
    escalated = escalated_dispute(service, p, at)
    service.handle(c.Rule(actor=STAFF, case_id=p.case, outcome="refund"), escalated + H)


def test_seller_report_prints_the_record_per_period(service: Service,
                                                    db_url: str) -> None:  # rule: SR-1
    march = Parties("b1", "s9", "o1", "c1", "SF91")
    april = Parties("b2", "s9", "o2", "c2", "SF92")
    _ruled_against_seller(service, march, T0)  # ruled 2026-03-03
    _ruled_against_seller(service, april, T0 + 40 * D)  # ruled 2026-04-12
    whole = runner.invoke(app, ["seller", "report", "s9", "--db", db_url, "--json"])
    assert whole.exit_code == 0, whole.output
    record = json.loads(whole.output)
    assert (record["dispute_refunds"], record["dispute_refund_amount"],
            record["penalty_points"]) == (2, "120.00", 6)  # IN-8; IN-7: 3 points each
    assert record["paid_orders"] == 2 and record["from"] is None

    in_march = json.loads(runner.invoke(app, ["seller", "report", "s9", "--db", db_url,
                                              "--period", "2026-03", "--json"]).output)
    assert (in_march["dispute_refunds"], in_march["paid_orders"],
            in_march["penalty_points"]) == (1, 1, 3)
    assert in_march["from"] == "2026-03-01T00:00:00+08:00"  # the pack's timezone
    assert in_march["to"] == "2026-04-01T00:00:00+08:00"
    in_april = json.loads(runner.invoke(app, [
        "seller", "report", "s9", "--db", db_url, "--from", "2026-04-01", "--to", "2026-04-30",
        "--json"]).output)
    assert in_april["dispute_refunds"] == 1 and in_april["dispute_refund_amount"] == "60.00"
    before = json.loads(runner.invoke(app, [
        "seller", "report", "s9", "--db", db_url, "--to", "2026-03-02", "--json"]).output)
    assert before["dispute_refunds"] == 0 and before["paid_orders"] == 1

    table = runner.invoke(app, ["seller", "report", "s9", "--db", db_url, "--period", "2026-03"])
    assert table.exit_code == 0
    assert "seller s9: 2026-03-01T00:00:00+08:00 to 2026-04-01T00:00:00+08:00" in table.output
    lines = {line.split("  ")[1].strip(): line.split()[-1]
             for line in table.output.splitlines()[1:] if line.startswith("  ") and
             not line.startswith("    ")}
    assert lines["dispute refunds (IN-8)"] == "1" and lines["penalty points"] == "3"

    for bad in (["--period", "2026-13"], ["--period", "2026-03", "--from", "2026-03-01"],
                ["--from", "2026-04-02", "--to", "2026-04-01"], ["--from", "yesterday"]):
        refused = runner.invoke(app, ["seller", "report", "s9", "--db", db_url, *bad])
        assert refused.exit_code == 2, (bad, refused.output)
