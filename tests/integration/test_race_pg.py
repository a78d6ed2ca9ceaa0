"""Sellers, buyers and two deadline workers race on 40 cases whose seller deadline just passed.

Seller threads answer (agree or reject) the same cases, buyer threads ship the returns back,
and two deadline workers fire the timeouts, all at the same `now`, just after the deadlines.
Whoever loses must get `ConcurrencyConflict` or `ActionNotAllowed`, never a crash. Afterwards
every case has exactly one deciding event for its awaiting_seller step, every event in its log
was reported to exactly one winner (and every winner's events are in the log), the stored case
and order equal the replay of their logs, and no refund is paid twice.

On PostgreSQL the workers are two separate processes (`FOR UPDATE SKIP LOCKED` and the
optimistic version checks must hold across connections); on SQLite they are threads (writers
are serialised by BEGIN IMMEDIATE).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from aftersales.bootstrap import bootstrap
from aftersales.domain.cases import Case
from aftersales.domain.errors import ActionNotAllowed, ConcurrencyConflict, WrongActor
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec, Order
from aftersales.domain.types import (
    SYSTEM,
    Actor,
    CaseType,
    Reason,
    Role,
    ScanKind,
    ShippingMode,
)
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from aftersales.service.worker import run_due
from aftersales.store import tables as t

CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=CST)
BUYER, SELLER = Actor(Role.BUYER, "b1"), Actor(Role.SELLER, "s1")
PRICE = Money(8800, "CNY")
N_REFUND_ONLY, N_RETURN = 20, 20
SELLER_THREADS, BUYER_THREADS = 4, 2
DECIDING = {"SellerAgreed", "SellerRejected", "DeadlinePassed"}
# Returns are opened after delivery (the seller has 5 days), refund-only requests before
# shipment (48 hours). Everybody acts at NOW, one minute after both deadlines.
RETURN_OPENED = T0 + timedelta(days=1)
NOW = RETURN_OPENED + timedelta(days=5, minutes=1)
REFUND_OPENED = NOW - timedelta(hours=48, minutes=1)

WORKER_SCRIPT = """
import json, sys
from datetime import datetime
from aftersales.bootstrap import bootstrap
from aftersales.service.worker import run_due

url, now = sys.argv[1], datetime.fromisoformat(sys.argv[2])
service = bootstrap(url, migrate=False)
print("ready", flush=True)
sys.stdin.readline()  # start together with the sellers and buyers
claims, idle = [], 0
for _ in range(500):
    stats = run_due(service, now, batch=2)
    claims += [[e.aggregate_id, e.name] for e in stats.events if e.aggregate == "case"]
    idle = 0 if stats.events or stats.conflicts else idle + 1
    if idle >= 5:
        break
service.engine.dispose()
print(json.dumps(claims), flush=True)
"""


@dataclass
class Tally:
    """What the racers were told: the case events each winner's command published (its
    claims), how the losers were refused, and anything else (a crash)."""

    claims: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    worker_claims: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    refused: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attempt(self, service: Service, case_id: str, cmd: c.Command) -> None:
        try:
            result = service.handle(cmd, NOW)
        except ConcurrencyConflict:
            with self.lock:
                self.refused["conflict"] += 1
        except WrongActor as exc:  # a subclass of ActionNotAllowed: never right here
            with self.lock:
                self.crashes.append(f"{case_id}: {exc!r}")
        except ActionNotAllowed:
            with self.lock:
                self.refused["not_allowed"] += 1
        except Exception as exc:  # a 500: the test fails on it
            with self.lock:
                self.crashes.append(f"{case_id}: {type(exc).__name__}: {exc}")
        else:
            with self.lock:
                self.claims[case_id] += [e.name for e in result.events
                                         if e.aggregate == "case" and e.aggregate_id == case_id]

    def worker_fired(self, case_id: str, name: str) -> None:
        with self.lock:
            self.worker_claims[case_id].append(name)


def prepare(service: Service) -> tuple[list[str], list[str]]:
    """Refund-only cases on unshipped orders and return_refund cases on delivered ones."""
    refund_only, returns = [], []
    line = (LineSpec("kettle", 1, PRICE),)
    for i in range(N_REFUND_ONLY):
        service.handle(c.PlaceOrder(actor=BUYER, seller_id=SELLER.id, order_id=f"o{i}",
                                    mode=ShippingMode.IN_STOCK, lines=line),
                       REFUND_OPENED - timedelta(hours=1))
        service.handle(c.OpenCase(actor=BUYER, order_id=f"o{i}", case_id=f"ro{i}",
                                  type=CaseType.REFUND_ONLY, reason=Reason.NOT_SHIPPED),
                       REFUND_OPENED)
        refund_only.append(f"ro{i}")
    for i in range(N_REFUND_ONLY, N_REFUND_ONLY + N_RETURN):
        service.handle(c.PlaceOrder(actor=BUYER, seller_id=SELLER.id, order_id=f"o{i}",
                                    mode=ShippingMode.IN_STOCK, lines=line), T0)
        service.handle(c.Ship(actor=SELLER, order_id=f"o{i}", carrier="SF", tracking=f"T{i}"),
                       T0 + timedelta(hours=1))
        service.handle(c.RecordScan(actor=SYSTEM, tracking=f"T{i}", event=ScanKind.SIGNED),
                       T0 + timedelta(hours=20))
        service.handle(c.OpenCase(actor=BUYER, order_id=f"o{i}", case_id=f"rr{i}",
                                  type=CaseType.RETURN_REFUND, reason=Reason.QUALITY),
                       RETURN_OPENED)
        returns.append(f"rr{i}")
    for case_id in refund_only + returns:
        case = service.case(case_id)
        assert case.status.value == "awaiting_seller"
        assert case.deadline is not None
        assert NOW - timedelta(minutes=2) < case.deadline < NOW  # it has just passed
    return refund_only, returns


def seller(service: Service, case_ids: list[str], seed: int, start: threading.Barrier,
           tally: Tally) -> None:
    """Answer every case, agreeing or rejecting at random, in a random order."""
    rng = random.Random(seed)
    order = case_ids[:]
    rng.shuffle(order)
    start.wait()
    for case_id in order:
        cmd: c.CaseCommand
        if rng.random() < 0.5:
            cmd = c.Agree(actor=SELLER, case_id=case_id)
        else:
            cmd = c.Reject(actor=SELLER, case_id=case_id, reason="the parcel left on time")
        tally.attempt(service, case_id, cmd)


def buyer(service: Service, case_ids: list[str], seed: int, start: threading.Barrier,
          tally: Tally) -> None:
    """Ship every return back. That can only succeed once the seller's step is decided, by an
    agreement or by the overdue timer (which the service may apply itself before judging)."""
    rng = random.Random(seed)
    order = case_ids[:]
    rng.shuffle(order)
    start.wait()
    for case_id in order:
        tally.attempt(service, case_id, c.ShipReturn(
            actor=BUYER, case_id=case_id, carrier="YTO", tracking=f"Y{seed}-{case_id}"))


def race(service: Service, refund_only: list[str], returns: list[str], tally: Tally,
         start_workers: Callable[[threading.Barrier], None], n_workers: int) -> None:
    """Run the seller and buyer threads; `start_workers` starts the deadline workers, which
    wait on the same barrier (`n_workers` parties) so that everybody goes at once."""
    start = threading.Barrier(SELLER_THREADS + BUYER_THREADS + n_workers, timeout=120)
    threads = [threading.Thread(target=seller,
                                args=(service, refund_only + returns, 1000 + k, start, tally))
               for k in range(SELLER_THREADS)]
    threads += [threading.Thread(target=buyer, args=(service, returns, 2000 + k, start, tally))
                for k in range(BUYER_THREADS)]
    for th in threads:
        th.start()
    start_workers(start)
    for th in threads:
        th.join(timeout=300)
        assert not th.is_alive(), "a racing thread hung"


def check(service: Service, refund_only: list[str], returns: list[str],
          tally: Tally) -> Counter[str]:
    """Everything the module docstring promises. Returns how the seller's step was decided."""
    assert not tally.crashes, tally.crashes
    assert tally.refused, "nobody lost: the racers never met"
    decided: Counter[str] = Counter()
    with service.uow() as uow:
        repo = uow.repo
        for case_id in refund_only + returns:
            events = repo.case_events(case_id)
            names = [e.name for e in events]
            assert names[0] == "CaseOpened", names
            deciding = [n for n in names if n in DECIDING]
            assert len(deciding) == 1, f"{case_id}: {names}"
            decided[deciding[0]] += 1
            # Each event after CaseOpened was published to exactly one winner (a seller, a
            # buyer, or one of the workers), and every winner's events are in the log.
            claimed = tally.claims.get(case_id, []) + tally.worker_claims.get(case_id, [])
            assert Counter(names[1:]) == Counter(claimed), (case_id, names, claimed)
            # At NOW only the seller's step was due; a return can be shipped once, nothing else.
            assert set(names[2:]) <= {"ReturnShipped"} and len(names) <= 3, (case_id, names)
            stored = repo.get_case(case_id)
            replayed = Case.replay(events)
            for attr in ("status", "outcome", "refunded", "deadline", "deadline_kind", "rules",
                         "decided_by", "seq", "rejection_reason", "return_address",
                         "return_tracking"):
                assert getattr(replayed, attr) == getattr(stored, attr), (case_id, attr)
            order = repo.get_order(stored.order_id)
            replayed_order = Order.replay(repo.order_events(order.id))
            assert replayed_order.status is order.status, case_id
            assert [ln.refunded for ln in replayed_order.lines] == [
                ln.refunded for ln in order.lines], case_id
            # Money: a refund-only request pays once unless rejected; a return pays nothing yet.
            count, total = uow.conn.execute(
                select(func.count(), func.coalesce(func.sum(t.ledger.c.amount), 0))
                .where(t.ledger.c.case_id == case_id, t.ledger.c.kind == "refund")).one()
            pays = case_id in refund_only and deciding[0] != "SellerRejected"
            assert (count, total) == ((1, PRICE.minor) if pays else (0, 0)), (case_id, names)
            assert stored.refunded == (PRICE if pays else Money.zero("CNY")), case_id
        # Money is never created: per order line, the refunds never exceed what it paid.
        refunds = (select(t.ledger.c.order_id, t.ledger.c.line_no,
                          func.sum(t.ledger.c.amount).label("total"))
                   .where(t.ledger.c.kind == "refund")
                   .group_by(t.ledger.c.order_id, t.ledger.c.line_no).subquery())
        lines = uow.conn.execute(
            select(t.order_lines.c.order_id, t.order_lines.c.paid, t.order_lines.c.refunded,
                   func.coalesce(refunds.c.total, 0))
            .select_from(t.order_lines.outerjoin(refunds, (
                (refunds.c.order_id == t.order_lines.c.order_id)
                & (refunds.c.line_no == t.order_lines.c.line_no))))).all()
        assert len(lines) == N_REFUND_ONLY + N_RETURN
        for order_id, paid, refunded, ledger_total in lines:
            assert ledger_total <= paid, order_id
            assert refunded == ledger_total, order_id
    return decided


def summary(decided: Counter[str], tally: Tally) -> str:
    by_workers = sum(len(v) for v in tally.worker_claims.values())
    by_racers = Counter(n for v in tally.claims.values() for n in v)
    return (f"decided: {dict(decided)}; events published to sellers/buyers: {dict(by_racers)}, "
            f"to workers: {by_workers}; losers: {dict(tally.refused)}")


@pytest.mark.postgres
def test_sellers_buyers_and_two_worker_processes_race_and_every_case_is_decided_once(
        pg_schema_url: str) -> None:
    service = bootstrap(pg_schema_url)
    procs: list[subprocess.Popen[str]] = []
    try:
        refund_only, returns = prepare(service)

        def start_workers(start: threading.Barrier) -> None:
            for _ in range(2):
                procs.append(subprocess.Popen(
                    [sys.executable, "-c", WORKER_SCRIPT, pg_schema_url, NOW.isoformat()],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True))
            for p in procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            start.wait()  # the sellers and buyers go now, and so do both workers
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()

        tally = Tally()
        race(service, refund_only, returns, tally, start_workers, 1)
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            assert "Traceback" not in err and "not applied" not in err, err
            for case_id, name in json.loads(out.strip().splitlines()[-1]):
                tally.worker_fired(case_id, name)
        decided = check(service, refund_only, returns, tally)
        print(summary(decided, tally))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        service.engine.dispose()


def test_sellers_buyers_and_two_worker_threads_race_on_sqlite(sqlite_url: str) -> None:
    service = bootstrap(sqlite_url)
    workers = [bootstrap(sqlite_url, migrate=False) for _ in range(2)]
    threads: list[threading.Thread] = []
    try:
        refund_only, returns = prepare(service)
        tally = Tally()

        def work(svc: Service, start: threading.Barrier) -> None:
            start.wait()
            try:
                idle = 0
                while idle < 5:
                    stats = run_due(svc, NOW, batch=2)
                    for e in stats.events:
                        if e.aggregate == "case":
                            tally.worker_fired(e.aggregate_id, e.name)
                    idle = 0 if stats.events or stats.conflicts else idle + 1
            except Exception as exc:
                with tally.lock:
                    tally.crashes.append(f"worker: {type(exc).__name__}: {exc}")

        def start_workers(start: threading.Barrier) -> None:
            for svc in workers:
                threads.append(threading.Thread(target=work, args=(svc, start)))
                threads[-1].start()

        race(service, refund_only, returns, tally, start_workers, len(workers))
        for th in threads:
            th.join(timeout=300)
            assert not th.is_alive(), "a worker thread hung"
        decided = check(service, refund_only, returns, tally)
        print(summary(decided, tally))
    finally:
        for svc in (service, *workers):
            svc.engine.dispose()
