"""A tiny expression language for shipping rules, so each rule is written once.

The online worker evaluates an expression in Python against one order's facts; the batch scan
renders the same expression to SQL for DuckDB (`analytics.sql.render`). Both follow SQL's
three-valued logic: a comparison with a missing value is unknown (None), and a rule fires only
when its predicate is true.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
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


Evaluator = Callable[[Mapping[str, Any], Mapping[str, Any], datetime], Any]


@cache
def compiled(e: Expr) -> Evaluator:
    """`e.eval` as one closure per node, built once per expression: the same values and the
    same three-valued logic without a method lookup and dispatch per node (the online worker
    evaluates every rule on every order save). `eval` stays the reference; a test compares."""
    if isinstance(e, Col):
        name = e.name
        return lambda row, params, now: row.get(name)
    if isinstance(e, Param):
        pname = e.name
        return lambda row, params, now: params[pname]
    if isinstance(e, Lit):
        value = e.value
        return lambda row, params, now: value
    if isinstance(e, Now):
        return lambda row, params, now: now
    if isinstance(e, Op):
        fn, left, right = _OPS[e.op], compiled(e.left), compiled(e.right)

        def op(row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
            a, b = left(row, params, now), right(row, params, now)
            return None if a is None or b is None else fn(a, b)
        return op
    if isinstance(e, Lower):
        arg = compiled(e.arg)

        def lower(row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
            v = arg(row, params, now)
            return None if v is None else str(v).strip().lower()
        return lower
    if isinstance(e, IsNull):
        arg = compiled(e.arg)
        return lambda row, params, now: arg(row, params, now) is None
    if isinstance(e, Not):
        arg = compiled(e.arg)

        def negate(row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
            v = arg(row, params, now)
            return None if v is None else not v
        return negate
    if isinstance(e, Coalesce):
        args = tuple(compiled(a) for a in e.args)

        def coalesce(row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
            for f in args:
                v = f(row, params, now)
                if v is not None:
                    return v
            return None
        return coalesce
    if isinstance(e, All | Any_):
        terms, decisive = tuple(compiled(a) for a in e.args), isinstance(e, Any_)

        def connective(row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Any:
            unknown = False  # as _connective
            for f in terms:
                v = f(row, params, now)
                if v is decisive:
                    return decisive
                if v is None:
                    unknown = True
            return None if unknown else not decisive
        return connective
    return e.eval  # a node type without a closure: its own eval


def holds(e: Expr, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> bool:
    """A rule fires only when its predicate is TRUE (unknown does not fire), as in SQL WHERE."""
    return compiled(e)(row, params, now) is True


__all__ = ["All", "Any_", "Coalesce", "Col", "Evaluator", "Expr", "IsNull", "Lit", "Lower", "Not",
           "Now", "Op", "Param", "compiled", "eq", "holds", "ne", "not_null"]
