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

How it is computed (each step one pass; see docs/benchmarks.md for the measurements):
  * `og`: one row per shipment, from one GROUP BY over the lines whose keys include the
    order's columns (so disagreeing lines show up as two rows for one shipment, found in the
    small `multi` table of orders with several rows); from Parquet, only the lines of orders
    with a line numbered other than 1 are grouped, the others are shipments as they are. A
    row that fails a check stops the query at once (DuckDB's error()), and `_locate` then
    names the first bad row; checks that a Parquet file's own statistics settle (no NULLs,
    no '', minimums) are not run per row.
  * `sf`: one row per tracking number from one GROUP BY over the scans, each scan packed
    into one number (time and kind), so that min/max/bit_xor give every fact of a trail of
    up to three scans exactly; longer trails are read again.
  * `flagged`: shipments joined with their scan facts, kept where any rule holds; then the
    violations, grouped per (order_id, name) only for orders with several shipments.
  * Times are kept as plain TIMESTAMPs in UTC (same instants; cheaper to compare, add to and
    format than TIMESTAMPTZ), and the rules are rendered that way (`render(utc_naive=True)`).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
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
    numeric: bool = False  # the file stores it as a number (its statistics compare as numbers)
    text: bool = False  # the file stores it as text ('' counts as missing)
    bad_unless_min: Decimal | None = None  # `bad` is exactly `value < this` (see _Check)


def _typed(name: str, kind: str, src_type: str, exponent: int, path: Path) -> _Col:
    c = _q(name)
    t = src_type.upper()
    is_text = t in ("VARCHAR", "TEXT", "STRING") or t.startswith("VARCHAR")
    is_int = t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                   "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT")
    is_float = t in ("FLOAT", "DOUBLE", "REAL")
    is_decimal = t.startswith("DECIMAL")
    if t.strip('"') == "NULL":  # a Parquet column with no value at all
        target = {"str": "VARCHAR", "ts": "TIMESTAMP"}.get(kind, "BIGINT")
        return _Col(name, f"CAST(NULL AS {target})", "FALSE", "", "TRUE")
    col = _typed_value(name, kind, t, c, is_text, is_int, is_float, is_decimal, exponent, path)
    missing = f"({c} IS NULL OR {c} = '')" if is_text else f"({c} IS NULL)"
    return replace(col, missing=missing, numeric=is_int or is_decimal, text=is_text)


def _utc(tz: str) -> str:
    """A TIMESTAMPTZ as a plain TIMESTAMP in UTC. Times are kept that way through the scan:
    the same instants, but comparing, adding an INTERVAL and formatting them skip the time
    zone library (TIMESTAMPTZ + INTERVAL is about three times slower)."""
    return f"make_timestamp(epoch_us({tz}))"


def _decimal_scale(t: str) -> int | None:
    m = re.fullmatch(r"DECIMAL\(\s*\d+\s*,\s*(\d+)\s*\)", t)
    return int(m.group(1)) if m else None


def _typed_value(name: str, kind: str, t: str, c: str, is_text: bool, is_int: bool,
                 is_float: bool, is_decimal: bool, exponent: int, path: Path) -> _Col:
    src_type = t
    if kind == "str":
        return _Col(name, f"nullif({c}, '')" if is_text else f"CAST({c} AS VARCHAR)", "FALSE",
                    "")
    if kind == "ts":  # kept as a plain TIMESTAMP in UTC (see _utc)
        if is_text:
            expr = f"TRY_CAST(nullif(trim({c}), '') AS TIMESTAMPTZ)"
            return _Col(name, _utc(expr),
                        f"(nullif(trim({c}), '') IS NOT NULL AND {expr} IS NULL)",
                        "not a timestamp (use ISO 8601, e.g. 2026-03-01T10:00:00+08:00)")
        if t in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
            return _Col(name, _utc(c), "FALSE", "")
        if t.startswith("TIMESTAMP") or t == "DATE":  # without a zone: UTC already
            return _Col(name, f"CAST({c} AS TIMESTAMP)", "FALSE", "")
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
                        "negative amount", bad_unless_min=Decimal(0))
        digits = _decimal_scale(t) if is_decimal else None
        if digits is not None and digits <= exponent:
            # a DECIMAL with at most `exponent` decimals is always whole in minor units
            return _Col(name, f"CAST({c} * {scale} AS BIGINT)", f"({c} < 0)",
                        f"not an amount in whole minor units (at most {exponent} decimals), "
                        "or negative", bad_unless_min=Decimal(0))
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
class _Check:
    """A row check: `bad` is SQL, TRUE when the row is bad.

    `proof` names what a Parquet file's own statistics (per row group, in its footer) must show
    for no row to be bad, so that the check need not run on every row:
    ("no_nulls", is_text): the null count is 0 (and, for text, the smallest value is not
    empty, so no value is ''); ("min", bound, strict): every value is >= bound (> if strict),
    shown by the row groups' minimums (only for columns stored as numbers). A CSV file has no
    statistics: there every check runs. Checks that statistics cannot decide (allowed values,
    comparisons between columns, parse errors) always run."""

    column: str
    bad: str
    problem: str
    proof: tuple[Any, ...] | None = None
    proven: bool = False


# column -> one (null count, smallest value as text, rows) per row group; None where a row
# group has no statistics for it (then nothing is proven)
_Stats = dict[str, list[tuple[int | None, str | None, int]]]


def _parquet_stats(con: duckdb.DuckDBPyConnection, path: Path) -> _Stats:
    if _file_format(path) != "parquet":
        return {}
    try:
        rows = con.execute(
            "SELECT lower(path_in_schema), stats_null_count, stats_min_value, "
            "row_group_num_rows, row_group_id "
            f"FROM parquet_metadata({_str_lit(str(path))})").fetchall()
    except duckdb.Error:
        return {}
    stats: _Stats = {}
    groups = {r[4] for r in rows}
    for name, nulls, low, n_rows, _ in rows:
        stats.setdefault(str(name), []).append(
            (None if nulls is None else int(nulls), None if low is None else str(low),
             int(n_rows)))
    if any(len(v) != len(groups) for v in stats.values()):
        return {}  # nested columns or an odd footer: prove nothing
    return stats


def _never_empty(stats: _Stats, name: str) -> bool:
    """The statistics show no '' in a text column: every row group's smallest value is not
    empty (a prefix of it, if truncated, is still a lower bound), or it holds only NULLs."""
    if name not in stats:
        return False
    return all((low is not None and low != "") or (low is None and nulls == n_rows)
               for nulls, low, n_rows in stats[name])


def _proven(check: _Check, stats: _Stats, name: str) -> bool:
    if check.proof is None or name not in stats:
        return False
    groups = stats[name]
    if check.proof[0] == "no_nulls":
        is_text = bool(check.proof[1])
        return (all(nulls == 0 for nulls, _, _ in groups)
                and (not is_text or _never_empty(stats, name)))
    if check.proof[0] == "min":
        bound, strict = Decimal(check.proof[1]), bool(check.proof[2])
        for nulls, low, n_rows in groups:
            if low is None:
                if nulls == n_rows:
                    continue  # only NULLs (or no rows): no minimum to check
                return False
            try:
                value = Decimal(low)
            except (InvalidOperation, ValueError):
                return False
            if not (value > bound if strict else value >= bound):
                return False
        return True
    return False


@dataclass(frozen=True)
class _Input:
    path: Path
    columns: dict[str, _Col]
    checks: list[_Check]
    source_names: dict[str, str]  # our name -> the file's column name
    stats: _Stats

    def select(self, names: Sequence[str]) -> str:
        return ", ".join(f"{self.columns[n].expr} AS {_q(n)}" for n in names)

    def add(self, column: str, bad: str, problem: str,
            proof: tuple[Any, ...] | None = None) -> None:
        check = _Check(column, bad, problem, proof)
        self.checks.append(replace(check, proven=_proven(check, self.stats, column)))

    def min_proof(self, column: str, bound: int, strict: bool) -> tuple[Any, ...] | None:
        """("min", ...) for a column the file stores as a number, else None."""
        return ("min", bound, strict) if self.columns[column].numeric else None

    @property
    def row_bad(self) -> str:
        """SQL: TRUE when a row fails a check the file's statistics do not settle."""
        return " OR ".join(f"coalesce({c.bad}, FALSE)" for c in self.checks
                           if not c.proven) or "FALSE"

    @property
    def any_bad(self) -> str:
        """SQL: TRUE when a row fails any check (to find the row once the file is rejected)."""
        return " OR ".join(f"coalesce({c.bad}, FALSE)" for c in self.checks) or "FALSE"


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
            cols[name] = _Col(name, "CAST(NULL AS TIMESTAMP)", "FALSE", "")
    stats = _parquet_stats(con, path)
    for name, col in cols.items():
        if col.text and _KINDS[name] == "str" and _never_empty(stats, name):
            # no '' to turn into NULL (nullif() costs about 8 % of the scan stage)
            cols[name] = replace(col, expr=_q(name))
    inp = _Input(path, cols, [], names, stats)
    for n in required:
        inp.add(n, cols[n].missing, "is required",
                None if cols[n].missing == "TRUE" else ("no_nulls", cols[n].text))
    for n, col in cols.items():
        if col.bad != "FALSE":
            proof = None
            if col.bad_unless_min is not None and col.numeric:
                proof = ("min", col.bad_unless_min, False)
            inp.add(n, col.bad, col.problem, proof)
    return inp


def _not_in(expr: str, values: Sequence[str]) -> str:
    """`expr NOT IN (...)` as comparisons (DuckDB would plan the IN list as a join)."""
    return "(" + " AND ".join(f"{expr} <> {_str_lit(v)}" for v in values) + ")"


def _orders_input(con: duckdb.DuckDBPyConnection, path: Path, exponent: int) -> _Input:
    inp = _prepare(con, path, ORDER_COLUMNS, OPTIONAL_ORDER_COLUMNS, ORDERS_REQUIRED, "orders",
                   exponent)
    c = {n: inp.columns[n].expr for n in inp.columns}
    inp.add("mode", _not_in(c["mode"], [m.value for m in ShippingMode]),
            f"unknown shipping mode (one of {', '.join(m.value for m in ShippingMode)})")
    inp.add("line_no", f"({c['line_no']} < 1)", "must be 1 or more",
            inp.min_proof("line_no", 1, False))
    inp.add("qty", f"({c['qty']} < 1)", "must be 1 or more", inp.min_proof("qty", 1, False))
    inp.add("weight_g", f"({c['weight_g']} < 0)", "cannot be negative",
            inp.min_proof("weight_g", 0, False))
    inp.add("declared_weight_g", f"({c['declared_weight_g']} <= 0)", "must be positive",
            inp.min_proof("declared_weight_g", 0, True))
    inp.add("ship_by", f"({c['ship_by']} <= {c['placed_at']})", "must be after placed_at")
    inp.add("tracking_no", f"(({c['tracking_no']} IS NULL) <> ({c['shipped_at']} IS NULL))",
            "tracking_no and shipped_at go together (both empty = not shipped)")
    return inp


def _events_input(con: duckdb.DuckDBPyConnection, path: Path) -> _Input:
    inp = _prepare(con, path, EVENT_COLUMNS, (), EVENTS_REQUIRED, "events", 2)
    inp.add("event", _not_in(inp.columns["event"].expr, [k.value for k in ScanKind]),
            f"unknown event kind (one of {', '.join(k.value for k in ScanKind)})")
    return inp


# Raised inside a query (DuckDB's error()) at the first row that fails a check, so that checking
# costs no aggregate and a bad file stops the query at once; `_locate` then names the row.
_BAD_ROW = "aftersales-scan: a row failed its checks"


def _checked(inp: _Input, expr: str) -> str:
    """`expr`, but the query fails on a row that fails a check (put it on a value every row
    computes: a group key or a filtered column)."""
    bad = inp.row_bad
    if bad == "FALSE":
        return expr
    return f"CASE WHEN {bad} THEN error({_str_lit(_BAD_ROW)}) ELSE {expr} END"


def _locate(con: duckdb.DuckDBPyConnection, inp: _Input) -> ScanInputError:
    """The first bad row of a file (slow path, only when the file is rejected)."""
    fmt = _file_format(inp.path)
    flags = ", ".join(f"coalesce({c.bad}, FALSE) AS bad_{i}" for i, c in enumerate(inp.checks))
    raws = ", ".join(f"CAST({_q(inp.source_names[c.column])} AS VARCHAR) AS raw_{i}"
                     for i, c in enumerate(inp.checks) if c.column in inp.source_names)
    if fmt == "parquet":
        numbered = f"SELECT file_row_number + 1 AS rn, * FROM {_relation(inp.path, True)}"
    else:
        numbered = f"SELECT row_number() OVER () AS rn, * FROM {_relation(inp.path)}"
    con.execute("SET threads = 1; SET preserve_insertion_order = true")
    row = con.execute(f"SELECT rn, {flags}{', ' + raws if raws else ''} FROM ({numbered}) "
                      f"WHERE {inp.any_bad} ORDER BY rn LIMIT 1").fetchone()
    if row is None:
        return ScanInputError(inp.path, "rejected, but no bad row was found again")
    rn = int(row[0])
    n_checks = len(inp.checks)
    raw_values = list(row[1 + n_checks:])
    raw_index = [i for i, c in enumerate(inp.checks) if c.column in inp.source_names]
    for i, check in enumerate(inp.checks):
        if row[1 + i]:
            value = raw_values[raw_index.index(i)] if i in raw_index else None
            shown = "" if value is None or check.problem == "is required" else f" ({value!r})"
            return ScanInputError(inp.path, f"{check.problem}{shown}", column=check.column,
                                  row=rn, line=rn + 1 if fmt == "csv" else None)
    return ScanInputError(inp.path, "rejected", row=rn)


# -- the query ------------------------------------------------------------------------------
def _ts_text(expr: str) -> str:
    """ISO 8601 in UTC, as `datetime.isoformat()` writes it (times are plain UTC here)."""
    return (f"CASE WHEN {expr} IS NULL THEN NULL WHEN epoch_us({expr}) % 1000000 = 0 "
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


def _flagged_sql(policy: Policy, as_of: datetime) -> str:
    """Every shipment's facts (og joined with sf), kept only where some rule holds.

    The filter is the rules' OR without the coalesce() of the flags (NULL and FALSE both drop
    a row), so DuckDB can skip the later rules of a row an earlier one already keeps; the
    flags themselves are computed on the kept rows only."""
    params = params_of(policy)
    whens = [render(r.when, params, as_of, utc_naive=True) for r in RULES]
    flags = ",\n  ".join(f"coalesce({w}, FALSE) AS d_{i}" for i, w in enumerate(whens))
    fact_cols = ", ".join(_q(f) for f in FACTS)
    return f"""
SELECT *,
  {flags},
  -- a shipment's line numbers: its first and last cover up to two lines; longer shipments
  -- get theirs from `long_lines`
  CASE WHEN n_lines = 1 THEN [first_line] WHEN n_lines = 2 THEN [first_line, last_line] END
    AS lines,
  order_id IN (SELECT order_id FROM multi) AS split
FROM (
  SELECT {fact_cols}, buyer_id, n_lines, first_line, last_line, price_minor
  FROM (
    SELECT og.*, sf.first_scan_at, sf.first_pickup_at, sf.last_scan_at, sf.delivered_at,
      sf.delivery_city, sf.lost_at, sf.max_scan_gap,
      CASE WHEN og.tracking_no IS NOT NULL THEN coalesce(dup.n, 1) END AS tracking_orders
    FROM og LEFT JOIN sf ON og.tracking_no = sf.tracking_no
    LEFT JOIN dup ON og.tracking_no = dup.tracking_no
  )
  WHERE {' OR '.join(f'({w})' for w in whens)}
)
"""


def _violations_sql(policy: Policy) -> str:
    names = list(dict.fromkeys(r.name for r in RULES))
    parts = []
    for name in names:
        idx = [i for i, r in enumerate(RULES) if r.name == name]
        rule = " ".join(f"WHEN d_{i} THEN {_str_lit(RULES[i].rule)}" for i in idx)
        rank = " ".join(f"WHEN d_{i} THEN {i}" for i in idx)
        ev_parts = []
        for i in idx:
            pairs = ", ".join(f"{_str_lit(k)}, {_evidence_value(k)}" for k in RULES[i].evidence)
            ev_parts.append(f"{_str_lit(json.dumps(RULES[i].detector))} "
                            f"|| ': ' || CAST(json_object({pairs}) AS VARCHAR)")
        # the detectors that hold, and their evidence ', '-joined: concat_ws() skips NULLs
        # (cheaper than a list_filter() lambda per row); a name with one detector has it on
        # every row it is kept for
        if len(idx) == 1:
            dets = f"[{_str_lit(RULES[idx[0]].detector)}]"
            evidence = f"'{{' || {ev_parts[0]} || '}}'"
        else:
            assert not any("," in RULES[i].detector for i in idx)
            dets = ("string_split(concat_ws(',', " + ", ".join(
                f"CASE WHEN d_{i} THEN {_str_lit(RULES[i].detector)} END" for i in idx) + "), ',')")
            evidence = ("'{' || concat_ws(', ', " + ", ".join(
                f"CASE WHEN d_{i} THEN {e} END" for i, e in zip(idx, ev_parts, strict=True))
                + ") || '}'")
        parts.append(
            f"SELECT order_id, seller_id, buyer_id, {_str_lit(name)} AS name, first_line, lines, "
            f"price_minor, split, {dets} AS dets, "
            f"CASE {rule} END AS rule, CASE {rank} END AS rank, {evidence} AS evidence "
            f"FROM flagged WHERE {' OR '.join(f'd_{i}' for i in idx)}")
    comp = " ".join(
        f"WHEN {_str_lit(n)} THEN {compensation_sql(policy.compensation.get(n), 'price_minor')}"
        for n in names)
    paid_as = " ".join(f"WHEN {_str_lit(n)} THEN {_str_lit(policy.compensation[n].paid_as)}"
                       for n in names if n in policy.compensation)
    return f"""
WITH found AS (
  {' UNION ALL '.join(parts)}
),
-- an order with one shipment has one row per violation already; only orders with several
-- shipments (`split`, rare) need grouping
grouped AS (
  SELECT order_id, name, seller_id, buyer_id, rule, list_sort(list_distinct(dets)) AS detectors,
    evidence, list_sort(lines) AS lines, price_minor
  FROM found WHERE NOT split
  UNION ALL
  SELECT order_id, name, any_value(seller_id) AS seller_id, any_value(buyer_id) AS buyer_id,
    arg_min(rule, rank) AS rule, list_sort(list_distinct(flatten(list(dets)))) AS detectors,
    arg_min(evidence, first_line) AS evidence, list_sort(flatten(list(lines))) AS lines,
    CAST(sum(price_minor) AS BIGINT) AS price_minor
  FROM found WHERE split GROUP BY order_id, name
)
SELECT order_id, seller_id, buyer_id, name, rule, detectors, evidence, lines, price_minor,
  comp AS compensation_minor, CASE WHEN comp > 0 THEN pa END AS paid_as
FROM (SELECT *, CASE name {comp} ELSE 0 END AS comp,
      CASE name {paid_as or "WHEN NULL THEN NULL"} END AS pa FROM grouped)
"""


def _lines_sql(orders: _Input, as_of: str, checked: bool = True) -> str:
    """Order lines as the shipments see them: placed by `as_of`, the upload (tracking number,
    time, declared weight) only if made by then, a refund request only if made by then."""
    c = {n: orders.columns[n].expr for n in orders.columns}
    shipped = f"({c['shipped_at']} <= {as_of})"
    placed = _checked(orders, c["placed_at"]) if checked else c["placed_at"]
    return f"""
  SELECT * FROM (
    SELECT {c['order_id']} AS order_id, {c['line_no']} AS line_no,
      {c['seller_id']} AS seller_id, {c['buyer_id']} AS buyer_id, {c['mode']} AS mode,
      {placed} AS placed_at, {c['ship_by']} AS ship_by,
      {c['ship_to_city']} AS ship_to_city,
      CASE WHEN {shipped} THEN {c['shipped_at']} END AS shipped_at,
      CASE WHEN {shipped} THEN {c['tracking_no']} END AS tracking_no,
      CASE WHEN {shipped} THEN {c['declared_weight_g']} END AS declared_weight_g,
      {c['qty']} AS qty, {c['weight_g']} AS weight_g, {c['price']} AS price_minor,
      CASE WHEN {c['refund_requested_at']} <= {as_of} THEN {c['refund_requested_at']} END
        AS refund_requested_at
    FROM {_relation(orders.path)}
  )
  -- every row is checked (placed_at fails the query on a bad row) before this filter
  -- (`checked`: the first pass; a second pass reads rows already checked)
  WHERE placed_at <= {as_of}"""


_OG_KEYS = ("order_id", "tracking_no", "seller_id", "buyer_id", "mode", "placed_at", "ship_by",
            "ship_to_city", "shipped_at")
# how a shipment row's values combine when rows of one shipment are merged
_OG_MERGE = (("declared_weight_g", "max"), ("expected_weight_g", "sum"),
             ("refund_requested_at", "min"), ("n_lines", "sum"), ("first_line", "min"),
             ("last_line", "max"), ("price_minor", "sum"))


def _several_lines_sql(orders: _Input) -> str:
    """The orders with a line numbered other than 1: those that may have several lines."""
    c = orders.columns
    return (f"SELECT DISTINCT {c['order_id'].expr} AS order_id FROM {_relation(orders.path)} "
            f"WHERE {c['line_no'].expr} <> 1 AND {c['order_id'].expr} IS NOT NULL")


def _og_sql(orders: _Input, as_of: str, split: bool) -> str:
    """Lines -> shipments: one row per (order_id, tracking number), placed by `as_of`.

    The order's columns and the upload time are group keys rather than aggregates: lines of
    one shipment that disagree on them make two rows for one (order_id, tracking_no), which
    `_mixed_order` finds afterwards (cheaper here than any_value() and a consistency check
    per column). The line numbers are kept as first/last/count (exact up to two lines).

    `split` (Parquet): most orders have one line, numbered 1, and a hash aggregate costs
    about as much per row as it finds groups (here almost every line is its own group, and
    carrying the nine key columns through the hash table is the cost). So only the lines of
    the orders in `several` (those with a line numbered other than 1; the line numbers'
    statistics let DuckDB read only the row groups holding such lines) are grouped; the
    others are shipments as they are. Two lines of one order both numbered 1 then come out as
    two rows of one shipment: `multi` finds them, and `_merge_sql` groups them."""
    keys = ", ".join(_OG_KEYS)
    grouped = f"""
SELECT {keys}, max(declared_weight_g) AS declared_weight_g,
  CAST(sum(qty * coalesce(weight_g, 0)) AS BIGINT) AS expected_weight_g,
  min(refund_requested_at) AS refund_requested_at,
  count(*) AS n_lines, min(line_no) AS first_line, max(line_no) AS last_line,
  CAST(sum(price_minor) AS BIGINT) AS price_minor"""
    if not split:
        return f"{grouped}\nFROM ({_lines_sql(orders, as_of)})\nGROUP BY ALL"
    return f"""
WITH l AS ({_lines_sql(orders, as_of)})
SELECT {keys}, declared_weight_g,
  CAST(qty * coalesce(weight_g, 0) AS BIGINT) AS expected_weight_g, refund_requested_at,
  CAST(1 AS BIGINT) AS n_lines, line_no AS first_line, line_no AS last_line, price_minor
FROM l ANTI JOIN several ON l.order_id = several.order_id
UNION ALL
{grouped}
FROM l SEMI JOIN several ON l.order_id = several.order_id
GROUP BY ALL
"""


def _merge_sql() -> str:
    """The rows of the `multi` orders, those with equal shipment keys merged into one (as
    the grouped `_og_sql` would have made them)."""
    aggs = ", ".join(f"CAST({fn}({col}) AS BIGINT) AS {col}" if fn == "sum"
                     else f"{fn}({col}) AS {col}" for col, fn in _OG_MERGE)
    return f"SELECT {', '.join(_OG_KEYS)}, {aggs} FROM ({_IN_MULTI}) GROUP BY ALL"


def _events_sql(events: _Input, as_of: str, checked: bool = True) -> str:
    c = {n: events.columns[n].expr for n in events.columns}
    ts = f"CASE WHEN {c['at']} <= {as_of} THEN {c['at']} END"
    return f"""
  SELECT {c['tracking_no']} AS tracking_no, {c['event']} AS event, {c['city']} AS city,
    {_checked(events, ts) if checked else ts} AS ts
  FROM {_relation(events.path)}"""


# Scan kinds the facts tell apart, as the two low bits of a packed scan (see `_sf_sql`).
_KIND_CODES = ((1, (ScanKind.PICKED_UP.value,)), (2, DELIVERED), (3, (ScanKind.LOST.value,)))


def _kind_code(event: str) -> str:
    arms = " ".join(f"WHEN {' OR '.join(f'{event} = {_str_lit(k)}' for k in kinds)} THEN {code}"
                    for code, kinds in _KIND_CODES)
    return f"CASE {arms} ELSE 0 END"


def _sf_sql(events: _Input, as_of: str) -> str:
    """Scan facts per tracking number (scans after `as_of` left out).

    Each scan is packed into one BIGINT, its time in microseconds times 4 plus a code for its
    kind (1 picked_up, 2 delivered/signed, 3 lost, 0 other): the packed values order by time,
    and min, max and bit_xor of them give the whole trail of a parcel with at most three scans
    (the middle one is the bit_xor of all three with the smallest and the largest). So four
    plain aggregates give first_scan_at, last_scan_at, first_pickup_at, delivered_at, lost_at
    and max_scan_gap (the longest gap between consecutive scans while the parcel is not yet
    delivered: a gap counts when its earlier time is before the first delivered/signed scan,
    as `Order.scanned` does) of those trails exactly, without sorting and without a filtered
    aggregate per kind. Longer trails (n_events > 3) get theirs from `_long_sql`. (Times
    within about 70,000 years of 1970 pack into a BIGINT; only times up to `as_of` are packed.)
    """
    e = _events_sql(events, as_of)

    def ts(k: str) -> str:  # microseconds
        return f"(({k} - ({k} & 3)) // 4)"

    def first(code: int) -> str:  # the first scan of a kind, in microseconds
        return (f"CASE WHEN n_events > 3 THEN NULL WHEN lo & 3 = {code} THEN {ts('lo')} "
                f"WHEN n_events = 3 AND mid & 3 = {code} THEN {ts('mid')} "
                f"WHEN n_events >= 2 AND hi & 3 = {code} THEN {ts('hi')} END")

    pair = "CASE WHEN {b} > {a} AND (dlv IS NULL OR {a} < dlv) THEN {b} - {a} END"
    a, b, c = ts("lo"), ts("mid"), ts("hi")
    return f"""
SELECT tracking_no, n_events, make_timestamp({a}) AS first_scan_at,
  make_timestamp(pick) AS first_pickup_at, make_timestamp({c}) AS last_scan_at,
  make_timestamp(dlv) AS delivered_at, delivery_city, make_timestamp(lost) AS lost_at,
  to_microseconds(CASE WHEN n_events = 2 THEN {pair.format(a=a, b=c)}
    WHEN n_events = 3 THEN greatest({pair.format(a=a, b=b)}, {pair.format(a=b, b=c)}) END)
    AS max_scan_gap
FROM (SELECT *, {first(1)} AS pick, {first(2)} AS dlv, {first(3)} AS lost
  FROM (SELECT *, xor(xor(x, lo), hi) AS mid
    FROM (
      SELECT tracking_no, count(k) AS n_events, min(k) AS lo, max(k) AS hi, bit_xor(k) AS x,
        -- the city of the first delivered/signed scan, NULL if that scan has none
        arg_min_null(city, ts) FILTER (WHERE k & 3 = 2) AS delivery_city
      FROM (SELECT tracking_no, city, ts, epoch_us(ts) * 4 + {_kind_code('event')} AS k
            FROM ({e}))
      GROUP BY tracking_no)))
"""


def _long_sql(events: _Input, as_of: str) -> str:
    """The kind facts and max_scan_gap of the trails with more than three scans: their scans
    read again, the times collected and sorted per tracking number (a second pass over the
    file, but only these tracking numbers get past the join; a list per number is cheaper
    than a window)."""
    dlv = " OR ".join(f"e.event = {_str_lit(k)}" for k in DELIVERED)
    pair = "CASE WHEN p[2] > p[1] AND (dlv IS NULL OR p[1] < dlv) THEN p[2] - p[1] END"
    return f"""
SELECT tracking_no, first_pickup_at, delivered_at, lost_at,
  to_microseconds(list_max(list_transform(list_zip(ats[:-2], ats[2:]), lambda p: {pair})))
    AS max_scan_gap
FROM (
  SELECT *, epoch_us(delivered_at) AS dlv FROM (
    SELECT e.tracking_no, list_sort(list(epoch_us(e.ts))) AS ats,
      min(e.ts) FILTER (WHERE e.event = {_str_lit(ScanKind.PICKED_UP.value)})
        AS first_pickup_at,
      min(e.ts) FILTER (WHERE {dlv}) AS delivered_at,
      min(e.ts) FILTER (WHERE e.event = {_str_lit(ScanKind.LOST.value)}) AS lost_at
    FROM ({_events_sql(events, as_of, checked=False)}) AS e
    JOIN (SELECT tracking_no FROM sf WHERE n_events > 3) AS l
      ON e.tracking_no = l.tracking_no
    WHERE e.ts IS NOT NULL
    GROUP BY e.tracking_no))
"""


def _long_lines_sql(orders: _Input, as_of: str) -> str:
    """The line numbers of the flagged shipments with more than two lines (read again)."""
    return f"""
SELECT l.order_id, l.tracking_no, list_sort(list(l.line_no)) AS lines
FROM ({_lines_sql(orders, as_of, checked=False)}) AS l
WHERE l.order_id IN (SELECT order_id FROM flagged WHERE n_lines > 2)
GROUP BY l.order_id, l.tracking_no
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
    at = literal(when, utc_naive=True)
    exponent = len(str(Money(1, policy.currency)).split(".")[1])
    orders_file, events_file = Path(orders_path), Path(events_path)
    out_path = Path(out) if out is not None else None
    out_fmt = _out_format(out_path) if out_path is not None else None
    timings: dict[str, float] = {}
    with _connect(memory_limit, temp_directory, threads) as con:
        t0 = time.perf_counter()
        orders = _orders_input(con, orders_file, exponent)
        events = _events_input(con, events_file)
        split = _file_format(orders.path) == "parquet"
        if split:
            _run(con, orders, f"CREATE TEMP TABLE several AS {_several_lines_sql(orders)}")
        _run(con, orders, f"CREATE TEMP TABLE og AS {_og_sql(orders, at, split)}")
        # orders with more than one shipment row: split shipments, lines that disagree, or
        # (`split`) lines of one shipment not grouped yet
        multi = ("CREATE OR REPLACE TEMP TABLE multi AS SELECT order_id, count(*) AS n "
                 "FROM og GROUP BY order_id HAVING count(*) > 1")
        con.execute(multi)
        if split and _count(con, "SELECT * FROM multi"):
            con.execute(f"CREATE TEMP TABLE merged AS {_merge_sql()}")
            if _count(con, "SELECT * FROM merged") < _count(con, _IN_MULTI):
                con.execute("DELETE FROM og WHERE order_id IN (SELECT order_id FROM multi)")
                con.execute("INSERT INTO og SELECT * FROM merged")
                con.execute(multi)
        mixed = _mixed_order(con)
        if mixed is not None:
            raise _mixed(con, orders, mixed)
        timings["shipments_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        _run(con, events, f"CREATE TEMP TABLE sf AS {_sf_sql(events, at)}")
        long_trails = con.execute("SELECT count(*) FROM sf WHERE n_events > 3").fetchone()
        if long_trails and long_trails[0]:
            con.execute(f"CREATE TEMP TABLE long AS {_long_sql(events, at)}")
            con.execute("UPDATE sf SET first_pickup_at = l.first_pickup_at, "
                        "delivered_at = l.delivered_at, lost_at = l.lost_at, "
                        "max_scan_gap = l.max_scan_gap FROM long AS l "
                        "WHERE sf.n_events > 3 AND sf.tracking_no = l.tracking_no")
        # tracking numbers shipped with more than one order (each order once: no mixed rows)
        con.execute("CREATE TEMP TABLE dup AS SELECT tracking_no, count(*) AS n FROM og "
                    "WHERE tracking_no IS NOT NULL GROUP BY tracking_no HAVING count(*) > 1")
        timings["scans_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        con.execute(f"CREATE TEMP TABLE flagged AS {_flagged_sql(policy, when)}")
        long_ships = con.execute("SELECT count(*) FROM flagged WHERE n_lines > 2").fetchone()
        if long_ships and long_ships[0]:
            con.execute(f"CREATE TEMP TABLE long_lines AS {_long_lines_sql(orders, at)}")
            con.execute("UPDATE flagged SET lines = ll.lines FROM long_lines AS ll "
                        "WHERE flagged.n_lines > 2 AND flagged.order_id = ll.order_id "
                        "AND flagged.tracking_no IS NOT DISTINCT FROM ll.tracking_no")
        con.execute(f"CREATE TEMP TABLE v AS {_violations_sql(policy)}")
        timings["rules_s"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        totals = _totals(con, policy, when)
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


def _run(con: duckdb.DuckDBPyConnection, inp: _Input, sql: str) -> None:
    """Run a statement reading `inp`; a row failing its checks names the row."""
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        if _BAD_ROW in str(exc):
            raise _locate(con, inp) from None
        raise ScanInputError(inp.path, f"cannot read: {_first_line(exc)}") from None


def _out_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise InvalidInput(f"{path}: the output file must end in .csv or .parquet")


_IN_MULTI = "SELECT * FROM og WHERE order_id IN (SELECT order_id FROM multi)"


def _count(con: duckdb.DuckDBPyConnection, query: str) -> int:
    row = con.execute(f"SELECT count(*) FROM ({query})").fetchone()
    return int(row[0]) if row else 0


def _mixed_order(con: duckdb.DuckDBPyConnection) -> str | None:
    """The first order with two rows for one shipment: its lines disagree."""
    row = con.execute("SELECT order_id FROM og WHERE order_id IN (SELECT order_id FROM multi) "
                      "GROUP BY order_id, tracking_no HAVING count(*) > 1 "
                      "ORDER BY order_id LIMIT 1").fetchone()
    return None if row is None else str(row[0])


def _mixed(con: duckdb.DuckDBPyConnection, orders: _Input, order_id: str) -> ScanInputError:
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


def _totals(con: duckdb.DuckDBPyConnection, policy: Policy, as_of: datetime) -> dict[str, Any]:
    rows, lines = con.execute(
        "SELECT count(*), coalesce(sum(n_lines), 0) FROM og").fetchone() or (0, 0)
    extra = con.execute("SELECT coalesce(sum(n - 1), 0) FROM multi").fetchone()
    orders = int(rows) - int(extra[0] if extra else 0)  # an order with n shipments counts once
    events_row = con.execute("SELECT coalesce(sum(n_events), 0) FROM sf").fetchone()
    by_name = {str(n): {"orders": int(o), "lines": int(ln)} for n, o, ln in con.execute(
        "SELECT name, count(*), sum(len(lines)) FROM v GROUP BY name ORDER BY name").fetchall()}
    comp = {str(p): str(Money(int(m), policy.currency)) for p, m in con.execute(
        "SELECT paid_as, sum(compensation_minor) FROM v WHERE paid_as IS NOT NULL "
        "GROUP BY paid_as ORDER BY paid_as").fetchall()}
    return {
        "as_of": as_of.isoformat(), "policy": f"{policy.id} {policy.version}",
        "currency": policy.currency, "orders": orders, "lines": int(lines),
        "events": int(events_row[0]) if events_row else 0,
        "violations": sum(v["orders"] for v in by_name.values()),
        "by_name": by_name, "compensation": comp,
    }


__all__ = ["EVENT_COLUMNS", "ORDER_COLUMNS", "ScanInputError", "ScanResult",
           "compensation_sql", "scan"]
