"""Durations written as in policy packs and scenarios: `5d`, `72h`, `2d6h`, `90m`, `30s`."""

from __future__ import annotations

import re
from datetime import timedelta

from aftersales.domain.errors import InvalidInput

_PART = re.compile(r"(\d+)([dhms])")
_UNIT = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str) -> timedelta:
    raw = text.strip()
    if not raw or _PART.sub("", raw) != "":
        raise InvalidInput(f"malformed duration {text!r}: expected e.g. '5d', '72h', '2d6h'")
    total = timedelta()
    for amount, unit in _PART.findall(raw):
        total += timedelta(**{_UNIT[unit]: int(amount)})
    return total


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"
