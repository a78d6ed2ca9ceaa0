"""Typed policy packs. Every number of RULES.md is a field here; the domain reads only these.

A pack is parsed from YAML at the edge (`policy.loader`) and is immutable afterwards.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from aftersales.domain.durations import format_duration, parse_duration
from aftersales.domain.errors import InvalidInput
from aftersales.domain.money import Money


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError("a duration is a string such as '5d' or '72h'")
    try:
        return parse_duration(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


def _money(value: Any) -> Money:
    if isinstance(value, Money):
        return value
    if not isinstance(value, str):
        raise ValueError("an amount is a quoted string such as '5.00'")
    try:
        return Money.parse(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


def _money_in(value: Any, currency: str) -> Any:
    """Parse a pack amount in the pack's currency; leave anything else to the field check."""
    if isinstance(value, str):
        try:
            return Money.parse(value, currency)
        except InvalidInput:
            return value  # the field validator reports it with its path
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration), PlainSerializer(format_duration)]
Amount = Annotated[Money, BeforeValidator(_money), PlainSerializer(str)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Deadlines(_Frozen):
    """Every timer of the after-sales timeline (RULES.md sections 1, 4, 6, 8, 9)."""

    in_stock_ship_by: Duration  # SH-1: in-stock ship-by after payment
    pickup_in_stock: Duration  # SH-3: first pickup scan after the order (in-stock)
    pickup_after_upload: Duration  # SH-4: first pickup scan after tracking upload (others)
    no_scan_window: Duration  # SH-5: no scan at all this long after upload = fake shipment
    stall_time: Duration  # SH-9: no new scan while in transit = stalled parcel
    seller_response_before_shipment: Duration  # §9: 48 h, silence = refund
    seller_response_after_shipment: Duration  # RF-1: 5 days, silence = agreement
    buyer_after_rejection: Duration  # §9 / IN-1: resubmit or escalate, else the case closes
    buyer_offer_response: Duration  # buyer answers a partial-refund offer, else the case closes
    buyer_ship_return: Duration  # RF-4
    seller_confirm_return_express: Duration  # RF-5
    seller_confirm_return_surface: Duration  # RF-5 (surface mail)
    seller_send_replacement: Duration  # RF-7: silence = refund instead
    auto_confirm_receipt: Duration  # §9: after shipment
    seller_escalation_after: Duration  # IN-2
    follow_up_after_delivery: Duration  # SR-2: the seller may prompt the buyer from then
    auto_follow_up_after_delivery: Duration  # SR-2: the system reminds when the seller did not
    out_of_stock_answer: Duration  # OS-2: buyer's time to choose before the default applies

    @model_validator(mode="after")
    def _positive(self) -> Deadlines:
        zero = [name for name, value in self if value <= timedelta(0)]
        if zero:
            raise ValueError(f"every deadline must be positive: {', '.join(zero)}")
        if self.auto_follow_up_after_delivery < self.follow_up_after_delivery:
            raise ValueError("auto_follow_up_after_delivery comes before the seller may follow "
                             "up (follow_up_after_delivery)")
        return self


class AfterSales(_Frozen):
    window_after_completion: Duration  # AS-4
    once_per_line_after_completion: bool  # AS-5
    no_reason_days: int = Field(ge=0)  # §9: 7-day no-reason return
    no_reason_excluded: tuple[str, ...]  # categories excluded from the no-reason return
    seller_fault_reasons: tuple[str, ...]  # FR-1/FR-2: the seller pays freight
    buyer_preference_reasons: tuple[str, ...]  # FR-3: the buyer pays freight


class Tier(_Frozen):
    """One price band of a compensation schedule. `up_to` is inclusive; None = no upper bound."""

    up_to: Amount | None = None
    kind: Literal["none", "fixed", "percent"]
    amount: Amount | None = None  # fixed
    rate_bp: int | None = Field(default=None, ge=0, le=10000)  # percent, in basis points
    floor: Amount | None = None
    cap: Amount | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Tier:
        if self.kind == "fixed" and self.amount is None:
            raise ValueError("a fixed tier needs amount")
        if self.kind == "percent" and self.rate_bp is None:
            raise ValueError("a percent tier needs rate_bp")
        return self

    def compensation(self, price: Money) -> Money:
        if self.kind == "none":
            return Money.zero(price.currency)
        if self.kind == "fixed":
            assert self.amount is not None
            return self.amount
        assert self.rate_bp is not None
        value = price.basis_points(self.rate_bp)
        if self.floor is not None:
            value = max(value, self.floor)
        if self.cap is not None:
            value = min(value, self.cap)
        return value


class Compensation(_Frozen):
    """SH-6: what a confirmed shipping violation pays the buyer."""

    paid_as: Literal["cash", "coupon"]
    tiers: tuple[Tier, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Compensation:
        bounds = [t.up_to for t in self.tiers]
        if any(b is None for b in bounds[:-1]):
            raise ValueError("only the last tier may be unbounded")
        known = [b for b in bounds if b is not None]
        if known != sorted(known):
            raise ValueError("tiers must be in increasing price order")
        return self

    def for_price(self, price: Money) -> Money:
        for tier in self.tiers:
            if tier.up_to is None or price <= tier.up_to:
                return tier.compensation(price)
        return Money.zero(price.currency)


class Detection(_Frozen):
    """SH-5 fake-shipment detectors' thresholds."""

    # 发空包 (seed 003): declared weight below this percentage of what the lines weigh
    empty_parcel_weight_pct: int = Field(ge=1, le=100)


class Penalties(_Frozen):
    late_shipment_unpaid: int = Field(ge=0)  # §9: seller did not pay before staff upheld
    refusal_to_ship: int = Field(ge=0)  # §9
    not_as_described_minor: int = Field(ge=0)  # IN-7 / §9: 3
    not_as_described_major: int = Field(ge=0)  # §9: 6
    not_as_described_serious: int = Field(ge=0)  # §9: 12


class Jury(_Frozen):
    panel_size: int = Field(ge=1)  # IN-3 / §9, odd
    min_account_age_days: int = Field(ge=0)
    require_verified: bool
    require_good_standing: bool
    vote_window: Duration
    quorum: int = Field(ge=1)

    @model_validator(mode="after")
    def _odd(self) -> Jury:
        if self.panel_size % 2 == 0:
            raise ValueError("panel_size must be odd so a simple majority always exists")
        if self.quorum > self.panel_size:
            raise ValueError("quorum cannot exceed panel_size")
        if self.vote_window <= timedelta(0):
            raise ValueError("jury.vote_window must be positive")
        return self


class Intervention(_Frozen):
    """IN-1..IN-9: how the platform runs a dispute once it has it."""

    staff_ruling: Duration  # target for staff to act on a case in their queue (no auto outcome)
    proof_window_default: Duration  # IN-4: time to prove when staff give no `due`
    proof_window_max: Duration  # IN-4: the longest `due` staff may give
    evidence_text_max: int = Field(ge=1)  # IN-5: characters of text per evidence item
    evidence_items_max: int = Field(ge=1)  # IN-5: items per party and case

    @model_validator(mode="after")
    def _windows(self) -> Intervention:
        for name in ("staff_ruling", "proof_window_default", "proof_window_max"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"intervention.{name} must be positive")
        if self.proof_window_default > self.proof_window_max:
            raise ValueError("intervention.proof_window_default exceeds proof_window_max")
        return self


class OutOfStock(_Frozen):
    default_choice: Literal["cancel", "wait"]  # OS-2: what silence means
    wait_extension: Duration  # OS-2: new ship-by when the buyer waits without a date
    compensation: Compensation | None = None  # OS-3: none by default


class Policy(_Frozen):
    """A whole policy pack: `id` + `version` pin it; cases keep the version they opened under."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    version: str = Field(min_length=1)
    name: str
    currency: str
    timezone: str
    deadlines: Deadlines
    after_sales: AfterSales
    compensation: dict[str, Compensation]  # SH-6: violation name -> schedule
    detection: Detection
    penalties: Penalties
    jury: Jury
    intervention: Intervention
    out_of_stock: OutOfStock

    @model_validator(mode="before")
    @classmethod
    def _amounts_in_pack_currency(cls, data: Any) -> Any:
        """Amounts in a pack are in the pack's own currency (a BRL pack's "5.00" is BRL)."""
        if not isinstance(data, dict) or not isinstance(data.get("currency"), str):
            return data
        currency = data["currency"]

        def convert(schedule: Any) -> Any:
            if not isinstance(schedule, dict) or not isinstance(schedule.get("tiers"), list):
                return schedule
            tiers = []
            for tier in schedule["tiers"]:
                if isinstance(tier, dict):
                    tier = {k: (_money_in(v, currency)
                                if k in ("up_to", "amount", "floor", "cap") else v)
                            for k, v in tier.items()}
                tiers.append(tier)
            return {**schedule, "tiers": tiers}

        out = dict(data)
        if isinstance(out.get("compensation"), dict):
            out["compensation"] = {k: convert(v) for k, v in out["compensation"].items()}
        oos = out.get("out_of_stock")
        if isinstance(oos, dict) and oos.get("compensation") is not None:
            out["out_of_stock"] = {**oos, "compensation": convert(oos["compensation"])}
        return out

    @model_validator(mode="after")
    def _checks(self) -> Policy:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None
        known = {"ship_timeout", "pickup_timeout", "fake_shipment", "stalled_parcel", "lost_parcel"}
        unknown = set(self.compensation) - known
        if unknown:
            raise ValueError(f"unknown violation(s) in compensation: {sorted(unknown)}")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
