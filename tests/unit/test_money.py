"""Money: integer minor units (fen), parsed exactly, never a float (STYLE: Money is `Money`)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from aftersales.domain.errors import InvalidInput
from aftersales.domain.money import Money

# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minor"),
    [
        ("59.00", 5900),
        ("59.5", 5950),
        ("59", 5900),
        ("0.01", 1),
        ("0", 0),
        ("0.00", 0),
        (" 12.30 ", 1230),  # surrounding blanks from a form or a YAML value are tolerated
        ("999999999999999.99", 99999999999999999),
    ],
)
def test_a_decimal_string_parses_to_exact_minor_units(text: str, minor: int) -> None:
    assert Money.parse(text) == Money(minor, "CNY")


def test_an_integer_parses_as_whole_units() -> None:
    assert Money.parse(59) == Money(5900)


@pytest.mark.parametrize("value", [59.0, 59.5, 0.1, Decimal("59.00"), True, None, b"59.00"])
def test_floats_and_other_non_string_values_are_refused(value: object) -> None:
    with pytest.raises(InvalidInput, match="money must be a string") as err:
        Money.parse(value)  # type: ignore[arg-type]
    assert err.value.code == "invalid_input"


@pytest.mark.parametrize(
    "text",
    ["1.234", "abc", "", "   ", "59.", ".5", "+5", "1e3", "1,000.00", "5.0.0", "¥5", "5 00",
     "--5", "- 5", "1234567890123456"],
)
def test_malformed_strings_are_refused_and_name_the_input(text: str) -> None:
    with pytest.raises(InvalidInput, match="malformed money") as err:
        Money.parse(text)
    assert repr(text) in str(err.value)


def test_an_unknown_currency_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown currency"):
        Money.parse("1.00", "XYZ")


def test_another_currency_is_kept_on_the_amount() -> None:
    assert Money.parse("3.5", "USD") == Money(350, "USD")


# -- negative amounts ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "minor"), [("-5.00", -500), ("-0.5", -50), ("-0", 0)])
def test_a_leading_minus_parses_to_a_negative_amount(text: str, minor: int) -> None:
    parsed = Money.parse(text)
    assert parsed == Money(minor)
    assert parsed.is_positive is False


def test_negation_and_subtraction_below_zero_give_negative_amounts() -> None:
    assert -Money(500) == Money(-500)
    assert Money(100) - Money(250) == Money(-150)
    assert not Money(0).is_positive
    assert Money(1).is_positive


# -- arithmetic ------------------------------------------------------------------------------


def test_addition_subtraction_and_multiplication_stay_in_minor_units() -> None:
    a, b = Money.parse("59.90"), Money.parse("0.10")
    assert a + b == Money.parse("60.00")
    assert a - b == Money.parse("59.80")
    assert a.times(3) == Money.parse("179.70")
    # 0.1 + 0.2 is exact here, unlike floats.
    assert Money.parse("0.1") + Money.parse("0.2") == Money.parse("0.3")


def test_sum_over_lines_starts_from_zero_of_the_currency() -> None:
    parts = [Money.parse("1.11"), Money.parse("2.22"), Money.parse("3.33")]
    assert sum(parts, Money.zero()) == Money.parse("6.66")


def test_amounts_of_one_currency_compare_and_clamp() -> None:
    low, high = Money.parse("5.00"), Money.parse("30.00")
    assert Money.parse("4.99") < low < high
    assert Money.parse("4.99").clamp(low, high) == low
    assert Money.parse("12.34").clamp(low, high) == Money.parse("12.34")
    assert Money.parse("30.01").clamp(low, high) == high


@pytest.mark.parametrize("op", ["add", "sub"])
def test_mixing_currencies_in_arithmetic_is_refused(op: str) -> None:
    cny, usd = Money(100, "CNY"), Money(100, "USD")
    with pytest.raises(InvalidInput, match="currency mismatch: CNY vs USD"):
        _ = cny + usd if op == "add" else cny - usd


# -- basis points (percent compensation, SH-6) -----------------------------------------------


@pytest.mark.parametrize(
    ("amount", "bp", "expected"),
    [
        ("100.00", 500, "5.00"),  # 5 %
        ("0.10", 500, "0.01"),  # 0.5 fen rounds half up
        ("0.09", 500, "0.00"),  # 0.45 fen rounds down
        ("0.30", 500, "0.02"),  # 1.5 fen rounds half up
        ("299.99", 100, "3.00"),  # 2.9999 -> 3.00
        ("12.34", 0, "0.00"),
        ("12.34", 10000, "12.34"),
        ("0.01", 5000, "0.01"),  # half a fen rounds up
        ("0.01", 4999, "0.00"),
    ],
)
def test_basis_points_round_half_up_to_the_fen(amount: str, bp: int, expected: str) -> None:
    assert Money.parse(amount).basis_points(bp) == Money.parse(expected)


def test_basis_points_keep_the_currency() -> None:
    assert Money(10000, "USD").basis_points(500) == Money(500, "USD")


# -- printing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "text"),
    [(5900, "59.00"), (5950, "59.50"), (1, "0.01"), (0, "0.00"), (-1, "-0.01"), (-500, "-5.00"),
     (123456789, "1234567.89")],
)
def test_str_prints_two_decimals_and_round_trips(minor: int, text: str) -> None:
    assert str(Money(minor)) == text
    assert Money.parse(text) == Money(minor)


def test_repr_names_the_currency() -> None:
    assert repr(Money(1230, "CNY")) == "Money(12.30 CNY)"
