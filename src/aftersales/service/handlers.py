"""The service: one handler per command, each inside one unit of work.

Handlers load aggregates, let the domain decide, save, and return the events. Nothing else
commits. A lost optimistic race raises `ConcurrencyConflict` and changes nothing.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine

from aftersales.domain import jury, violations
from aftersales.domain.cases import ENTITLING_VIOLATIONS, Action, Case
from aftersales.domain.complaints import Complaint, check_rating, check_reply
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
    AnswerComplaint,
    CaseCommand,
    ChooseOutOfStockOption,
    Command,
    Complain,
    ConfirmReceipt,
    DeclareOutOfStock,
    DisputeViolation,
    EvidenceFile,
    ImportScans,
    OpenCase,
    PlaceOrder,
    Published,
    RateOrder,
    RecordScan,
    RegisterUser,
    RemindBuyer,
    ReplyToRating,
    ResolveComplaint,
    Result,
    SendToJury,
    SetStock,
    Ship,
    SubmitEvidence,
)
from aftersales.store.blobs import BlobStore
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
                 ids: IdFactory = random_ids, blobs: BlobStore | None = None) -> None:
        self.engine = engine
        self.blobs = blobs  # where evidence files live (IN-5); None: text-only evidence
        self.policies = policies or PolicySource()
        self.ids = ids
        self._pinned: dict[tuple[str, str], Policy] = {}
        self._registered: set[tuple[str, str]] = set()
        self._connections = KeptConnections(engine)  # one per thread, between commands
        # Command type -> handler (case commands aside: `_handler_for`).
        self._handlers: dict[type[Command], Callable[[Repository, Any, datetime], Result]] = {
            PlaceOrder: self._place_order, Ship: self._ship, RecordScan: self._scan,
            ConfirmReceipt: self._confirm_receipt, OpenCase: self._open_case,
            DeclareOutOfStock: self._declare_out_of_stock,
            ChooseOutOfStockOption: self._choose_out_of_stock, SetStock: self._set_stock,
            ImportScans: self._import_scans, DisputeViolation: self._dispute_violation,
            RegisterUser: self._register_user, Complain: self._complain,
            AnswerComplaint: self._complaint_action, ResolveComplaint: self._complaint_action,
            RateOrder: self._rate, ReplyToRating: self._reply_to_rating,
            RemindBuyer: self._remind,
        }

    # -- plumbing -----------------------------------------------------------------------------
    @contextmanager
    def uow(self, *, read_only: bool = False) -> Iterator[UnitOfWork]:
        """A unit of work on this thread's kept connection. `read_only`: for reads only, with
        no transaction round trips on PostgreSQL (`UnitOfWork`)."""
        with UnitOfWork(self.engine, self._connections, read_only=read_only) as uow:
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

    def handle(self, cmd: Command, now: datetime,
               before_commit: Callable[[Repository, Result], None] | None = None, *,
               before: Callable[[Repository], None] | None = None) -> Result:
        """Run one command at time `now` in its own transaction. Its events go to the outbox
        in the same transaction; `before_commit` may write more in it (the API's idempotency
        record), and a failure there rolls everything back. `before` runs first in the same
        transaction (the API's idempotency lookup); an exception from it rolls back and
        propagates, and the command is not run."""
        require_aware(now, "now")
        handler = self._handler_for(cmd)
        with self.uow() as uow:
            if before is not None:
                before(uow.repo)
            try:
                result = handler(uow.repo, cmd, now)
                uow.repo.add_outbox(result.events)
                if before_commit is not None:
                    before_commit(uow.repo, result)
                uow.commit()
            except BaseException:
                self._registered.clear()  # a rolled-back registration must be redone
                raise
        return result

    def _handler_for(self, cmd: Command) -> Callable[[Repository, Any, datetime], Result]:
        if isinstance(cmd, CaseCommand):
            return self._case_action
        try:
            return self._handlers[type(cmd)]
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
        # One read for both: the number's scans and the orders already using it.
        scans, on_number = repo.tracking_trail(cmd.tracking)
        # The number's trail so far belongs to this parcel too (a reused number, SH-5).
        for kind, city, at in scans:
            order.scanned(ScanKind(kind), at, city)
        # SH-5: a tracking number already on other orders flags them all.
        others = [o for o in on_number if o != order.id]
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
        orders = repo.orders_on_tracking(cmd.tracking)  # the ids and the orders: one read
        if not orders and not repo.is_known_tracking(cmd.tracking):
            raise NotFound(f"unknown tracking number {cmd.tracking!r}")
        repo.add_tracking_event(cmd.tracking, cmd.event.value, cmd.city, now)
        out: list[Published] = []
        for order in orders:
            order.scanned(cmd.event, now, cmd.city)
            out += self._settle(repo, order, now, tracking_orders=len(orders))
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
        args = dict(cmd.args())
        if isinstance(cmd, SendToJury):  # IN-3: the panel is drawn here, from the accounts
            args.update(self._draw_panel(repo, case, now, policy, cmd.seed))
        if isinstance(cmd, SubmitEvidence) and cmd.file is not None:
            self._check_stored(cmd.file)
        case.act(cmd.ACTION, cmd.actor, now, policy, order, **args)
        self._project(repo, case, now)
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

    # -- intervention (IN-3..IN-9) -----------------------------------------------------------
    def _draw_panel(self, repo: Repository, case: Case, now: datetime, policy: Policy,
                    seed: str | None) -> dict[str, Any]:
        seed = seed or secrets.token_hex(8)
        candidates = [a.id for a in repo.jury_candidates(now, policy)
                      if jury.eligible(a, now, policy)]
        linked = repo.linked_to(case.buyer_id, case.seller_id)
        return {"panel": jury.draw(candidates, linked, policy.jury.panel_size, seed),
                "seed": seed}

    def _check_stored(self, file: EvidenceFile) -> None:
        """The file a command names must be in the evidence store, as it says it is."""
        if self.blobs is None:
            raise InvalidInput("this service has no evidence store configured: text only",
                               rule="IN-5")
        if not self.blobs.exists(file.sha256):
            raise NotFound(f"no stored evidence file {file.sha256}")
        sniffed = self.blobs.media_type(file.sha256)  # read from the stored bytes
        if sniffed != file.media_type:
            raise InvalidInput(f"evidence file {file.sha256} is {sniffed}, "
                               f"not {file.media_type}")

    @staticmethod
    def _project(repo: Repository, case: Case, now: datetime) -> None:
        """Rows that list what the case log recorded: evidence items, jury seats and votes."""
        first = case.seq - len(case.pending) + 1
        for seq, event in enumerate(case.pending, start=first):
            item = event.changes.get("evidence")
            if item is not None:
                repo.add_evidence(case.id, seq, str(event.actor), item, event.at)
            if event.name == "SentToJury":
                panel = event.changes["jury_panel"]
                repo.add_jury_seats(case.id, panel, [f"jt_{secrets.token_hex(10)}"
                                                     for _ in panel], event.at)
            if "vote_reason" in event.changes:
                repo.record_vote(case.id, event.actor.id, event.changes["jury_votes"][-1][1],
                                 event.changes["vote_reason"], event.at)

    def _register_user(self, repo: Repository, cmd: RegisterUser, now: datetime) -> Result:
        if cmd.actor.role not in (Role.OPERATOR, Role.SYSTEM):
            raise WrongActor(f"{cmd.actor} may not register accounts: operators do")
        if cmd.standing not in jury.STANDINGS:
            raise InvalidInput(f"standing is one of {', '.join(jury.STANDINGS)}, "
                               f"not {cmd.standing!r}")
        require_aware(cmd.registered_at, "registered_at")
        if cmd.registered_at > now:
            raise InvalidInput("an account cannot be registered in the future")
        repo.put_user(jury.Account(cmd.user_id, cmd.registered_at, cmd.verified, cmd.standing))
        return Result()

    # -- complaints (CP-1) and ratings (SR-3) ------------------------------------------------
    def _complain(self, repo: Repository, cmd: Complain, now: datetime) -> Result:
        order = repo.get_order(cmd.order_id)
        policy = self.pinned_policy(repo, order.policy_id, order.policy_version)
        complaint = Complaint.file(complaint_id=cmd.complaint_id or self.ids("cmp"), order=order,
                                   actor=cmd.actor, kind=cmd.kind, text=cmd.text, now=now,
                                   policy=policy, open_kinds=repo.open_complaint_kinds(order.id))
        out = _published("complaint", complaint.id, complaint.pending)
        repo.add_complaint(complaint)
        return Result(out, order_id=order.id, complaint_id=complaint.id)

    def _complaint_action(self, repo: Repository, cmd: AnswerComplaint | ResolveComplaint,
                          now: datetime) -> Result:
        complaint = repo.get_complaint(cmd.complaint_id)
        order = repo.get_order(complaint.order_id)
        policy = self.pinned_policy(repo, order.policy_id, order.policy_version)
        if isinstance(cmd, AnswerComplaint):
            complaint.act("respond", cmd.actor, now, policy, order, text=cmd.text)
        else:
            complaint.act("uphold" if cmd.upheld else "dismiss", cmd.actor, now, policy, order,
                          text=cmd.text, penalty=cmd.penalty)
        out = (_published("complaint", complaint.id, complaint.pending)
               + _published("order", order.id, order.pending))
        repo.save_complaint(complaint)
        repo.save_order(order)
        return Result(out, order_id=order.id, complaint_id=complaint.id)

    def _rate(self, repo: Repository, cmd: RateOrder, now: datetime) -> Result:
        order = repo.get_order(cmd.order_id)
        policy = self.pinned_policy(repo, order.policy_id, order.policy_version)
        order.on_deadline(now, policy)  # an auto-confirm that is due completes the order first
        comment = check_rating(order, cmd.actor, cmd.stars, cmd.comment, policy)
        self._settle(repo, order, now)
        out = _published("order", order.id, order.pending)  # before the save clears them
        repo.save_order(order)
        repo.add_rating(order.id, order.buyer_id, order.seller_id, cmd.stars, comment, now)
        return Result(out, order_id=order.id)

    def _remind(self, repo: Repository, cmd: RemindBuyer, now: datetime) -> Result:
        order = repo.get_order(cmd.order_id)
        policy = self.pinned_policy(repo, order.policy_id, order.policy_version)
        order.on_deadline(now, policy)
        order.remind(cmd.actor, now, policy)
        self._settle(repo, order, now)
        out = _published("order", order.id, order.pending)
        repo.save_order(order)
        return Result(out, order_id=order.id)

    def _reply_to_rating(self, repo: Repository, cmd: ReplyToRating, now: datetime) -> Result:
        order = repo.get_order(cmd.order_id)
        policy = self.pinned_policy(repo, order.policy_id, order.policy_version)
        repo.reply_to_rating(order.id, check_reply(order, cmd.actor, cmd.text, policy), now)
        return Result(order_id=order.id)

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
        facts = order.facts(tracking_orders)
        findings = violations.detect(facts, policy, now, known)
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
        if new:  # the order moved on (violations, perhaps an entitled case): its facts again
            facts = order.facts()
        elif tracking_orders is not None:
            facts = {**facts, "tracking_orders": None}  # as order.facts() gives them
        order.check_at = (violations.next_check(facts, policy, now, frozenset(order.violations))
                          if live else None)
        order.plan_follow_up(now, policy)  # SR-2: remind the buyer a week after delivery
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
