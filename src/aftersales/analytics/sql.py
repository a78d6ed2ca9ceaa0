"""Render rule expressions (`domain.expr`) to DuckDB SQL: the batch path of each rule."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aftersales.domain.expr import (
    All,
    Any_,
    Coalesce,
    Col,
    Expr,
    IsNull,
    Lit,
    Lower,
    Not,
    Now,
    Op,
    Param,
)


def literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, timedelta):
        return f"INTERVAL {int(value.total_seconds())} SECOND"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("only timezone-aware times are rendered")
        return f"TIMESTAMPTZ '{value.astimezone(UTC).isoformat()}'"
    text = str(value).replace("'", "''")
    return f"'{text}'"


def render(e: Expr, params: Mapping[str, Any], now: datetime) -> str:
    """SQL for `e`; NULL semantics match `Expr.eval` (three-valued logic)."""
    if isinstance(e, Col):
        return f'"{e.name}"'
    if isinstance(e, Param):
        return literal(params[e.name])
    if isinstance(e, Lit):
        return literal(e.value)
    if isinstance(e, Now):
        return literal(now)
    if isinstance(e, Op):
        return f"({render(e.left, params, now)} {e.op} {render(e.right, params, now)})"
    if isinstance(e, Lower):
        return f"lower(trim({render(e.arg, params, now)}))"
    if isinstance(e, IsNull):
        return f"({render(e.arg, params, now)} IS NULL)"
    if isinstance(e, Coalesce):
        return f"coalesce({', '.join(render(a, params, now) for a in e.args)})"
    if isinstance(e, All):
        return "(" + " AND ".join(render(a, params, now) for a in e.args) + ")"
    if isinstance(e, Any_):
        return "(" + " OR ".join(render(a, params, now) for a in e.args) + ")"
    if isinstance(e, Not):
        return f"(NOT {render(e.arg, params, now)})"
    raise TypeError(f"cannot render {type(e).__name__} to SQL")
