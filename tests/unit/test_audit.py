"""The hash of one case-log entry: stable, sensitive to every field, the same from either database.

(The chain check over a database, `audit.verify`, is tested in the integration suite.)
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aftersales.store import audit
from aftersales.store.audit import GENESIS, entry_hash

CST = timezone(timedelta(hours=8))
AT = datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=CST)
CHANGES = {"status": "requested", "amount": {"$money": 5900, "$cur": "CNY"}, "note": "退款"}
ENTRY: dict[str, Any] = {"prev": GENESIS, "case_id": "case_1", "seq": 1, "name": "CaseOpened",
                         "at": AT, "actor": "buyer:b1", "rule": "AS-1", "changes": CHANGES}


def h(**override: Any) -> str:
    return entry_hash(**{**ENTRY, **override})


def test_genesis_is_64_zeros() -> None:
    assert GENESIS == "0" * 64


def test_the_hash_is_sha256_of_the_documented_canonical_json() -> None:
    text = json.dumps([GENESIS, "case_1", 1, "CaseOpened", "2026-03-01T02:00:00.123456+00:00",
                       "buyer:b1", "AS-1", CHANGES],
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert h() == hashlib.sha256(text.encode()).hexdigest()


def test_the_hash_of_a_stored_entry_never_changes() -> None:
    # pinned: every log already written was chained with this encoding
    assert h() == "9a07add6691803b4a9adf7ac34db0a9c3f77aca03d817706fcf02f596bfc1711"
    assert h() == h()


@pytest.mark.parametrize(
    "override",
    [
        {"prev": "f" * 64},
        {"case_id": "case_2"},
        {"seq": 2},
        {"name": "SellerAgreed"},
        {"at": AT + timedelta(microseconds=1)},
        {"actor": "seller:s1"},
        {"rule": "RF-1"},
        {"rule": None},
        {"changes": {**CHANGES, "status": "closed"}},
        {"changes": {**CHANGES, "amount": {"$money": 5901, "$cur": "CNY"}}},
        {"changes": {**CHANGES, "extra": None}},  # an added key, even a null one
        {"changes": {"status": "requested"}},  # a removed key
        {"changes": [CHANGES]},
    ],
)
def test_changing_any_field_changes_the_hash(override: dict[str, Any]) -> None:
    assert h(**override) != h()


def test_the_same_instant_in_another_zone_hashes_the_same() -> None:
    assert h(at=AT.astimezone(UTC)) == h()
    assert h(at=AT.astimezone(timezone(timedelta(hours=-5)))) == h()


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        h(at=datetime(2026, 3, 1, 10, 0))  # noqa: DTZ001 (the naive time under test)


def test_key_order_does_not_matter_as_jsonb_reorders_keys() -> None:
    reordered = {"note": "退款", "amount": {"$cur": "CNY", "$money": 5900}, "status": "requested"}
    assert h(changes=reordered) == h()


def test_numbers_hash_as_either_database_reads_them_back() -> None:
    # SQLite gives back the float Python wrote; PostgreSQL's JSONB gives 1e20 back as an int and
    # -0.0 as 0.0. The same stored value must hash the same from both.
    written = {"td": {"$td": 3600.0}, "big": 1e20, "neg": -0.0, "small": 1.5e-7}
    from_jsonb = {"big": 100000000000000000000, "neg": 0.0, "small": 1.5e-07,
                  "td": {"$td": 3600.0}}
    assert h(changes=written) == h(changes=from_jsonb)


def test_ints_strings_and_bools_stay_distinct() -> None:
    assert h(changes={"qty": 1}) != h(changes={"qty": "1"})
    assert h(changes={"qty": 1}) != h(changes={"qty": True})
    assert h(changes={"qty": 0}) != h(changes={"qty": None})
    assert h(changes={"qty": 1.5}) != h(changes={"qty": 1})


def test_a_tuple_hashes_as_the_list_it_is_stored_as() -> None:
    assert h(changes={"rules": ("RF-1", "RF-5")}) == h(changes={"rules": ["RF-1", "RF-5"]})


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": float("inf")}, {"x": {1, 2}},
                                 {1: "int key"}, {"x": object()}])
def test_a_value_no_json_column_can_hold_is_refused(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        h(changes=bad)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@given(value=_JSON)
def test_the_hashed_text_is_canonical_json(value: Any) -> None:
    """The prebuilt encoder gives json.dumps' canonical text (sorted keys, no spaces, UTF-8),
    so entries hash as they always did."""
    assert audit._encode([value]) == json.dumps(
        [value], sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
