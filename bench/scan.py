"""The batch shipping scan on millions of orders: against a bare DuckDB read and against pandas.

1. Generates, seeded and with DuckDB SQL straight to Parquet (no Python loops), `--orders`
   orders (one line each, 10 % with a second line) and about `--events` carrier scans (three
   per shipped parcel, in feed order rather than sorted), with every situation the rules look
   for mixed in: late uploads, never shipped, late pickups, no scans, reused tracking numbers,
   wrong cities, delivery before pickup, empty parcels, lost and stalled parcels, refunds
   asked before shipment.
2. Times `analytics.scan.scan` (violations written to a Parquet file, nothing collected into
   Python) and, in the same run, a bare DuckDB pass reading the columns the scan reads
   (every value decoded and hashed: the ceiling of any query over them). ratio_vs_bare =
   scan_s / bare_s. The scan does not read `sku`: it only checks that each line has one, and
   these files' Parquet statistics (no NULLs, no empty values) prove that, so the bare pass
   does not read it either (it did while the scan read it, before 2026-11-22).
3. On `--pandas-orders` orders (by default as many as `--orders`, on the same files: 10 M is
   the largest size pandas handles here, about 14 GB at its peak; another size gets its own
   files), times a straightforward pandas implementation of the same rules (what one would
   write instead: read_parquet, groupby, merge, vectorised predicates) and, just before it,
   the scan again on the same files; speedup_vs_pandas = pandas_s / scan_s there. Both must
   find the same (order, violation, compensation) triples.

Prints one JSON line. The full run (10 M orders, 30 M scans, pandas on the same 10 M) takes
about six to ten minutes on 2 cores and needs about 16 GB of memory at its peak (pandas):

    .venv/bin/python bench/scan.py
    .venv/bin/python bench/scan.py --orders 1000000 --events 3000000 --pandas-orders 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from aftersales.analytics.scan import scan
from aftersales.policy import loader
from aftersales.policy.model import Compensation, Policy

T0 = "2026-03-01 00:00:00+00"
AS_OF = datetime(2026, 5, 10, tzinfo=UTC)  # orders span 60 days from T0
# what the scan reads of these files (everything but `sku`, see the module docstring)
ORDER_COLUMNS = ("order_id", "line_no", "seller_id", "buyer_id", "mode", "placed_at",
                 "ship_by", "ship_to_city", "shipped_at", "tracking_no", "declared_weight_g",
                 "qty", "price", "weight_g", "refund_requested_at")
EVENT_COLUMNS = ("tracking_no", "event", "city", "at")
# what the pandas version reads of the orders (all it uses; every events column is used)
PANDAS_ORDER_COLUMNS = ("order_id", "line_no", "mode", "placed_at", "ship_by", "ship_to_city",
                        "shipped_at", "tracking_no", "declared_weight_g", "qty", "price",
                        "weight_g", "refund_requested_at")


def generate(folder: Path, n_orders: int, n_events: int, seed: int) -> tuple[Path, Path]:
    """Orders and scans as Parquet, from SQL only. Each value is a hash of (row, field, seed),
    so a run is reproducible and the files are written in parallel, streaming."""
    orders, events = folder / "orders.parquet", folder / "events.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'; SET preserve_insertion_order = false; "
                "SET memory_limit = '4GB'; SET enable_progress_bar = false")
    con.execute(f"""
CREATE MACRO hh(i, k) AS hash(i, k, {int(seed)});
CREATE MACRO u(i, k) AS (hh(i, k) % 1000000) / 1000000.0;
CREATE MACRO o_placed(i) AS TIMESTAMPTZ '{T0}' + to_seconds((hh(i, 4) % (60 * 86400))::BIGINT);
CREATE MACRO o_mode(i) AS CASE WHEN u(i, 3) < 0.7 THEN 'in_stock' WHEN u(i, 3) < 0.8
  THEN 'presale' WHEN u(i, 3) < 0.95 THEN 'custom' ELSE 'tiered' END;
CREATE MACRO o_window_h(i) AS CASE WHEN u(i, 3) < 0.7 THEN 48 WHEN u(i, 3) < 0.8 THEN 168
  WHEN u(i, 3) < 0.95 THEN 72 ELSE 120 END;
CREATE MACRO o_refund(i) AS CASE WHEN u(i, 12) < 0.01
  THEN o_placed(i) + to_seconds((u(i, 13) * o_window_h(i) * 3600)::BIGINT) END;
CREATE MACRO o_shipped(i) AS CASE WHEN u(i, 5) < 0.975 AND o_refund(i) IS NULL
  THEN o_placed(i) + to_seconds((u(i, 6) * o_window_h(i) * 3600 * 1.03)::BIGINT) END;
CREATE MACRO o_tracking(i) AS printf('YT%010d', CASE WHEN u(i, 7) < 0.002 AND i > 0
  THEN i - 1 ELSE i END);
CREATE MACRO city(k) AS ['Hangzhou', 'Shanghai', 'Beijing', 'Shenzhen', 'Guangzhou', 'Chengdu',
  'Wuhan', 'Nanjing', 'Xiamen', 'Suzhou', 'Tianjin', 'Chongqing', 'Xian', 'Changsha',
  'Qingdao', 'Dalian', 'Kunming', 'Harbin', 'Shenyang', 'Jinan'][((k % 20) + 1)::BIGINT];
""")
    con.execute(f"""
COPY (
  WITH o AS (SELECT range AS i FROM range({int(n_orders)})),
  l AS (SELECT i, 1 AS line_no FROM o UNION ALL SELECT i, 2 FROM o WHERE u(i, 9) < 0.1)
  SELECT printf('O%010d', i) AS order_id, line_no,
    printf('S%06d', hh(i, 1) % 200000) AS seller_id,
    printf('B%08d', hh(i, 2) % 5000000) AS buyer_id, o_mode(i) AS mode,
    o_placed(i) AS placed_at, o_placed(i) + to_hours(o_window_h(i)) AS ship_by,
    city(hh(i, 8)) AS ship_to_city, o_shipped(i) AS shipped_at,
    CASE WHEN o_shipped(i) IS NOT NULL THEN o_tracking(i) END AS tracking_no,
    CASE WHEN o_shipped(i) IS NULL THEN NULL WHEN u(i, 10) < 0.005 THEN 20
      ELSE 1000 + (hh(i, 11) % 3000)::INTEGER END AS declared_weight_g,
    printf('SKU%05d', hh(i, line_no + 20) % 50000) AS sku,
    (1 + hh(i, line_no + 30) % 3)::INTEGER AS qty,
    ((hh(i, line_no + 40) % 50000 + 100) / 100)::DECIMAL(12, 2) AS price,
    CASE WHEN u(i, line_no + 50) < 0.02 THEN 0
      ELSE (hh(i, line_no + 60) % 400 + 50)::INTEGER END AS weight_g,
    o_refund(i) AS refund_requested_at
  FROM l
) TO '{orders}' (FORMAT parquet)""")
    per_order = max(1, n_events // max(n_orders, 1))
    con.execute(f"""
COPY (
  WITH e AS (SELECT range % {int(n_orders)} AS i, range // {int(n_orders)} AS step
             FROM range({int(n_orders) * per_order}))
  SELECT o_tracking(i) AS tracking_no,
    CASE WHEN step = 0 THEN 'picked_up'
      WHEN step < {per_order - 1} THEN 'in_transit'
      WHEN u(i, 70) < 0.9 THEN 'delivered' WHEN u(i, 70) < 0.98 THEN 'signed'
      WHEN u(i, 70) < 0.99 THEN 'lost' ELSE 'exception' END AS event,
    CASE WHEN step = {per_order - 1} AND u(i, 71) < 0.003 THEN city(hh(i, 72))
      WHEN step = {per_order - 1} THEN city(hh(i, 8)) ELSE city(hh(i, 73 + step)) END AS city,
    o_shipped(i) + to_seconds((step * (6 * 3600 + hh(i, 80 + step) % (40 * 3600))
      + CASE WHEN u(i, 90) < 0.01 AND step >= 2 THEN 6 * 86400 ELSE 0 END
      + CASE WHEN u(i, 92) < 0.01 AND step = 0 THEN 80 * 3600 ELSE 0 END)::BIGINT) AS at
  FROM e WHERE o_shipped(i) IS NOT NULL AND u(i, 91) >= 0.005
) TO '{events}' (FORMAT parquet)""")
    con.close()
    return orders, events


def bare(orders: Path, events: Path, memory_limit: str) -> float:
    """Read every column the scan reads, decoding and hashing each value (no statistics
    shortcut), in one DuckDB connection set up like the scan's."""
    con = duckdb.connect()
    con.execute(f"SET TimeZone = 'UTC'; SET memory_limit = '{memory_limit}'; "
                "SET preserve_insertion_order = false; SET enable_progress_bar = false")
    t = time.perf_counter()
    for path, cols in ((orders, ORDER_COLUMNS), (events, EVENT_COLUMNS)):
        agg = ", ".join(f'bit_xor(hash("{c}"))' for c in cols)
        con.execute(f"SELECT count(*), {agg} FROM read_parquet('{path}')").fetchall()
    elapsed = time.perf_counter() - t
    con.close()
    return elapsed


# -- what one would write with pandas ---------------------------------------------------------
def pandas_scan(orders: Path, events: Path, policy: Policy, as_of: datetime) -> Any:
    import numpy as np
    import pandas as pd

    d = policy.deadlines
    now = pd.Timestamp(as_of)
    o = pd.read_parquet(orders, columns=list(PANDAS_ORDER_COLUMNS))  # the columns it uses
    e = pd.read_parquet(events)
    o = o[o["placed_at"] <= now].copy()
    late = ~(o["shipped_at"] <= now)
    o.loc[late, "shipped_at"] = pd.NaT
    o.loc[late, "tracking_no"] = None
    o.loc[late, "declared_weight_g"] = np.nan
    o.loc[~(o["refund_requested_at"] <= now), "refund_requested_at"] = pd.NaT
    o["price_minor"] = (o["price"].astype("float64") * 100).round().astype("int64")
    o["w"] = o["qty"] * o["weight_g"].fillna(0)
    g = o.groupby(["order_id", "tracking_no"], dropna=False, sort=False).agg(
        mode=("mode", "first"), placed_at=("placed_at", "first"), ship_by=("ship_by", "first"),
        ship_to_city=("ship_to_city", "first"), shipped_at=("shipped_at", "min"),
        declared_weight_g=("declared_weight_g", "max"), expected_weight_g=("w", "sum"),
        refund_requested_at=("refund_requested_at", "min"), price_minor=("price_minor", "sum"),
        n_lines=("line_no", "count")).reset_index()
    tc = g.dropna(subset=["tracking_no"]).groupby("tracking_no").size().rename("tracking_orders")

    e = e[e["at"] <= now].sort_values(["tracking_no", "at"])
    delivered = e[e["event"].isin(["delivered", "signed"])]
    first_dlv = delivered.drop_duplicates("tracking_no")[["tracking_no", "at", "city"]]
    first_dlv.columns = ["tracking_no", "delivered_at", "delivery_city"]
    e = e.merge(first_dlv[["tracking_no", "delivered_at"]], on="tracking_no", how="left")
    e["prev"] = e.groupby("tracking_no")["at"].shift()
    counted = (e["at"] > e["prev"]) & (e["delivered_at"].isna() | (e["prev"] < e["delivered_at"]))
    e["gap"] = (e["at"] - e["prev"]).where(counted)
    sf = e.groupby("tracking_no").agg(first_scan_at=("at", "min"), last_scan_at=("at", "max"),
                                      max_scan_gap=("gap", "max"))
    sf["first_pickup_at"] = e[e["event"] == "picked_up"].groupby("tracking_no")["at"].min()
    sf["lost_at"] = e[e["event"] == "lost"].groupby("tracking_no")["at"].min()
    sf = sf.join(first_dlv.set_index("tracking_no")).join(tc, how="outer")
    f = g.merge(sf, left_on="tracking_no", right_index=True, how="left")

    in_stock = f["mode"] == "in_stock"
    shipped = f["shipped_at"].notna()
    pickup = f["first_pickup_at"].fillna(now)
    rules = {
        "ship_timeout": (f["shipped_at"].fillna(now) >= f["ship_by"])
        & (f["refund_requested_at"].isna() | (f["refund_requested_at"] >= f["ship_by"])),
        "pickup_timeout": (in_stock & shipped
                           & (pickup >= f["placed_at"] + d.pickup_in_stock))
        | (~in_stock & shipped & (pickup >= f["shipped_at"] + d.pickup_after_upload)),
        "fake_shipment": (shipped & (f["first_scan_at"].fillna(now)
                                     >= f["shipped_at"] + d.no_scan_window))
        | (f["tracking_orders"] > 1)
        | (f["delivery_city"].notna() & f["ship_to_city"].notna()
           & (f["delivery_city"].str.strip().str.lower()
              != f["ship_to_city"].str.strip().str.lower()))
        | (f["delivered_at"] < f["first_pickup_at"])
        | ((f["expected_weight_g"] > 0) & (f["declared_weight_g"] * 100 < f["expected_weight_g"]
                                           * policy.detection.empty_parcel_weight_pct)),
        "lost_parcel": f["lost_at"].notna(),
        "stalled_parcel": (f["max_scan_gap"] >= d.stall_time)
        | (f["delivered_at"].isna() & f["lost_at"].isna() & f["last_scan_at"].notna()
           & (now >= f["last_scan_at"] + d.stall_time)),
    }
    found = []
    for name, hit in rules.items():
        v = f.loc[hit.fillna(False).astype(bool), ["order_id", "price_minor", "n_lines"]]
        v = v.groupby("order_id", sort=False).sum().reset_index()
        v["name"] = name
        v["compensation_minor"] = _pandas_compensation(policy.compensation.get(name),
                                                       v["price_minor"])
        found.append(v)
    return pd.concat(found, ignore_index=True)


def _pandas_compensation(schedule: Compensation | None, price: Any) -> Any:
    import numpy as np

    out = np.zeros(len(price), dtype="int64")
    if schedule is None:
        return out
    p = price.to_numpy(dtype="int64")
    done = np.zeros(len(p), dtype=bool)
    for tier in schedule.tiers:
        here = ~done if tier.up_to is None else (~done & (p <= tier.up_to.minor))
        if tier.kind == "fixed" and tier.amount is not None:
            out[here] = tier.amount.minor
        elif tier.kind == "percent" and tier.rate_bp is not None:
            v = (p * tier.rate_bp + 5000) // 10000
            if tier.floor is not None:
                v = np.maximum(v, tier.floor.minor)
            if tier.cap is not None:
                v = np.minimum(v, tier.cap.minor)
            out[here] = v[here]
        done |= here
    return out


def reset_peak_rss() -> bool:
    """Start a new peak-RSS measurement (Linux: /proc/self/clear_refs), False if we cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """The peak RSS since `reset_peak_rss` (VmHWM), else of the whole process (ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=10_000_000)
    ap.add_argument("--events", type=int, default=30_000_000)
    ap.add_argument("--pandas-orders", type=int, default=None,
                    help="orders for the pandas comparison (default: as many as --orders)")
    ap.add_argument("--policy", default="taobao")
    ap.add_argument("--memory-limit", default="8GB", help="DuckDB memory limit (scan and bare)")
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--dir", help="where to write the data (default: a temporary directory)")
    args = ap.parse_args(argv)
    policy = loader.load(args.policy)
    tmp = tempfile.TemporaryDirectory(prefix="aftersales-bench-scan-", dir=args.dir)
    root = Path(tmp.name)
    result: dict[str, Any] = {"bench": "scan", "policy": f"{policy.id} {policy.version}",
                              "as_of": AS_OF.isoformat(), "memory_limit": args.memory_limit}
    try:
        big, small = root / "big", root / "small"
        big.mkdir()
        small.mkdir()
        t = time.perf_counter()
        orders, events = generate(big, args.orders, args.events, args.seed)
        result["generate_s"] = round(time.perf_counter() - t, 2)
        bare_1 = bare(orders, events, args.memory_limit)
        own_peak = reset_peak_rss()  # the scan's own peak, not the generator's
        t = time.perf_counter()
        res = scan(orders, events, policy, AS_OF, out=big / "violations.parquet", collect=False,
                   memory_limit=args.memory_limit, temp_directory=str(root))
        scan_s = time.perf_counter() - t
        bare_2 = bare(orders, events, args.memory_limit)
        bare_s = min(bare_1, bare_2)
        result.update({
            "orders": res.totals["orders"], "lines": res.totals["lines"],
            "events": res.totals["events"], "violations": res.totals["violations"],
            "scan_s": round(scan_s, 2), "scan_stages_s": {k: round(v, 2) for k, v in
                                                           res.timings.items()},
            "bare_s": round(bare_s, 2), "ratio_vs_bare": round(scan_s / bare_s, 2),
            "scan_peak_rss_mb": round(peak_rss_mb()), "scan_peak_rss_is_own": own_peak,
            "input_mb": round((orders.stat().st_size + events.stat().st_size) / 2**20),
        })
        # pandas, and the scan again just before it, on the same files if it is the same size
        n_small = args.orders if args.pandas_orders is None else args.pandas_orders
        if n_small == args.orders:
            s_orders, s_events, s_dir = orders, events, big
        else:
            for p in (orders, events):
                p.unlink()
            s_orders, s_events = generate(small, n_small, n_small * max(1, args.events
                                                                         // args.orders),
                                          args.seed)
            s_dir = small
        reset_peak_rss()
        t = time.perf_counter()
        small_res = scan(s_orders, s_events, policy, AS_OF, out=s_dir / "v.parquet",
                         collect=False, memory_limit=args.memory_limit,
                         temp_directory=str(root))
        small_scan_s = time.perf_counter() - t
        t = time.perf_counter()
        found = pandas_scan(s_orders, s_events, policy, AS_OF)
        pandas_s = time.perf_counter() - t
        ours = duckdb.connect().execute(
            f"SELECT order_id, name, compensation FROM '{s_dir}/v.parquet'").fetchall()
        mine = {(a, b, c.replace(".", "")) for a, b, c in ours}
        theirs = {(a, b, f"{int(c):03d}") for a, b, c in
                  found[["order_id", "name", "compensation_minor"]].itertuples(index=False)}
        result.update({
            "pandas_orders": small_res.totals["orders"],
            "pandas_events": small_res.totals["events"],
            "pandas_s": round(pandas_s, 2), "scan_at_pandas_size_s": round(small_scan_s, 2),
            "speedup_vs_pandas": round(pandas_s / small_scan_s, 1),
            "pandas_same_violations": mine == theirs,
            "peak_rss_mb": round(peak_rss_mb()),  # the second scan and pandas
        })
    finally:
        tmp.cleanup()
    result.update({"nproc": os.cpu_count(), "duckdb": duckdb.__version__,
                   "python": platform.python_version(),
                   "load_avg_1m": round(os.getloadavg()[0], 2)})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
