"""Full return-and-refund lifecycles per second: the service layer against its own ceiling.

One lifecycle is seven commands, each its own transaction through `Service.handle`:

    place order -> ship -> carrier scan "signed" -> open a return_refund case -> seller agrees
    -> buyer ships the goods back -> seller confirms the return (the refund is paid)

The ceiling does the same row writes with raw SQL through the DBAPI driver (sqlite3 / psycopg):
the very INSERT and UPDATE statements the service issues (same tables, rows, columns and values,
the same `WHERE id = ? AND version = ?` checks) with one transaction and one commit per command.
They are recorded, SQL text and driver-level parameters, from an untimed run of the same
lifecycles on a scratch database, so the ceiling's values are computed before its clock starts
and it follows the service whenever the domain's writes change. It reads nothing and never
touches SQLAlchemy: what the service spends on loading aggregates, deciding, mapping rows and
SQLAlchemy's execution layer is the difference.

Both sides run on fresh databases of the same schema (the migrations) and connection settings,
warm up first, then run `--repeat` interleaved rounds (alternating which side goes first); the
best round of each side counts. At the end every written table must hold the same rows on both
sides (surrogate ids aside), or the bench stops with an error. One JSON line per database:

    .venv/bin/python bench/lifecycle.py --db both

PostgreSQL: AFTERSALES_BENCH_PG_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test);
three fresh schemas are created there and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from aftersales.bootstrap import bootstrap
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import SYSTEM, Actor, CaseType, Reason, Role, ScanKind, ShippingMode
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from aftersales.store.db import (
    DEFAULT_SQLITE_SYNCHRONOUS,
    SQLITE_SYNCHRONOUS,
    durability,
    make_engine,
    upgrade,
)

PG_URL = os.environ.get("AFTERSALES_BENCH_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
BUYER, SELLER = Actor(Role.BUYER, "b1"), Actor(Role.SELLER, "s1")
LINE = (LineSpec("sku-1", 1, Money(1999, "CNY"), title="Kettle"),)
# When the seven commands of a lifecycle run, after its start (only their order matters).
AT = [timedelta(hours=h) for h in (0, 1, 20, 21, 22, 23, 30)]
WRITTEN = ("orders", "order_lines", "order_events", "ledger", "shipments", "tracking_events",
           "cases", "case_events", "outbox", "stock", "violations")
SURROGATE = {"order_events", "ledger", "shipments", "tracking_events", "case_events", "outbox",
             "violations"}  # id


# -- the service side -------------------------------------------------------------------------
def service_lifecycle(svc: Service, tag: str, i: int) -> None:
    order_id, case_id = f"o-{tag}-{i}", f"c-{tag}-{i}"
    t = T0 + timedelta(seconds=i)
    svc.handle(c.PlaceOrder(actor=BUYER, seller_id=SELLER.id, mode=ShippingMode.IN_STOCK,
                            lines=LINE, order_id=order_id), t + AT[0])
    svc.handle(c.Ship(actor=SELLER, order_id=order_id, carrier="SF", tracking=f"T-{tag}-{i}"),
               t + AT[1])
    svc.handle(c.RecordScan(actor=SYSTEM, tracking=f"T-{tag}-{i}", event=ScanKind.SIGNED),
               t + AT[2])
    svc.handle(c.OpenCase(actor=BUYER, order_id=order_id, type=CaseType.RETURN_REFUND,
                          reason=Reason.QUALITY, case_id=case_id), t + AT[3])
    svc.handle(c.Agree(actor=SELLER, case_id=case_id), t + AT[4])
    svc.handle(c.ShipReturn(actor=BUYER, case_id=case_id, carrier="YTO", tracking=f"R-{tag}-{i}"),
               t + AT[5])
    svc.handle(c.ConfirmReturn(actor=SELLER, case_id=case_id), t + AT[6])


def run_service(svc: Service, tag: str, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        service_lifecycle(svc, tag, i)
    return time.perf_counter() - start


# -- the ceiling ------------------------------------------------------------------------------
Write = tuple[str, Any, bool]  # SQL text, DBAPI parameters (a list of them when executemany)
Tx = list[Write]


class WriteRecorder:
    """Keeps, per committed transaction of a scratch service, every INSERT and UPDATE exactly as
    SQLAlchemy handed it to the driver. SELECTs and BEGIN are left out: the ceiling reads
    nothing and opens its own transactions."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.txs: list[Tx] = []
        self.current: Tx = []
        self.on = False
        engine: Engine = service.engine
        event.listen(engine, "before_cursor_execute", self._execute)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)

    def _execute(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                 executemany: bool) -> None:
        if self.on and statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            self.current.append((statement, parameters, executemany))

    def _commit(self, conn: Any) -> None:
        if self.on:
            self.txs.append(self.current)
        self.current = []

    def _rollback(self, conn: Any) -> None:
        self.current = []

    def record(self, tag: str, n: int) -> list[Tx]:
        """Run `n` lifecycles of `tag` on the scratch database; their writes, in order."""
        self.txs, self.current, self.on = [], [], True
        try:
            run_service(self.service, tag, n)
        finally:
            self.on = False
        assert len(self.txs) == 7 * n, "one transaction per command"
        return self.txs


class RawRunner:
    """Replays recorded transactions on one DBAPI connection: one commit per command."""

    def __init__(self, conn: Any, begin: str | None) -> None:
        self.conn, self.begin = conn, begin

    def run(self, txs: list[Tx]) -> float:
        conn, begin = self.conn, self.begin
        start = time.perf_counter()
        for tx in txs:
            cur = conn.cursor()
            if begin:
                cur.execute(begin)
            for sql, params, many in tx:
                if many:
                    cur.executemany(sql, params)
                else:
                    cur.execute(sql, params)
                    # The service's optimistic check: exactly one row, or a conflict. Other
                    # UPDATEs (a conditional stock decrement) may rightly match no row.
                    if sql[:6] == "UPDATE" and ".version = " in sql and cur.rowcount != 1:
                        raise RuntimeError(f"version check failed: {sql[:60]}")
            conn.commit()
        return time.perf_counter() - start


# -- databases ---------------------------------------------------------------------------------
@dataclass
class Side:
    service: Service
    recorder: WriteRecorder
    raw: RawRunner
    rows: Callable[[str], tuple[list[Any], list[Any]]]  # table -> (service rows, raw rows)


def _normal(value: Any) -> Any:
    """The same value whichever way the driver returned it (SQLite: JSON text, 0/1)."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return int(value) if isinstance(value, bool) else value


def _comparable(cols: Sequence[str], rows: Sequence[Sequence[Any]], table: str) -> list[str]:
    keep = [k for k, col in enumerate(cols) if not (col == "id" and table in SURROGATE)]
    return sorted(json.dumps([_normal(r[k]) for k in keep], default=str, sort_keys=True)
                  for r in rows)


@contextmanager
def sqlite_sides(synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS) -> Iterator[Side]:
    """Both sides with SQLite's `synchronous` at `synchronous` (the service's default: FULL)."""
    saved = os.environ.get("AFTERSALES_SQLITE_SYNCHRONOUS")
    os.environ["AFTERSALES_SQLITE_SYNCHRONOUS"] = synchronous  # what bootstrap reads
    try:
        with tempfile.TemporaryDirectory(prefix="aftersales-bench-") as tmp:
            svc = bootstrap(f"sqlite:///{tmp}/service.db")
            scratch = bootstrap(f"sqlite:///{tmp}/scratch.db")
            with svc.engine.connect() as probe:  # the level the service really runs at
                level = probe.exec_driver_sql("PRAGMA synchronous").scalar_one()
            yield from _sqlite_sides(tmp, svc, scratch, synchronous, level)
    finally:
        if saved is None:
            os.environ.pop("AFTERSALES_SQLITE_SYNCHRONOUS", None)
        else:
            os.environ["AFTERSALES_SQLITE_SYNCHRONOUS"] = saved


def _sqlite_sides(tmp: str, svc: Service, scratch: Service, synchronous: str,
                  level: int) -> Iterator[Side]:
    raw_engine = make_engine(f"sqlite:///{tmp}/raw.db")
    upgrade(raw_engine)
    raw_engine.dispose()
    conn = sqlite3.connect(f"{tmp}/raw.db", isolation_level=None, timeout=60)
    for pragma in ("journal_mode=WAL", f"synchronous={synchronous}", "foreign_keys=ON",
                   "busy_timeout=60000"):  # what make_engine sets on every connection
        conn.execute(f"PRAGMA {pragma}")
    if conn.execute("PRAGMA synchronous").fetchone()[0] != level:
        raise SystemExit("the ceiling does not run at the service's synchronous level")

    def rows(table: str) -> tuple[list[Any], list[Any]]:
        with svc.engine.connect() as sconn:
            res = sconn.exec_driver_sql(f"SELECT * FROM {table}")
            a = _comparable(list(res.keys()), res.all(), table)
        cur = conn.execute(f"SELECT * FROM {table}")
        b = _comparable([d[0] for d in cur.description], cur.fetchall(), table)
        return a, b

    try:
        yield Side(svc, WriteRecorder(scratch), RawRunner(conn, "BEGIN IMMEDIATE"), rows)
    finally:
        conn.close()
        svc.engine.dispose()
        scratch.engine.dispose()


def _with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def postgres_sides(url: str) -> Iterator[Side]:
    import psycopg

    tag = uuid.uuid4().hex[:10]
    schemas = {k: f"bench_{tag}_{k}" for k in ("svc", "scratch", "raw")}
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for schema in schemas.values():
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    services: list[Service] = []
    raw = None
    try:
        svc = bootstrap(_with_schema(url, schemas["svc"]))
        scratch = bootstrap(_with_schema(url, schemas["scratch"]))
        services += [svc, scratch]
        raw_engine = make_engine(_with_schema(url, schemas["raw"]))
        upgrade(raw_engine)
        raw_engine.dispose()
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        raw = psycopg.connect(conninfo, options=f"-csearch_path={schemas['raw']}")

        def rows(table: str) -> tuple[list[Any], list[Any]]:
            assert raw is not None
            with svc.engine.connect() as sconn:
                res = sconn.exec_driver_sql(f"SELECT * FROM {table}")
                a = _comparable(list(res.keys()), res.all(), table)
            cur = raw.execute(f"SELECT * FROM {table}")  # type: ignore[arg-type]
            b = _comparable([d.name for d in cur.description or ()], cur.fetchall(), table)
            raw.commit()
            return a, b

        yield Side(svc, WriteRecorder(scratch), RawRunner(raw, None), rows)
    finally:
        if raw is not None:
            raw.close()
        for s in services:
            s.engine.dispose()
        with admin.connect() as conn:
            for schema in schemas.values():
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def measure(db: str, side: Side, n: int, warmup: int, repeat: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    run_service(side.service, "warm", warmup)
    side.raw.run(side.recorder.record("warm", warmup))
    service_s: list[float] = []
    raw_s: list[float] = []
    # this process's user and system CPU seconds and voluntary context switches (sleeps: a
    # wait for a flush or the server), summed over the rounds
    usage = {"service": [0.0, 0.0, 0], "raw": [0.0, 0.0, 0]}

    def timed(name: str, run: Callable[[], float], into: list[float]) -> None:
        before = resource.getrusage(resource.RUSAGE_SELF)
        into.append(run())
        after = resource.getrusage(resource.RUSAGE_SELF)
        acc = usage[name]
        acc[0] += after.ru_utime - before.ru_utime
        acc[1] += after.ru_stime - before.ru_stime
        acc[2] += after.ru_nvcsw - before.ru_nvcsw

    for r in range(repeat):
        txs = side.recorder.record(f"r{r}", n)  # untimed, on the scratch database
        order: list[Callable[[], None]] = [
            lambda r=r: timed("service", lambda: run_service(side.service, f"r{r}", n),
                              service_s),
            lambda txs=txs: timed("raw", lambda: side.raw.run(txs), raw_s),
        ]
        for go in order if r % 2 == 0 else reversed(order):
            go()
        del txs
    counts = {}
    for table in WRITTEN:
        mine, ceiling = side.rows(table)
        if mine != ceiling:
            raise SystemExit(f"{db}: the ceiling did not write the same {table} rows "
                             f"({len(mine)} against {len(ceiling)})")
        counts[table] = len(mine)
    service_rate = n / min(service_s)
    raw_rate = n / min(raw_s)
    return {
        "db": db, "durability": durability(side.service.engine), "lifecycles": n,
        "transactions_per_lifecycle": 7,
        "service_per_s": round(service_rate, 1), "raw_per_s": round(raw_rate, 1),
        "ratio": round(service_rate / raw_rate, 3),
        "service_runs_s": [round(x, 3) for x in service_s],
        "raw_runs_s": [round(x, 3) for x in raw_s],
        # per lifecycle, averaged over the rounds: CPU time of this process (Python, SQLAlchemy,
        # the driver and, for SQLite, the database engine itself; user + system) and the rest
        # of the wall time (waiting: for SQLite the flushes to disk, for PostgreSQL the server),
        # and how often the thread went to sleep for them. The ratio depends on the machine's
        # CPU speed against its flush latency: see docs/benchmarks.md
        "service_ms": _split(usage["service"], service_s, n),
        "raw_ms": _split(usage["raw"], raw_s, n),
        "warmup": warmup, "repeat": repeat, "same_rows": True, "rows": counts,
        "python": platform.python_version(), "sqlalchemy": sqlalchemy.__version__,
        "nproc": os.cpu_count(), "load_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def _split(usage: Sequence[float], runs_s: Sequence[float], n: int) -> dict[str, float]:
    user_s, sys_s, sleeps = usage
    cpu_s = user_s + sys_s
    per = 1000 / (n * len(runs_s))
    return {"cpu": round(cpu_s * per, 3), "user": round(user_s * per, 3),
            "sys": round(sys_s * per, 3), "wait": round((sum(runs_s) - cpu_s) * per, 3),
            "sleeps": round(sleeps / (n * len(runs_s)), 2)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--n", type=int, default=None,
                   help="lifecycles per round (default 2000 on SQLite, 1000 on PostgreSQL)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the best counts")
    p.add_argument("--warmup", type=int, default=None, help="untimed lifecycles first")
    p.add_argument("--pg-url", default=PG_URL)
    p.add_argument("--synchronous", type=str.upper, choices=SQLITE_SYNCHRONOUS,
                   default=DEFAULT_SQLITE_SYNCHRONOUS,
                   help="SQLite's synchronous level on both sides (default: the service's, FULL: "
                        "every commit durable; NORMAL leaves out the flush at each commit)")
    args = p.parse_args(argv)
    dbs = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    for db in dbs:
        n = args.n or (2000 if db == "sqlite" else 1000)
        warmup = args.warmup if args.warmup is not None else max(20, n // 10)
        sides = sqlite_sides(args.synchronous) if db == "sqlite" else postgres_sides(args.pg_url)
        with sides as side:
            result = measure(db, side, n, warmup, args.repeat)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
