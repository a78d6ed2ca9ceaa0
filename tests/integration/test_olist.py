"""`aftersales import olist`: the real Olist sample through the service layer and the worker.

The data is read where it lives (../shared/data/olist-sample, never copied into the repo); a
subset (--limit) runs on SQLite and on PostgreSQL. Hand-checked order
261e71d2349c713eafa9f3df5972b95d (line 3 of olist_orders_dataset.csv): purchased
2018-01-20 12:15:57, one item of 157.77 BRL whose shipping_limit_date is 2018-01-25 12:37:13;
the carrier took it 2018-01-25 21:42:52 (9 hours late) and it was delivered 2018-01-30
11:32:35 (4.6 days later). Brazil was on summer time (UTC-2) then. So: ship_timeout, nothing
else; Taobao pays 5 % = 7.89 BRL in cash, Douyin a 3.00 coupon.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aftersales.bootstrap import bootstrap
from aftersales.cli import app
from aftersales.olist import REASONS
from tests.conftest import SHARED

DATA = SHARED / "data" / "olist-sample"
LIMIT = 300
LATE = "261e71d2349c713eafa9f3df5972b95d"
KEYS = ("olist_orders_read", "olist_orders_loaded", "orders_loaded", "lines_loaded",
        "skipped", "skipped_orders", "violations", "compensation", "reviews", "orders_by_status")

needs_data = pytest.mark.skipif(not (DATA / "olist_orders_dataset.csv").is_file(),
                                reason=f"the Olist sample is not at {DATA}")


def run_cli(*args: str) -> Any:
    result = CliRunner().invoke(app, ["import", "olist", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@needs_data
def test_a_subset_of_olist_loads_and_the_summary_adds_up(db_url: str) -> None:
    s = run_cli(str(DATA), "--limit", str(LIMIT), "--db", db_url)
    assert all(k in s for k in KEYS), sorted(set(KEYS) - set(s))
    assert s["olist_orders_read"] == LIMIT
    # every Olist order read is either loaded or skipped with its reason, never dropped
    assert s["olist_orders_loaded"] + s["skipped_orders"] == LIMIT
    assert s["skipped_orders"] > 0
    for reason, v in s["skipped"].items():
        assert reason in REASONS and v["why"] == REASONS[reason] and v["orders"] > 0
    assert s["refused"] == {}
    assert s["orders_loaded"] >= s["olist_orders_loaded"] > 0  # split by seller, never merged
    assert sum(s["orders_by_status"].values()) == s["orders_loaded"]
    assert s["lines_loaded"] >= s["orders_loaded"]
    assert "ship_timeout" in s["violations"]
    for name, v in s["violations"].items():
        assert set(v) == {"orders", "lines"}
        assert 0 < v["orders"] <= s["orders_loaded"], name
        assert v["orders"] <= v["lines"] <= s["lines_loaded"], name
    assert s["orders_with_violations"] <= s["orders_loaded"]
    assert max(v["orders"] for v in s["violations"].values()) <= s["orders_with_violations"]
    comp = s["compensation"]
    assert comp["currency"] == "BRL"
    assert comp["by_paid_as"] == {"compensation": comp["total"]}  # Taobao pays cash
    assert comp["ledger"]["compensation"] == comp["total"]
    reviews = s["reviews"]
    assert (reviews["with_violations"]["orders"] + reviews["without_violations"]["orders"]
            == s["olist_orders_loaded"])
    assert 1 <= reviews["with_violations"]["mean_score"] <= 5

    service = bootstrap(db_url)
    try:
        order = service.order(LATE)
        with service.uow() as uow:
            found = uow.repo.violations_of([LATE])
    finally:
        service.engine.dispose()
    assert order.ship_by == datetime(2018, 1, 25, 14, 37, 13, tzinfo=UTC)
    assert order.shipped_at == datetime(2018, 1, 25, 23, 42, 52, tzinfo=UTC)
    assert order.delivered_at == datetime(2018, 1, 30, 13, 32, 35, tzinfo=UTC)
    assert order.currency == "BRL" and str(order.paid) == "157.77"
    assert [(v["name"], v["compensation"], v["currency"], v["paid_as"]) for v in found] == [
        ("ship_timeout", 789, "BRL", "compensation")]


@needs_data
def test_the_douyin_pack_pays_the_same_violations_as_coupons(sqlite_url: str) -> None:
    s = run_cli(str(DATA), "--limit", "100", "--policy", "douyin", "--db", sqlite_url)
    comp = s["compensation"]
    assert comp["by_paid_as"] == {"coupon": comp["total"]}
    assert comp["by_violation"]["ship_timeout"]["paid_as"] == "coupon"
    service = bootstrap(sqlite_url)
    try:
        with service.uow() as uow:
            found = uow.repo.violations_of([LATE])
    finally:
        service.engine.dispose()
    assert [(v["name"], v["compensation"], v["paid_as"]) for v in found] == [
        ("ship_timeout", 300, "coupon")]  # 3-300 (here BRL): a flat 3.00


# -- rows the importer cannot use, on a hand-made layout ----------------------------------------
HEADERS = {
    "olist_orders_dataset.csv": "order_id,customer_id,order_status,order_purchase_timestamp,"
    "order_approved_at,order_delivered_carrier_date,order_delivered_customer_date,"
    "order_estimated_delivery_date",
    "olist_order_items_dataset.csv": "order_id,order_item_id,product_id,seller_id,"
    "shipping_limit_date,price,freight_value",
    "olist_customers_dataset.csv": "customer_id,customer_unique_id,customer_zip_code_prefix,"
    "customer_city,customer_state",
    "olist_products_dataset.csv": "product_id,product_category_name,product_name_lenght,"
    "product_description_lenght,product_photos_qty,product_weight_g,product_length_cm,"
    "product_height_cm,product_width_cm",
    "olist_order_reviews_dataset.csv": "review_id,order_id,review_score,review_comment_title,"
    "review_comment_message,review_creation_date,review_answer_timestamp",
}
D1, D2 = "2018-03-01 10:00:00", "2018-03-05 10:00:00"


def _layout(tmp_path: Path) -> Path:
    rows = {
        "olist_orders_dataset.csv": [
            f"ok,c1,delivered,{D1},{D1},2018-03-02 09:00:00,2018-03-04 09:00:00,{D2}",
            f"two_sellers,c1,shipped,{D1},{D1},2018-03-03 09:00:00,,{D2}",  # 2 engine orders
            f"no_time,c1,delivered,,{D1},2018-03-02 09:00:00,2018-03-04 09:00:00,{D2}",
            f"no_price,c1,delivered,{D1},{D1},2018-03-02 09:00:00,2018-03-04 09:00:00,{D2}",
            f"early,c1,delivered,{D1},{D1},2018-03-02 09:00:00,2018-02-20 09:00:00,{D2}",
            f"gone,c1,canceled,{D1},,,,{D2}",
            f"oos,c1,unavailable,{D1},2018-03-01 11:00:00,,,{D2}",
            f"never,c1,processing,{D1},{D1},,,{D2}",
        ],
        "olist_order_items_dataset.csv": [
            "ok,1,p1,s1,2018-03-03 10:00:00,59.90,10.0",
            "ok,2,p1,s1,2018-03-03 10:00:00,59.90,10.0",  # same product twice: qty 2
            "two_sellers,1,p1,s1,2018-03-02 10:00:00,10.0,1.0",  # limit missed by 23 h
            "two_sellers,2,p2,s2,2018-03-04 10:00:00,20.0,1.0",  # in time
            "no_time,1,p1,s1,2018-03-03 10:00:00,10.0,1.0",
            "no_price,1,p1,s1,2018-03-03 10:00:00,,1.0",
            "early,1,p1,s1,2018-03-03 10:00:00,10.0,1.0",
            "oos,1,p2,s2,2018-03-03 10:00:00,30.0,1.0",
            "never,1,p2,s2,2018-03-03 10:00:00,30.0,1.0",
            "orphan,1,p2,s2,2018-03-03 10:00:00,30.0,1.0",
        ],
        "olist_customers_dataset.csv": ["c1,u1,01000,sao paulo,SP"],
        "olist_products_dataset.csv": ["p1,cat,1,1,1,500,1,1,1", "p2,,1,1,1,,1,1,1"],
        "olist_order_reviews_dataset.csv": [
            f'r1,ok,5,,"chegou\nrapido, recomendo",{D2},{D2}',  # embedded newline
            f"r2,two_sellers,1,,,{D2},{D2}",
        ],
    }
    for name, header in HEADERS.items():
        (tmp_path / name).write_text("\n".join([header, *rows[name]]) + "\n", encoding="utf-8")
    return tmp_path


def test_unusable_rows_are_counted_with_their_reason(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'olist.db'}"
    s = run_cli(str(_layout(tmp_path)), "--db", db)
    assert s["olist_orders_read"] == 8
    assert {k: (v["orders"], v["items"]) for k, v in s["skipped"].items()} == {
        "missing_purchase_time": (1, 1), "item_without_price": (1, 1),
        "delivered_before_purchase": (1, 1), "canceled_no_items": (1, 0),
        "item_without_order": (1, 1)}
    assert s["skipped_orders"] == 4  # orphan items are not an order of the orders file
    assert s["olist_orders_loaded"] == 4 and s["orders_loaded"] == 5
    assert s["lines_loaded"] == 5 and s["items_loaded"] == 6
    assert s["orders_by_status"] == {"closed": 1, "completed": 3, "paid": 1}
    # two_sellers:s1 shipped 23 h late; never: not shipped; oos: declared out of stock
    assert s["violations"]["ship_timeout"] == {"orders": 2, "lines": 2}
    assert s["violations"]["out_of_stock"] == {"orders": 1, "lines": 1}
    assert s["refunded"] == "30.00"  # nobody answered: the pack's default cancels (OS-3)
    assert s["reviews"]["without_violations"]["mean_score"] == 5.0
    service = bootstrap(db)
    try:
        assert service.order("ok").lines[0].qty == 2
        assert service.order("two_sellers:s1").violations == ("ship_timeout", "stalled_parcel")
        assert service.order("two_sellers:s2").violations == ("stalled_parcel",)
    finally:
        service.engine.dispose()


def test_the_import_refuses_a_database_that_already_holds_orders(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'olist.db'}"
    layout = _layout(tmp_path)
    run_cli(str(layout), "--db", db)
    again = CliRunner().invoke(app, ["import", "olist", str(layout), "--db", db])
    assert again.exit_code == 2 and "already holds 5 orders" in again.output


def test_a_folder_without_the_olist_files_is_invalid_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["import", "olist", str(tmp_path)])
    assert result.exit_code == 2 and "olist_orders_dataset.csv" in result.output
