"""The service: one handler per command, each inside one unit of work.

Handlers load aggregates, let the domain decide, save, and return the events. Nothing else
commits. A lost optimistic race raises `ConcurrencyConflict` and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine

from aftersales.domain import violations
from aftersales.domain.cases import ENTITLING_VIOLATIONS, Action, Case
from aftersales.domain.errors import InvalidInput, NotFound, WrongActor
from aftersales.domain.orders import Order
from aftersales.domain.types import (
    SYSTEM,
    Event,
    OrderStatus,
    Role,
    ScanKind,
    ShippingMode,
    require_aware,
)
from aftersales.policy import loader
from aftersales.policy.model import Policy
from aftersales.service.commands import (
    CaseCommand,
    ChooseOutOfStockOption,
    Command,
    ConfirmReceipt,
    DeclareOutOfStock,
    DisputeViolation,
    ImportScans,
    OpenCase,
    PlaceOrder,
    Published,
    RecordScan,
    Result,
    SetStock,
    Ship,
)
from aftersales.store.repository import Repository, encode_changes
from aftersales.store.uow import KeptConnections, UnitOfWork

C = TypeVar("C", bound=Command)
IdFactory = Callable[[str], str]


def random_ids(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class PolicySource:
    """Where current packs come from: the built-in YAML files, optionally with overrides
    (the scenario runner's `overrides:`). Versions already registered stay as they were."""

    def __init__(self, default: str = loader.DEFAULT_POLICY,
                 overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self.default = default
        self.overrides = overrides or {}
        self._current: dict[str, Policy] = {}

    def current(self, policy_id: str | None) -> Policy:
        pid = policy_id or self.default
        if pid not in self._current:
            self._current[pid] = loader.load(pid, self.overrides.get(pid))
        return self._current[pid]


class Service:
    def __init__(self, engine: Engine, *, policies: PolicySource | None = None,
                 ids: IdFactory = random_ids) -> None:
        self.engine = engine
        self.policies = policies or PolicySource()
        self.ids = ids
        self._pinned: dict[tuple[str, str], Policy] = {}
        self._registered: set[tuple[str, str]] = set()
        self._connections = KeptConnections(engine)  # one per thread, between commands

    # -- plumbing -----------------------------------------------------------------------------
    @contextmanager
    def uow(self) -> Iterator[UnitOfWork]:
        with UnitOfWork(self.engine, self._connections) as uow:
            yield uow

    def pinned_policy(self, repo: Repository, policy_id: str, version: str) -> Policy:
        """The pack a case or order was opened under; versions never change once stored."""
        key = (policy_id, version)
        if key not in self._pinned:
            self._pinned[key] = repo.get_policy(policy_id, version)
        return self._pinned[key]

    def _current_policy(self, repo: Repository, policy_id: str | None, now: datetime) -> Policy:
        policy = self.policies.current(policy_id)
        key = (policy.id, policy.version)
        if key not in self._registered:
            repo.register_policy(policy, now)
            self._registered.add(key)
            self._pinned[key] = policy
        return policy

    def handle(self, cmd: Command, now: datetime) -> Result:
        """Run one command at time `now` in its own transaction."""
        require_aware(now, "now")
        handler = self._handler_for(cmd)
        with self.uow() as uow:
            try:
                result = handler(uow.repo, cmd, now)
                uow.commit()
            except BaseException:
                self._registered.clear()  # a rolled-back registration must be redone
                raise
        return result

    def _handler_for(self, cmd: Command) -> Callable[[Repository, Any, datetime], Result]:
        if isinstance(cmd, CaseCommand):
            return self._case_action
        table: dict[type[Command], Callable[[Repository, Any, datetime], Result]] = {
            PlaceOrder: self._place_order, Ship: self._ship, RecordScan: self._scan,
            ConfirmReceipt: self._confirm_receipt, OpenCase: self._open_case,
            DeclareOutOfStock: self._declare_out_of_stock,
            ChooseOutOfStockOption: self._choose_out_of_stock, SetStock: self._set_stock,
            ImportScans: self._import_scans, DisputeViolation: self._dispute_violation,
        }
        try:
            return table[type(cmd)]
        except KeyError:
            raise InvalidInput(f"unknown command {type(cmd).__name__}") from None

    # -- reads --------------------------------------------------------------------------------
    def order(self, order_id: str) -> Order:
        with self.uow() as uow:
            return uow.repo.get_order(order_id)

    def case(self, case_id: str) -> Case:
        with self.uow() as uow:
            return uow.repo.get_case(case_id)

    # -- orders -------------------------------------------------------------------------------
    def _place_order(self, repo: Repository, cmd: PlaceOrder, now: datetime) -> Result:
        policy = self._current_policy(repo, cmd.policy_id, now)
        if cmd.mode is ShippingMode.IN_STOCK:  # SH-7: payment takes in-stock quantities
            for line in cmd.lines:
                repo.take_stock(cmd.seller_id, line.sku, line.qty)
        order = Order.place(order_id=cmd.order_id or self.ids("ord"), buyer=cmd.actor,
                            seller_id=cmd.seller_id, mode=cmd.mode, lines=cmd.lines, now=now,
                            policy=policy, ship_by=cmd.ship_by, ship_to_city=cmd.ship_to_city)
        self._settle(repo, order, now)  # the ship-by check (SH-2) is planned from the start
        out = _published("order", order.id, order.pending)
        repo.add_order(order)
        return Result(out, order_id=order.id)

    def _ship(self, repo: Repository, cmd: Ship, now: datetime) -> Result:
        order = repo.get_order(cmd.order_id)
        policy = self.pinned_policy(repo, order.policy_id, order.policy_version)
        if cmd.weight_g is not None and cmd.weight_g <= 0:
            raise InvalidInput("weight_g must be positive")
        order.ship(cmd.actor, cmd.carrier, cmd.tracking, now, policy, cmd.weight_g)
        # The number's trail so far belongs to this parcel too (a reused number, SH-5).
        for kind, city, at in repo.scans_of(cmd.tracking):
            order.scanned(ScanKind(kind), at, city)
        # SH-5: a tracking number already on other orders flags them all.
        others = [o for o in repo.orders_by_tracking(cmd.tracking) if o != order.id]
        extra = self._settle(repo, order, now, tracking_orders=len(others) + 1)
        out = extra + _published("order", order.id, order.pending)
        repo.save_order(order)
        repo.add_shipment(order.id, "outbound", cmd.carrier, cmd.tracking, now, cmd.weight_g)
        for other_id in others:
            other = repo.get_order(other_id)
            out += self._settle(repo, other, now, tracking_orders=len(others) + 1)
            out += _published("order", other.id, other.pending)
            repo.save_order(other)
        return Result(out, order_id=order.id)

    def _scan(self, repo: Repository, cmd: RecordScan, now: datetime) -> Result:
        if cmd.actor.role is not Role.SYSTEM:
            raise InvalidInput("carrier scans come from the system (carrier feed)")
        order_ids = repo.orders_by_tracking(cmd.tracking)
        if not order_ids and not repo.is_known_tracking(cmd.tracking):
            raise NotFound(f"unknown tracking number {cmd.tracking!r}")
        repo.add_tracking_event(cmd.tracking, cmd.event.value, cmd.city, now)
        out: list[Published] = []
        for order_id in order_ids:
            order = repo.get_order(order_id)
            order.scanned(cmd.event, now, cmd.city)
            out += self._settle(repo, order, now, tracking_orders=len(order_ids))
            out += _published("order", order.id, order.pending)
            repo.save_order(order)
        return Result(out)

    def _confirm_receipt(self, repo: Repository, cmd: ConfirmReceipt, now: datetime) -> Result:
        order = repo.get_order(cmd.order_id)
        order.on_deadline(now)  # already auto-confirmed if the worker is behind
        order.confirm_receipt(cmd.actor, now)
        self._settle(repo, order, now)
        out = _published("order", order.id, order.pending)
        repo.save_order(order)
        return Result(out, order_id=order.id)

    def _import_scans(self, repo: Repository, cmd: ImportScans, now: datetime) -> Result:
        """All scans of a file in one transaction: one unknown tracking number and none
        applies."""
        out = Result()
        for scan, at in sorted(zip(cmd.scans, cmd.at, strict=True), key=lambda p: p[1]):
            out.events += self._scan(repo, scan, at).events
        return out

    # -- out of stock (OS-1..OS-4) and inventory (SH-7) -------------------------------------
    def _declare_out_of_stock(self, repo: Repository, cmd: DeclareOutOfStock,
                              now: datetime) -> Result:
        order = repo.get_order(cmd.order_id)
        policy = self.pinned_policy(repo, order.policy_id, order.policy_version)
        order.declare_out_of_stock(cmd.actor, cmd.lines, now, policy)
        self._settle(repo, order, now)
        out = _published("order", order.id, order.pending)
        repo.save_order(order)
        return Result(out, order_id=order.id)

    def _choose_out_of_stock(self, repo: Repository, cmd: ChooseOutOfStockOption,
                             now: datetime) -> Result:
        order = repo.get_order(cmd.order_id)
        policy = self.pinned_policy(repo, order.policy_id, order.policy_version)
        order.on_deadline(now, policy)  # the default may already have applied
        order.choose(cmd.actor, cmd.option, now, policy, sku=cmd.sku, ship_by=cmd.ship_by)
        self._settle(repo, order, now)
        out = _published("order", order.id, order.pending)
        repo.save_order(order)
        return Result(out, order_id=order.id)

    def _dispute_violation(self, repo: Repository, cmd: DisputeViolation,
                           now: datetime) -> Result:
        order = repo.get_order(cmd.order_id)
        order.dispute_violation(cmd.actor, cmd.name, cmd.reason, now)
        self._settle(repo, order, now)
        out = _published("order", order.id, order.pending)
        repo.save_order(order)
        repo.mark_violation_disputed(order.id, cmd.name, cmd.reason)
        return Result(out, order_id=order.id)

    def _set_stock(self, repo: Repository, cmd: SetStock, now: datetime) -> Result:
        if cmd.actor.role not in (Role.SELLER, Role.OPERATOR, Role.SYSTEM) or (
                cmd.actor.role is Role.SELLER and cmd.actor.id != cmd.seller_id):
            raise WrongActor(f"{cmd.actor} may not set {cmd.seller_id}'s stock")
        if cmd.quantity < 0:
            raise InvalidInput("stock cannot be negative", rule="SH-7")
        repo.set_stock(cmd.seller_id, cmd.sku, cmd.quantity)
        return Result()

    # -- cases --------------------------------------------------------------------------------
    def _open_case(self, repo: Repository, cmd: OpenCase, now: datetime) -> Result:
        order = repo.get_order(cmd.order_id)
        order.on_deadline(now)  # a due auto-confirm makes this an after-completion request
        policy = self._current_policy(repo, order.policy_id, now)  # pinned from here on
        case = Case.open(case_id=cmd.case_id or self.ids("case"), order=order, actor=cmd.actor,
                         case_type=cmd.type, reason=cmd.reason, now=now, policy=policy,
                         received=cmd.received, lines=cmd.lines, amount=cmd.amount,
                         description=cmd.description)
        if case.entitled_by(order):  # SH-6 (a), SH-9: refund or re-ship is the buyer's call
            case.act(Action.ENTITLE, SYSTEM, now, policy, order)
        self._settle(repo, order, now, held=case)
        out = _published("case", case.id, case.pending) + _published("order", order.id,
                                                                      order.pending)
        repo.add_case(case)
        repo.save_order(order)
        return Result(out, order_id=order.id, case_id=case.id)

    def _case_action(self, repo: Repository, cmd: CaseCommand, now: datetime) -> Result:
        case, order = repo.get_case_and_order(cmd.case_id)
        policy = self.pinned_policy(repo, case.policy_id, case.policy_version)
        # A timer that ran out before the worker got to it has already decided (silence is
        # an answer, RF-1): apply it first, then judge the action against the new state.
        case.on_deadline(now, policy, order)
        case.act(cmd.ACTION, cmd.actor, now, policy, order, **cmd.args())
        self._settle(repo, order, now, held=case)
        out = _published("case", case.id, case.pending) + _published("order", order.id,
                                                                      order.pending)
        if case.return_tracking and cmd.ACTION.value == "ship_return":
            repo.add_shipment(order.id, "return", case.return_carrier or "", case.return_tracking,
                              now, case_id=case.id)
        if case.replacement_tracking and cmd.ACTION.value == "ship_replacement":
            repo.add_shipment(order.id, "replacement", case.replacement_carrier or "",
                              case.replacement_tracking, now, case_id=case.id)
        repo.save_case(case)
        repo.save_order(order)
        return Result(out, order_id=order.id, case_id=case.id)

    # -- shipping rules (SH-2..SH-6, SH-9) ---------------------------------------------------
    def _settle(self, repo: Repository, order: Order, now: datetime,
                tracking_orders: int | None = None, held: Case | None = None
                ) -> list[Published]:
        """Run the shipping rules on the order's facts (recording and compensating what they
        find, once per order and violation) and plan when they must be looked at next. Every
        order save goes through here, so the order's next deadline always includes them.
        A new entitling violation grants the buyer's open refund / re-ship requests at once
        (SH-6 (a), SH-9); `held` is a case the caller has loaded and will save itself."""
        policy = self.pinned_policy(repo, order.policy_id, order.policy_version)
        known = frozenset(order.violations)
        findings = violations.detect(order.facts(tracking_orders), policy, now, known)
        new = order.record_violations(findings, now, policy)  # saved with the order
        out: list[Published] = []
        if any(v["name"] in ENTITLING_VIOLATIONS for v in new):
            open_ids = sorted({ln.open_case_id for ln in order.lines if ln.open_case_id})
            for case_id in open_ids:
                case = held if held is not None and held.id == case_id else repo.get_case(case_id)
                if case.entitled_by(order):
                    case_policy = self.pinned_policy(repo, case.policy_id, case.policy_version)
                    case.act(Action.ENTITLE, SYSTEM, now, case_policy, order)
                    if case is not held:
                        out += _published("case", case.id, case.pending)
                        repo.save_case(case)
        # Completion does not end the carrier's duties: a parcel auto-confirmed while still
        # in transit can go on to stall (SH-9). A closed (fully refunded) order has none left.
        live = order.status is not OrderStatus.CLOSED
        order.check_at = (violations.next_check(order.facts(), policy, now,
                                                frozenset(order.violations)) if live else None)
        return out

    # -- deadlines (the worker calls these) ---------------------------------------------------
    def fire_case_deadline(self, repo: Repository, case_id: str, now: datetime) -> list[Published]:
        case, order = repo.get_case_and_order(case_id)
        policy = self.pinned_policy(repo, case.policy_id, case.policy_version)
        if case.on_deadline(now, policy, order) is None:
            return []
        self._settle(repo, order, now, held=case)
        out = _published("case", case.id, case.pending) + _published("order", order.id,
                                                                      order.pending)
        repo.save_case(case)
        repo.save_order(order)
        return out

    def fire_order_deadline(self, repo: Repository, order_id: str, now: datetime
                            ) -> list[Published]:
        order = repo.get_order(order_id)
        order.on_deadline(now, self.pinned_policy(repo, order.policy_id, order.policy_version))
        extra = self._settle(repo, order, now)
        out = extra + _published("order", order.id, order.pending)
        if order.pending:
            repo.save_order(order)
        else:
            repo.refresh_order_deadline(order)
        return out


def _published(aggregate: str, aggregate_id: str, events: list[Event]) -> list[Published]:
    return [Published(aggregate, aggregate_id, e.name, e.at, str(e.actor), e.rule,
                      encode_changes(e)) for e in events]
