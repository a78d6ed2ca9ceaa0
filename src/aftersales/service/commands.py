"""Commands: what a buyer, seller or the system asks the engine to do (imperative names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from aftersales.domain.cases import Action
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import Actor, CaseType, Reason, ScanKind, ShippingMode


@dataclass(frozen=True, kw_only=True)
class Command:
    actor: Actor


@dataclass(frozen=True, kw_only=True)
class PlaceOrder(Command):
    seller_id: str
    mode: ShippingMode
    lines: tuple[LineSpec, ...]
    order_id: str | None = None  # the marketplace's own order id; generated when absent
    ship_by: datetime | None = None
    ship_to_city: str | None = None
    policy_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Ship(Command):
    order_id: str
    carrier: str
    tracking: str
    weight_g: int | None = None


@dataclass(frozen=True, kw_only=True)
class RecordScan(Command):
    tracking: str
    event: ScanKind
    city: str | None = None


@dataclass(frozen=True, kw_only=True)
class ConfirmReceipt(Command):
    order_id: str


@dataclass(frozen=True, kw_only=True)
class OpenCase(Command):
    order_id: str
    type: CaseType
    reason: Reason
    received: bool | None = None
    lines: tuple[tuple[int, int], ...] | None = None  # (line_no, qty); default all lines
    amount: Money | None = None
    description: str = ""
    case_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class CaseCommand(Command):
    """Base of every action on an open case; `ACTION` names the state-table action."""

    ACTION: ClassVar[Action]
    case_id: str

    def args(self) -> Mapping[str, Any]:
        return {}


@dataclass(frozen=True, kw_only=True)
class Agree(CaseCommand):
    ACTION = Action.AGREE
    return_address: str | None = None

    def args(self) -> Mapping[str, Any]:
        return {"return_address": self.return_address}


@dataclass(frozen=True, kw_only=True)
class Reject(CaseCommand):
    ACTION = Action.REJECT
    reason: str

    def args(self) -> Mapping[str, Any]:
        return {"reason": self.reason}


@dataclass(frozen=True, kw_only=True)
class MakeOffer(CaseCommand):
    ACTION = Action.OFFER
    amount: Money

    def args(self) -> Mapping[str, Any]:
        return {"amount": self.amount}


@dataclass(frozen=True, kw_only=True)
class AcceptOffer(CaseCommand):
    ACTION = Action.ACCEPT_OFFER


@dataclass(frozen=True, kw_only=True)
class DeclineOffer(CaseCommand):
    ACTION = Action.DECLINE_OFFER


@dataclass(frozen=True, kw_only=True)
class Resubmit(CaseCommand):
    ACTION = Action.RESUBMIT
    amount: Money | None = None
    description: str = ""

    def args(self) -> Mapping[str, Any]:
        return {"amount": self.amount, "description": self.description}


@dataclass(frozen=True, kw_only=True)
class ShipReturn(CaseCommand):
    ACTION = Action.SHIP_RETURN
    carrier: str
    tracking: str
    method: str = "express"

    def args(self) -> Mapping[str, Any]:
        return {"carrier": self.carrier, "tracking": self.tracking, "method": self.method}


@dataclass(frozen=True, kw_only=True)
class ConfirmReturn(CaseCommand):
    ACTION = Action.CONFIRM_RETURN


@dataclass(frozen=True, kw_only=True)
class ShipReplacement(CaseCommand):
    ACTION = Action.SHIP_REPLACEMENT
    carrier: str
    tracking: str

    def args(self) -> Mapping[str, Any]:
        return {"carrier": self.carrier, "tracking": self.tracking}


@dataclass(frozen=True, kw_only=True)
class ConfirmReplacement(CaseCommand):
    ACTION = Action.CONFIRM_RECEIPT


@dataclass(frozen=True, kw_only=True)
class Withdraw(CaseCommand):
    ACTION = Action.WITHDRAW


@dataclass(frozen=True, kw_only=True)
class Escalate(CaseCommand):
    ACTION = Action.ESCALATE


@dataclass(frozen=True)
class Published:
    """An event as it leaves the service: which aggregate it belongs to."""

    aggregate: str  # "order" | "case"
    aggregate_id: str
    name: str
    at: datetime
    actor: str
    rule: str | None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    events: list[Published] = field(default_factory=list)
    order_id: str | None = None
    case_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeclareOutOfStock(Command):
    """OS-1: the seller tells the buyer paid lines cannot be supplied."""

    order_id: str
    lines: tuple[int, ...] | None = None  # line numbers; default every line


@dataclass(frozen=True, kw_only=True)
class ChooseOutOfStockOption(Command):
    """OS-2: the buyer picks substitute, wait (new ship-by) or cancel (full refund, OS-3)."""

    order_id: str
    option: str
    sku: str | None = None
    ship_by: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class DisputeViolation(Command):
    """SH-5: the seller contests a detected violation; platform staff decide."""

    order_id: str
    name: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class SetStock(Command):
    """SH-7: a seller's in-stock quantity of a sku (a sku with no row is unlimited)."""

    seller_id: str
    sku: str
    quantity: int


@dataclass(frozen=True, kw_only=True)
class ImportScans(Command):
    """Bulk carrier feed: every scan applies in one transaction, in time order, or none does."""

    scans: tuple[RecordScan, ...]
    at: tuple[datetime, ...]  # each scan's own time
