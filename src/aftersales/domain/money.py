"""Money in integer minor units (fen for CNY). Never a float."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aftersales.domain.errors import InvalidInput

# Minor-unit exponent per currency; every currency the packs use has 2.
_EXPONENT = {"CNY": 2, "USD": 2, "EUR": 2, "BRL": 2, "GBP": 2, "HKD": 2}
_AMOUNT = re.compile(r"^(?P<sign>-)?(?P<units>\d{1,15})(?:\.(?P<frac>\d{1,2}))?$")


@dataclass(frozen=True, slots=True)
class Money:
    """An amount of one currency, in integer minor units."""

    minor: int
    currency: str = "CNY"

    @classmethod
    def parse(cls, text: str | int, currency: str = "CNY") -> Money:
        """Parse "59.00", "59.5" or "59" exactly. Floats are refused: they cannot hold fen."""
        if isinstance(text, bool) or not isinstance(text, str | int):
            raise InvalidInput(f"money must be a string like '59.00', got {text!r}")
        if currency not in _EXPONENT:
            raise InvalidInput(f"unknown currency {currency!r}")
        raw = str(text).strip()
        m = _AMOUNT.match(raw)
        if m is None:
            raise InvalidInput(f"malformed money {text!r}: expected digits with at most 2 decimals")
        frac = (m["frac"] or "").ljust(_EXPONENT[currency], "0")
        minor = int(m["units"]) * 10 ** _EXPONENT[currency] + int(frac or "0")
        return cls(-minor if m["sign"] else minor, currency)

    @classmethod
    def zero(cls, currency: str = "CNY") -> Money:
        return cls(0, currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise InvalidInput(f"currency mismatch: {self.currency} vs {other.currency}")

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.minor <= other.minor

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor > other.minor

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.minor >= other.minor

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def times(self, qty: int) -> Money:
        return Money(self.minor * qty, self.currency)

    def basis_points(self, bp: int) -> Money:
        """This amount times bp/10000, rounded half up to the minor unit."""
        return Money((self.minor * bp + 5000) // 10000, self.currency)

    def clamp(self, low: Money, high: Money) -> Money:
        return max(low, min(self, high))

    @property
    def is_positive(self) -> bool:
        return self.minor > 0

    def __str__(self) -> str:
        exp = _EXPONENT[self.currency]
        sign = "-" if self.minor < 0 else ""
        units, frac = divmod(abs(self.minor), 10**exp)
        return f"{sign}{units}.{frac:0{exp}d}"

    def __repr__(self) -> str:
        return f"Money({self!s} {self.currency})"
