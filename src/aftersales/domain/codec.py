"""Encode event changes to JSON-safe values and back, so a stored log replays exactly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from aftersales.domain.money import Money

_PLAIN = frozenset({str, int, bool, float, type(None)})  # JSON as they are (not subclasses)


def encode(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:  # most values: checked first, in one set lookup
        return value
    convert = _CONVERTERS.get(kind)
    if convert is None:  # the first value of this type: decide once how to encode its kind
        convert = _CONVERTERS[kind] = _converter(kind)
    return convert(value)


def _dict(value: dict[Any, Any]) -> dict[str, Any]:  # plain keys and values without a call
    return {k if type(k) is str else str(k): v if type(v) in _PLAIN else encode(v)
            for k, v in value.items()}


def _list(value: list[Any] | tuple[Any, ...]) -> list[Any]:
    return [v if type(v) in _PLAIN else encode(v) for v in value]


def _converter(kind: type) -> Callable[[Any], Any]:
    if issubclass(kind, Money):
        return lambda v: {"$money": v.minor, "$cur": v.currency}
    if issubclass(kind, datetime):
        return lambda v: {"$at": v.isoformat()}
    if issubclass(kind, timedelta):
        return lambda v: {"$td": v.total_seconds()}
    if issubclass(kind, StrEnum):
        return lambda v: v._value_  # what .value returns, without the descriptor
    if issubclass(kind, dict):
        return _dict
    if issubclass(kind, list | tuple):
        return _list
    return lambda v: v


# type -> how values of exactly that type are encoded (filled by `encode` as types appear)
_CONVERTERS: dict[type, Callable[[Any], Any]] = {}


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
