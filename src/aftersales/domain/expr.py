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
    """`e.eval` as one generated Python function, built once per expression: the same values
    and the same three-valued logic as the interpreter, as straight-line code (one assignment
    per node, each fact read once) instead of a method call and dispatch per node. The online
    worker evaluates every rule on every order save. `eval` stays the reference; a hypothesis
    test compares the two on every rule and due time."""
    gen = _Codegen()
    fn: Evaluator = gen.function(gen.node(e))
    return fn


@cache
def compiled_all(exprs: tuple[Expr, ...]) -> Evaluator:
    """Several expressions as one generated function returning the tuple of their values (what
    `compiled` gives for each), every fact read once for all of them."""
    gen = _Codegen()
    results = [gen.node(e) for e in exprs]
    fn: Evaluator = gen.function(f"({', '.join(results)}{',' if len(results) == 1 else ''})")
    return fn


_PY_OPS = {"+": "+", "*": "*", ">": ">", "<": "<", ">=": ">=", "=": "==", "<>": "!="}


class _Codegen:
    """Turns an expression tree into assignments `_n = ...` over the function's arguments
    `row`, `params` and `now`; constants and unknown node types are passed in by name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.facts: dict[str, str] = {}  # fact name -> the variable holding it

    def function(self, result: str) -> Evaluator:
        """The function `(row, params, now) -> result` of the assignments made so far."""
        body = "\n".join(f"    {line}" for line in (*self.lines, f"return {result}"))
        namespace = dict(self.consts)
        exec(compile(f"def evaluate(row, params, now):\n{body}\n", "<expr>", "exec"), namespace)
        fn: Evaluator = namespace["evaluate"]
        return fn

    def _const(self, value: Any) -> str:
        name = f"_k{len(self.consts)}"
        self.consts[name] = value
        return name

    def _assign(self, code: str) -> str:
        var = f"_{len(self.lines)}"
        self.lines.append(f"{var} = {code}")
        return var

    def node(self, e: Expr) -> str:
        if isinstance(e, Col):
            if e.name not in self.facts:
                self.facts[e.name] = self._assign(f"row.get({e.name!r})")
            return self.facts[e.name]
        if isinstance(e, Param):
            return self._assign(f"params[{e.name!r}]")
        if isinstance(e, Lit):
            return self._const(e.value)
        if isinstance(e, Now):
            return "now"
        if isinstance(e, Op):
            a, b = self.node(e.left), self.node(e.right)
            return self._assign(f"None if {a} is None or {b} is None "
                                f"else {a} {_PY_OPS[e.op]} {b}")
        if isinstance(e, Lower):
            a = self.node(e.arg)
            return self._assign(f"None if {a} is None else str({a}).strip().lower()")
        if isinstance(e, IsNull):
            return self._assign(f"{self.node(e.arg)} is None")
        if isinstance(e, Not):
            a = self.node(e.arg)
            return self._assign(f"None if {a} is None else not {a}")
        if isinstance(e, Coalesce):
            code = "None"
            for a in reversed([self.node(x) for x in e.args]):
                code = f"{a} if {a} is not None else ({code})"
            return self._assign(code)
        if isinstance(e, All | Any_):  # as _connective: a decisive operand settles it
            terms = [self.node(x) for x in e.args]
            decisive = isinstance(e, Any_)
            settles = " or ".join(f"{t} is {decisive}" for t in terms)
            unknown = " or ".join(f"{t} is None" for t in terms)
            return self._assign(f"{decisive} if {settles} else "
                                f"(None if {unknown} else {not decisive})")
        fn = self._const(e.eval)  # a node type without generated code: its own eval
        return self._assign(f"{fn}(row, params, now)")


def holds(e: Expr, row: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> bool:
    """A rule fires only when its predicate is TRUE (unknown does not fire), as in SQL WHERE."""
    return compiled(e)(row, params, now) is True


__all__ = ["All", "Any_", "Coalesce", "Col", "Evaluator", "Expr", "IsNull", "Lit", "Lower", "Not",
           "Now", "Op", "Param", "compiled", "compiled_all", "eq", "holds", "ne", "not_null"]
