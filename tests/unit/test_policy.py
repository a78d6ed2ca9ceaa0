"""Policy packs: parsed at the edge into typed objects; a bad pack names what is wrong."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aftersales.domain.errors import PolicyError
from aftersales.domain.money import Money
from aftersales.policy import loader
from aftersales.policy.model import Deadlines, Policy

PACKS = loader.BUILTIN


@pytest.mark.parametrize("pack", PACKS)
def test_every_builtin_pack_loads_into_a_typed_policy(pack: str) -> None:
    policy = loader.load(pack)
    assert isinstance(policy, Policy)
    assert policy.id == pack
    assert policy.currency == "CNY"
    assert str(policy.zone) == "Asia/Shanghai"


@pytest.mark.parametrize("pack", PACKS)
@pytest.mark.parametrize("name", list(Deadlines.model_fields))
def test_every_deadline_of_a_pack_is_a_positive_duration(pack: str, name: str) -> None:
    span = getattr(loader.load(pack).deadlines, name)
    assert isinstance(span, timedelta)
    assert span > timedelta(0)


@pytest.mark.parametrize("pack", PACKS)
def test_the_default_pack_numbers_match_the_rules(pack: str) -> None:
    p = loader.load(pack)
    d = p.deadlines
    assert d.seller_response_before_shipment == timedelta(hours=48)  # §9
    assert d.seller_response_after_shipment == timedelta(days=5)  # rule: RF-1
    assert d.buyer_ship_return == timedelta(days=7)  # rule: RF-4
    assert d.seller_confirm_return_express == timedelta(days=10)  # rule: RF-5
    assert d.seller_confirm_return_surface == timedelta(days=30)  # rule: RF-5
    assert d.auto_confirm_receipt == timedelta(days=10)  # §9
    assert d.seller_escalation_after == timedelta(days=15)  # rule: IN-2
    assert d.in_stock_ship_by == timedelta(hours=48)  # rule: SH-1
    assert d.pickup_in_stock == timedelta(hours=72)  # rule: SH-3
    assert d.pickup_after_upload == timedelta(hours=24)  # rule: SH-4
    assert p.after_sales.window_after_completion == timedelta(days=15)  # rule: AS-4
    assert p.after_sales.once_per_line_after_completion is True  # rule: AS-5
    assert p.after_sales.no_reason_days == 7
    assert p.jury.panel_size % 2 == 1  # rule: IN-3


def test_a_pack_round_trips_through_its_json_form() -> None:
    p = loader.load("douyin")
    assert loader.build(loader.to_dict(p)) == p


# -- bad packs -------------------------------------------------------------------------------


def _raw(pack: str = "taobao") -> dict[str, Any]:
    raw, _ = loader.load_raw(pack)
    return raw


def _parent(raw: dict[str, Any], path: str) -> tuple[Any, str]:
    *parents, last = path.split(".")
    node: Any = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, last


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        node, last = _parent(raw, path)
        node[last] = value
    return edit


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        node, last = _parent(raw, path)
        del node[last]
    return edit


BAD_PACKS: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    ("bad_duration", "taobao", _set("deadlines.buyer_ship_return", "7x"),
     r"deadlines\.buyer_ship_return: .*malformed duration '7x'"),
    ("duration_as_number", "taobao", _set("deadlines.seller_response_after_shipment", 5),
     r"deadlines\.seller_response_after_shipment: .*a duration is a string"),
    ("missing_field", "taobao", _delete("deadlines.seller_confirm_return_express"),
     r"deadlines\.seller_confirm_return_express: Field required"),
    ("missing_section", "taobao", _delete("jury"), r"\n  jury: Field required"),
    ("unknown_field", "taobao", _set("deadlines.seller_nap_time", "1d"),
     r"deadlines\.seller_nap_time: Extra inputs are not permitted"),
    ("even_jury_panel", "taobao", _set("jury.panel_size", 30),
     r"jury: .*panel_size must be odd"),
    ("quorum_above_panel", "douyin", _set("jury.quorum", 18),
     r"jury: .*quorum cannot exceed panel_size"),
    ("bad_tier_order", "douyin",
     _set("compensation.pickup_timeout.tiers.1.up_to", "2.00"),
     r"compensation\.pickup_timeout: .*tiers must be in increasing price order"),
    ("unbounded_tier_not_last", "douyin",
     _delete("compensation.pickup_timeout.tiers.0.up_to"),
     r"compensation\.pickup_timeout: .*only the last tier may be unbounded"),
    ("fixed_tier_without_amount", "douyin",
     _delete("compensation.pickup_timeout.tiers.1.amount"),
     r"compensation\.pickup_timeout\.tiers\.1: .*a fixed tier needs amount"),
    ("amount_as_float", "taobao",
     _set("compensation.ship_timeout.tiers.0.floor", 5.0),
     r"compensation\.ship_timeout\.tiers\.0\.floor: .*quoted string"),
    ("unknown_timezone", "taobao", _set("timezone", "Mars/Olympus_Mons"),
     r"unknown timezone 'Mars/Olympus_Mons'"),
    ("unknown_violation", "taobao", _set("compensation.late_review", {"paid_as": "cash",
                                                                      "tiers": [{"kind": "none"}]}),
     r"unknown violation\(s\) in compensation: \['late_review'\]"),
    ("bad_id", "taobao", _set("id", "Tao Bao"), r"\n  id: String should match pattern"),
    ("negative_no_reason_days", "taobao", _set("after_sales.no_reason_days", -1),
     r"after_sales\.no_reason_days: Input should be greater than or equal to 0"),
]


@pytest.mark.parametrize(("pack", "edit", "message"),
                         [pytest.param(p, e, m, id=i) for i, p, e, m in BAD_PACKS])
def test_a_bad_pack_gives_a_policy_error_naming_the_field(
        pack: str, edit: Callable[[dict[str, Any]], None], message: str) -> None:
    raw = _raw(pack)
    edit(raw)
    with pytest.raises(PolicyError) as err:
        loader.build(raw, "mypack.yaml")
    text = str(err.value)
    assert text.startswith("mypack.yaml: invalid policy pack")
    assert re.search(message, text), text
    assert err.value.code == "bad_policy"


def test_a_bad_pack_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    good = (Path(loader.__file__).parent / "packs" / "taobao.yaml").read_text(encoding="utf-8")
    path = tmp_path / "shop.yaml"
    path.write_text(good.replace("buyer_ship_return: 7d", "buyer_ship_return: soon"),
                    encoding="utf-8")
    with pytest.raises(PolicyError, match=r"shop\.yaml: invalid policy pack\n"
                                          r"  deadlines\.buyer_ship_return: .*'soon'"):
        loader.load(str(path))


def test_invalid_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("id: shop\nversion: '1'\ndeadlines:\n  a: [1,\n  b: c: d\n",
                    encoding="utf-8")
    with pytest.raises(PolicyError, match=r"broken\.yaml: line 5 is not valid YAML"):
        loader.load(str(path))


def test_a_pack_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(PolicyError, match="a policy pack is a YAML mapping"):
        loader.parse_yaml("- just\n- a list\n", "list.yaml")


def test_an_unknown_pack_id_or_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="unknown policy pack 'ebay'; known: taobao, douyin"):
        loader.load("ebay")
    with pytest.raises(PolicyError, match="does not exist"):
        loader.load(str(tmp_path / "nowhere.yaml"))


# -- overrides -------------------------------------------------------------------------------


def test_overrides_produce_a_derived_version_with_the_new_number() -> None:
    base = loader.load("taobao")
    derived = loader.load("taobao", {"deadlines.buyer_ship_return": "3d"})
    assert derived.deadlines.buyer_ship_return == timedelta(days=3)
    assert derived.version != base.version
    assert re.fullmatch(re.escape(base.version) + r"\+o[0-9a-f]{8}", derived.version)
    # Everything not overridden is unchanged.
    assert derived.deadlines.model_copy(update={"buyer_ship_return": timedelta(days=7)}) \
        == base.deadlines


def test_the_same_overrides_give_the_same_version_and_different_ones_another() -> None:
    a = loader.load("taobao", {"deadlines.buyer_ship_return": "3d"})
    b = loader.load("taobao", {"deadlines.buyer_ship_return": "3d"})
    c = loader.load("taobao", {"deadlines.buyer_ship_return": "4d"})
    assert a.version == b.version != c.version


@pytest.mark.parametrize(
    ("path", "message"),
    [("deadlines.seller_nap_time", "the pack has no parameter 'seller_nap_time'"),
     ("holidays.new_year", "no section 'holidays' in the pack"),
     ("deadlines.buyer_ship_return.days", "the pack has no parameter 'days'")],
)
def test_overrides_of_unknown_parameters_are_refused(path: str, message: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(f"override {path!r}: {message}")):
        loader.load("taobao", {path: "1d"})


def test_an_override_with_a_bad_value_is_refused_naming_the_field() -> None:
    with pytest.raises(PolicyError, match=r"deadlines\.buyer_ship_return: .*malformed duration"):
        loader.load("taobao", {"deadlines.buyer_ship_return": "a week"})


# -- compensation schedules (SH-6, §9) -------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "expected"),
    [("0.01", "0.00"), ("3.00", "0.00"),  # <= 3 CNY: none
     ("3.01", "3.00"), ("299.99", "3.00"),  # 3-300 CNY: a fixed 3 CNY
     ("300.00", "3.00"),  # >= 300 CNY: 1 % = 3.00
     ("1234.56", "12.35"),  # 1 % rounded half up
     ("3000.00", "30.00"), ("5000.00", "30.00")],  # capped at 30 CNY
)
def test_douyin_pickup_timeout_compensation_follows_the_price_tiers(price: str,
                                                                      expected: str) -> None:
    schedule = loader.load("douyin").compensation["pickup_timeout"]
    assert schedule.paid_as == "coupon"
    assert schedule.for_price(Money.parse(price)) == Money.parse(expected)


@pytest.mark.parametrize(
    ("price", "expected"),
    [("100.00", "5.00"),  # 5 % = 5.00, at the floor
     ("50.00", "5.00"),  # 2.50 raised to the floor of 5
     ("200.00", "10.00"),  # 5 %
     ("600.00", "30.00"),  # 5 % = 30.00, at the cap
     ("1000.00", "30.00")],  # 50.00 capped at 30
)
def test_taobao_late_shipment_compensation_is_five_percent_floor_5_cap_30(price: str,
                                                                           expected: str) -> None:
    schedule = loader.load("taobao").compensation["ship_timeout"]
    assert schedule.paid_as == "cash"
    assert schedule.for_price(Money.parse(price)) == Money.parse(expected)
