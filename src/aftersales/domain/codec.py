"""Encode event changes to JSON-safe values and back, so a stored log replays exactly."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from aftersales.domain.money import Money

_PLAIN = frozenset({str, int, bool, float, type(None)})  # JSON as they are (not subclasses)


def encode(value: Any) -> Any:
    if type(value) in _PLAIN:  # most values: checked first, in one set lookup
        return value
    if isinstance(value, Money):
        return {"$money": value.minor, "$cur": value.currency}
    if isinstance(value, datetime):
        return {"$at": value.isoformat()}
    if isinstance(value, timedelta):
        return {"$td": value.total_seconds()}
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, dict):  # plain keys and values as they are, without a call each
        return {k if type(k) is str else str(k): v if type(v) in _PLAIN else encode(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _PLAIN else encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$money" in value:
            return Money(int(value["$money"]), str(value["$cur"]))
        if "$at" in value:
            return datetime.fromisoformat(str(value["$at"]))
        if "$td" in value:
            return timedelta(seconds=float(value["$td"]))
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(decode(v) for v in value)
    return value
