"""A tiny expression language for shipping rules, so each rule is written once.

The online worker evaluates an expression in Python against one order's facts; the batch scan
renders the same expression to SQL for DuckDB (`analytics.sql.render`). Both follow SQL's
three-valued logic: a comparison with a missing value is unknown (None), and a rule fires only
when its predicate is true.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class Expr:
    def eval(self, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
        raise NotImplementedError

    # sugar, so rules read like the rule text
    def __add__(self, other: Expr) -> Expr:
        return Op("+", self, other)

    def __gt__(self, other: Expr) -> Expr:
        return Op(">", self, other)

    def __lt__(self, other: Expr) -> Expr:
        return Op("<", self, other)

    def __ge__(self, other: Expr) -> Expr:
        return Op(">=", self, other)

    def __mul__(self, other: Expr) -> Expr:
        return Op("*", self, other)

    def __and__(self, other: Expr) -> Expr:
        return All((self, other))

    def __or__(self, other: Expr) -> Expr:
        return Any_((self, other))

    def __invert__(self) -> Expr:
        return Not(self)


@dataclass(frozen=True, eq=False)
class Col(Expr):
    """A fact of the order: `placed_at`, `first_pickup_at`, `tracking_orders`, ..."""

    name: str

    def eval(self, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
        return row.get(self.name)


@dataclass(frozen=True, eq=False)
class Param(Expr):
    """A policy parameter (a duration or a number), e.g. `pickup_in_stock`."""

    name: str

    def eval(self, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
        return params[self.name]


@dataclass(frozen=True, eq=False)
class Lit(Expr):
    value: Any

    def eval(self, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
        return self.value


@dataclass(frozen=True, eq=False)
class Now(Expr):
    """The evaluation time: the worker's clock, or the batch scan's `as of`."""

    def eval(self, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
        return now


_OPS: dict[str, Any] = {
    "+": lambda a, b: a + b, "*": lambda a, b: a * b, ">": lambda a, b: a > b,
    "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
}


@dataclass(frozen=True, eq=False)
class Op(Expr):
    op: str
    left: Expr
    right: Expr

    def eval(self, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
        a, b = self.left.eval(row, params, now), self.right.eval(row, params, now)
        if a is None or b is None:
            return None
        return _OPS[self.op](a, b)


def eq(a: Expr, b: Expr) -> Expr:
    return Op("=", a, b)


def ne(a: Expr, b: Expr) -> Expr:
    return Op("<>", a, b)


@dataclass(frozen=True, eq=False)
class Lower(Expr):
    arg: Expr

    def eval(self, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
        v = self.arg.eval(row, params, now)
        return None if v is None else str(v).strip().lower()


@dataclass(frozen=True, eq=False)
class IsNull(Expr):
    arg: Expr

    def eval(self, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
        return self.arg.eval(row, params, now) is None


@dataclass(frozen=True, eq=False)
class Coalesce(Expr):
    args: tuple[Expr, ...]

    def eval(self, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
        for a in self.args:
            v = a.eval(row, params, now)
            if v is not None:
                return v
        return None


def _connective(args: tuple[Expr, ...], decisive: bool, row: Mapping[str, Any],
                params: Mapping[str, Any], now: datetime) -> Any:
    """SQL's AND (decisive False) / OR (decisive True): one decisive value settles it, else an
    unknown operand makes the whole unknown."""
    unknown = False
    for a in args:
        v = a.eval(row, params, now)
        if v is decisive:
            return decisive
        if v is None:
            unknown = True
    return None if unknown else not decisive


@dataclass(frozen=True, eq=False)
class All(Expr):
    args: tuple[Expr, ...]

    def eval(self, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
        return _connective(self.args, False, row, params, now)


@dataclass(frozen=True, eq=False)
class Any_(Expr):  # named with _ because typing owns `Any`
    args: tuple[Expr, ...]

    def eval(self, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
        return _connective(self.args, True, row, params, now)


@dataclass(frozen=True, eq=False)
class Not(Expr):
    arg: Expr

    def eval(self, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
        v = self.arg.eval(row, params, now)
        return None if v is None else not v


def not_null(e: Expr) -> Expr:
    return Not(IsNull(e))


def holds(e: Expr, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> bool:
    """A rule fires only when its predicate is TRUE (unknown does not fire), as in SQL WHERE."""
    return e.eval(row, params, now) is True


__all__ = ["All", "Any_", "Coalesce", "Col", "Expr", "IsNull", "Lit", "Lower", "Not", "Now",
           "Op", "Param", "eq", "holds", "ne", "not_null"]
