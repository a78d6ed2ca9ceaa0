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


def literal(value: Any, utc_naive: bool = False) -> str:
    """SQL for a Python value. `utc_naive`: a time as a plain TIMESTAMP in UTC (for columns
    kept that way: comparing and adding to them skips the time zone library)."""
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
        utc = value.astimezone(UTC)
        if utc_naive:
            return f"TIMESTAMP '{utc.replace(tzinfo=None).isoformat(sep=' ')}'"
        return f"TIMESTAMPTZ '{utc.isoformat()}'"
    text = str(value).replace("'", "''")
    return f"'{text}'"


def render(e: Expr, params: Mapping[str, Any], now: datetime, utc_naive: bool = False) -> str:
    """SQL for `e`; NULL semantics match `Expr.eval` (three-valued logic). `utc_naive`: times
    (the columns, `Now`, time parameters) are plain TIMESTAMPs in UTC, see `literal`."""

    def r(x: Expr) -> str:
        return render(x, params, now, utc_naive)

    if isinstance(e, Col):
        return f'"{e.name}"'
    if isinstance(e, Param):
        return literal(params[e.name], utc_naive)
    if isinstance(e, Lit):
        return literal(e.value, utc_naive)
    if isinstance(e, Now):
        return literal(now, utc_naive)
    if isinstance(e, Op):
        full = f"({r(e.left)} {e.op} {r(e.right)})"
        if e.op in ("=", "<>") and isinstance(e.left, Lower) and isinstance(e.right, Lower):
            # Equal raw values are equal once normalised: compare them first, so that
            # lower(trim()) (which builds new strings) runs only on the rows that differ.
            # Same truth value, NULLs included.
            raw = f"({r(e.left.arg)} {e.op} {r(e.right.arg)})"
            return f"({raw} AND {full})" if e.op == "<>" else f"({raw} OR {full})"
        return full
    if isinstance(e, Lower):
        return f"lower(trim({r(e.arg)}))"
    if isinstance(e, IsNull):
        return f"({r(e.arg)} IS NULL)"
    if isinstance(e, Coalesce):
        return f"coalesce({', '.join(r(a) for a in e.args)})"
    if isinstance(e, All):
        return "(" + " AND ".join(r(a) for a in e.args) + ")"
    if isinstance(e, Any_):
        return "(" + " OR ".join(r(a) for a in e.args) + ")"
    if isinstance(e, Not):
        return f"(NOT {r(e.arg)})"
    raise TypeError(f"cannot render {type(e).__name__} to SQL")
