"""The scenario conformance suite: every tests/scenarios/*.yaml, played through the real CLI on
SQLite and on PostgreSQL, plus the runner's own contract (exit codes 0 / 1 / 2 and the JSON
final state of SCENARIOS.md).

The bulk runs in-process through typer's CliRunner (fast); a few exit-code checks start a real
`python -m aftersales.cli` subprocess, as an operator would.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aftersales.cli import app

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios"
SCENARIOS = sorted(SCENARIO_DIR.glob("*.yaml"))
FINAL_STATE_KEYS = {"policy", "clock", "orders", "cases", "sellers", "buyers", "ledger"}

# Rule ids of RULES.md sections 3 to 8, plus the §9 timers and the offer flow, that must
# each have at least one scenario file (`# rule: <id>` on the first line).
REQUIRED_RULES = [
    "AS-1", "AS-2", "AS-3", "AS-4", "AS-5", "AS-6", "AS-7",
    "RF-1", "RF-2", "RF-3", "RF-4", "RF-5", "RF-6", "RF-7",
    "FR-1", "FR-2", "FR-3", "FR-4",
    # sections 6-8: intervention, complaints, seller record
    "IN-1", "IN-2", "IN-3", "IN-4", "IN-5", "IN-6", "IN-7", "IN-8", "IN-9",
    "CP-1", "CP-2", "SR-1", "SR-2", "SR-3", "§9 vote_window",
    "§9 buyer_after_rejection", "§9 buyer_offer_response", "§9 auto_confirm_receipt",
    "§9 seller_send_replacement", "(offer)",
]
RULE_LINE = re.compile(r"^# rule: (?P<rules>.+)$")

runner = CliRunner()


def run_cli(path: Path, *extra: str) -> tuple[int, str, str]:
    """In-process: exit code, stdout, stderr."""
    result = runner.invoke(app, ["scenario", "run", str(path), *extra])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run_subprocess(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aftersales.cli", "scenario", "run", str(path), *extra],
        capture_output=True, text=True, timeout=120, check=False)


def write(tmp_path: Path, body: str, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


# -- the conformance files ------------------------------------------------------------------------
def test_the_suite_is_not_empty() -> None:
    assert len(SCENARIOS) >= len(REQUIRED_RULES)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_every_scenario_starts_with_its_rule_and_a_summary(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert RULE_LINE.match(lines[0]), f"{path.name}: first line must be '# rule: <id>'"
    assert lines[1].startswith("# ") and len(lines[1]) > 10, (
        f"{path.name}: second line must say in one line what the file shows")


@pytest.mark.parametrize("rule", REQUIRED_RULES)
def test_every_rule_has_a_scenario(rule: str) -> None:
    covered = []
    for path in SCENARIOS:
        m = RULE_LINE.match(path.read_text(encoding="utf-8").splitlines()[0])
        if m and rule in m["rules"]:
            covered.append(path.name)
    assert covered, f"no scenario file says '# rule: {rule}'"


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario_holds_on_sqlite(path: Path) -> None:
    code, out, err = run_cli(path, "--json")
    assert code == 0, err or out
    assert set(json.loads(out)) >= FINAL_STATE_KEYS


@pytest.mark.postgres
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario_holds_on_postgres(path: Path, pg_schema_url: str) -> None:
    code, out, err = run_cli(path, "--json", "--db", pg_schema_url)
    assert code == 0, err or out
    assert set(json.loads(out)) >= FINAL_STATE_KEYS


# -- the runner's contract ------------------------------------------------------------------------
ORDER_AND_CASE = """
    policy: taobao
    start: 2026-03-01T10:00:00+08:00
    steps:
      - at: +0h
        do: place_order
        as: buyer:b1
        order: o1
        seller: s1
        mode: in_stock
        lines: [{sku: A, qty: 2, unit_price: "59.00"}]
      - at: +2h
        do: ship
        as: seller:s1
        order: o1
        carrier: SF
        tracking: SF0001
      - at: +5h
        do: scan
        tracking: SF0001
        event: picked_up
      - at: +20h
        do: scan
        tracking: SF0001
        event: signed
      - at: +1d
        do: open_case
        as: buyer:b1
        case: c1
        order: o1
        type: refund_only
        reason: not_received
"""


def test_json_final_state_has_every_section_in_a_real_process(tmp_path: Path) -> None:
    path = write(tmp_path, ORDER_AND_CASE + """
      - at: +6d
        expect:
          case c1: {status: closed, outcome: refunded, refunded: "118.00"}
    """)
    proc = run_subprocess(path, "--json")
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout)
    assert set(state) >= FINAL_STATE_KEYS
    assert state["policy"]["id"] == "taobao" and state["policy"]["version"]
    assert state["clock"] == "2026-03-07T10:00:00+08:00"
    assert state["orders"]["o1"]["paid"] == "118.00"
    case = state["cases"]["c1"]
    for key in ("status", "outcome", "refunded", "decided_by", "freight_payer",
                "seller_responsible", "rules"):
        assert key in case
    assert case["decided_by"] == "timeout" and case["rules"] == ["RF-1"]
    assert set(state["sellers"]["s1"]) >= {"penalty_points", "dispute_refunds", "ship_timeouts",
                                            "pickup_timeouts", "fake_shipments", "out_of_stock",
                                            "compensation_paid"}
    assert state["buyers"]["b1"] == {"refunded": "118.00", "compensation": "0.00",
                                     "coupons": "0.00"}
    assert state["ledger"] == {"paid": "118.00", "refunds": "118.00", "compensation": "0.00",
                               "coupons": "0.00"}


def test_summary_without_json_names_the_file_and_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, ORDER_AND_CASE)
    code, out, _ = run_cli(path)
    assert code == 0
    assert "every expectation holds" in out and "case c1" in out


def test_a_failed_expectation_exits_1_naming_step_field_expected_and_actual(
        tmp_path: Path) -> None:
    path = write(tmp_path, ORDER_AND_CASE + """
      - at: +5d
        expect:
          case c1: {status: closed}
    """)
    proc = run_subprocess(path)
    assert proc.returncode == 1, proc.stderr
    msg = proc.stderr
    assert "step 6" in msg and "line 33" in msg
    assert "case c1.status" in msg
    assert "expected 'closed'" in msg and "actual 'awaiting_seller'" in msg


def test_an_unexpected_refusal_exits_1_with_the_error_code(tmp_path: Path) -> None:
    path = write(tmp_path, ORDER_AND_CASE + """
      - at: +1d
        do: agree
        as: seller:s2
        case: c1
    """)
    code, _, err = run_cli(path)
    assert code == 1
    assert "step 6" in err and "wrong_actor" in err


def test_an_expected_refusal_that_is_accepted_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, ORDER_AND_CASE + """
      - at: +1d
        do: agree
        as: seller:s1
        case: c1
        expect_error: true
    """)
    code, _, err = run_cli(path)
    assert code == 1
    assert "expected a refusal" in err


def test_a_refusal_with_another_code_than_expected_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, ORDER_AND_CASE + """
      - at: +1d
        do: agree
        as: seller:s2
        case: c1
        expect_error: too_early
    """)
    code, _, err = run_cli(path)
    assert code == 1
    assert "'wrong_actor'" in err and "'too_early'" in err


def test_a_money_field_of_the_wrong_kind_fails_the_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, ORDER_AND_CASE + """
      - at: +1d
        expect:
          case c1: {amount: 118}
    """)
    code, _, err = run_cli(path)
    assert code == 1
    assert "case c1.amount" in err


INVALID = {
    "unknown_action": ("""
        policy: taobao
        start: 2026-03-01T10:00:00+08:00
        steps:
          - at: +0h
            do: teleport
            as: buyer:b1
        """, 4, "unknown action"),
    "missing_at": ("""
        policy: taobao
        start: 2026-03-01T10:00:00+08:00
        steps:
          - at: +0h
            expect:
              ledger: {paid: "0.00"}
          - do: confirm_receipt
            as: buyer:b1
            order: o1
        """, 7, "missing `at`"),
    "time_without_timezone": ("""
        policy: taobao
        start: 2026-03-01T10:00:00+08:00
        steps:
          - at: 2026-03-02T10:00:00
            expect:
              ledger: {paid: "0.00"}
        """, 4, "no timezone"),
    "start_without_timezone": ("""
        policy: taobao
        start: 2026-03-01T10:00:00
        steps:
          - at: +0h
            expect:
              ledger: {paid: "0.00"}
        """, 1, "no timezone"),
    "time_going_backwards": ("""
        policy: taobao
        start: 2026-03-01T10:00:00+08:00
        steps:
          - at: +2d
            expect:
              ledger: {paid: "0.00"}
          - at: +1d
            expect:
              ledger: {paid: "0.00"}
        """, 7, "backwards"),
    "float_unit_price": ("""
        policy: taobao
        start: 2026-03-01T10:00:00+08:00
        steps:
          - at: +0h
            do: place_order
            as: buyer:b1
            order: o1
            seller: s1
            mode: in_stock
            lines:
              - {sku: A, qty: 1, unit_price: 59.90}
        """, 11, "59.9"),
    "float_amount": ("""
        policy: taobao
        start: 2026-03-01T10:00:00+08:00
        steps:
          - at: +0h
            do: place_order
            as: buyer:b1
            order: o1
            seller: s1
            mode: in_stock
            lines: [{sku: A, qty: 1, unit_price: "59.90"}]
          - at: +1h
            do: open_case
            as: buyer:b1
            case: c1
            order: o1
            type: refund_only
            reason: not_shipped
            amount: 59.90
        """, 11, "amount"),
    "missing_required_field": ("""
        policy: taobao
        start: 2026-03-01T10:00:00+08:00
        steps:
          - at: +0h
            do: place_order
            as: buyer:b1
            order: o1
            mode: in_stock
            lines: [{sku: A, qty: 1, unit_price: "59.90"}]
        """, 4, "missing seller"),
    "bad_offset": ("""
        policy: taobao
        start: 2026-03-01T10:00:00+08:00
        steps:
          - at: +2x
            expect:
              ledger: {paid: "0.00"}
        """, 4, "malformed duration"),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_an_invalid_file_exits_2_naming_the_line(tmp_path: Path, name: str) -> None:
    body, line, reason = INVALID[name]
    path = write(tmp_path, body)
    code, _, err = run_cli(path)
    assert code == 2, err
    assert f"line {line}:" in err, err
    assert reason in err, err


@pytest.mark.parametrize("name", ["unknown_action", "time_without_timezone", "float_amount"])
def test_an_invalid_file_exits_2_in_a_real_process(tmp_path: Path, name: str) -> None:
    body, line, reason = INVALID[name]
    proc = run_subprocess(write(tmp_path, body))
    assert proc.returncode == 2, proc.stderr
    assert f"line {line}:" in proc.stderr and reason in proc.stderr
    assert proc.stdout == ""


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    code, _, err = run_cli(tmp_path / "nope.yaml")
    assert code == 2
    assert "cannot read" in err


def test_a_conformance_file_passes_in_a_real_process() -> None:
    path = SCENARIO_DIR / "rf-1_seller_silence_after_shipment_5d.yaml"
    proc = run_subprocess(path, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cases"]["refund"]["decided_by"] == "timeout"
