"""`tables.UTCDateTime` on SQLite: its one-step, remembered conversions give exactly the text and
the instants SQLAlchemy's own chain gives (process_bind_param / result_value around SQLite's
DATETIME), with one memo shared by every column, DST folds included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from aftersales.store import tables as t

DIALECT = sqlite.dialect()
ZONES = [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-3, minutes=-30)),
         ZoneInfo("America/New_York"), ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Shanghai")]


def _columns() -> list[Any]:
    """Two different columns' processors: they share the memo."""
    return [col.type for col in (t.orders.c.placed_at, t.outbox.c.at, t.case_events.c.at)]


def _sqlalchemy_text(type_: Any, value: datetime) -> str:
    plain = type_.process_bind_param(value, DIALECT)
    impl_bind = type_.impl_instance.dialect_impl(DIALECT).bind_processor(DIALECT)
    text: str = impl_bind(plain)
    return text


def _sqlalchemy_time(type_: Any, text: str) -> datetime | None:
    impl_result = type_.impl_instance.dialect_impl(DIALECT).result_processor(DIALECT, None)
    return type_.process_result_value(impl_result(text), DIALECT)  # type: ignore[no-any-return]


NAIVE_FROM, NAIVE_TO = datetime(1990, 1, 1), datetime(2100, 1, 1)  # noqa: DTZ001 (hypothesis)


@settings(max_examples=400)
@given(naive=st.datetimes(min_value=NAIVE_FROM, max_value=NAIVE_TO),
       zone=st.sampled_from(ZONES), fold=st.sampled_from([0, 1]), column=st.integers(0, 2))
def test_bind_and_read_as_sqlalchemy_does(naive: datetime, zone: Any, fold: int,
                                          column: int) -> None:
    value = naive.replace(tzinfo=zone, fold=fold)
    type_ = _columns()[column]
    mine = type_.dialect_impl(DIALECT).bind_processor(DIALECT)
    reader = type_.dialect_impl(DIALECT).result_processor(DIALECT, None)
    assert "UTCDateTime" in mine.__qualname__ and "UTCDateTime" in reader.__qualname__
    text = mine(value)
    assert text == _sqlalchemy_text(type_, value)
    for other in _columns():  # the same instant through another column: the same text
        assert other.dialect_impl(DIALECT).bind_processor(DIALECT)(value) == text
    back = reader(text)
    assert back == _sqlalchemy_time(type_, text) and back.tzinfo is UTC
    assert back == value  # the same instant


def test_the_two_readings_of_a_fold_stay_apart() -> None:
    """01:30 on 2026-11-01 happens twice in New York: two instants, two texts, whichever is
    remembered first."""
    bind: Any = t.orders.c.placed_at.type.dialect_impl(DIALECT).bind_processor(DIALECT)
    first = datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"))
    second = first.replace(fold=1)
    assert bind(first) == "2026-11-01 05:30:00.000000"
    assert bind(second) == "2026-11-01 06:30:00.000000"
    assert bind(first.astimezone(UTC)) == bind(first)
    assert bind(None) is None
