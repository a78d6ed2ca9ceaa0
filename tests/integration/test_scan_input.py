"""The batch scan's input checks, output files, CLI and exact compensation."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from aftersales.analytics.scan import (
    ScanInputError,
    _connect,
    _orders_input,
    compensation_sql,
    scan,
)
from aftersales.cli import app
from aftersales.domain.money import Money
from aftersales.policy import loader

HEADER = ("order_id,line_no,seller_id,buyer_id,mode,placed_at,ship_by,ship_to_city,shipped_at,"
          "tracking_no,declared_weight_g,sku,qty,price,weight_g,refund_requested_at")
ORDERS = [
    # late upload (ship_timeout), two lines
    "o1,1,s1,b1,in_stock,2026-03-01T10:00:00+08:00,2026-03-03T10:00:00+08:00,Hangzhou,"
    "2026-03-03T11:00:00+08:00,T1,900,A,1,59.90,400,",
    "o1,2,s1,b1,in_stock,2026-03-01T10:00:00+08:00,2026-03-03T10:00:00+08:00,Hangzhou,"
    "2026-03-03T11:00:00+08:00,T1,900,B,2,20.00,200,",
    # never shipped, refund asked before ship_by: nothing
    "o2,1,s1,b2,custom,2026-03-01 02:00:00,2026-03-05 02:00:00,Beijing,,,,A,1,9.99,0,"
    "2026-03-02 02:00:00",
    # on time, delivered in the right city
    "o3,1,s2,b3,presale,2026-03-01 02:00:00,2026-03-05 02:00:00,Shanghai,2026-03-02 02:00:00,"
    "T3,,A,1,300.00,100,",
]
EVENTS = [
    "tracking_no,event,city,at",
    "T1,picked_up,Hangzhou,2026-03-03T20:00:00+08:00",
    "T1,delivered,hangzhou,2026-03-06T12:00:00+08:00",
    "T3,picked_up,Shanghai,2026-03-02 05:00:00",
    "T3,signed,Shanghai,2026-03-03 05:00:00",
]
AS_OF = "2026-03-20T00:00:00+00:00"


def write(folder: Path, orders: list[str], events: list[str] | None = None,
          header: str = HEADER) -> tuple[Path, Path]:
    o, e = folder / "orders.csv", folder / "events.csv"
    o.write_text("\n".join([header, *orders]) + "\n", encoding="utf-8")
    e.write_text("\n".join(events or EVENTS) + "\n", encoding="utf-8")
    return o, e


def test_a_good_file_gives_violations_and_totals(tmp_path: Path) -> None:
    o, e = write(tmp_path, ORDERS)
    result = scan(o, e, loader.load("taobao"), AS_OF)
    assert result.violations is not None
    assert [(v["order_id"], v["name"], v["lines"], v["price"], v["compensation"], v["paid_as"])
            for v in result.violations] == [("o1", "ship_timeout", [1, 2], "79.90", "5.00",
                                             "cash")]
    v = result.violations[0]
    assert v["rule"] == "SH-2" and v["detectors"] == ["ship_timeout"]
    assert v["evidence"]["ship_timeout"]["shipped_at"] == "2026-03-03T03:00:00+00:00"
    t = result.totals
    assert (t["orders"], t["lines"], t["events"]) == (3, 4, 4)
    assert t["by_name"] == {"ship_timeout": {"orders": 1, "lines": 2}}
    assert t["compensation"] == {"cash": "5.00"}


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_out_writes_every_violation(tmp_path: Path, suffix: str) -> None:
    o, e = write(tmp_path, ORDERS)
    out = tmp_path / f"v.{suffix}"
    result = scan(o, e, loader.load("taobao"), AS_OF, out=out, collect=False)
    assert result.violations is None
    rows = duckdb.sql(f"SELECT order_id, name, CAST(compensation AS VARCHAR) FROM "
                      f"read_{suffix}('{out}'{', all_varchar = true' if suffix == 'csv' else ''})"
                      ).fetchall()
    assert rows == [("o1", "ship_timeout", "5.00")]


@pytest.mark.parametrize(("orders", "events", "column", "row", "words"), [
    ([ORDERS[0].replace("2026-03-01T10:00:00+08:00", "1st of March", 1)], None,
     "placed_at", 1, "not a timestamp"),
    ([ORDERS[0], ORDERS[2].replace(",custom,", ",express,")], None, "mode", 2,
     "unknown shipping mode"),
    ([ORDERS[0], ORDERS[3].replace(",300.00,", ",300.005,")], None, "price", 2,
     "not an amount"),
    ([ORDERS[0], ORDERS[3].replace(",1,300.00,", ",0,300.00,")], None, "qty", 2,
     "must be 1 or more"),
    ([ORDERS[0].replace(",s1,b1,", ",,b1,")], None, "seller_id", 1, "is required"),
    ([ORDERS[3].replace(",T3,", ",,")], None, "tracking_no", 1, "go together"),
    (ORDERS, [*EVENTS, "T3,teleported,Mars,2026-03-04 00:00:00"], "event", 5,
     "unknown event kind"),
    (ORDERS, [*EVENTS, "T3,in_transit,Wuhan,yesterday"], "at", 5, "not a timestamp"),
])
def test_bad_rows_are_named(tmp_path: Path, orders: list[str], events: list[str] | None,
                            column: str, row: int, words: str) -> None:
    o, e = write(tmp_path, orders, events)
    with pytest.raises(ScanInputError) as err:
        scan(o, e, loader.load("taobao"), AS_OF)
    bad = err.value
    assert (bad.column, bad.row, bad.line) == (column, row, row + 1)
    assert words in str(bad)
    assert bad.path == str(e if events else o) and bad.path in str(bad)


def test_bad_parquet_rows_are_named(tmp_path: Path) -> None:
    o, e = write(tmp_path, ORDERS, [*EVENTS, "T3,teleported,Mars,2026-03-04 00:00:00"])
    pq = tmp_path / "events.parquet"
    duckdb.sql(f"COPY (SELECT * FROM read_csv('{e}')) TO '{pq}' (FORMAT parquet)")
    with pytest.raises(ScanInputError) as err:
        scan(o, pq, loader.load("taobao"), AS_OF)
    assert (err.value.column, err.value.row, err.value.line) == ("event", 5, None)


def test_missing_columns_and_disagreeing_lines(tmp_path: Path) -> None:
    o, e = write(tmp_path, [row.rsplit(",", 2)[0] for row in ORDERS],
                 header=HEADER.rsplit(",", 2)[0])
    with pytest.raises(ScanInputError, match=r"orders.csv: column weight_g: missing column"):
        scan(o, e, loader.load("taobao"), AS_OF)
    o, e = write(tmp_path, [ORDERS[0], ORDERS[1].replace(",in_stock,", ",presale,")])
    with pytest.raises(ScanInputError, match=r"lines of order 'o1' disagree on mode"):
        scan(o, e, loader.load("taobao"), AS_OF)


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    o, e = write(tmp_path, ORDERS)
    runner = CliRunner()
    ok = runner.invoke(app, ["scan", "--orders", str(o), "--events", str(e), "--as-of", AS_OF,
                             "--json"])
    assert ok.exit_code == 0, ok.output
    body = json.loads(ok.output)
    assert [v["order_id"] for v in body["violations"]] == ["o1"]
    assert body["totals"]["violations"] == 1
    text = runner.invoke(app, ["scan", "--orders", str(o), "--events", str(e), "--as-of",
                               AS_OF, "--out", str(tmp_path / "v.parquet")])
    assert text.exit_code == 0 and "ship_timeout" in text.output
    o, e = write(tmp_path, [ORDERS[0].replace(",in_stock,", ",express,")])
    bad = runner.invoke(app, ["scan", "--orders", str(o), "--events", str(e)])
    assert bad.exit_code == 2
    assert "orders.csv: column mode: row 1 (line 2): unknown shipping mode" in bad.output


@pytest.mark.parametrize("policy_id", ["taobao", "douyin"])
def test_compensation_sql_is_for_price_exactly(policy_id: str) -> None:
    policy = loader.load(policy_id)
    prices = [0, 1, 299, 300, 301, 9999, 10000, 10001, 29999, 30000, 30001, 59990, 60000,
              299999, 300000, 300049, 300050, 123456789]
    for name, schedule in policy.compensation.items():
        sql = compensation_sql(schedule, "p")
        got = duckdb.sql(f"SELECT p, {sql} FROM unnest({prices}) AS t(p) ORDER BY p").fetchall()
        for price, minor in got:
            want = schedule.for_price(Money(price, policy.currency))
            assert minor == want.minor, (name, price)


def test_empty_files_and_an_all_empty_parquet_column(tmp_path: Path) -> None:
    o, e = write(tmp_path, ORDERS, ["tracking_no,event,city,at"])
    result = scan(o, e, loader.load("taobao"), AS_OF)
    assert result.totals["events"] == 0
    # without scans the shipped orders are also never picked up or scanned at all
    assert {(v["order_id"], v["name"]) for v in result.violations or []} == {
        ("o1", "ship_timeout"), ("o1", "pickup_timeout"), ("o1", "fake_shipment"),
        ("o3", "pickup_timeout"), ("o3", "fake_shipment")}
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = duckdb.sql(f"SELECT * EXCLUDE (refund_requested_at) FROM read_csv('{o}')").arrow()
    if hasattr(table, "read_all"):
        table = table.read_all()
    table = table.append_column("refund_requested_at", pa.nulls(len(table)))
    pq.write_table(table, tmp_path / "orders.parquet")
    again = scan(tmp_path / "orders.parquet", e, loader.load("taobao"), AS_OF)
    assert again.totals["orders"] == 3


def typed_orders(folder: Path, orders: list[str], name: str = "typed.parquet") -> Path:
    """The orders as typed Parquet (with statistics, as DuckDB and pyarrow write by default)."""
    src = folder / f"{name}.csv"
    src.write_text("\n".join([HEADER, *orders]) + "\n", encoding="utf-8")
    out = folder / name
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    ts = ", ".join(f"CAST(nullif({c}, '') AS TIMESTAMPTZ) AS {c}" for c in
                   ("placed_at", "ship_by", "shipped_at", "refund_requested_at"))
    con.execute(f"""COPY (SELECT * REPLACE ({ts},
        CAST(line_no AS INTEGER) AS line_no, nullif(tracking_no, '') AS tracking_no,
        CAST(nullif(declared_weight_g, '') AS INTEGER) AS declared_weight_g,
        CAST(qty AS INTEGER) AS qty, CAST(price AS DECIMAL(12, 2)) AS price,
        CAST(weight_g AS INTEGER) AS weight_g)
      FROM read_csv('{src}', all_varchar = true)) TO '{out}' (FORMAT parquet)""")
    con.close()
    return out


def test_typed_parquet_skips_only_what_its_statistics_prove(tmp_path: Path) -> None:
    o, e = write(tmp_path, ORDERS)
    pq = typed_orders(tmp_path, ORDERS)
    result = scan(pq, e, loader.load("taobao"), AS_OF)
    assert result.violations == scan(o, e, loader.load("taobao"), AS_OF).violations
    with _connect("1GB", None, None) as con:
        checks = _orders_input(con, pq, 2).checks
    # allowed values and comparisons between columns are never settled by statistics
    assert sorted({c.column for c in checks if not c.proven}) == ["mode", "ship_by",
                                                                 "tracking_no"]
    with _connect("1GB", None, None) as con:
        assert not any(c.proven for c in _orders_input(con, o, 2).checks)  # CSV: every row


@pytest.mark.parametrize(("change", "column", "row", "words"), [
    # each of these is a check the statistics of a good file would settle: a file whose
    # statistics do not is still checked row by row
    ((3, ",1,300.00,", ",0,300.00,"), "qty", 2, "must be 1 or more"),
    ((3, ",T3,,A,1,", ",T3,0,A,1,"), "declared_weight_g", 2, "must be positive"),
    ((0, ",400,", ",-1,"), "weight_g", 1, "cannot be negative"),
    ((3, "o3,1,", "o3,0,"), "line_no", 2, "must be 1 or more"),
    ((0, ",s1,b1,", ",,b1,"), "seller_id", 1, "is required"),
    ((3, "o3,1,s2,", ",1,s2,"), "order_id", 2, "is required"),
    ((0, "2026-03-01T10:00:00+08:00,2026-03-03", ",2026-03-03"), "placed_at", 1,
     "is required"),
])
def test_typed_parquet_that_breaks_a_provable_check_is_rejected(
        tmp_path: Path, change: tuple[int, str, str], column: str, row: int,
        words: str) -> None:
    index, old, new = change
    orders = [ORDERS[0], ORDERS[3]]
    orders[0 if index == 0 else 1] = orders[0 if index == 0 else 1].replace(old, new, 1)
    assert orders != [ORDERS[0], ORDERS[3]]
    _, e = write(tmp_path, ORDERS)
    pq = typed_orders(tmp_path, orders)
    with pytest.raises(ScanInputError) as err:
        scan(pq, e, loader.load("taobao"), AS_OF)
    assert (err.value.column, err.value.row, err.value.line) == (column, row, None)
    assert words in str(err.value)


def test_negative_decimal_price_and_parquet_without_statistics(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    _, e = write(tmp_path, ORDERS)
    bad = typed_orders(tmp_path, [ORDERS[0], ORDERS[3].replace(",300.00,", ",-300.00,")])
    with pytest.raises(ScanInputError, match=r"column price: row 2: .*negative"):
        scan(bad, e, loader.load("taobao"), AS_OF)
    # no statistics at all: nothing is proven, every row is checked
    table = pq.read_table(typed_orders(tmp_path, [ORDERS[0],
                                                  ORDERS[3].replace(",1,300.00,", ",0,300.00,")],
                                       "zero.parquet"))
    assert isinstance(table, pa.Table)
    bare = tmp_path / "bare.parquet"
    pq.write_table(table, bare, write_statistics=False)
    with pytest.raises(ScanInputError) as err:
        scan(bare, e, loader.load("taobao"), AS_OF)
    assert (err.value.column, err.value.row) == ("qty", 2)


def _line(order: str, no: int, tracking: str, sku: str, price: str, *, mode: str = "in_stock",
          declared: str = "900") -> str:
    return (f"{order},{no},s2,b5,{mode},2026-03-01T10:00:00+08:00,2026-03-03T10:00:00+08:00,"
            f"Wuhan,2026-03-04T11:00:00+08:00,{tracking},{declared},{sku},1,{price},400,")


def test_parquet_makes_the_same_shipments_as_csv(tmp_path: Path) -> None:
    """From Parquet the scan groups only the lines of orders with a line numbered other than
    1 and takes the others as they are (then merges two lines of one order both numbered 1);
    from CSV it groups every line. Same violations and totals either way."""
    orders = [
        ORDERS[0], ORDERS[1].replace("o1,2,", "o1,1,"),  # o1: two lines, both numbered 1
        ORDERS[2], ORDERS[3],
        *(_line("o4", n, "T4", sku, "10.00") for n, sku in ((1, "A"), (2, "B"), (3, "C"))),
        # o5: two shipments (split), each late and declared far too light
        _line("o5", 1, "T5", "A", "10.00", declared="100"),
        _line("o5", 2, "T6", "B", "20.00", declared="100"),
        # o6: one line numbered 1, reused by o7's tracking number, o7 with a line 2 only
        _line("o6", 1, "T7", "A", "3.00", mode="custom"),
        _line("o7", 2, "T7", "B", "4.00"),
        # o8: two lines numbered 1 that together weigh far more than declared (one does not)
        _line("o8", 1, "T8", "A", "5.00", declared="200"),
        _line("o8", 1, "T8", "B", "6.00", declared="200"),
    ]
    o, e = write(tmp_path, orders)
    pq = typed_orders(tmp_path, orders)
    policy = loader.load("taobao")
    from_csv, from_parquet = scan(o, e, policy, AS_OF), scan(pq, e, policy, AS_OF)
    assert from_parquet.violations == from_csv.violations
    assert from_parquet.totals == from_csv.totals
    assert from_csv.totals["orders"] == 8 and from_csv.totals["lines"] == 13
    lines = {(v["order_id"], v["name"]): (v["lines"], v["price"])
             for v in from_csv.violations or []}
    assert lines[("o1", "ship_timeout")] == ([1, 1], "79.90")
    assert lines[("o4", "ship_timeout")] == ([1, 2, 3], "30.00")
    assert lines[("o5", "ship_timeout")] == ([1, 2], "30.00")
    assert lines[("o5", "fake_shipment")] == ([1, 2], "30.00")
    assert lines[("o6", "fake_shipment")] == ([1], "3.00")  # reused_tracking
    assert lines[("o7", "fake_shipment")] == ([2], "4.00")
    assert lines[("o8", "fake_shipment")] == ([1, 1], "11.00")  # empty_parcel: merged


@pytest.mark.parametrize("line_no", ["1", "2"])
def test_parquet_lines_that_disagree_are_rejected(tmp_path: Path, line_no: str) -> None:
    orders = [ORDERS[0], ORDERS[1].replace("o1,2,", f"o1,{line_no},").replace(",in_stock,",
                                                                             ",presale,")]
    _, e = write(tmp_path, ORDERS)
    with pytest.raises(ScanInputError, match=r"lines of order 'o1' disagree on mode"):
        scan(typed_orders(tmp_path, orders), e, loader.load("taobao"), AS_OF)
