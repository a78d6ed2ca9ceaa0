"""Parse and validate a scenario file. Every error names its line (exit status 2)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import yaml

from aftersales.domain.durations import parse_duration
from aftersales.domain.errors import InvalidInput


class ScenarioError(Exception):
    """The file is invalid: exit status 2."""

    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(f"line {line}: {reason}" if line else reason)
        self.line, self.reason = line, reason


class _LineLoader(yaml.SafeLoader):
    """Keeps the line of every mapping under the key `__line__`."""


def _mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    data = loader.construct_mapping(node, deep=True)
    data["__line__"] = node.start_mark.line + 1
    return data  # type: ignore[return-value]


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

# action -> (required fields, optional fields); `as` and `at` are common to all.
ACTIONS: dict[str, tuple[set[str], set[str]]] = {
    "place_order": ({"order", "seller", "mode", "lines"}, {"ship_by", "ship_to_city", "policy"}),
    "ship": ({"order", "carrier", "tracking"}, {"weight_g", "lines"}),
    "scan": ({"tracking", "event"}, {"city"}),
    "confirm_receipt": (set(), {"order", "case"}),
    "declare_out_of_stock": ({"order"}, {"lines"}),
    "choose": ({"order", "option"}, {"sku", "ship_by"}),
    "open_case": ({"case", "order", "type", "reason"},
                  {"received", "lines", "amount", "description"}),
    "agree": ({"case"}, {"return_address"}),
    "reject": ({"case", "reason"}, set()),
    "offer": ({"case", "amount"}, set()),
    "accept_offer": ({"case"}, set()),
    "decline_offer": ({"case"}, set()),
    "resubmit": ({"case"}, {"amount", "description"}),
    "ship_return": ({"case", "carrier", "tracking"}, {"method"}),
    "confirm_return": ({"case"}, set()),
    "ship_replacement": ({"case", "carrier", "tracking"}, set()),
    "withdraw": ({"case"}, set()),
    "escalate": ({"case"}, set()),
    "submit_evidence": ({"case", "kind"}, {"text", "file"}),
    "request_proof": ({"case", "from"}, {"due"}),
    "rule": ({"case", "outcome"}, {"amount", "return_required", "freight_payer",
                                   "seller_responsible", "penalty", "subjective",
                                   "return_address"}),
    "send_to_jury": ({"case"}, {"seed"}),
    "vote": ({"case", "side"}, {"reason"}),
    "complain": ({"order", "kind"}, {"text", "complaint"}),
    "answer_complaint": ({"complaint", "text"}, set()),
    "resolve_complaint": ({"complaint", "upheld"}, {"text", "penalty"}),
    "rate": ({"order", "stars"}, {"comment"}),
    "reply_rating": ({"order", "text"}, set()),
    "remind": ({"order"}, set()),
    "dispute_violation": ({"order", "violation", "reason"}, set()),
    "set_stock": ({"seller", "sku", "quantity"}, set()),
}
EXPECT_KEYS = re.compile(r"^(case|order|seller|buyer|complaint) \S+$|^ledger$")
_OFFSET = re.compile(r"^\+(\S+)$")


@dataclass
class Step:
    index: int
    line: int
    at: datetime
    do: str | None
    actor: str | None
    fields: dict[str, Any]
    expect: dict[str, dict[str, Any]] | None = None
    expect_error: bool | str = False


@dataclass
class Scenario:
    policy: str
    start: datetime
    steps: list[Step]
    overrides: dict[str, Any] = field(default_factory=dict)
    users: list[dict[str, Any]] = field(default_factory=list)
    stock: dict[str, Any] = field(default_factory=dict)


def parse_time(value: Any, start: datetime | None, line: int, what: str) -> datetime:
    """An offset from start (`+2d6h`) or an absolute time with a timezone."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ScenarioError(line, f"{what}: {value.isoformat()} has no timezone")
        return value
    text = str(value).strip()
    m = _OFFSET.match(text)
    if m:
        if start is None:
            raise ScenarioError(line, f"{what}: an offset needs `start`")
        try:
            return start + parse_duration(m.group(1))
        except InvalidInput as exc:
            raise ScenarioError(line, f"{what}: {exc.message}") from None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ScenarioError(line, f"{what}: {text!r} is neither an offset like +2d6h nor an "
                                  "ISO time") from None
    if parsed.tzinfo is None:
        raise ScenarioError(line, f"{what}: {text!r} has no timezone")
    return parsed


def parse_due(value: Any, line: int) -> timedelta:
    try:
        return parse_duration(str(value).lstrip("+"))
    except InvalidInput as exc:
        raise ScenarioError(line, f"due: {exc.message}") from None


def _strip(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "__line__"}


def parse(text: str) -> Scenario:
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ScenarioError(mark.line + 1 if mark else None,
                            f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ScenarioError(1, "a scenario is a YAML mapping with policy, start and steps")
    top = data.get("__line__", 1)
    unknown = set(data) - {"policy", "start", "steps", "users", "stock", "overrides",
                           "__line__"}
    if unknown:
        raise ScenarioError(top, f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    if "start" not in data:
        raise ScenarioError(top, "missing `start` (the simulated clock start, with timezone)")
    start = parse_time(data["start"], None, top, "start")
    steps_raw = data.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ScenarioError(top, "missing `steps` (a non-empty list)")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ScenarioError(top, "`overrides` is a map of parameter -> value")
    stock = data.get("stock") or {}
    users = data.get("users") or []
    if not isinstance(users, list):
        raise ScenarioError(top, "`users` is a list")
    steps: list[Step] = []
    clock = start
    for i, raw in enumerate(steps_raw, start=1):
        if not isinstance(raw, dict):
            raise ScenarioError(top, f"step {i} is not a mapping")
        steps.append(_step(i, raw, start, clock))
        clock = steps[-1].at
    return Scenario(policy=str(data.get("policy") or "taobao"), start=start, steps=steps,
                    overrides=_strip(overrides), users=[_strip(u) for u in users
                                                        if isinstance(u, dict)],
                    stock=_strip(stock) if isinstance(stock, dict) else {})


def _step(index: int, raw: dict[str, Any], start: datetime, clock: datetime) -> Step:
    line = int(raw.get("__line__", 0))
    if "at" not in raw:
        raise ScenarioError(line, f"step {index}: missing `at`")
    at = parse_time(raw["at"], start, line, f"step {index} at")
    if at < clock:
        raise ScenarioError(line, f"step {index}: time goes backwards ({at.isoformat()} is before "
                                  f"the previous step's {clock.isoformat()})")
    has_do, has_expect = "do" in raw, "expect" in raw
    if has_do == has_expect:
        raise ScenarioError(line, f"step {index}: needs exactly one of `do` or `expect`")
    if has_expect:
        expect = raw["expect"]
        if not isinstance(expect, dict):
            raise ScenarioError(line, f"step {index}: `expect` is a map")
        expect = _strip(expect)
        for key, value in expect.items():
            if not EXPECT_KEYS.match(str(key)):
                raise ScenarioError(line, f"step {index}: expect key {key!r} is not one of "
                                          "'case <name>', 'order <name>', 'seller <id>', "
                                          "'buyer <id>', 'ledger'")
            if not isinstance(value, dict):
                raise ScenarioError(line, f"step {index}: expect {key!r} must be a map of fields")
        extra = set(raw) - {"at", "expect", "__line__"}
        if extra:
            raise ScenarioError(line, f"step {index}: unknown key(s) {sorted(extra)}")
        return Step(index, line, at, None, None, {},
                    expect={k: _strip(v) for k, v in expect.items()})
    action = str(raw["do"])
    if action not in ACTIONS:
        raise ScenarioError(line, f"step {index}: unknown action {action!r}")
    required, optional = ACTIONS[action]
    fields = {k: v for k, v in raw.items() if k not in ("at", "do", "as", "expect_error",
                                                        "__line__")}
    missing = required - set(fields)
    if missing:
        raise ScenarioError(line, f"step {index} ({action}): missing {', '.join(sorted(missing))}")
    extra = set(fields) - required - optional
    if extra:
        raise ScenarioError(line, f"step {index} ({action}): unknown field(s) "
                                  f"{', '.join(sorted(extra))}")
    actor = raw.get("as")
    if actor is None and action != "scan":
        raise ScenarioError(line, f"step {index} ({action}): missing `as` (the actor)")
    expect_error = raw.get("expect_error", False)
    if not isinstance(expect_error, bool | str):
        raise ScenarioError(line, f"step {index}: expect_error is true or an error code")
    _no_float_money(index, action, line, fields)
    return Step(index, line, at, action, str(actor) if actor is not None else "system", fields,
                expect_error=expect_error)


def _no_float_money(index: int, action: str, line: int, fields: dict[str, Any]) -> None:
    """Money is written as a string ("59.90"): an unquoted 59.90 is a float, an invalid file."""
    found = [(line, "amount", fields["amount"])] if isinstance(fields.get("amount"), float) else []
    lines = fields.get("lines")
    for ln in lines if isinstance(lines, list) else []:
        if isinstance(ln, dict):
            found += [(int(ln.get("__line__", line)), key, ln[key])
                      for key in ("unit_price", "paid") if isinstance(ln.get(key), float)]
    if found:
        where, key, value = found[0]
        raise ScenarioError(where, f"step {index} ({action}): {key}: write money as a quoted "
                                   f"string like \"59.00\", not {value}")
