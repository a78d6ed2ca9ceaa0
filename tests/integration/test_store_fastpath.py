"""The store's short paths change nothing but speed (SQLite and PostgreSQL).

* `store.fastsql` hands the driver the very statements and parameters `conn.execute` would,
  reads the same rows, and raises the same SQLAlchemy errors;
* `store.uow.KeptConnections` keeps one connection per thread between commands, and never
  where that would change what a unit of work sees: nested units of work, other threads,
  changed execution options, a dead connection.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import IntegrityError, StatementError

from aftersales.bootstrap import bootstrap
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import SYSTEM, Actor, CaseType, Reason, Role, ScanKind, ShippingMode
from aftersales.scenario.runner import counter_ids
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from aftersales.store import db, fastsql
from aftersales.store import repository as r
from aftersales.store import tables as t
from tests.conftest import PG_URL, T0

BUYER, SELLER = Actor(Role.BUYER, "b1"), Actor(Role.SELLER, "s1")
LINES = (LineSpec("sku-1", 2, Money(1999, "CNY"), title="Kettle"),
         LineSpec("sku-2", 1, Money(500, "CNY"), title="Lid"))
HOUR = timedelta(hours=1)


def lifecycle(svc: Service, n: int) -> None:
    """Every write and read path of the repository: place, ship, scan, open, act, refund."""
    o, k, trk = f"o{n}", f"c{n}", f"T{n}"
    t0 = T0 + n * timedelta(minutes=1)
    svc.handle(c.PlaceOrder(actor=BUYER, seller_id=SELLER.id, mode=ShippingMode.IN_STOCK,
                            lines=LINES, order_id=o), t0)
    svc.handle(c.Ship(actor=SELLER, order_id=o, carrier="SF", tracking=trk), t0 + HOUR)
    svc.handle(c.RecordScan(actor=SYSTEM, tracking=trk, event=ScanKind.SIGNED), t0 + 20 * HOUR)
    svc.handle(c.OpenCase(actor=BUYER, order_id=o, type=CaseType.RETURN_REFUND,
                          reason=Reason.QUALITY, case_id=k), t0 + 21 * HOUR)
    svc.handle(c.Agree(actor=SELLER, case_id=k), t0 + 22 * HOUR)
    svc.handle(c.ShipReturn(actor=BUYER, case_id=k, carrier="YTO", tracking=f"R{n}"),
               t0 + 23 * HOUR)
    svc.handle(c.ConfirmReturn(actor=SELLER, case_id=k), t0 + 30 * HOUR)


def record_driver_calls(engine: Engine) -> list[tuple[str, Any, bool]]:
    calls: list[tuple[str, Any, bool]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.lstrip()[:6].upper() in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            calls.append((sql, repr(params), many))  # psycopg's Jsonb has no __eq__

    return calls


def all_rows(svc: Service) -> dict[str, list[tuple[Any, ...]]]:
    with svc.engine.connect() as conn:
        return {table.name: sorted(tuple(map(repr, row)) for row in conn.execute(table.select()))
                for table in t.metadata.sorted_tables}


@pytest.fixture
def two_services(db_url: str, tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    """Two services on separate, fresh databases of the same kind."""
    admin = None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    if db_url.startswith("sqlite"):
        other_url = f"sqlite:///{tmp_path / 'other.db'}"
    else:
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in PG_URL else "?"
        other_url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    fast, slow = bootstrap(db_url, ids=counter_ids()), bootstrap(other_url, ids=counter_ids())
    try:
        yield fast, slow
    finally:
        fast.engine.dispose()
        slow.engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def test_the_driver_gets_what_sqlalchemy_would_hand_it(
        two_services: tuple[Service, Service], monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = two_services
    fast_calls = record_driver_calls(fast.engine)
    for n in range(3):
        lifecycle(fast, n)
    # The same commands through SQLAlchemy's own execution path (no plans: every call falls
    # back to conn.execute) on a second database of the same kind.
    monkeypatch.setattr(fastsql, "_plan_for", lambda conn, stmt, keys: None)
    slow_calls = record_driver_calls(slow.engine)
    for n in range(3):
        lifecycle(slow, n)
    assert len(fast_calls) > 7 * 3 * 3
    assert fast_calls == slow_calls
    assert all_rows(fast) == all_rows(slow)


def test_rows_read_are_the_rows_sqlalchemy_reads(service: Service) -> None:
    lifecycle(service, 0)
    with service.engine.connect() as conn:
        for stmt, params in ((r._SELECT_ORDER, {"b_id": "o0"}),
                             (r._SELECT_CASE_ORDER, {"b_id": "c0"}),
                             (r._SELECT_CASE, {"b_id": "c0"}),
                             (r._OUTBOUND_BY_TRACKING, {"b_tracking": "T0"}),
                             (r._ANY_BY_TRACKING, {"b_tracking": "R0"})):
            mine = fastsql.fetch(conn, stmt, params)
            theirs = [dict(row) for row in conn.execute(stmt, params).mappings()]
            assert mine and mine == theirs
            assert [[type(v) for v in row.values()] for row in mine] == \
                   [[type(v) for v in row.values()] for row in theirs]


def test_driver_errors_are_sqlalchemy_errors_and_the_connection_goes_on(
        service: Service) -> None:
    lifecycle(service, 0)
    with service.engine.connect() as conn:
        row = {"tracking_no": "T0", "kind": "signed", "city": None, "at": T0}
        assert fastsql.execute(conn, r._INSERT_TRACKING, row) == 1
        savepoint = conn.begin_nested()
        with pytest.raises(IntegrityError):
            fastsql.execute(conn, r._INSERT_CASE_EVENTS, {
                "case_id": "c0", "seq": 1, "name": "Again", "at": T0, "actor": "buyer:b1",
                "rule": None, "changes": {}})
        savepoint.rollback()
        assert fastsql.execute(conn, r._INSERT_TRACKING, row) == 1  # a new cursor, same tx
        conn.rollback()
    with service.engine.connect() as conn, pytest.raises(StatementError) as err:
        fastsql.execute(conn, r._INSERT_TRACKING, {**row, "at": T0.replace(tzinfo=None)})
    assert isinstance(err.value.orig, ValueError)  # a bind processor's error, wrapped as usual


def test_a_thread_keeps_its_connection_between_commands(service: Service) -> None:
    def driver_connection() -> Any:
        with service.uow() as uow:
            assert uow.conn is not None
            return uow.conn.connection.dbapi_connection

    first = driver_connection()
    lifecycle(service, 0)
    assert driver_connection() is first
    seen: list[Any] = []
    worker = threading.Thread(target=lambda: seen.append(driver_connection()))
    worker.start()
    worker.join()
    assert seen[0] is not first
    # changed execution options go back to the pool instead of into the next unit of work
    with service.uow() as uow:
        assert uow.conn is not None
        uow.conn.execution_options(logging_token="changed")
    with service.uow() as uow:
        assert uow.conn is not None
        assert uow.conn.get_execution_options() == service.engine.get_execution_options()


def test_a_failed_command_leaves_no_transaction_on_the_kept_connection(
        service: Service) -> None:
    lifecycle(service, 0)
    with pytest.raises(Exception, match="exists"):  # the same order id again
        service.handle(c.PlaceOrder(actor=BUYER, seller_id=SELLER.id, mode=ShippingMode.IN_STOCK,
                                    lines=LINES, order_id="o0"), T0 + 40 * HOUR)
    with service.uow() as uow:
        assert uow.conn is not None and uow.conn.in_transaction()
        assert uow.repo.get_order("o0").version > 1
    lifecycle(service, 1)


@pytest.mark.postgres
def test_a_unit_of_work_inside_another_gets_its_own_connection(pg_schema_url: str) -> None:
    svc = bootstrap(pg_schema_url, ids=counter_ids())
    try:
        lifecycle(svc, 0)
        with svc.uow() as outer:
            assert outer.conn is not None
            outer.conn.execute(text("UPDATE orders SET seq = seq WHERE id = 'o0'"))
            with svc.uow() as inner:
                assert inner.conn is not None and inner.conn is not outer.conn
                assert inner.repo.get_order("o0").id == "o0"
            outer.commit()
        lifecycle(svc, 1)
    finally:
        svc.engine.dispose()


@pytest.mark.postgres
def test_a_dead_idle_connection_is_replaced_before_use(
        pg_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = bootstrap(pg_schema_url, ids=counter_ids())
    try:
        lifecycle(svc, 0)
        with svc.uow() as uow:
            assert uow.conn is not None
            pid = uow.conn.execute(text("SELECT pg_backend_pid()")).scalar()
        killer = db.make_engine(PG_URL)
        with killer.connect() as conn:
            conn.execute(text(f"SELECT pg_terminate_backend({pid})"))
            conn.commit()
        killer.dispose()
        monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
        lifecycle(svc, 1)  # no disconnect error: the kept connection is pinged and replaced
        with svc.uow() as uow:
            assert uow.conn is not None
            assert uow.conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        svc.engine.dispose()


@pytest.mark.parametrize("stored", [
    None, "[]", "[1, 2]", '{"a": [1, {"b": null}], "c": "\\u00e9"}', " [1] ", '"x"', "1e5",
    "true", "null", "NaN", 3, 2.5, "[1,", "", '{"a":1}x'])
def test_json_is_read_as_sqlalchemy_reads_it_on_sqlite(sqlite_url: str, stored: Any) -> None:
    """The fast path's JSON reader (`fastsql._loads`) against SQLAlchemy's own processor for a
    JSON column on SQLite: the same value and type, or the same error."""
    engine = db.make_engine(sqlite_url)
    type_ = t.cases.c.rules.type
    theirs_proc = type_._cached_result_processor(engine.dialect, None)
    mine_proc = fastsql._json_result_processor(engine.dialect, type_, None)
    assert mine_proc is fastsql._loads

    def outcome(proc: Any) -> Any:
        try:
            value = proc(stored)
        except ValueError as exc:
            return ("error", type(exc), str(exc))
        return ("value", repr(value), type(value))

    assert outcome(mine_proc) == outcome(theirs_proc)
    engine.dispose()
