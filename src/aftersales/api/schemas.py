"""Request and response bodies (Pydantic v2), with examples for the OpenAPI document.

Money is a string with at most two decimals ("59.00"), never a number. Times are RFC 3339 with
an offset. Every string is bounded and free of control characters, so what validates can be
stored on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from aftersales.domain.cases import CaseStatus, Outcome
from aftersales.domain.evidence import EvidenceKind
from aftersales.domain.types import CaseType, OrderStatus, Reason, ScanKind, ShippingMode

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
_NO_CONTROL = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN),
               Field(description="An id: letters, digits and _.:@- (at most 64)",
                     examples=["o1001"])]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Money = Annotated[str, StringConstraints(pattern=r"^\d{1,12}(\.\d{1,2})?$"),
                  Field(description="An amount with at most two decimals", examples=["59.00"])]
Duration = Annotated[str, StringConstraints(pattern=r"^(\d{1,4}[dhms]){1,4}$"),
                     Field(description="A duration: 72h, 3d, 2d6h", examples=["72h"])]


def _bounded(max_length: int, min_length: int = 0) -> StringConstraints:
    """A bounded string without control characters (tabs and line breaks allowed)."""
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=_NO_CONTROL)


def _in_range(value: datetime) -> datetime:
    if not _EARLIEST <= value <= _LATEST:
        raise ValueError("a time between 2000-01-01 and 2100-01-01")
    return value


Time = Annotated[AwareDatetime, AfterValidator(_in_range),
                 Field(examples=["2026-03-03T18:00:00+08:00"])]
Short = Annotated[str, _bounded(64, 1)]
Sku = Annotated[str, _bounded(128, 1)]
Tracking = Annotated[str, _bounded(128, 1)]
Carrier = Annotated[str, _bounded(64, 1)]
City = Annotated[str, _bounded(128, 1)]
Title = Annotated[str, _bounded(256)]
Address = Annotated[str, _bounded(500, 1)]
FileName = Annotated[str, _bounded(200)]
Statement = Annotated[str, _bounded(2000)]  # optional free text
Said = Annotated[str, _bounded(2000, 1)]  # required free text


class In(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


def examples(*items: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(items)})


# -- orders ---------------------------------------------------------------------------------------
class OrderLineIn(In):
    sku: Sku
    qty: int = Field(ge=1, le=10_000)
    unit_price: Money
    title: Title = ""
    paid: Money | None = Field(None, description="After discounts; default qty x unit_price")
    no_reason_7d: bool = Field(True, description="The listing offers the 7-day no-reason return")
    category: Short | None = None
    warranty_days: int = Field(0, ge=0, le=3650)
    warranty_kind: Literal["manufacturer", "shop"] | None = None
    weight_g: int = Field(0, ge=0, le=10_000_000, description="One unit's weight; 0 = unknown")


class PlaceOrderIn(In):
    """A paid order (the buyer is the caller)."""

    model_config = examples({"id": "o1001", "seller": "s1", "mode": "in_stock",
                             "ship_to_city": "Hangzhou",
                             "lines": [{"sku": "A", "qty": 2, "unit_price": "59.00"}]})
    id: Id | None = Field(None, description="The marketplace's order id; generated when absent")
    seller: Id
    mode: ShippingMode = ShippingMode.IN_STOCK
    ship_by: Time | None = Field(None, description="Promised ship-by (presale, custom, tiered)")
    ship_to_city: City | None = None
    policy: Literal["taobao", "douyin"] | None = Field(None, description="Default: the server's")
    lines: list[OrderLineIn] = Field(min_length=1, max_length=50)


class ShipIn(In):
    model_config = examples({"carrier": "SF", "tracking": "SF0001", "weight_g": 800})
    carrier: Carrier
    tracking: Tracking
    weight_g: int | None = Field(None, ge=1, le=100_000_000)


class ScanIn(In):
    tracking: Tracking
    event: ScanKind
    city: City | None = None
    at: Time | None = Field(None, description="When the carrier scanned it; default now")


class ScansIn(In):
    """A carrier feed: every scan applies, in time order, or none does."""

    model_config = examples({"scans": [
        {"tracking": "SF0001", "event": "picked_up", "city": "Shanghai"},
        {"tracking": "SF0001", "event": "signed", "city": "Hangzhou"}]})
    scans: list[ScanIn] = Field(min_length=1, max_length=1000)


class OutOfStockIn(In):
    model_config = examples({"lines": [1]})
    lines: list[Annotated[int, Field(ge=1, le=1000)]] | None = Field(
        None, min_length=1, max_length=50, description="Line numbers; default every line")


class OutOfStockChoiceIn(In):
    model_config = examples({"option": "wait", "ship_by": "2026-03-10T18:00:00+08:00"})
    option: Literal["substitute", "wait", "cancel"]
    sku: Sku | None = Field(None, description="The substitute's sku (option substitute)")
    ship_by: Time | None = Field(None, description="The new ship-by (option wait)")


class DisputeViolationIn(In):
    model_config = examples({"reason": "the carrier picked it up on time; see its receipt"})
    reason: Said


class RatingIn(In):
    model_config = examples({"stars": 4, "comment": "good, a bit late"})
    stars: int = Field(ge=1, le=5)
    comment: Statement = ""


class ReplyIn(In):
    model_config = examples({"text": "thank you"})
    text: Said


class StockIn(In):
    model_config = examples({"sku": "A", "quantity": 40})
    sku: Sku
    quantity: int = Field(ge=0, le=1_000_000_000)


class AccountIn(In):
    """An account and what jury eligibility looks at (IN-3)."""

    model_config = examples({"id": "j1", "registered_at": "2025-01-01T00:00:00+08:00",
                             "verified": True, "standing": "good"})
    id: Id
    registered_at: Time
    verified: bool
    standing: Literal["good", "poor", "suspended"] = "good"


# -- cases ----------------------------------------------------------------------------------------
class CaseLineIn(In):
    line_no: int | None = Field(None, ge=1, le=1000)
    sku: Sku | None = None
    qty: int | None = Field(None, ge=1, le=10_000, description="Default: the line's quantity")

    @model_validator(mode="after")
    def _one_key(self) -> CaseLineIn:
        if (self.line_no is None) == (self.sku is None):
            raise ValueError("give line_no or sku (one of them)")
        return self


class OpenCaseIn(In):
    """An after-sales request on an order (the buyer is the caller)."""

    model_config = examples({"order": "o1001", "type": "return_refund",
                             "reason": "not_as_described", "received": True,
                             "lines": [{"sku": "A", "qty": 1}],
                             "description": "the colour is not the one shown"})
    id: Id | None = Field(None, description="Generated when absent")
    order: Id
    type: CaseType
    reason: Reason
    received: bool | None = None
    lines: list[CaseLineIn] | None = Field(None, min_length=1, max_length=50,
                                           description="Default: every line")
    amount: Money | None = Field(None, description="Default: what the rules allow")
    description: Statement = ""


class AgreeIn(In):
    model_config = examples({"return_address": "No. 1 Wensan Road, Hangzhou"})
    return_address: Address | None = None


class RejectIn(In):
    model_config = examples({"reason": "it left the shop intact"})
    reason: Said


class OfferIn(In):
    model_config = examples({"amount": "20.00"})
    amount: Money


class ResubmitIn(In):
    model_config = examples({"amount": "40.00", "description": "photos attached"})
    amount: Money | None = None
    description: Statement = ""


class ShipReturnIn(In):
    model_config = examples({"carrier": "YTO", "tracking": "YT0001", "method": "express"})
    carrier: Carrier
    tracking: Tracking
    method: Literal["express", "surface"] = "express"


class ShipReplacementIn(In):
    model_config = examples({"carrier": "SF", "tracking": "SF0002"})
    carrier: Carrier
    tracking: Tracking


class EvidenceFileRef(In):
    sha256: Sha256 = Field(description="As `POST .../evidence/files` answered")
    filename: FileName = ""


class EvidenceIn(In):
    """IN-5: a typed item with text, a stored file, or both."""

    model_config = examples({"kind": "photo", "text": "the zip is broken",
                             "file": {"sha256": "9" * 64, "filename": "zip.png"}})
    kind: EvidenceKind
    text: Statement = ""
    file: EvidenceFileRef | None = None


class RequestProofIn(In):
    model_config = ConfigDict(extra="forbid", populate_by_name=True,
                              json_schema_extra={"examples": [{"from": "seller", "due": "72h"}]})
    from_party: Literal["buyer", "seller"] = Field(alias="from")
    due: Duration | None = Field(None, description="Default: the pack's proof window")


class RulingIn(In):
    """IN-6 / IN-7 / IN-9: staff decide the case."""

    model_config = examples({"outcome": "refund", "return_required": False},
                            {"outcome": "partial_refund", "amount": "30.00",
                             "penalty": "none"})
    outcome: Literal["refund", "partial_refund", "reject"]
    amount: Money | None = None
    return_required: bool | None = None
    freight_payer: Literal["buyer", "seller"] | None = None
    seller_responsible: bool | None = None
    penalty: Literal["not_as_described_minor", "not_as_described_major",
                     "not_as_described_serious", "none"] | None = None
    subjective: bool = False


class SendToJuryIn(In):
    model_config = examples({"seed": "2026-03-05-draw"})
    seed: Short | None = Field(None, description="The draw's seed; random when absent")


class VoteIn(In):
    model_config = examples({"side": "buyer", "reason": "the photos show the defect"})
    side: Literal["buyer", "seller"]
    reason: Said


# -- complaints -----------------------------------------------------------------------------------
class ComplainIn(In):
    model_config = examples({"order": "o1001", "kind": "broken_promise",
                             "text": "promised a gift, none came"})
    order: Id
    kind: Literal["broken_promise", "non_shipment", "infringement"]
    text: Statement = ""


class AnswerComplaintIn(In):
    model_config = examples({"text": "the gift was out of stock; we refunded its value"})
    text: Said


class ResolveComplaintIn(In):
    model_config = examples({"upheld": True, "text": "the promise was on the listing",
                             "penalty": "late_shipment_unpaid"})
    upheld: bool
    text: Statement = ""
    penalty: Literal["late_shipment_unpaid", "refusal_to_ship"] | None = None


# -- responses ------------------------------------------------------------------------------------
class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class OrderLineOut(Out):
    line_no: int
    sku: str
    qty: int
    paid: str
    refunded: str
    after_sales_used: bool


class ViolationOut(Out):
    name: str
    rule: str
    detectors: list[Any]
    status: str
    detected_at: datetime | None
    compensation: str
    paid_as: str | None


class OrderOut(Out):
    id: str
    status: OrderStatus
    paid: str
    refunded: str
    seller: str
    buyer: str
    mode: ShippingMode
    ship_by: datetime | None
    shipped_at: datetime | None
    delivered_at: datetime | None
    completed_at: datetime | None
    reminded_at: datetime | None
    carrier: str | None
    tracking: str | None
    violations: list[str]
    compensation: str
    violation_details: list[ViolationOut]
    lines: list[OrderLineOut]
    next_deadline: datetime | None
    deadline_kind: str | None


class OrderSummary(Out):
    id: str
    status: OrderStatus
    buyer: str
    seller: str
    mode: ShippingMode
    currency: str
    placed_at: datetime
    ship_by: datetime | None
    tracking: str | None
    next_deadline: datetime | None
    deadline_kind: str | None


class OrderPage(Out):
    items: list[OrderSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at "
                                                "the end")


class ScanOut(Out):
    event: str
    city: str | None
    at: datetime


class ShipmentOut(Out):
    kind: Literal["outbound", "return", "replacement"]
    carrier: str
    tracking: str
    weight_g: int | None
    shipped_at: datetime
    case: str | None
    scans: list[ScanOut]


class PolicyRef(Out):
    id: str
    version: str


class Tally(Out):
    buyer: int
    seller: int


class JuryTally(Out):
    panel: int
    buyer: int
    seller: int


class CaseSummary(Out):
    id: str
    order: str
    buyer: str
    seller: str
    type: CaseType
    reason: Reason
    status: CaseStatus
    outcome: Outcome
    amount: str
    refunded: str
    decided_by: str | None
    opened_at: datetime
    closed_at: datetime | None
    deadline: datetime | None
    deadline_kind: str | None


class CaseOut(CaseSummary):
    """A case in full: its summary and the rest of what its parties see."""

    freight_payer: str
    seller_responsible: bool
    rules: list[str]
    received: bool
    offer: str | None
    policy: PolicyRef
    escalated_by: str | None
    staff_due: datetime | None
    proof_from: str | None
    proof_due: datetime | None
    proof_requests: int
    evidence: Tally
    jury: JuryTally
    penalty: str | None


class CasePage(Out):
    items: list[CaseSummary]
    next_cursor: str | None


class EventOut(Out):
    aggregate: str
    id: str
    name: str
    at: datetime
    rule: str | None


class CaseResult(Out):
    """The case after the action, and the events the action produced."""

    case: CaseOut
    events: list[EventOut]


class OrderResult(Out):
    order: OrderOut
    events: list[EventOut]


class ScansResult(Out):
    """What a batch of carrier scans did: how many applied, the orders they moved, the events."""

    applied: int
    orders: list[OrderOut]
    events: list[EventOut]


class TimelineEntry(Out):
    seq: int
    name: str
    at: datetime
    rule: str | None
    actor: str
    changes: Any


class StoredFileOut(Out):
    sha256: str
    size: int
    media_type: str
    filename: str


class EvidenceFileOut(Out):
    sha256: str
    size: int | None
    media_type: str | None
    filename: str | None


class EvidenceOut(Out):
    id: int
    seq: int
    party: str
    kind: str
    text: str
    at: datetime
    file: EvidenceFileOut | None


class ComplaintOut(Out):
    id: str
    order: str
    kind: str
    status: str
    text: str
    seller_response: str | None
    opened_at: datetime
    resolved_at: datetime | None
    penalty: str | None
    points: int


class ComplaintResult(Out):
    complaint: ComplaintOut
    events: list[EventOut]


class ComplaintPage(Out):
    items: list[ComplaintOut]
    next_cursor: str | None


class JuryTaskSummary(Out):
    task: str
    drawn_at: datetime
    open: bool
    voted: bool
    side: str | None


class JurorTaskOut(Out):
    """The anonymised case (IN-3): no names, ids, tracking numbers, addresses or file names."""

    task: str
    case: dict[str, Any]
    timeline: list[dict[str, Any]]
    evidence: list[dict[str, Any]]
    vote: dict[str, Any]


class QueueItem(Out):
    case: str
    order: str
    type: str
    reason: str
    status: str
    amount: str
    escalated_by: str | None
    due: datetime | None
    due_kind: str | None
    overdue: bool
    proof_from: str | None
    proof_requests: int
    evidence: Tally
    jury: JuryTally


class Ratings(Out):
    count: int
    average: float | None
    by_stars: dict[str, int]
    replied: int


class SellerRecordOut(Out):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    seller: str
    from_: str | None = Field(alias="from")
    to: str | None
    paid_orders: int
    dispute_refunds: int
    dispute_refund_amount: str
    dispute_rate: float
    escalated_cases: int
    ship_timeouts: int
    pickup_timeouts: int
    fake_shipments: int
    out_of_stock: int
    lost_or_stalled: int
    penalty_points: int
    compensation_paid: str
    complaints: int
    complaints_upheld: int
    ratings: Ratings


class TodoOut(Out):
    seller: str
    now: datetime
    hours: int
    to_ship: list[dict[str, Any]]
    awaiting_pickup: list[dict[str, Any]]
    to_prepare: list[dict[str, Any]]
    cases: list[dict[str, Any]]
    stock: dict[str, int]
    at_risk: int


class StockOut(Out):
    seller: str
    stock: dict[str, int]


class AccountOut(Out):
    id: str
    registered_at: datetime
    verified: bool
    standing: str


class PolicySummary(Out):
    id: str
    version: str
    currency: str
    timezone: str


class StoredPolicy(Out):
    id: str
    version: str
    digest: str
    registered_at: datetime


class PolicyOut(Out):
    id: str
    version: str
    body: dict[str, Any]


class Ping(Out):
    ok: bool


class Health(Out):
    status: str
    checks: dict[str, Any] = Field(default_factory=dict)
