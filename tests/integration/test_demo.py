"""`aftersales demo`: a small marketplace simulation on SQLite and PostgreSQL, through the CLI.

Each run takes a few seconds (PostgreSQL more), so one test per database runs the demo twice and
checks everything on those two runs."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from aftersales.bootstrap import bootstrap
from aftersales.cli import app
from aftersales.store.db import durability

ORDERS, DAYS = 300, 20
KEYS = ("orders", "cases_opened", "cases_by_type", "cases_by_reason", "cases_by_outcome",
        "decided_by_timeout", "decided_by_timeout_share", "refunded", "paid",
        "by_seller_habit", "refused_by_code")


def run_cli(db_url: str, seed: int = 7) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["demo", "--orders", str(ORDERS), "--days", str(DAYS),
                                      "--seed", str(seed), "--db", db_url, "--json"])
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def test_the_demo_plays_the_same_market_for_the_same_seed(db_url: str) -> None:
    first = run_cli(db_url)
    again = run_cli(db_url)  # the same database: the demo starts it afresh, never mixes runs
    assert again == first
    summary_is_complete(first)
    money_is_never_created(first)
    every_case_is_counted_once(first)
    silent_sellers_leave_cases_to_the_worker(first)
    refused_actions_are_counted_not_raised(first)
    the_platform_decides_escalated_cases(first)


def summary_is_complete(s: dict[str, Any]) -> None:
    assert all(key in s for key in KEYS), sorted(set(KEYS) - set(s))
    assert s["orders"] == ORDERS


def money_is_never_created(s: dict[str, Any]) -> None:
    paid, refunded = Decimal(s["paid"]), Decimal(s["refunded"])
    assert paid > 0
    assert 0 < refunded <= paid


def every_case_is_counted_once(s: dict[str, Any]) -> None:
    opened = s["cases_opened"]
    assert opened > 0
    assert sum(s["cases_by_type"].values()) == opened
    assert sum(s["cases_by_reason"].values()) == opened
    assert sum(s["cases_by_outcome"].values()) == opened
    assert sum(h["cases"] for h in s["by_seller_habit"].values()) == opened
    assert s["cases_closed"] + s["cases_open"] == opened


def silent_sellers_leave_cases_to_the_worker(s: dict[str, Any]) -> None:
    assert s["decided_by_timeout"] > 0
    assert s["decided_by_timeout"] == s["decided_by"]["timeout"]
    assert s["decided_by_timeout_share"] == round(s["decided_by_timeout"] / s["cases_closed"], 4)
    assert s["worker"]["case_timeouts"] >= s["decided_by_timeout"]
    assert s["worker"]["order_timeouts"] > 0  # receipts auto-confirmed


def the_platform_decides_escalated_cases(s: dict[str, Any]) -> None:  # rule: IN-3, IN-4, IN-6
    platform = s["intervention"]
    assert sum(platform["escalated"].values()) > 0
    assert platform["decided_by_staff"] + platform["decided_by_jury"] > 0
    assert platform["decided_by_staff"] == s["decided_by"].get("staff", 0)
    assert platform["evidence_items"] > 0
    assert platform["still_with_the_platform"] <= s["cases_open"]
    assert sum(s["shipping"]["violations"].values()) > 0  # SH-2..SH-9 run in the market too


def refused_actions_are_counted_not_raised(s: dict[str, Any]) -> None:
    refused = s["refused_by_code"]
    assert sum(refused.values()) == s["actions"]["refused"]
    assert all(n > 0 for n in refused.values())


def test_another_seed_plays_another_market(sqlite_url: str) -> None:
    assert run_cli(sqlite_url, seed=1)["paid"] != run_cli(sqlite_url, seed=2)["paid"]


@pytest.mark.postgres
def test_sqlite_and_postgresql_play_the_same_market(sqlite_url: str, pg_schema_url: str) -> None:
    on_sqlite, on_pg = run_cli(sqlite_url, seed=3), run_cli(pg_schema_url, seed=3)
    assert on_sqlite.pop("durability") == "synchronous=NORMAL"
    assert on_pg.pop("durability").startswith("fsync=")
    assert on_sqlite == on_pg


def test_the_throwaway_demo_database_skips_the_flush_at_each_commit(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo empties its database on every run, so on SQLite it commits with NORMAL (flushed
    at checkpoints), unless AFTERSALES_SQLITE_SYNCHRONOUS names a level; the summary says which.
    What opens the file afterwards (CLI, API, worker) runs at its own level: FULL by default."""
    monkeypatch.delenv("AFTERSALES_SQLITE_SYNCHRONOUS", raising=False)
    fast = run_cli(sqlite_url, seed=4)
    assert fast["durability"] == "synchronous=NORMAL"
    service = bootstrap(sqlite_url)
    try:
        assert durability(service.engine) == "synchronous=FULL"
    finally:
        service.engine.dispose()
    monkeypatch.setenv("AFTERSALES_SQLITE_SYNCHRONOUS", "full")
    durable = run_cli(sqlite_url, seed=4)
    assert durable.pop("durability") == "synchronous=FULL"
    fast.pop("durability")
    assert durable == fast  # the same market either way
