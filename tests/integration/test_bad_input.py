"""Bad input is refused with a typed error and leaves the database exactly as it was.

Runs on SQLite and PostgreSQL (the `service` fixture). Every refusal is checked against a
snapshot of every row of every table taken just before it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from aftersales.domain.errors import (
    AftersalesError,
    AmountExceedsPaid,
    InvalidInput,
    NotFound,
    PolicyError,
    WrongActor,
)
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import SYSTEM, Actor, CaseType, Reason, Role, ScanKind, ShippingMode
from aftersales.scenario import parser
from aftersales.scenario.runner import run
from aftersales.service import commands as c
from aftersales.service.handlers import PolicySource, Service
from aftersales.store import tables
from tests.conftest import T0

BUYER, OTHER_BUYER = Actor(Role.BUYER, "b1"), Actor(Role.BUYER, "b2")
SELLER, OTHER_SELLER = Actor(Role.SELLER, "s1"), Actor(Role.SELLER, "s2")
STAFF = Actor(Role.STAFF, "x1")
HOUR = timedelta(hours=1)


# -- helpers ---------------------------------------------------------------------------------


def snapshot(service: Service) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order."""
    with service.engine.connect() as conn:
        return {
            table.name: [tuple(row) for row in conn.execute(
                select(table).order_by(*table.primary_key.columns))]
            for table in tables.metadata.sorted_tables
        }


def refused(service: Service, cmd: c.Command, now: datetime, error: type[AftersalesError],
            code: str) -> AftersalesError:
    before = snapshot(service)
    with pytest.raises(error) as err:
        service.handle(cmd, now)
    assert err.value.code == code
    after = snapshot(service)
    assert {k: len(v) for k, v in after.items()} == {k: len(v) for k, v in before.items()}
    assert after == before
    return err.value


def place(service: Service, *, ship: bool = True) -> str:
    """Order: 2 x 50.00 (line 1) and 1 x 99.90 (line 2), shipped an hour later."""
    result = service.handle(c.PlaceOrder(
        actor=BUYER, seller_id=SELLER.id, mode=ShippingMode.IN_STOCK,
        lines=(LineSpec("sku-a", 2, Money.parse("50.00")),
               LineSpec("sku-b", 1, Money.parse("99.90")))), T0)
    assert result.order_id is not None
    if ship:
        service.handle(c.Ship(actor=SELLER, order_id=result.order_id, carrier="SF",
                              tracking=f"SF-{result.order_id}"), T0 + HOUR)
    return result.order_id


def open_case(service: Service, order_id: str, *, case_type: CaseType = CaseType.RETURN_REFUND,
              lines: tuple[tuple[int, int], ...] | None = ((1, 2),),
              amount: Money | None = None, received: bool | None = None) -> str:
    result = service.handle(c.OpenCase(
        actor=BUYER, order_id=order_id, type=case_type, reason=Reason.QUALITY, lines=lines,
        amount=amount, received=received), T0 + 2 * HOUR)
    assert result.case_id is not None
    return result.case_id


# -- unknown order, unknown case -------------------------------------------------------------


def test_commands_on_an_unknown_order_are_not_found(service: Service) -> None:
    place(service)
    for cmd in (
        c.Ship(actor=SELLER, order_id="ord_nope", carrier="SF", tracking="SF9"),
        c.ConfirmReceipt(actor=BUYER, order_id="ord_nope"),
        c.OpenCase(actor=BUYER, order_id="ord_nope", type=CaseType.REFUND_ONLY,
                   reason=Reason.NOT_RECEIVED),
    ):
        err = refused(service, cmd, T0 + 3 * HOUR, NotFound, "not_found")
        assert "unknown order 'ord_nope'" in str(err)


def test_a_scan_of_an_unknown_tracking_number_is_not_found(service: Service) -> None:
    place(service)
    cmd = c.RecordScan(actor=SYSTEM, tracking="NOPE1", event=ScanKind.DELIVERED)
    refused(service, cmd, T0 + 3 * HOUR, NotFound, "not_found")


@pytest.mark.parametrize("cmd", [
    c.Agree(actor=SELLER, case_id="case_nope"),
    c.Reject(actor=SELLER, case_id="case_nope", reason="no"),
    c.MakeOffer(actor=SELLER, case_id="case_nope", amount=Money.parse("1.00")),
    c.Withdraw(actor=BUYER, case_id="case_nope"),
    c.Escalate(actor=BUYER, case_id="case_nope"),
    c.ShipReturn(actor=BUYER, case_id="case_nope", carrier="YTO", tracking="YT1"),
    c.ConfirmReturn(actor=SELLER, case_id="case_nope"),
], ids=lambda cmd: type(cmd).__name__)
def test_actions_on_an_unknown_case_are_not_found(service: Service, cmd: c.Command) -> None:
    open_case(service, place(service))
    err = refused(service, cmd, T0 + 3 * HOUR, NotFound, "not_found")
    assert "unknown case 'case_nope'" in str(err)


# -- wrong actor -----------------------------------------------------------------------------


def test_another_seller_may_not_ship_and_another_buyer_may_not_confirm(service: Service) -> None:
    order_id = place(service, ship=False)
    for actor in (OTHER_SELLER, BUYER):
        refused(service, c.Ship(actor=actor, order_id=order_id, carrier="SF", tracking="SF1"),
                T0 + HOUR, WrongActor, "wrong_actor")
    service.handle(c.Ship(actor=SELLER, order_id=order_id, carrier="SF", tracking="SF1"),
                   T0 + HOUR)
    for actor in (OTHER_BUYER, SELLER):
        refused(service, c.ConfirmReceipt(actor=actor, order_id=order_id), T0 + 2 * HOUR,
                WrongActor, "wrong_actor")


@pytest.mark.parametrize("actor", [OTHER_BUYER, SELLER, STAFF], ids=str)
def test_only_the_orders_buyer_may_open_a_case(service: Service, actor: Actor) -> None:
    order_id = place(service)
    cmd = c.OpenCase(actor=actor, order_id=order_id, type=CaseType.REFUND_ONLY,
                     reason=Reason.NOT_RECEIVED)
    refused(service, cmd, T0 + 2 * HOUR, WrongActor, "wrong_actor")


@pytest.mark.parametrize("cmd", [
    c.Agree(actor=OTHER_SELLER, case_id="case_1"),
    c.Reject(actor=OTHER_SELLER, case_id="case_1", reason="not mine"),
    c.MakeOffer(actor=OTHER_SELLER, case_id="case_1", amount=Money.parse("10.00")),
    c.Withdraw(actor=OTHER_BUYER, case_id="case_1"),
    c.Agree(actor=STAFF, case_id="case_1"),
], ids=lambda cmd: f"{type(cmd).__name__}-by-{cmd.actor}")
def test_another_buyer_or_seller_may_not_act_on_a_case(service: Service, cmd: c.Command) -> None:
    assert open_case(service, place(service)) == "case_1"
    refused(service, cmd, T0 + 3 * HOUR, WrongActor, "wrong_actor")


# -- amounts ---------------------------------------------------------------------------------


def test_a_case_amount_above_what_the_lines_paid_is_refused(service: Service) -> None:
    order_id = place(service)
    for lines, amount in (
        (((1, 2),), "100.01"),  # line 1 paid 100.00
        (((1, 1),), "50.01"),  # one of its two units paid 50.00
        (None, "199.91"),  # the whole order paid 199.90
    ):
        cmd = c.OpenCase(actor=BUYER, order_id=order_id, type=CaseType.RETURN_REFUND,
                         reason=Reason.QUALITY, lines=lines, amount=Money.parse(amount))
        err = refused(service, cmd, T0 + 2 * HOUR, AmountExceedsPaid, "amount_exceeds_paid")
        assert isinstance(err, InvalidInput)


def test_a_second_case_may_not_claim_more_than_the_line_has_left(service: Service) -> None:
    order_id = place(service)
    first = open_case(service, order_id, case_type=CaseType.REFUND_ONLY, received=True,
                      amount=Money.parse("60.00"))
    service.handle(c.Agree(actor=SELLER, case_id=first), T0 + 3 * HOUR)  # rule: RF-2
    assert service.order(order_id).line(1).refunded == Money.parse("60.00")
    cmd = c.OpenCase(actor=BUYER, order_id=order_id, type=CaseType.REFUND_ONLY,
                     reason=Reason.QUALITY, received=True, lines=((1, 2),),
                     amount=Money.parse("40.01"))
    refused(service, cmd, T0 + 4 * HOUR, AmountExceedsPaid, "amount_exceeds_paid")


def test_a_resubmission_above_what_was_paid_is_refused(service: Service) -> None:
    case_id = open_case(service, place(service), amount=Money.parse("80.00"))
    service.handle(c.Reject(actor=SELLER, case_id=case_id, reason="used"), T0 + 3 * HOUR)
    cmd = c.Resubmit(actor=BUYER, case_id=case_id, amount=Money.parse("100.01"))
    refused(service, cmd, T0 + 4 * HOUR, AmountExceedsPaid, "amount_exceeds_paid")


@pytest.mark.parametrize(("amount", "message"), [
    (Money.parse("0.00"), "nothing to claim"),
    (Money.parse("-5.00"), "nothing to claim"),
    (Money(500, "USD"), "amount currency USD is not CNY"),
])
def test_a_zero_negative_or_foreign_amount_is_invalid(service: Service, amount: Money,
                                                      message: str) -> None:
    cmd = c.OpenCase(actor=BUYER, order_id=place(service), type=CaseType.RETURN_REFUND,
                     reason=Reason.QUALITY, amount=amount)
    err = refused(service, cmd, T0 + 2 * HOUR, InvalidInput, "invalid_input")
    assert message in str(err)


def test_an_offer_must_be_positive_and_below_the_request(service: Service) -> None:
    case_id = open_case(service, place(service))
    for amount in ("100.00", "150.00", "0.00"):
        cmd = c.MakeOffer(actor=SELLER, case_id=case_id, amount=Money.parse(amount))
        refused(service, cmd, T0 + 3 * HOUR, InvalidInput, "invalid_input")


def test_before_receipt_a_refund_only_amount_cannot_be_edited(service: Service) -> None:
    cmd = c.OpenCase(actor=BUYER, order_id=place(service), type=CaseType.REFUND_ONLY,
                     reason=Reason.NOT_RECEIVED, amount=Money.parse("10.00"))
    err = refused(service, cmd, T0 + 2 * HOUR, InvalidInput, "invalid_input")
    assert err.rule == "AS-2"


# -- malformed values at the edge ------------------------------------------------------------


@pytest.mark.parametrize("value", ["12.345", "abc", "", "1,00", "¥5"])
def test_a_malformed_money_string_is_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput) as err:
        Money.parse(value)
    assert err.value.code == "invalid_input"


@pytest.mark.parametrize("lines", [
    (LineSpec("a", -1, Money.parse("5.00")),),
    (LineSpec("a", 0, Money.parse("5.00")),),
    (LineSpec("a", 1, Money.parse("-5.00")),),
    (LineSpec("a", 2, Money.parse("5.00"), paid=Money.parse("10.01")),),
    (LineSpec("a", 1, Money(500, "USD")),),
    (),
], ids=["negative_qty", "zero_qty", "negative_price", "paid_above_price", "currency",
        "no_lines"])
def test_an_order_with_a_bad_line_is_invalid(service: Service, lines: tuple[LineSpec, ...]
                                             ) -> None:
    cmd = c.PlaceOrder(actor=BUYER, seller_id="s1", mode=ShippingMode.IN_STOCK, lines=lines)
    refused(service, cmd, T0, InvalidInput, "invalid_input")


@pytest.mark.parametrize("lines", [((1, -1),), ((1, 0),), ((1, 3),), ((9, 1),), ((1, 1), (1, 1))],
                         ids=["negative_qty", "zero_qty", "above_ordered", "no_such_line",
                              "line_twice"])
def test_a_case_with_a_bad_line_is_invalid(service: Service,
                                           lines: tuple[tuple[int, int], ...]) -> None:
    cmd = c.OpenCase(actor=BUYER, order_id=place(service), type=CaseType.RETURN_REFUND,
                     reason=Reason.QUALITY, lines=lines)
    refused(service, cmd, T0 + 2 * HOUR, InvalidInput, "invalid_input")


def test_a_naive_time_is_refused_before_anything_is_written(service: Service) -> None:
    naive = T0.replace(tzinfo=None)
    order_id = place(service)
    case_id = open_case(service, order_id)
    for cmd in (
        c.PlaceOrder(actor=BUYER, seller_id="s1", mode=ShippingMode.IN_STOCK,
                     lines=(LineSpec("a", 1, Money.parse("1.00")),)),
        c.ConfirmReceipt(actor=BUYER, order_id=order_id),
        c.Agree(actor=SELLER, case_id=case_id),
    ):
        err = refused(service, cmd, naive + 3 * HOUR, InvalidInput, "invalid_input")
        assert "must be timezone-aware" in str(err)
    presale = c.PlaceOrder(actor=BUYER, seller_id="s1", mode=ShippingMode.PRESALE,
                           lines=(LineSpec("a", 1, Money.parse("1.00")),),
                           ship_by=naive + timedelta(days=10))
    err = refused(service, presale, T0, InvalidInput, "invalid_input")
    assert "ship_by must be timezone-aware" in str(err)


def test_bad_values_in_a_scenario_are_refused_and_write_nothing(service: Service) -> None:
    before = snapshot(service)
    scenario = parser.parse("""
policy: taobao
start: 2026-03-01T10:00:00+08:00
steps:
  - {at: +0h, do: place_order, as: buyer:b1, order: o1, seller: s1, mode: in_stock,
     lines: [{sku: A, qty: 1, unit_price: "12.345"}], expect_error: invalid_input}
  - {at: +0h, do: place_order, as: buyer:b1, order: o3, seller: s1, mode: in_stock,
     lines: [{sku: A, qty: -1, unit_price: "5.00"}], expect_error: invalid_input}
  - {at: +0h, do: place_order, as: buyer:b1, order: o4, seller: s1, mode: in_stock,
     lines: [{sku: A, qty: "2", unit_price: "5.00"}], expect_error: invalid_input}
  - {at: +0h, do: place_order, as: buyer:b1, order: o5, seller: s1, mode: teleport,
     lines: [{sku: A, qty: 1, unit_price: "5.00"}], expect_error: invalid_input}
  - {at: +1h, do: ship, as: seller:s1, order: o1, carrier: SF, tracking: SF1,
     expect_error: invalid_input}
""")
    result = run(scenario, service)
    assert len(result.log) == 5
    assert all("refused as expected" in line for line in result.log)
    assert snapshot(service) == before


@pytest.mark.parametrize(("body", "line", "reason"), [
    ("start: 2026-03-01T10:00:00+08:00\nsteps: [\n", 3, "not valid YAML"),
    ("start: 2026-03-01T10:00:00\nsteps:\n  - {at: +0h, do: withdraw, as: buyer:b1, case: c}\n",
     1, "has no timezone"),
    ("start: 2026-03-01T10:00:00+08:00\nsteps:\n  - at: +0h\n    do: refund_everything\n"
     "    as: buyer:b1\n", 3, "unknown action 'refund_everything'"),
    ("start: 2026-03-01T10:00:00+08:00\nsteps:\n  - at: +0h\n    do: place_order\n"
     "    as: buyer:b1\n    order: o1\n", 3, "missing lines, mode, seller"),
    ("start: 2026-03-01T10:00:00+08:00\nsteps:\n  - {at: +1d, do: withdraw, as: buyer:b1,"
     " case: c}\n  - {at: +0h, do: withdraw, as: buyer:b1, case: c}\n", 4, "time goes backwards"),
    ("start: 2026-03-01T10:00:00+08:00\nsteps:\n  - at: +0h\n    do: place_order\n"
     "    as: buyer:b1\n    order: o1\n    seller: s1\n    mode: in_stock\n    lines:\n"
     "      - {sku: A, qty: 1, unit_price: 12.5}\n", 10, "write money as a quoted string"),
])
def test_a_bad_scenario_file_names_its_line(service: Service, body: str, line: int,
                                            reason: str) -> None:
    before = snapshot(service)
    with pytest.raises(parser.ScenarioError) as err:
        parser.parse(body)
    assert (err.value.line, reason in err.value.reason) == (line, True), err.value
    assert snapshot(service) == before


def test_a_bad_policy_override_is_a_policy_error_and_writes_nothing(service: Service) -> None:
    bad = Service(service.engine, policies=PolicySource(
        overrides={"taobao": {"deadlines.seller_nap_time": "1d"}}))
    cmd = c.PlaceOrder(actor=BUYER, seller_id="s1", mode=ShippingMode.IN_STOCK,
                       lines=(LineSpec("a", 1, Money.parse("1.00")),))
    err = refused(bad, cmd, T0, PolicyError, "bad_policy")
    assert "no parameter 'seller_nap_time'" in str(err)


def test_a_policy_file_with_invalid_yaml_is_a_policy_error_naming_the_line(
        service: Service, tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text("id: shop\nversion: '1'\ndeadlines: {a: 1\n", encoding="utf-8")
    cmd = c.PlaceOrder(actor=BUYER, seller_id="s1", mode=ShippingMode.IN_STOCK,
                       lines=(LineSpec("a", 1, Money.parse("1.00")),), policy_id=str(path))
    err = refused(service, cmd, T0, PolicyError, "bad_policy")
    assert "shop.yaml: line 4 is not valid YAML" in str(err)


# -- the database refuses what the domain would never write ----------------------------------


def test_the_database_refuses_a_direct_refund_above_what_the_line_paid(service: Service) -> None:
    order_id = place(service)
    before = snapshot(service)
    lines = tables.order_lines
    for value in (lines.c.paid + 1, -1):
        with service.engine.connect() as conn, pytest.raises(IntegrityError) as err:
            conn.execute(update(lines).where(lines.c.order_id == order_id, lines.c.line_no == 1)
                         .values(refunded=value))
            conn.commit()
        assert "refund_within_paid" in str(err.value).lower() or "check" in str(err.value).lower()
    assert snapshot(service) == before


def test_the_database_refuses_a_case_refund_above_its_amount_and_a_negative_ledger_entry(
        service: Service) -> None:
    case_id = open_case(service, place(service))
    before = snapshot(service)
    with service.engine.connect() as conn, pytest.raises(IntegrityError):
        conn.execute(update(tables.cases).where(tables.cases.c.id == case_id)
                     .values(refunded=tables.cases.c.amount + 1))
        conn.commit()
    with service.engine.connect() as conn, pytest.raises(IntegrityError):
        conn.execute(text("UPDATE ledger SET amount = -1"))
        conn.commit()
    assert snapshot(service) == before
