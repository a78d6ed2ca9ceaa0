"""Tracking files, inventory under concurrency and the seller's to-do list (SH-7, SH-8)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from typer.testing import CliRunner

from aftersales.bootstrap import bootstrap
from aftersales.domain.errors import ActionNotAllowed
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import Actor, ShippingMode
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from aftersales.store import tables as t
from tests.conftest import T0

BUYER, SELLER, SYSTEM = Actor.parse("buyer:b1"), Actor.parse("seller:s1"), Actor.parse("system")
runner = CliRunner()


def _shipped_order(service: Service, tracking: str, mode: ShippingMode = ShippingMode.IN_STOCK
                   ) -> str:
    placed = service.handle(c.PlaceOrder(
        actor=BUYER, seller_id="s1", mode=mode, ship_to_city="Hangzhou",
        ship_by=T0 + timedelta(days=3) if mode is not ShippingMode.IN_STOCK else None,
        lines=(LineSpec("A", 1, Money.parse("50.00")),)), T0)
    assert placed.order_id
    service.handle(c.Ship(actor=SELLER, order_id=placed.order_id, carrier="SF",
                          tracking=tracking), T0 + timedelta(hours=1))
    return placed.order_id


def _count(service: Service, table: t.Table) -> int:
    with service.uow() as uow:
        return int(uow.repo.conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_tracking_file_applies_every_scan_and_the_order_is_delivered(
        service: Service, db_url: str, tmp_path: Path) -> None:  # rule: SH-8
    order_id = _shipped_order(service, "SF100")
    feed = tmp_path / "feed.csv"
    feed.write_text("tracking_no,event,city,at\n"
                    "SF100,picked_up,Shanghai,2026-03-01T13:00:00+08:00\n"
                    "SF100,signed,Hangzhou,2026-03-02T09:00:00+08:00\n")
    result = runner.invoke(app(), ["tracking", "import", str(feed), "--db", db_url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["scans"] == 2
    order = service.order(order_id)
    assert order.status.value == "delivered" and order.delivery_city == "Hangzhou"
    assert order.violations == ()


def test_a_tracking_file_with_one_bad_row_applies_nothing(
        service: Service, db_url: str, tmp_path: Path) -> None:
    _shipped_order(service, "SF200")
    before = _count(service, t.tracking_events)
    feed = tmp_path / "feed.jsonl"
    feed.write_text(
        '{"tracking_no": "SF200", "event": "picked_up", "at": "2026-03-01T13:00:00+08:00"}\n'
        '{"tracking_no": "NOPE", "event": "signed", "at": "2026-03-02T09:00:00+08:00"}\n')
    result = runner.invoke(app(), ["tracking", "import", str(feed), "--db", db_url])
    assert result.exit_code == 2
    assert "line 2: unknown tracking number 'NOPE'" in result.output
    assert _count(service, t.tracking_events) == before
    missing = tmp_path / "missing.csv"
    missing.write_text("tracking_no,at\nSF200,2026-03-01T13:00:00+08:00\n")
    result = runner.invoke(app(), ["tracking", "import", str(missing), "--db", db_url])
    assert result.exit_code == 2 and "missing column(s): event" in result.output


def test_concurrent_payments_never_take_stock_below_zero(db_url: str) -> None:  # rule: SH-7
    service = bootstrap(db_url)
    service.handle(c.SetStock(actor=SELLER, seller_id="s1", sku="A", quantity=5), T0)
    outcomes: list[str] = []
    lock = threading.Lock()

    def buy(n: int) -> None:
        try:
            service.handle(c.PlaceOrder(actor=Actor.parse(f"buyer:b{n}"), seller_id="s1",
                                        mode=ShippingMode.IN_STOCK,
                                        lines=(LineSpec("A", 1, Money.parse("9.00")),)), T0)
            result = "paid"
        except ActionNotAllowed as exc:
            assert exc.code == "out_of_stock"
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=buy, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(outcomes) == ["paid"] * 5 + ["refused"] * 3
    with service.uow() as uow:
        assert uow.repo.stock_of("s1") == {"A": 0}
    service.engine.dispose()


def test_the_seller_todo_lists_orders_at_risk_and_presale_lines_to_prepare(
        service: Service, db_url: str) -> None:  # rule: SH-1, SH-7
    service.handle(c.PlaceOrder(actor=BUYER, seller_id="s1", mode=ShippingMode.IN_STOCK,
                                lines=(LineSpec("A", 1, Money.parse("5.00")),)), T0)
    service.handle(c.PlaceOrder(actor=BUYER, seller_id="s1", mode=ShippingMode.PRESALE,
                                ship_by=T0 + timedelta(days=20),
                                lines=(LineSpec("PRE", 3, Money.parse("5.00")),)), T0)
    now = (T0 + timedelta(hours=30)).isoformat()
    result = runner.invoke(app(), ["seller", "todo", "s1", "--db", db_url, "--hours", "24",
                                   "--now", now, "--json"])
    assert result.exit_code == 0, result.output
    todo = json.loads(result.output)
    assert [o["mode"] for o in todo["to_ship"]] == ["in_stock", "presale"]
    assert [o["at_risk"] for o in todo["to_ship"]] == [True, False]
    assert todo["to_prepare"] == [{"sku": "PRE", "qty": 3}]
    assert todo["at_risk"] == 1


def app():  # type: ignore[no-untyped-def]
    from aftersales.cli import app as typer_app

    return typer_app
