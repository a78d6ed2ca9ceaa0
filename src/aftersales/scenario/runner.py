"""Play a scenario through the real service layer and deadline worker with a simulated clock."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aftersales.domain.errors import AftersalesError, InvalidInput, NotSupported
from aftersales.domain.money import Money
from aftersales.domain.orders import LineSpec
from aftersales.domain.types import Actor, CaseType, Reason, ScanKind, ShippingMode
from aftersales.scenario.parser import Scenario, ScenarioError, Step, parse_due, parse_time
from aftersales.service import commands as c
from aftersales.service.handlers import Service
from aftersales.service.queries import final_state
from aftersales.service.worker import advance

LATER: dict[str, str] = {}  # actions of issues not built yet -> which issue
SIMPLE_CASE_ACTIONS: dict[str, type[c.CaseCommand]] = {
    "accept_offer": c.AcceptOffer, "decline_offer": c.DeclineOffer,
    "confirm_return": c.ConfirmReturn, "withdraw": c.Withdraw, "escalate": c.Escalate,
}


class ExpectationFailed(Exception):
    """An `expect` did not hold, or an action was refused unexpectedly: exit status 1."""


@dataclass
class Run:
    scenario: Scenario
    service: Service
    clock: datetime
    orders: dict[str, str] = field(default_factory=dict)
    cases: dict[str, str] = field(default_factory=dict)
    complaints: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    base: Path = Path(".")  # where the scenario file is: evidence `file:` paths are relative

    def state(self) -> dict[str, Any]:
        policy = self.service.policies.current(self.scenario.policy)
        with self.service.uow() as uow:
            body = final_state(uow.repo, self.orders, self.cases, self.scenario.start.tzinfo,
                               complaints=self.complaints)
        return {"policy": {"id": policy.id, "version": policy.version},
                "clock": self.clock.isoformat(), **body}


def run(scenario: Scenario, service: Service, base: Path | None = None) -> Run:
    """Play every step; raises ExpectationFailed (exit 1) or ScenarioError (exit 2)."""
    r = Run(scenario, service, scenario.start, base=base or Path("."))
    for user in scenario.users:  # accounts the jury rules look at (IN-3)
        _register(service, scenario, user)
    for seller, skus in scenario.stock.items():  # SH-7: seller -> {sku: quantity}
        if not isinstance(skus, dict):
            raise ScenarioError(None, f"stock: {seller} needs a map of sku -> quantity")
        for sku, qty in skus.items():
            if sku == "__line__":
                continue
            if not isinstance(qty, int) or isinstance(qty, bool) or qty < 0:
                raise ScenarioError(skus.get("__line__"), f"stock: {seller}.{sku} must be a "
                                    "whole number >= 0")
            service.handle(c.SetStock(actor=Actor.parse("system"), seller_id=str(seller),
                                      sku=str(sku), quantity=qty), scenario.start)
    for step in scenario.steps:
        advance(service, step.at, start=r.clock)
        r.clock = step.at
        if step.expect is not None:
            _check(r, step)
        else:
            _do(r, step)
    return r


def _register(service: Service, scenario: Scenario, user: dict[str, Any]) -> None:
    line = user.get("__line__")
    if "id" not in user:
        raise ScenarioError(line, "each user needs an id")
    age = user.get("account_age_days", 0)
    if not isinstance(age, int) or isinstance(age, bool) or age < 0:
        raise ScenarioError(line, f"user {user['id']}: account_age_days is a whole number >= 0")
    unknown = set(user) - {"id", "account_age_days", "verified", "standing", "__line__"}
    if unknown:
        raise ScenarioError(line, f"user {user['id']}: unknown field(s) {sorted(unknown)}")
    try:
        service.handle(c.RegisterUser(
            actor=Actor.parse("system"), user_id=str(user["id"]),
            registered_at=scenario.start - timedelta(days=age),
            verified=bool(user.get("verified", False)),
            standing=str(user.get("standing", "good"))), scenario.start)
    except AftersalesError as exc:
        raise ScenarioError(line, f"user {user['id']}: {exc}") from None


def _do(r: Run, step: Step) -> None:
    assert step.do is not None
    where = f"step {step.index} (line {step.line}, {step.do})"
    try:
        cmd = _command(r, step)
        result = r.service.handle(cmd, step.at)
    except NotSupported as exc:
        raise ScenarioError(step.line, f"step {step.index}: {exc.message}") from None
    except AftersalesError as exc:
        if step.expect_error is False:
            raise ExpectationFailed(f"{where}: refused: {exc} (code {exc.code})") from None
        if isinstance(step.expect_error, str) and step.expect_error != exc.code:
            raise ExpectationFailed(f"{where}: refused with code {exc.code!r}, expected "
                                    f"{step.expect_error!r}: {exc}") from None
        r.log.append(f"{where}: refused as expected: {exc}")
        return
    if step.expect_error is not False:
        raise ExpectationFailed(f"{where}: expected a refusal, but the action was accepted")
    if step.do == "place_order":
        r.orders[str(step.fields["order"])] = result.order_id or ""
    if step.do == "open_case":
        r.cases[str(step.fields["case"])] = result.case_id or ""
    if step.do == "complain":
        name = str(step.fields.get("complaint") or f"{step.fields['order']}-{step.fields['kind']}")
        r.complaints[name] = result.complaint_id or ""
    r.log.append(f"{where}: ok")


def _check(r: Run, step: Step) -> None:
    assert step.expect is not None
    state = r.state()
    for key, fields in step.expect.items():
        kind, _, name = key.partition(" ")
        section = {"case": "cases", "order": "orders", "seller": "sellers",
                   "buyer": "buyers", "ledger": "ledger", "complaint": "complaints"}[kind]
        actual_obj = state[section] if kind == "ledger" else state[section].get(name)
        if actual_obj is None:
            raise ExpectationFailed(f"step {step.index} (line {step.line}): no {kind} {name!r} "
                                    "in the final state")
        for fname, expected in fields.items():
            if fname not in actual_obj:
                raise ExpectationFailed(f"step {step.index} (line {step.line}): {key}.{fname}: "
                                        f"no such field (known: {', '.join(sorted(actual_obj))})")
            actual = actual_obj[fname]
            if not _same(expected, actual):
                raise ExpectationFailed(f"step {step.index} (line {step.line}): {key}.{fname}: "
                                        f"expected {expected!r}, actual {actual!r}")


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict) and isinstance(actual, dict):  # nested, e.g. violation_details
        keys = set(expected) - {"__line__"}  # the parser's line marker is not a field
        return keys == set(actual) and all(_same(expected[k], actual[k]) for k in keys)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(_same, expected, actual))
    if isinstance(expected, datetime) and isinstance(actual, str):
        return expected == datetime.fromisoformat(actual)
    if isinstance(expected, int | float) and not isinstance(expected, bool) \
            and isinstance(actual, str):
        return False  # money is compared as strings ("12.50"), never as numbers
    return bool(expected == actual)


# -- building commands --------------------------------------------------------------------------
def _actor(step: Step) -> Actor:
    return Actor.parse(step.actor or "system")


def _order_id(r: Run, name: Any) -> str:
    if str(name) not in r.orders:
        raise InvalidInput(f"unknown order {name!r} (not placed in this scenario)")
    return r.orders[str(name)]


def _case_id(r: Run, name: Any) -> str:
    if str(name) not in r.cases:
        raise InvalidInput(f"unknown case {name!r} (not opened in this scenario)")
    return r.cases[str(name)]


def _money(value: Any, what: str) -> Money:
    if isinstance(value, float):
        raise InvalidInput(f"{what}: write money as a quoted string like \"59.00\", not {value}")
    return Money.parse(value)


def _enum(enum: Any, value: Any, what: str) -> Any:
    try:
        return enum(str(value))
    except ValueError:
        raise InvalidInput(f"{what}: {value!r} is not one of "
                           f"{', '.join(e.value for e in enum)}") from None


def _command(r: Run, step: Step) -> c.Command:
    f, actor, do = step.fields, _actor(step), step.do
    assert do is not None
    if do in LATER:
        raise NotSupported(f"{do} is not supported yet ({LATER[do]})")
    if do == "place_order":
        lines = f["lines"]
        if not isinstance(lines, list) or not lines:
            raise InvalidInput("lines: a non-empty list of {sku, qty, unit_price}")
        specs = []
        for ln in lines:
            if not isinstance(ln, dict) or not {"sku", "qty", "unit_price"} <= set(ln):
                raise InvalidInput("each line needs sku, qty and unit_price")
            if not isinstance(ln["qty"], int) or isinstance(ln["qty"], bool):
                raise InvalidInput(f"line {ln.get('sku')}: qty must be an integer")
            specs.append(LineSpec(
                sku=str(ln["sku"]), qty=ln["qty"], unit_price=_money(ln["unit_price"],
                                                                     "unit_price"),
                title=str(ln.get("title") or ""),
                paid=_money(ln["paid"], "paid") if "paid" in ln else None,
                no_reason_7d=bool(ln.get("no_reason_7d", True)),
                category=ln.get("category"), warranty_days=int(ln.get("warranty_days", 0)),
                warranty_kind=ln.get("warranty_kind"), weight_g=int(ln.get("weight_g", 0))))
        ship_by = (parse_time(f["ship_by"], r.scenario.start, step.line, "ship_by")
                   if "ship_by" in f else None)
        if str(f["order"]) in r.orders:
            raise InvalidInput(f"order name {f['order']!r} is already used in this scenario")
        return c.PlaceOrder(actor=actor, seller_id=str(f["seller"]),
                            mode=_enum(ShippingMode, f["mode"], "mode"), lines=tuple(specs),
                            ship_by=ship_by, ship_to_city=f.get("ship_to_city"),
                            policy_id=str(f.get("policy") or r.scenario.policy))
    if do == "complain":
        return c.Complain(actor=actor, order_id=_order_id(r, f["order"]), kind=str(f["kind"]),
                          text=str(f.get("text") or ""))
    if do == "answer_complaint":
        return c.AnswerComplaint(actor=actor, complaint_id=_complaint_id(r, f["complaint"]),
                                 text=str(f["text"]))
    if do == "resolve_complaint":
        return c.ResolveComplaint(actor=actor, complaint_id=_complaint_id(r, f["complaint"]),
                                  upheld=bool(_flag(f, "upheld")), text=str(f.get("text") or ""),
                                  penalty=str(f["penalty"]) if "penalty" in f else None)
    if do == "rate":
        stars = f["stars"]
        if isinstance(stars, bool) or not isinstance(stars, int):
            raise InvalidInput(f"stars: a whole number from 1 to 5, not {stars!r}")
        return c.RateOrder(actor=actor, order_id=_order_id(r, f["order"]), stars=stars,
                           comment=str(f.get("comment") or ""))
    if do == "reply_rating":
        return c.ReplyToRating(actor=actor, order_id=_order_id(r, f["order"]), text=str(f["text"]))
    if do == "remind":
        return c.RemindBuyer(actor=actor, order_id=_order_id(r, f["order"]))
    if do == "dispute_violation":
        return c.DisputeViolation(actor=actor, order_id=_order_id(r, f["order"]),
                                  name=str(f["violation"]), reason=str(f["reason"]))
    if do == "set_stock":
        return c.SetStock(actor=actor, seller_id=str(f["seller"]), sku=str(f["sku"]),
                          quantity=int(f["quantity"]))
    if do == "declare_out_of_stock":
        order_id = _order_id(r, f["order"])
        lines = _case_lines(r, order_id, f)
        return c.DeclareOutOfStock(actor=actor, order_id=order_id,
                                   lines=tuple(no for no, _ in lines) if lines else None)
    if do == "choose":
        ship_by = (parse_time(f["ship_by"], r.scenario.start, step.line, "ship_by")
                   if "ship_by" in f else None)
        return c.ChooseOutOfStockOption(actor=actor, order_id=_order_id(r, f["order"]),
                                        option=str(f["option"]),
                                        sku=str(f["sku"]) if "sku" in f else None,
                                        ship_by=ship_by)
    if do == "ship":
        if "lines" in f:
            raise NotSupported("partial shipment (ship with lines) is not supported yet")
        weight = f.get("weight_g")
        return c.Ship(actor=actor, order_id=_order_id(r, f["order"]), carrier=str(f["carrier"]),
                      tracking=str(f["tracking"]),
                      weight_g=int(weight) if weight is not None else None)
    if do == "scan":
        return c.RecordScan(actor=actor, tracking=str(f["tracking"]),
                            event=_enum(ScanKind, f["event"], "event"), city=f.get("city"))
    if do == "confirm_receipt":
        if "case" in f:
            return c.ConfirmReplacement(actor=actor, case_id=_case_id(r, f["case"]))
        if "order" not in f:
            raise InvalidInput("confirm_receipt needs order (or case for a replacement)")
        return c.ConfirmReceipt(actor=actor, order_id=_order_id(r, f["order"]))
    if do == "open_case":
        if str(f["case"]) in r.cases:
            raise InvalidInput(f"case name {f['case']!r} is already used in this scenario")
        order_id = _order_id(r, f["order"])
        return c.OpenCase(actor=actor, order_id=order_id, type=_enum(CaseType, f["type"], "type"),
                          reason=_enum(Reason, f["reason"], "reason"),
                          received=f.get("received"), lines=_case_lines(r, order_id, f),
                          amount=_money(f["amount"], "amount") if "amount" in f else None,
                          description=str(f.get("description") or ""))
    case_id = _case_id(r, f["case"])
    if do in SIMPLE_CASE_ACTIONS:
        return SIMPLE_CASE_ACTIONS[do](actor=actor, case_id=case_id)
    if do == "agree":
        return c.Agree(actor=actor, case_id=case_id, return_address=f.get("return_address"))
    if do == "reject":
        return c.Reject(actor=actor, case_id=case_id, reason=str(f["reason"]))
    if do == "offer":
        return c.MakeOffer(actor=actor, case_id=case_id, amount=_money(f["amount"], "amount"))
    if do == "resubmit":
        return c.Resubmit(actor=actor, case_id=case_id,
                          amount=_money(f["amount"], "amount") if "amount" in f else None,
                          description=str(f.get("description") or ""))
    if do == "ship_return":
        return c.ShipReturn(actor=actor, case_id=case_id, carrier=str(f["carrier"]),
                            tracking=str(f["tracking"]), method=str(f.get("method", "express")))
    if do == "ship_replacement":
        return c.ShipReplacement(actor=actor, case_id=case_id, carrier=str(f["carrier"]),
                                 tracking=str(f["tracking"]))
    return _intervention(r, step, actor, case_id)


def _intervention(r: Run, step: Step, actor: Actor, case_id: str) -> c.Command:
    f, do = step.fields, step.do
    if do == "submit_evidence":
        file = None
        if "file" in f:
            path = (r.base / str(f["file"])).resolve()
            if r.service.blobs is None:
                raise InvalidInput("no evidence store configured")
            try:
                stored = r.service.blobs.put_file(path)
            except OSError as exc:
                raise ScenarioError(step.line, f"file {f['file']}: {exc.strerror}") from None
            file = c.EvidenceFile(sha256=stored.sha256, size=stored.size,
                                  media_type=stored.media_type, filename=path.name)
        return c.SubmitEvidence(actor=actor, case_id=case_id, kind=str(f["kind"]),
                                text=str(f.get("text") or ""), file=file)
    if do == "request_proof":
        due = parse_due(f["due"], step.line) if "due" in f else None
        return c.RequestProof(actor=actor, case_id=case_id, from_party=str(f["from"]), due=due)
    if do == "rule":
        return c.Rule(actor=actor, case_id=case_id, outcome=str(f["outcome"]),
                      amount=_money(f["amount"], "amount") if "amount" in f else None,
                      return_required=_flag(f, "return_required"),
                      freight_payer=f.get("freight_payer"),
                      seller_responsible=_flag(f, "seller_responsible"),
                      penalty=str(f["penalty"]) if "penalty" in f else None,
                      subjective=bool(_flag(f, "subjective")))
    if do == "send_to_jury":
        return c.SendToJury(actor=actor, case_id=case_id,
                            seed=str(f["seed"]) if "seed" in f else f"scenario-{step.index}")
    if do == "vote":
        return c.Vote(actor=actor, case_id=case_id, side=str(f["side"]),
                      reason=str(f.get("reason") or ""))
    raise NotSupported(f"{do} is not supported yet")


def _flag(f: dict[str, Any], key: str) -> bool | None:
    if key not in f:
        return None
    if not isinstance(f[key], bool):
        raise InvalidInput(f"{key}: true or false, not {f[key]!r}")
    return bool(f[key])


def _complaint_id(r: Run, name: Any) -> str:
    if str(name) not in r.complaints:
        raise InvalidInput(f"unknown complaint {name!r} (not filed in this scenario)")
    return r.complaints[str(name)]


def _case_lines(r: Run, order_id: str, f: dict[str, Any]) -> tuple[tuple[int, int], ...] | None:
    lines = f.get("lines")
    if lines is None:
        return None
    if not isinstance(lines, list) or not lines:
        raise InvalidInput("lines: a non-empty list of {sku, qty}")
    order = r.service.order(order_id)
    out = []
    for ln in lines:
        if not isinstance(ln, dict) or "sku" not in ln:
            raise InvalidInput("each case line needs sku (and qty)")
        line = order.line_by_sku(str(ln["sku"]))
        out.append((line.line_no, int(ln.get("qty", line.qty))))
    return tuple(out)


def counter_ids(prefix_seed: str = "") -> Any:
    """Deterministic engine ids (ord_1, case_1, ...) for reproducible runs."""
    counters: dict[str, itertools.count[int]] = {}

    def make(prefix: str) -> str:
        n = next(counters.setdefault(prefix, itertools.count(1)))
        return f"{prefix}_{prefix_seed}{n}"

    return make
