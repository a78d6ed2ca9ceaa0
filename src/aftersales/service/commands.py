"""Commands: what a buyer, seller or the system asks the engine to do (imperative names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
    complaint_id: str | None = None


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


# -- platform intervention (IN-1..IN-9) -----------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EvidenceFile:
    """A file already in the evidence store (content-addressed; `BlobStore.put_*`)."""

    sha256: str
    size: int
    media_type: str
    filename: str = ""


@dataclass(frozen=True, kw_only=True)
class SubmitEvidence(CaseCommand):
    """IN-5: a typed item with text and/or a stored file."""

    ACTION = Action.SUBMIT_EVIDENCE
    kind: str
    text: str = ""
    file: EvidenceFile | None = None

    def args(self) -> Mapping[str, Any]:
        file = None if self.file is None else {
            "sha256": self.file.sha256, "size": self.file.size,
            "media_type": self.file.media_type, "filename": self.file.filename}
        return {"kind": self.kind, "text": self.text, "file": file}


@dataclass(frozen=True, kw_only=True)
class RequestProof(CaseCommand):
    """IN-4: staff ask a party to prove its claim by a deadline."""

    ACTION = Action.REQUEST_PROOF
    from_party: str
    due: timedelta | None = None

    def args(self) -> Mapping[str, Any]:
        return {"from_party": self.from_party, "due": self.due}


@dataclass(frozen=True, kw_only=True)
class Rule(CaseCommand):
    """IN-6 / IN-7 / IN-9: staff decide the case."""

    ACTION = Action.RULE
    outcome: str
    amount: Money | None = None
    return_required: bool | None = None
    freight_payer: str | None = None
    seller_responsible: bool | None = None
    penalty: str | None = None
    subjective: bool = False  # IN-9: the complaint is subjective dissatisfaction

    def args(self) -> Mapping[str, Any]:
        return {"outcome": self.outcome, "amount": self.amount,
                "return_required": self.return_required, "freight_payer": self.freight_payer,
                "seller_responsible": self.seller_responsible, "penalty": self.penalty,
                "subjective": self.subjective}


@dataclass(frozen=True, kw_only=True)
class SendToJury(CaseCommand):
    """IN-3: staff hand the case to a public jury; the service draws the panel."""

    ACTION = Action.SEND_TO_JURY
    seed: str | None = None  # the draw's seed; random when absent (recorded either way)


@dataclass(frozen=True, kw_only=True)
class Vote(CaseCommand):
    """IN-3: a juror on the panel votes for the buyer or the seller, with a reason."""

    ACTION = Action.VOTE
    side: str
    reason: str

    def args(self) -> Mapping[str, Any]:
        return {"side": self.side, "reason": self.reason}


@dataclass(frozen=True, kw_only=True)
class RegisterUser(Command):
    """An account and what jury eligibility looks at (IN-3, §9)."""

    user_id: str
    registered_at: datetime
    verified: bool
    standing: str = "good"


# -- complaints (CP-1) and ratings (SR-3) ---------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Complain(Command):
    order_id: str
    kind: str
    text: str = ""
    complaint_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class AnswerComplaint(Command):
    """The seller contests a complaint (IN-3: staff decide it)."""

    complaint_id: str
    text: str


@dataclass(frozen=True, kw_only=True)
class ResolveComplaint(Command):
    """Staff uphold or dismiss a complaint, optionally with penalty points (§9)."""

    complaint_id: str
    upheld: bool
    text: str = ""
    penalty: str | None = None


@dataclass(frozen=True, kw_only=True)
class RateOrder(Command):
    order_id: str
    stars: int
    comment: str = ""


@dataclass(frozen=True, kw_only=True)
class ReplyToRating(Command):
    order_id: str
    text: str


@dataclass(frozen=True, kw_only=True)
class RemindBuyer(Command):
    """SR-2: the seller prompts the buyer to confirm receipt, a week after delivery."""

    order_id: str
