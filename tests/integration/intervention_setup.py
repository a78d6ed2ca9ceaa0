"""Disputes set up through the real service layer, for the intervention read-side tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from aftersales.bootstrap import bootstrap
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import Actor, CaseType, Reason, ScanKind, ShippingMode
from aftersales.scenario.runner import counter_ids
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from tests.conftest import T0
from tests.unit.test_evidence import png_bytes

SYSTEM = Actor.parse("system")
H = timedelta(hours=1)
D = timedelta(days=1)
JURY = {"taobao": {"jury.panel_size": 3, "jury.quorum": 2}}


def make_service(db_url: str, tmp_path: Path) -> Service:
    """A service with a real evidence store under tmp_path and a jury of three (IN-3)."""
    return bootstrap(db_url, ids=counter_ids(), overrides=JURY,
                     evidence_dir=tmp_path / "evidence")


def register_jurors(service: Service, *ids: str, at: datetime = T0) -> None:
    for juror in ids:
        service.handle(c.RegisterUser(actor=SYSTEM, user_id=juror, registered_at=at - 400 * D,
                                      verified=True, standing="good"), at)


def evidence_file(service: Service, filename: str, data: bytes | None = None) -> c.EvidenceFile:
    assert service.blobs is not None
    stored = service.blobs.put_bytes(data if data is not None else png_bytes())
    return c.EvidenceFile(sha256=stored.sha256, size=stored.size, media_type=stored.media_type,
                          filename=filename)


@dataclass(frozen=True)
class Parties:
    buyer: str
    seller: str
    order: str
    case: str
    tracking: str

    @property
    def b(self) -> Actor:
        return Actor.parse(f"buyer:{self.buyer}")

    @property
    def s(self) -> Actor:
        return Actor.parse(f"seller:{self.seller}")


def delivered_order(service: Service, p: Parties, at: datetime, price: str = "60.00") -> None:
    """Placed at `at`, shipped an hour later, picked up, signed the next day."""
    service.handle(c.PlaceOrder(actor=p.b, seller_id=p.seller, mode=ShippingMode.IN_STOCK,
                                order_id=p.order, ship_to_city="Hangzhou",
                                lines=(LineSpec("A", 1, Money.parse(price)),)), at)
    service.handle(c.Ship(actor=p.s, order_id=p.order, carrier="SF", tracking=p.tracking),
                   at + H)
    service.handle(c.RecordScan(actor=SYSTEM, tracking=p.tracking, event=ScanKind.PICKED_UP,
                                city="Shanghai"), at + 2 * H)
    service.handle(c.RecordScan(actor=SYSTEM, tracking=p.tracking, event=ScanKind.SIGNED,
                                city="Hangzhou"), at + D)


def escalated_dispute(service: Service, p: Parties, at: datetime,
                      reason_text: str = "matches the listing") -> datetime:
    """A refund-only case on a delivered order: opened at +2d, rejected, escalated by the buyer
    (IN-1) at +2d2h; returns that time."""
    delivered_order(service, p, at)
    service.handle(c.OpenCase(actor=p.b, order_id=p.order, case_id=p.case,
                              type=CaseType.REFUND_ONLY, reason=Reason.NOT_AS_DESCRIBED,
                              received=True, description="not the colour shown"), at + 2 * D)
    service.handle(c.Reject(actor=p.s, case_id=p.case, reason=reason_text), at + 2 * D + H)
    service.handle(c.Escalate(actor=p.b, case_id=p.case), at + 2 * D + 2 * H)
    return at + 2 * D + 2 * H
