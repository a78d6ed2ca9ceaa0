"""Batch scan of order and tracking files for shipping violations, with DuckDB.

The rules are not written here: every rule of `domain.violations.RULES` is rendered to SQL
(`analytics.sql.render`) from the same expression the online worker evaluates, over the same
*shipment facts* (`domain.violations.FACTS`). This module only computes those facts from files.

Input (CSV with a header row, or Parquet; chosen by the file extension):

orders file, one row per order line:
    order_id, line_no, seller_id, buyer_id, mode (in_stock|presale|custom|tiered), placed_at,
    ship_by, ship_to_city, shipped_at (tracking upload, empty = not shipped), tracking_no
    (empty = not shipped), declared_weight_g (the parcel's declared weight, empty = unknown),
    sku, qty, price (the line's paid amount in major units, e.g. 59.90, at most 2 decimals),
    weight_g (one unit's weight, 0 or empty = unknown), refund_requested_at (optional column:
    when the buyer asked for a refund before shipment; empty = never, or the request ended
    without a refund)
events file, one row per carrier scan:
    tracking_no, event (picked_up|in_transit|delivered|signed|exception|lost), city, at

Timestamps are ISO 8601 with an offset (`2026-03-01T10:00:00+08:00`); without one they are
UTC. In Parquet, TIMESTAMP columns are UTC and TIMESTAMP WITH TIME ZONE columns are taken as is.

How the facts are computed (the same as `Order.facts()` online):
  * Lines of one order that share a tracking number (or are all unshipped) form one *shipment*;
    an order normally has one. Its lines must agree on seller_id, buyer_id, mode, placed_at,
    ship_by, ship_to_city and shipped_at. `expected_weight_g` = sum(qty * weight_g) over the
    shipment's lines, `declared_weight_g` = the largest declared weight given on them,
    `refund_requested_at` = the earliest request on them.
  * `tracking_orders` = the number of distinct orders shipped with the tracking number.
  * Scan facts per tracking number: first_scan_at, first_pickup_at (earliest picked_up),
    last_scan_at, delivered_at / delivery_city (first delivered or signed scan), lost_at
    (first lost scan), max_scan_gap (longest gap between consecutive scans, counted only while
    the parcel is not yet delivered).
  * `as_of` (default: now) is the evaluation time: orders placed later are left out, a later
    upload or refund request counts as not (yet) made, later scans are ignored.

Every line of a shipment has the shipment's facts, so its lines violate together. One
violation is reported per (order_id, name); its compensation is the pack's schedule applied to
the sum of the violating lines' prices (integer minor units throughout, never floats), which
equals `Order.compensation_for` online, where all lines share the order's facts.

Memory stays bounded: DuckDB streams the files with a memory limit and spills to a temporary
directory; only the violations come back to Python (or go straight to a CSV/Parquet file).
A rejected file reports nothing: every row is checked before any violation is returned.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from aftersales.analytics.sql import literal, render
from aftersales.domain.errors import InvalidInput
from aftersales.domain.money import Money
from aftersales.domain.types import ScanKind, ShippingMode
from aftersales.domain.violations import FACTS, RULES, params_of
from aftersales.policy.model import Compensation, Policy

ORDER_COLUMNS = ("order_id", "line_no", "seller_id", "buyer_id", "mode", "placed_at", "ship_by",
                 "ship_to_city", "shipped_at", "tracking_no", "declared_weight_g", "sku", "qty",
                 "price", "weight_g")
OPTIONAL_ORDER_COLUMNS = ("refund_requested_at",)
EVENT_COLUMNS = ("tracking_no", "event", "city", "at")

# column -> kind: str | int | ts | money
_KINDS = {
    "order_id": "str", "line_no": "int", "seller_id": "str", "buyer_id": "str", "mode": "str",
    "placed_at": "ts", "ship_by": "ts", "ship_to_city": "str", "shipped_at": "ts",
    "tracking_no": "str", "declared_weight_g": "int", "sku": "str", "qty": "int",
    "price": "money", "weight_g": "int", "refund_requested_at": "ts", "event": "str",
    "city": "str", "at": "ts",
}
ORDERS_REQUIRED = ("order_id", "line_no", "seller_id", "buyer_id", "mode", "placed_at",
                   "ship_by", "sku", "qty", "price")
EVENTS_REQUIRED = ("tracking_no", "event", "at")
DELIVERED = (ScanKind.DELIVERED.value, ScanKind.SIGNED.value)


class ScanInputError(InvalidInput):
    """A file the scan cannot use; names the file, the column and, where known, the row."""

    code = "bad_scan_input"

    def __init__(self, path: Path | str, message: str, *, column: str | None = None,
                 row: int | None = None, line: int | None = None) -> None:
        where = [str(path)]
        if column:
            where.append(f"column {column}")
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        super().__init__(f"{': '.join(where)}: {message}")
        self.path, self.column, self.row, self.line = str(path), column, row, line


@dataclass
class ScanResult:
    """What the scan found. `violations` is None when the caller asked not to collect them
    (they went to `out` only)."""

    violations: list[dict[str, Any]] | None
    totals: dict[str, Any]
    out: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


# -- input ----------------------------------------------------------------------------------
def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _str_lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _file_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".parquet"] or suffixes[-1:] == [".pq"]:
        return "parquet"
    if suffixes[-1:] == [".csv"] or suffixes[-2:-1] == [".csv"]:
        return "csv"  # .csv or .csv.gz
    raise ScanInputError(path, "unknown file type: use .csv (or .csv.gz) or .parquet")


def _relation(path: Path, numbered: bool = False) -> str:
    """A DuckDB table function reading the file; CSV values all as text (we parse them)."""
    fmt = _file_format(path)
    if fmt == "parquet":
        extra = ", file_row_number = true" if numbered else ""
        return f"read_parquet({_str_lit(str(path))}{extra})"
    return (f"read_csv({_str_lit(str(path))}, header = true, all_varchar = true, "
            f"auto_detect = true)")


@dataclass(frozen=True)
class _Col:
    name: str
    expr: str  # typed SQL value
    bad: str  # SQL: TRUE when the raw value is present but unusable
    problem: str  # what is wrong when `bad`
    missing: str = "FALSE"  # SQL: TRUE when the raw value is absent (NULL or empty)


def _typed(name: str, kind: str, src_type: str, exponent: int, path: Path) -> _Col:
    c = _q(name)
    t = src_type.upper()
    is_text = t in ("VARCHAR", "TEXT", "STRING") or t.startswith("VARCHAR")
    is_int = t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                   "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT")
    is_float = t in ("FLOAT", "DOUBLE", "REAL")
    is_decimal = t.startswith("DECIMAL")
    if t.strip('"') == "NULL":  # a Parquet column with no value at all
        target = {"str": "VARCHAR", "ts": "TIMESTAMPTZ"}.get(kind, "BIGINT")
        return _Col(name, f"CAST(NULL AS {target})", "FALSE", "", "TRUE")
    col = _typed_value(name, kind, t, c, is_text, is_int, is_float, is_decimal, exponent, path)
    missing = f"({c} IS NULL OR {c} = '')" if is_text else f"({c} IS NULL)"
    return _Col(col.name, col.expr, col.bad, col.problem, missing)


def _typed_value(name: str, kind: str, t: str, c: str, is_text: bool, is_int: bool,
                 is_float: bool, is_decimal: bool, exponent: int, path: Path) -> _Col:
    src_type = t
    if kind == "str":
        return _Col(name, f"nullif({c}, '')" if is_text else f"CAST({c} AS VARCHAR)", "FALSE",
                    "")
    if kind == "ts":
        if is_text:
            expr = f"TRY_CAST(nullif(trim({c}), '') AS TIMESTAMPTZ)"
            return _Col(name, expr, f"(nullif(trim({c}), '') IS NOT NULL AND {expr} IS NULL)",
                        "not a timestamp (use ISO 8601, e.g. 2026-03-01T10:00:00+08:00)")
        if t.startswith("TIMESTAMP") or t == "DATE":
            return _Col(name, f"CAST({c} AS TIMESTAMPTZ)", "FALSE", "")
        raise ScanInputError(path, f"has type {src_type}, expected a timestamp", column=name)
    if kind == "int":
        if is_text:
            expr = f"TRY_CAST(nullif(trim({c}), '') AS BIGINT)"
            return _Col(name, expr, f"(nullif(trim({c}), '') IS NOT NULL AND {expr} IS NULL)",
                        "not a whole number")
        if is_int:
            return _Col(name, f"CAST({c} AS BIGINT)", "FALSE", "")
        if is_float or is_decimal:
            expr = f"CASE WHEN {c} = round({c}) THEN CAST({c} AS BIGINT) END"
            return _Col(name, expr, f"({c} IS NOT NULL AND {c} <> round({c}))",
                        "not a whole number")
        raise ScanInputError(path, f"has type {src_type}, expected a whole number", column=name)
    if kind == "money":
        scale = 10 ** exponent
        if is_text:
            pattern = r"^\d{1,15}(\.\d{1," + str(exponent) + r"})?$"
            raw = f"nullif(trim({c}), '')"
            ok = f"regexp_full_match({raw}, {_str_lit(pattern)})"
            expr = (f"CASE WHEN {ok} THEN CAST(CAST({raw} AS DECIMAL(18, {exponent})) * {scale}"
                    f" AS BIGINT) END")
            return _Col(name, expr, f"({raw} IS NOT NULL AND NOT {ok})",
                        f"not an amount (digits with at most {exponent} decimals, e.g. 59.90)")
        if is_int:
            return _Col(name, f"CAST({c} AS BIGINT) * {scale}", f"({c} < 0)",
                        "negative amount")
        if is_decimal or is_float:
            # exact for DECIMAL; a float must be within a millionth of a whole minor unit
            scaled = f"({c} * {scale})"
            if is_float:
                bad = f"({c} < 0 OR abs({scaled} - round({scaled})) > 1e-6)"
            else:
                bad = f"({c} < 0 OR {scaled} <> round({scaled}))"
            return _Col(name, f"CAST(round({scaled}) AS BIGINT)", bad,
                        f"not an amount in whole minor units (at most {exponent} decimals), "
                        "or negative")
        raise ScanInputError(path, f"has type {src_type}, expected an amount", column=name)
    raise AssertionError(kind)


def _schema(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, str]:
    if not path.is_file():
        raise ScanInputError(path, "no such file")
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {_relation(path)}").fetchall()
    except duckdb.Error as exc:
        raise ScanInputError(path, f"cannot read: {_first_line(exc)}") from None
    return {str(r[0]).strip().lower(): str(r[1]) for r in rows}


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@dataclass(frozen=True)
class _Input:
    path: Path
    columns: dict[str, _Col]
    checks: list[tuple[str, str, str]]  # (column, SQL true when the row is bad, problem)
    source_names: dict[str, str]  # our name -> the file's column name

    def select(self, names: Sequence[str]) -> str:
        return ", ".join(f"{self.columns[n].expr} AS {_q(n)}" for n in names)

    @property
    def row_bad(self) -> str:
        return " OR ".join(f"coalesce({bad}, FALSE)" for _, bad, _ in self.checks) or "FALSE"


def _prepare(con: duckdb.DuckDBPyConnection, path: Path, wanted: Sequence[str],
             optional: Sequence[str], required: Sequence[str], what: str,
             exponent: int) -> _Input:
    schema = _schema(con, path)
    missing = [c for c in wanted if c not in schema]
    if missing:
        raise ScanInputError(path, f"missing column(s) {', '.join(missing)} "
                             f"(the {what} file needs {', '.join(wanted)})",
                             column=missing[0])
    cols: dict[str, _Col] = {}
    names: dict[str, str] = {}
    for name in (*wanted, *[o for o in optional if o in schema]):
        cols[name] = _typed(name, _KINDS[name], schema[name], exponent, path)
        names[name] = name
    for name in optional:
        if name not in cols:  # an absent optional column reads as all NULL
            cols[name] = _Col(name, "CAST(NULL AS TIMESTAMPTZ)", "FALSE", "")
    checks = [(n, cols[n].missing, "is required") for n in required]
    checks += [(n, col.bad, col.problem) for n, col in cols.items() if col.bad != "FALSE"]
    return _Input(path, cols, checks, names)


def _not_in(expr: str, values: Sequence[str]) -> str:
    """`expr NOT IN (...)` as comparisons (DuckDB would plan the IN list as a join)."""
    return "(" + " AND ".join(f"{expr} <> {_str_lit(v)}" for v in values) + ")"


def _orders_input(con: duckdb.DuckDBPyConnection, path: Path, exponent: int) -> _Input:
    inp = _prepare(con, path, ORDER_COLUMNS, OPTIONAL_ORDER_COLUMNS, ORDERS_REQUIRED, "orders",
                   exponent)
    c = {n: inp.columns[n].expr for n in inp.columns}
    inp.checks.extend([
        ("mode", _not_in(c["mode"], [m.value for m in ShippingMode]),
         f"unknown shipping mode (one of {', '.join(m.value for m in ShippingMode)})"),
        ("line_no", f"({c['line_no']} < 1)", "must be 1 or more"),
        ("qty", f"({c['qty']} < 1)", "must be 1 or more"),
        ("weight_g", f"({c['weight_g']} < 0)", "cannot be negative"),
        ("declared_weight_g", f"({c['declared_weight_g']} <= 0)", "must be positive"),
        ("ship_by", f"({c['ship_by']} <= {c['placed_at']})", "must be after placed_at"),
        ("tracking_no", f"(({c['tracking_no']} IS NULL) <> ({c['shipped_at']} IS NULL))",
         "tracking_no and shipped_at go together (both empty = not shipped)"),
    ])
    return inp


def _events_input(con: duckdb.DuckDBPyConnection, path: Path) -> _Input:
    inp = _prepare(con, path, EVENT_COLUMNS, (), EVENTS_REQUIRED, "events", 2)
    inp.checks.append(("event", _not_in(inp.columns["event"].expr, [k.value for k in ScanKind]),
                       f"unknown event kind (one of {', '.join(k.value for k in ScanKind)})"))
    return inp


def _locate(con: duckdb.DuckDBPyConnection, inp: _Input) -> ScanInputError:
    """The first bad row of a file (slow path, only when the file is rejected)."""
    fmt = _file_format(inp.path)
    flags = ", ".join(f"coalesce({bad}, FALSE) AS bad_{i}" for i, (_, bad, _) in
                      enumerate(inp.checks))
    raws = ", ".join(f"CAST({_q(inp.source_names[n])} AS VARCHAR) AS raw_{i}"
                     for i, (n, _, _) in enumerate(inp.checks) if n in inp.source_names)
    if fmt == "parquet":
        numbered = f"SELECT file_row_number + 1 AS rn, * FROM {_relation(inp.path, True)}"
    else:
        numbered = f"SELECT row_number() OVER () AS rn, * FROM {_relation(inp.path)}"
    con.execute("SET threads = 1; SET preserve_insertion_order = true")
    row = con.execute(f"SELECT rn, {flags}{', ' + raws if raws else ''} FROM ({numbered}) "
                      f"WHERE {inp.row_bad} ORDER BY rn LIMIT 1").fetchone()
    if row is None:
        return ScanInputError(inp.path, "rejected, but no bad row was found again")
    rn = int(row[0])
    n_checks = len(inp.checks)
    raw_values = list(row[1 + n_checks:])
    raw_index = [i for i, (n, _, _) in enumerate(inp.checks) if n in inp.source_names]
    for i, (name, _, problem) in enumerate(inp.checks):
        if row[1 + i]:
            value = raw_values[raw_index.index(i)] if i in raw_index else None
            shown = "" if value is None or problem == "is required" else f" ({value!r})"
            return ScanInputError(inp.path, f"{problem}{shown}", column=name, row=rn,
                                  line=rn + 1 if fmt == "csv" else None)
    return ScanInputError(inp.path, "rejected", row=rn)


# -- the query ------------------------------------------------------------------------------
def _ts_text(expr: str) -> str:
    return (f"CASE WHEN {expr} IS NULL THEN NULL WHEN microsecond({expr}) % 1000000 = 0 "
            f"THEN strftime({expr}, '%Y-%m-%dT%H:%M:%S') || '+00:00' "
            f"ELSE strftime({expr}, '%Y-%m-%dT%H:%M:%S.%f') || '+00:00' END")


_TIME_FACTS = {"placed_at", "ship_by", "shipped_at", "first_scan_at", "first_pickup_at",
               "last_scan_at", "delivered_at", "lost_at", "refund_requested_at"}


def _evidence_value(fact: str) -> str:
    if fact in _TIME_FACTS:
        return _ts_text(_q(fact))
    if fact == "max_scan_gap":  # seconds, as a number
        return f"CAST(epoch({_q(fact)}) AS BIGINT)"
    return _q(fact)


def compensation_sql(schedule: Compensation | None, base: str) -> str:
    """SQL for `schedule.for_price` on an integer minor-unit amount (exact, as Money does)."""
    if schedule is None:
        return "CAST(0 AS BIGINT)"
    arms: list[str] = []
    for tier in schedule.tiers:
        if tier.kind == "none":
            value = "0"
        elif tier.kind == "fixed":
            assert tier.amount is not None
            value = str(tier.amount.minor)
        else:
            assert tier.rate_bp is not None
            value = f"CAST((CAST({base} AS HUGEINT) * {tier.rate_bp} + 5000) // 10000 AS BIGINT)"
            if tier.floor is not None:
                value = f"greatest({value}, {tier.floor.minor})"
            if tier.cap is not None:
                value = f"least({value}, {tier.cap.minor})"
        if tier.up_to is None:
            if not arms:
                return f"CAST({value} AS BIGINT)"
            arms.append(f"ELSE {value}")
            break
        arms.append(f"WHEN {base} <= {tier.up_to.minor} THEN {value}")
    if not arms[-1].startswith("ELSE"):
        arms.append("ELSE 0")
    return f"CAST(CASE {' '.join(arms)} END AS BIGINT)"


def _money_text(expr: str, exponent: int) -> str:
    scale = 10 ** exponent
    return (f"CASE WHEN {expr} IS NULL THEN NULL ELSE "
            f"CAST({expr} // {scale} AS VARCHAR) || '.' || "
            f"lpad(CAST({expr} % {scale} AS VARCHAR), {exponent}, '0') END")


def _violations_sql(policy: Policy, as_of: datetime) -> str:
    params = params_of(policy)
    flags = ",\n  ".join(f"coalesce({render(r.when, params, as_of)}, FALSE) AS d_{i}"
                         for i, r in enumerate(RULES))
    names = list(dict.fromkeys(r.name for r in RULES))
    parts = []
    for name in names:
        idx = [i for i, r in enumerate(RULES) if r.name == name]
        dets = ", ".join(f"CASE WHEN d_{i} THEN {_str_lit(RULES[i].detector)} END" for i in idx)
        rule = " ".join(f"WHEN d_{i} THEN {_str_lit(RULES[i].rule)}" for i in idx)
        rank = " ".join(f"WHEN d_{i} THEN {i}" for i in idx)
        ev_parts = []
        for i in idx:
            pairs = ", ".join(f"{_str_lit(k)}, {_evidence_value(k)}" for k in RULES[i].evidence)
            ev_parts.append(f"CASE WHEN d_{i} THEN {_str_lit(json.dumps(RULES[i].detector))} "
                            f"|| ': ' || CAST(json_object({pairs}) AS VARCHAR) END")
        evidence = (f"'{{' || array_to_string(list_filter([{', '.join(ev_parts)}], "
                    f"lambda x: x IS NOT NULL), ', ') || '}}'")
        parts.append(
            f"SELECT order_id, seller_id, buyer_id, {_str_lit(name)} AS name, first_line, lines, "
            f"price_minor, list_filter([{dets}], lambda x: x IS NOT NULL) AS dets, "
            f"CASE {rule} END AS rule, CASE {rank} END AS rank, {evidence} AS evidence "
            f"FROM flagged WHERE {' OR '.join(f'd_{i}' for i in idx)}")
    comp = " ".join(
        f"WHEN {_str_lit(n)} THEN {compensation_sql(policy.compensation.get(n), 'price_minor')}"
        for n in names)
    paid_as = " ".join(f"WHEN {_str_lit(n)} THEN {_str_lit(policy.compensation[n].paid_as)}"
                       for n in names if n in policy.compensation)
    fact_cols = ", ".join(_q(f) for f in FACTS)
    any_flag = " OR ".join(f"d_{i}" for i in range(len(RULES)))
    return f"""
WITH facts AS (
  SELECT og.order_id, og.seller_id, og.buyer_id, og.mode, og.placed_at, og.ship_by,
    og.ship_to_city, og.shipped_at, og.tracking_no, og.declared_weight_g,
    og.expected_weight_g, sf.first_scan_at, sf.first_pickup_at, sf.last_scan_at,
    sf.delivered_at, sf.delivery_city, sf.lost_at, sf.max_scan_gap, og.refund_requested_at,
    sf.tracking_orders, og.first_line, og.lines, og.price_minor
  FROM og LEFT JOIN sf ON og.tracking_no = sf.tracking_no
  WHERE og.order_id IS NOT NULL
),
checked AS (SELECT {fact_cols}, buyer_id, first_line, lines, price_minor FROM facts),
flagged AS MATERIALIZED (
  SELECT * FROM (SELECT *,
  {flags}
  FROM checked) WHERE {any_flag}
),
found AS (
  {' UNION ALL '.join(parts)}
),
grouped AS (
  SELECT order_id, name, any_value(seller_id) AS seller_id, any_value(buyer_id) AS buyer_id,
    arg_min(rule, rank) AS rule, list_sort(list_distinct(flatten(list(dets)))) AS detectors,
    arg_min(evidence, first_line) AS evidence, list_sort(flatten(list(lines))) AS lines,
    CAST(sum(price_minor) AS BIGINT) AS price_minor
  FROM found GROUP BY order_id, name
)
SELECT order_id, seller_id, buyer_id, name, rule, detectors, evidence, lines, price_minor,
  comp AS compensation_minor, CASE WHEN comp > 0 THEN pa END AS paid_as
FROM (SELECT *, CASE name {comp} ELSE 0 END AS comp,
      CASE name {paid_as or "WHEN NULL THEN NULL"} END AS pa FROM grouped)
"""


def _og_sql(orders: _Input, as_of: str) -> str:
    """Lines -> shipments (order_id, tracking number): one row each, plus the bad-row count.
    Rows placed after `as_of` fall in the NULL group (checked, then left out)."""
    c = {n: orders.columns[n].expr for n in orders.columns}
    shipped = f"({c['shipped_at']} <= {as_of})"
    order_level = ", ".join(c[n] for n in ("seller_id", "buyer_id", "mode", "placed_at",
                                           "ship_by", "ship_to_city"))
    return f"""
SELECT CASE WHEN placed_at <= {as_of} THEN order_id END AS order_id,
  CASE WHEN placed_at <= {as_of} THEN tracking_no END AS tracking_no,
  any_value(seller_id) AS seller_id, any_value(buyer_id) AS buyer_id, any_value(mode) AS mode,
  any_value(placed_at) AS placed_at, any_value(ship_by) AS ship_by,
  any_value(ship_to_city) AS ship_to_city, min(shipped_at) AS shipped_at,
  max(declared_weight_g) AS declared_weight_g,
  CAST(sum(qty * coalesce(weight_g, 0)) AS BIGINT) AS expected_weight_g,
  min(refund_requested_at) AS refund_requested_at,
  min(line_no) AS first_line, list(line_no) AS lines, count(*) AS n_lines,
  CAST(sum(price_minor) AS BIGINT) AS price_minor,
  count_if(bad) AS bad,
  -- lines of one shipment must agree on the order's columns and the upload time
  min(h) <> max(h) OR min(shipped_at) <> max(shipped_at) AS mixed
FROM (
  SELECT {c['order_id']} AS order_id, {c['line_no']} AS line_no,
    {c['seller_id']} AS seller_id, {c['buyer_id']} AS buyer_id, {c['mode']} AS mode,
    {c['placed_at']} AS placed_at, {c['ship_by']} AS ship_by,
    {c['ship_to_city']} AS ship_to_city,
    CASE WHEN {shipped} THEN {c['shipped_at']} END AS shipped_at,
    CASE WHEN {shipped} THEN {c['tracking_no']} END AS tracking_no,
    CASE WHEN {shipped} THEN {c['declared_weight_g']} END AS declared_weight_g,
    {c['qty']} AS qty, {c['weight_g']} AS weight_g, {c['price']} AS price_minor,
    CASE WHEN {c['refund_requested_at']} <= {as_of} THEN {c['refund_requested_at']} END
      AS refund_requested_at,
    hash({order_level}) AS h,
    {orders.row_bad} AS bad
  FROM {_relation(orders.path)}
)
GROUP BY ALL
"""


def _sf_sql(events: _Input, as_of: str) -> str:
    """Scan facts per tracking number, and how many orders were shipped with it.

    max_scan_gap: the scan times of a tracking number are collected and sorted per number
    (a hash aggregate: cheaper here than a window over every event); a gap between two
    consecutive distinct times counts while the parcel was not yet delivered, i.e. when the
    earlier time is before the first delivered/signed scan (as `Order.scanned` does)."""
    c = {n: events.columns[n].expr for n in events.columns}
    dlv_kinds = " OR ".join(f"{c['event']} = {_str_lit(k)}" for k in DELIVERED)
    return f"""
SELECT tracking_no, n_events, first_scan_at, first_pickup_at, last_scan_at, delivered_at,
  delivery_city, lost_at, tracking_orders, bad,
  to_microseconds(list_max(list_transform(list_zip(ats[:-2], ats[2:]),
    lambda p: CASE WHEN p[2] > p[1] AND (dlv IS NULL OR p[1] < dlv) THEN p[2] - p[1] END)))
    AS max_scan_gap
FROM (SELECT *, epoch_us(delivered_at) AS dlv
FROM (
  SELECT tracking_no,
    count(ts) AS n_events,
    count_if(is_order) AS tracking_orders,
    min(ts) AS first_scan_at,
    min(CASE WHEN event = 'picked_up' THEN ts END) AS first_pickup_at,
    max(ts) AS last_scan_at,
    min(CASE WHEN dlv THEN ts END) AS delivered_at,
    arg_min(CASE WHEN dlv THEN struct_pack(city := city) END, CASE WHEN dlv THEN ts END).city
      AS delivery_city,
    min(CASE WHEN event = 'lost' THEN ts END) AS lost_at,
    list_sort(list(epoch_us(ts)) FILTER (WHERE ts IS NOT NULL)) AS ats,
    count_if(bad) AS bad
  FROM (
    SELECT {c['tracking_no']} AS tracking_no, {c['event']} AS event, {c['city']} AS city,
      CASE WHEN {c['at']} <= {as_of} THEN {c['at']} END AS ts, FALSE AS is_order,
      ({dlv_kinds}) AS dlv,
      {events.row_bad} AS bad
    FROM {_relation(events.path)}
    UNION ALL
    SELECT tracking_no, NULL, NULL, NULL, TRUE, FALSE, FALSE FROM og
    WHERE tracking_no IS NOT NULL AND order_id IS NOT NULL
  )
  GROUP BY tracking_no
))
"""


@contextmanager
def _connect(memory_limit: str, temp_directory: str | None,
             threads: int | None) -> Iterator[duckdb.DuckDBPyConnection]:
    tmp = tempfile.mkdtemp(prefix="aftersales-scan-", dir=temp_directory)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = {_str_lit(memory_limit)}")
        con.execute(f"SET temp_directory = {_str_lit(tmp)}")
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET enable_progress_bar = false")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        yield con
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _as_of(value: datetime | str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"as_of: not an ISO 8601 time: {value!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def scan(orders_path: str | Path, events_path: str | Path, policy: Policy,
         as_of: datetime | str | None = None, *, out: str | Path | None = None,
         collect: bool = True, limit: int | None = None, memory_limit: str = "2GB",
         temp_directory: str | None = None, threads: int | None = None) -> ScanResult:
    """Scan the files for shipping violations as of `as_of` (default now), under `policy`.

    Returns the violations ordered by order_id and name (unless `collect` is False; at most
    `limit` of them when given) and the totals; `out` (.csv or .parquet) also writes all of
    them to a file. Raises `ScanInputError` for a bad file, before anything is reported."""
    import time

    when = _as_of(as_of)
    at = literal(when)
    exponent = len(str(Money(1, policy.currency)).split(".")[1])
    orders_file, events_file = Path(orders_path), Path(events_path)
    out_path = Path(out) if out is not None else None
    out_fmt = _out_format(out_path) if out_path is not None else None
    timings: dict[str, float] = {}
    with _connect(memory_limit, temp_directory, threads) as con:
        t0 = time.perf_counter()
        orders = _orders_input(con, orders_file, exponent)
        events = _events_input(con, events_file)
        try:
            con.execute(f"CREATE TEMP TABLE og AS {_og_sql(orders, at)}")
        except duckdb.Error as exc:
            raise ScanInputError(orders_file, f"cannot read: {_first_line(exc)}") from None
        timings["shipments_s"] = time.perf_counter() - t0
        bad, mixed = con.execute("SELECT coalesce(sum(bad), 0), "
                                 "coalesce(count_if(mixed AND order_id IS NOT NULL), 0) "
                                 "FROM og").fetchone() or (0, 0)
        if bad:
            raise _locate(con, orders)
        if mixed:
            raise _mixed(con, orders)
        t1 = time.perf_counter()
        try:
            con.execute(f"CREATE TEMP TABLE sf AS {_sf_sql(events, at)}")
        except duckdb.Error as exc:
            raise ScanInputError(events_file, f"cannot read: {_first_line(exc)}") from None
        timings["scans_s"] = time.perf_counter() - t1
        row = con.execute("SELECT coalesce(sum(bad), 0) FROM sf").fetchone()
        if row and row[0]:
            raise _locate(con, events)
        t2 = time.perf_counter()
        con.execute(f"CREATE TEMP TABLE v AS {_violations_sql(policy, when)}")
        timings["rules_s"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        totals = _totals(con, policy, when, exponent)
        timings["totals_s"] = time.perf_counter() - t3
        shown = f"""SELECT order_id, seller_id, buyer_id, name, rule, detectors, evidence, lines,
          {_money_text('price_minor', exponent)} AS price,
          {_money_text('compensation_minor', exponent)} AS compensation,
          {_str_lit(policy.currency)} AS currency, paid_as FROM v ORDER BY order_id, name"""
        if out_path is not None:
            t4 = time.perf_counter()
            body = shown
            if out_fmt == "csv":
                body = (f"SELECT * REPLACE (array_to_string(detectors, ';') AS detectors, "
                        f"array_to_string(lines, ';') AS lines) FROM ({shown})")
            opts = "FORMAT csv, HEADER true" if out_fmt == "csv" else "FORMAT parquet"
            con.execute(f"COPY ({body}) TO {_str_lit(str(out_path))} ({opts})")
            timings["out_s"] = time.perf_counter() - t4
        violations = None
        if collect:
            cur = con.execute(shown + (f" LIMIT {int(limit)}" if limit is not None else ""))
            cols = [d[0] for d in cur.description]
            violations = []
            for r in cur.fetchall():
                v = dict(zip(cols, r, strict=True))
                v["evidence"] = json.loads(v["evidence"])
                v["detectors"] = list(v["detectors"])
                v["lines"] = [int(x) for x in v["lines"]]
                violations.append(v)
    return ScanResult(violations, totals, str(out_path) if out_path else None, timings)


def _out_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise InvalidInput(f"{path}: the output file must end in .csv or .parquet")


def _mixed(con: duckdb.DuckDBPyConnection, orders: _Input) -> ScanInputError:
    row = con.execute("SELECT order_id FROM og WHERE mixed AND order_id IS NOT NULL "
                      "ORDER BY order_id LIMIT 1").fetchone()
    order_id = row[0] if row else "?"
    c = orders.columns
    names = ("seller_id", "buyer_id", "mode", "placed_at", "ship_by", "ship_to_city",
             "shipped_at")
    counts = con.execute(
        "SELECT " + ", ".join(f"count(DISTINCT coalesce(CAST({c[n].expr} AS VARCHAR), ''))"
                              for n in names)
        + f" FROM {_relation(orders.path)} WHERE {c['order_id'].expr} = {_str_lit(order_id)}"
    ).fetchone() or ()
    differing = [n for n, k in zip(names, counts, strict=False) if k and k > 1]
    column = differing[0] if differing else None
    return ScanInputError(orders.path, f"the lines of order {order_id!r} disagree on "
                          f"{', '.join(differing) or 'the order columns'}: an order's lines "
                          "share its order columns, and lines with one tracking number share "
                          "shipped_at", column=column)


def _totals(con: duckdb.DuckDBPyConnection, policy: Policy, as_of: datetime,
            exponent: int) -> dict[str, Any]:
    orders, lines = con.execute(
        "SELECT count(DISTINCT order_id), coalesce(sum(n_lines), 0) FROM og "
        "WHERE order_id IS NOT NULL").fetchone() or (0, 0)
    events_row = con.execute("SELECT coalesce(sum(n_events), 0) FROM sf").fetchone()
    by_name = {str(n): {"orders": int(o), "lines": int(ln)} for n, o, ln in con.execute(
        "SELECT name, count(*), sum(len(lines)) FROM v GROUP BY name ORDER BY name").fetchall()}
    comp = {str(p): str(Money(int(m), policy.currency)) for p, m in con.execute(
        "SELECT paid_as, sum(compensation_minor) FROM v WHERE paid_as IS NOT NULL "
        "GROUP BY paid_as ORDER BY paid_as").fetchall()}
    return {
        "as_of": as_of.isoformat(), "policy": f"{policy.id} {policy.version}",
        "currency": policy.currency, "orders": int(orders), "lines": int(lines),
        "events": int(events_row[0]) if events_row else 0,
        "violations": sum(v["orders"] for v in by_name.values()),
        "by_name": by_name, "compensation": comp,
    }


__all__ = ["EVENT_COLUMNS", "ORDER_COLUMNS", "ScanInputError", "ScanResult",
           "compensation_sql", "scan"]
