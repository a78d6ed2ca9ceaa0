"""Property test: random command sequences through the real service and worker.

Hypothesis plays orders, shipments, carrier scans, cases of every type and every case action by
random actors (the right party, the other party, strangers, the system, staff), with clock jumps
that let the deadline worker fire. After every step:

- refunds never exceed payments: per line, per order, and in the ledger;
- a closed case stays closed with the same outcome, refund and closing time;
- every case and order replays from its event log to exactly the stored aggregate;
- a refused action (any AftersalesError) changed nothing in any table;
- the worker leaves nothing due in the past.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from aftersales.bootstrap import bootstrap
from aftersales.domain.cases import (
    TRANSITIONS,
    Action,
    Case,
    CaseStatus,
    Outcome,
    allowed_actions,
    find_transition,
)
from aftersales.domain.errors import AftersalesError
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec, Order
from aftersales.domain.types import (
    SYSTEM,
    Actor,
    CaseType,
    LedgerKind,
    OrderStatus,
    Reason,
    Role,
    ScanKind,
    ShippingMode,
)
from aftersales.scenario.runner import counter_ids
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from aftersales.service.worker import advance
from aftersales.store import tables
from aftersales.store.repository import Repository
from tests.conftest import T0

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
PRICES = ["0.01", "3.00", "19.99", "59.90", "300.00"]
# Mostly short jumps, so parties get to act before their timers; some long enough for any timer.
JUMPS = [timedelta(seconds=1), timedelta(hours=1), timedelta(hours=6), timedelta(hours=12),
         timedelta(days=1), timedelta(hours=47), timedelta(days=2), timedelta(days=3),
         timedelta(days=5), timedelta(days=7), timedelta(days=10), timedelta(days=15),
         timedelta(days=31)]
# Mostly the right party for the command; else the other party, strangers, the system, staff.
ACTOR_PICKS = st.one_of(st.just(0), st.just(0), st.just(0), st.integers(1, 5))
CASE_FIELDS = [f.name for f in dataclasses.fields(Case)
               if f.name not in ("version", "pending", "log_head")]
ORDER_FIELDS = [f.name for f in dataclasses.fields(Order)
                if f.name not in ("version", "pending", "pending_ledger", "dirty_lines")]
CASE_COMMANDS: dict[Action, type[c.CaseCommand]] = {cls.ACTION: cls for cls in (
    c.Agree, c.Reject, c.MakeOffer, c.AcceptOffer, c.DeclineOffer, c.Resubmit, c.ShipReturn,
    c.ConfirmReturn, c.ShipReplacement, c.ConfirmReplacement, c.Withdraw, c.Escalate,
    c.SubmitEvidence, c.RequestProof, c.Rule, c.SendToJury, c.Vote)}
ROLES_BY_ACTION: dict[Action, list[Role]] = defaultdict(list)
for _t in TRANSITIONS:
    ROLES_BY_ACTION[_t.action] += [r for r in sorted(_t.by) if r not in ROLES_BY_ACTION[_t.action]]


# -- the steps -------------------------------------------------------------------------------

place_step = st.tuples(
    st.just("place"), st.integers(0, 1), st.integers(0, 1),
    st.lists(st.tuples(st.integers(1, 3), st.integers(0, len(PRICES) - 1), st.booleans()),
             min_size=1, max_size=3),
    st.sampled_from([ShippingMode.IN_STOCK, ShippingMode.PRESALE]), st.booleans())
order_step = st.tuples(st.sampled_from(["ship", "confirm"]), st.integers(0, 5), ACTOR_PICKS)
scan_step = st.tuples(st.just("scan"), st.integers(0, 5),
                      st.sampled_from([ScanKind.PICKED_UP, ScanKind.DELIVERED, ScanKind.SIGNED,
                                       ScanKind.LOST]), st.booleans())
open_step = st.tuples(
    st.just("open"), st.integers(0, 5), st.sampled_from(list(CaseType)),
    st.sampled_from(list(Reason)), st.integers(0, 7), st.booleans(), st.integers(0, 5),
    st.sampled_from([None, True, False]), ACTOR_PICKS, st.integers(0, 7))
act_step = st.tuples(
    st.just("act"), st.integers(0, 7), st.integers(0, 7), st.integers(0, 20), ACTOR_PICKS,
    st.integers(0, 3), st.sampled_from(["express", "surface"]))
wait_step = st.tuples(st.just("wait"), st.sampled_from(JUMPS))
# Weighted: mostly case actions and new cases, with clock jumps; start with one to three orders
# so that the steps after them have something to act on.
STEP_KINDS = {"act": act_step, "open": open_step, "wait": wait_step, "order": order_step,
              "scan": scan_step, "place": place_step}
WEIGHTS = ["act"] * 6 + ["open"] * 3 + ["wait"] * 3 + ["order"] * 2 + ["scan", "place"]
STEPS = st.builds(
    lambda first, rest: [*first, *rest], st.lists(place_step, min_size=1, max_size=3),
    st.lists(st.sampled_from(WEIGHTS).flatmap(STEP_KINDS.__getitem__), min_size=10,
             max_size=40))


# -- the world -------------------------------------------------------------------------------


@dataclass
class World:
    service: Service
    now: datetime = T0
    orders: list[str] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)
    closed: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    refusals: int = 0
    applied: int = 0

    @contextmanager
    def repo(self) -> Iterator[Repository]:
        with self.service.uow() as uow:
            yield uow.repo

    def order(self, pick: int) -> Order | None:
        return self.service.order(self.orders[pick % len(self.orders)]) if self.orders else None

    def case(self, pick: int, open_first: bool) -> Case | None:
        """The picked case; with `open_first`, the picked one among those still open."""
        ids = [i for i in self.cases if i not in self.closed] if open_first else []
        ids = ids or self.cases
        return self.service.case(ids[pick % len(ids)]) if ids else None


def party(pick: int, right: Actor, other: Actor) -> Actor:
    strangers = [other, Actor(Role.BUYER, "b9"), Actor(Role.SELLER, "s9"), SYSTEM,
                 Actor(Role.STAFF, "x1")]
    return right if pick == 0 else strangers[pick - 1]


def snapshot(service: Service) -> dict[str, list[tuple[Any, ...]]]:
    with service.engine.connect() as conn:
        return {table.name: [tuple(r) for r in conn.execute(
            select(table).order_by(*table.primary_key.columns))]
            for table in tables.metadata.sorted_tables}


def build(w: World, step: tuple[Any, ...]) -> c.Command | None:
    """The command a step stands for, against the current state (None: nothing to do)."""
    kind = step[0]
    if kind == "place":
        _, buyer, seller, lines, mode, _ = step
        specs = tuple(
            LineSpec(f"sku{i}", qty, Money.parse(PRICES[p]),
                     paid=Money(Money.parse(PRICES[p]).times(qty).minor * 9 // 10) if disc
                     else None)
            for i, (qty, p, disc) in enumerate(lines))
        return c.PlaceOrder(actor=Actor(Role.BUYER, f"b{buyer}"), seller_id=f"s{seller}",
                            mode=mode, lines=specs,
                            ship_by=w.now + timedelta(days=5)
                            if mode is ShippingMode.PRESALE else None)
    if kind in ("ship", "confirm", "scan", "open"):
        order = w.order(step[1])
        if order is None:
            return None
        buyer, seller = Actor(Role.BUYER, order.buyer_id), Actor(Role.SELLER, order.seller_id)
        if kind == "ship":
            return c.Ship(actor=party(step[2], seller, buyer), order_id=order.id, carrier="SF",
                          tracking=f"T-{order.id}")
        if kind == "confirm":
            return c.ConfirmReceipt(actor=party(step[2], buyer, seller), order_id=order.id)
        if kind == "scan":
            return c.RecordScan(actor=SYSTEM, tracking=f"T-{order.id}" if step[3] else "NOPE",
                                event=step[2], city="Hangzhou")
        _, _, case_type, reason, mask, whole, amount_pick, received, actor_pick, sensible = step
        if sensible:  # mostly a request the rules can accept, so cases get somewhere
            if order.status is OrderStatus.PAID:
                case_type, received, amount_pick = CaseType.REFUND_ONLY, None, 0
            if reason is Reason.NO_REASON_7D and case_type not in (CaseType.RETURN_REFUND,
                                                                   CaseType.EXCHANGE):
                reason = Reason.QUALITY
            amount_pick %= 4
        lines = tuple((ln.line_no, ln.qty if whole else 1) for i, ln in enumerate(order.lines)
                      if mask >> i & 1) or None
        chosen = lines or tuple((ln.line_no, ln.qty) for ln in order.lines)
        allowed = sum((order.line(no).value_of(q) for no, q in chosen), Money.zero())
        amount = [None, allowed, Money(allowed.minor // 2), Money(1), allowed + Money(1),
                  Money.zero()][amount_pick]
        return c.OpenCase(actor=party(actor_pick, buyer, seller), order_id=order.id,
                          type=case_type, reason=reason, received=received, lines=lines,
                          amount=amount)
    if kind == "act":
        _, case_pick, sensible, action_pick, actor_pick, amount_pick, method = step
        case = w.case(case_pick, open_first=bool(sensible))
        if case is None:
            return None
        choices = ((allowed_actions(case.status, case.type) if sensible else [])
                   or [a for a in Action if a not in (Action.TIMEOUT, Action.ENTITLE)])
        action = choices[action_pick % len(choices)]
        buyer, seller = Actor(Role.BUYER, case.buyer_id), Actor(Role.SELLER, case.seller_id)
        row = find_transition(case.status, action, case.type)
        roles = sorted(row.by) if row else ROLES_BY_ACTION[action]
        role = roles[action_pick % len(roles)]
        right = (buyer if role is Role.BUYER else Actor(Role.STAFF, "x1")
                 if role is Role.STAFF else seller)
        actor = party(actor_pick, right, seller if right is buyer else buyer)
        amount = [Money(case.amount.minor // 2), case.amount, Money(1),
                  case.amount + Money(10**6)][amount_pick]
        args: dict[str, Any] = {
            Action.AGREE: {"return_address": "Hangzhou"},
            Action.REJECT: {"reason": "no"},
            Action.OFFER: {"amount": amount},
            Action.RESUBMIT: {"amount": None if amount_pick == 1 else amount},
            Action.SHIP_RETURN: {"carrier": "YTO", "tracking": f"R-{case.id}", "method": method},
            Action.SHIP_REPLACEMENT: {"carrier": "SF", "tracking": f"X-{case.id}"},
            Action.SUBMIT_EVIDENCE: {"kind": "photo", "text": f"evidence {amount_pick}"},
            Action.REQUEST_PROOF: {"from_party": "seller" if method == "express" else "buyer"},
            Action.RULE: {"outcome": ("refund", "partial_refund", "reject",
                                      "refund")[amount_pick],
                          "amount": amount if amount_pick in (0, 3) else None,
                          "return_required": method == "express"},
            Action.VOTE: {"side": "buyer", "reason": "seen"},
        }.get(action, {})
        return CASE_COMMANDS[action](actor=actor, case_id=case.id, **args)
    raise AssertionError(kind)


def play(w: World, step: tuple[Any, ...]) -> None:
    if step[0] == "wait":
        # Overdue timers (a case closed after the auto-confirm time) fire at the jump's start,
        # never before the command that made them due: that is how the scenario runner runs.
        start, w.now = w.now, w.now + step[1]
        advance(w.service, w.now, start=start)
        return
    cmd = build(w, step)
    if cmd is None:
        return
    before = snapshot(w.service)
    try:
        result = w.service.handle(cmd, w.now)
    except AftersalesError:
        w.refusals += 1
        assert snapshot(w.service) == before, f"refused {cmd} but the database changed"
        return
    w.applied += 1
    if result.order_id and result.order_id not in w.orders:
        w.orders.append(result.order_id)
        if step[0] == "place" and step[-1]:  # and the seller ships it at once
            order = w.service.order(result.order_id)
            w.service.handle(c.Ship(actor=Actor(Role.SELLER, order.seller_id),
                                    order_id=order.id, carrier="SF",
                                    tracking=f"T-{order.id}"), w.now)
    if result.case_id and result.case_id not in w.cases:
        w.cases.append(result.case_id)


# -- the invariants --------------------------------------------------------------------------


def check(w: World, after_wait: bool) -> None:
    with w.repo() as repo:
        ledger: dict[tuple[str, str, int | None], int] = defaultdict(int)
        for row in repo.conn.execute(select(tables.ledger)).mappings():
            ledger[(row["order_id"], row["kind"], row["line_no"])] += row["amount"]
        case_refunds: dict[str, Money] = defaultdict(Money.zero)
        for case_id in w.cases:
            case = repo.get_case(case_id)
            events = repo.case_events(case_id)
            assert [e.at for e in events] == sorted(e.at for e in events), "time went back"
            replayed = Case.replay(events)
            for name in CASE_FIELDS:
                assert getattr(replayed, name) == getattr(case, name), (
                    f"case {case_id}.{name}: replay {getattr(replayed, name)!r} != stored "
                    f"{getattr(case, name)!r}")
            assert Money.zero() <= case.refunded <= case.amount
            assert (case.status is CaseStatus.CLOSED) == (case.outcome is not Outcome.OPEN)
            frozen = (case.status, case.outcome, case.refunded, case.closed_at, case.decided_by)
            if case_id in w.closed:
                assert frozen == w.closed[case_id], f"closed case {case_id} changed"
            elif case.status is CaseStatus.CLOSED:
                w.closed[case_id] = frozen
            case_refunds[case.order_id] += case.refunded
            order = repo.get_order(case.order_id)
            for no, _ in case.lines:
                holder = order.line(no).open_case_id
                assert (holder == case_id) if case.is_open else (holder != case_id)
        for order_id in w.orders:
            order = repo.get_order(order_id)
            events = repo.order_events(order_id)
            assert [e.at for e in events] == sorted(e.at for e in events), "time went back"
            replayed_order = Order.replay(events)
            for name in ORDER_FIELDS:
                assert getattr(replayed_order, name) == getattr(order, name), (
                    f"order {order_id}.{name}: replay {getattr(replayed_order, name)!r} != "
                    f"stored {getattr(order, name)!r}")
            for ln in order.lines:
                assert Money.zero() <= ln.refunded <= ln.paid, (order_id, ln)
                assert ledger[(order_id, LedgerKind.PAYMENT.value, ln.line_no)] == ln.paid.minor
                assert ledger[(order_id, LedgerKind.REFUND.value, ln.line_no)] == ln.refunded.minor
            assert order.refunded <= order.paid
            refunds = sum(v for (o, k, _), v in ledger.items() if o == order_id and k == "refund")
            payments = sum(v for (o, k, _), v in ledger.items()
                           if o == order_id and k == "payment")
            assert refunds <= payments == order.paid.minor
            assert case_refunds[order_id] == order.refunded  # every refund comes from a case
        if after_wait:  # the worker caught up: nothing is left due
            due = repo.next_due()
            assert due is None or due > w.now, f"{due} was left unfired at {w.now}"


def run_steps(url: str, steps: list[tuple[Any, ...]]) -> None:
    service = bootstrap(url, ids=counter_ids())
    try:
        with service.engine.begin() as conn:  # examples share the database: start empty
            for table in reversed(tables.metadata.sorted_tables):
                conn.execute(delete(table))
        w = World(service)
        for step in steps:
            play(w, step)
            check(w, after_wait=step[0] == "wait")
        event(f"cases closed: {min(len(w.closed), 3)}")
        event(f"applied: {w.applied // 5 * 5}+")
        event(f"refused: {w.refusals // 5 * 5}+")
    finally:
        service.engine.dispose()


@SETTINGS
@given(steps=STEPS)
def test_random_command_sequences_keep_money_logs_and_outcomes_consistent_on_sqlite(
        tmp_path: Path, steps: list[tuple[Any, ...]]) -> None:
    run_steps(f"sqlite:///{tmp_path / 'property.db'}", steps)


@pytest.mark.postgres
@SETTINGS
@given(steps=STEPS)
def test_random_command_sequences_keep_money_logs_and_outcomes_consistent_on_postgres(
        pg_schema_url: str, steps: list[tuple[Any, ...]]) -> None:
    run_steps(pg_schema_url, steps)
