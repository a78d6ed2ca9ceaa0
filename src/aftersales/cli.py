"""Command line, kept thin: parse, call the service, map errors to exit codes.

Exit codes: 0 ok, 1 refused by the rules (or an expectation failed), 2 invalid input.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from aftersales.bootstrap import bootstrap
from aftersales.domain.errors import AftersalesError, PolicyError
from aftersales.policy import loader
from aftersales.settings import SettingsError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="aftersales: after-sales and dispute-resolution engine for marketplaces.")
scenario_app = typer.Typer(no_args_is_help=True, help="Run scenario files (SCENARIOS.md).")
policy_app = typer.Typer(no_args_is_help=True, help="Policy packs.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
case_app = typer.Typer(no_args_is_help=True, help="Inspect cases.")
app.add_typer(scenario_app, name="scenario")
app.add_typer(policy_app, name="policy")
app.add_typer(db_app, name="db")
app.add_typer(case_app, name="case")

DbOption = Annotated[str | None, typer.Option("--db", help="Database URL (default: "
                                              "$AFTERSALES_DATABASE_URL or sqlite:///aftersales.db)")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@scenario_app.command("run")
def scenario_run(file: Path, as_json: JsonOption = False, db: DbOption = None) -> None:
    """Play FILE.yaml; exit 0 when every expectation holds, 1 when one fails, 2 if invalid."""
    from aftersales.scenario.parser import ScenarioError, parse
    from aftersales.scenario.runner import ExpectationFailed, counter_ids, run

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}", 2)
    tmp = None
    try:
        scenario = parse(text)
        overrides = {scenario.policy: scenario.overrides} if scenario.overrides else None
        if db is None:
            tmp = tempfile.TemporaryDirectory(prefix="aftersales-scenario-")
            url, ids = f"sqlite:///{tmp.name}/scenario.db", counter_ids()
            service = bootstrap(url, policy=scenario.policy, overrides=overrides, ids=ids,
                                evidence_dir=f"{tmp.name}/evidence")
        else:
            service = bootstrap(db, policy=scenario.policy, overrides=overrides)
        result = run(scenario, service, base=file.parent)
        state = result.state()
        service.engine.dispose()
    except ScenarioError as exc:
        _fail(f"{file}: {exc}", 2)
    except PolicyError as exc:
        _fail(f"{file}: {exc}", 2)
    except ExpectationFailed as exc:
        _fail(f"{file}: {exc}", 1)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if as_json:
        typer.echo(json.dumps(state, indent=2, ensure_ascii=False))
    else:
        _print_summary(file, result.log, state)


def _print_summary(file: Path, log: list[str], state: dict[str, Any]) -> None:
    typer.echo(f"{file}: {len(log)} actions, every expectation holds "
               f"(policy {state['policy']['id']} {state['policy']['version']}, "
               f"clock {state['clock']})")
    for name, o in state["orders"].items():
        typer.echo(f"  order {name}: {o['status']}, paid {o['paid']}, refunded {o['refunded']}")
    for name, cs in state["cases"].items():
        typer.echo(f"  case {name}: {cs['type']} / {cs['reason']}: {cs['status']}, "
                   f"outcome {cs['outcome']}, refunded {cs['refunded']}, decided by "
                   f"{cs['decided_by']}, rules {', '.join(cs['rules']) or '-'}")
    ledger = state["ledger"]
    typer.echo(f"  ledger: paid {ledger['paid']}, refunds {ledger['refunds']}, "
               f"compensation {ledger['compensation']}, coupons {ledger['coupons']}")


@policy_app.command("show")
def policy_show(policy_id: Annotated[str, typer.Argument(help="Pack id or YAML file")] = "taobao",
                as_json: JsonOption = False) -> None:
    """Print a policy pack, validated (exit 2 for a bad pack)."""
    try:
        policy = loader.load(policy_id)
    except PolicyError as exc:
        _fail(str(exc), 2)
    body = loader.to_dict(policy)
    if as_json:
        typer.echo(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        typer.echo(yaml.safe_dump(body, sort_keys=False, allow_unicode=True).rstrip())


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Apply the migrations (the other commands do this by themselves)."""
    bootstrap(db)
    typer.echo("schema is current")


@app.command()
def worker(db: DbOption = None,
           once: Annotated[bool, typer.Option(help="One round, then exit.")] = False,
           interval: Annotated[float, typer.Option(help="Seconds between rounds.")] = 5.0,
           batch: Annotated[int, typer.Option(help="Items claimed per batch.")] = 200) -> None:
    """Run the deadline loop: apply automatic outcomes when a party stays silent."""
    import logging

    from aftersales.service.worker import serve_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stats = serve_forever(bootstrap(db), interval=interval, batch=batch, once=once)
    if once:
        typer.echo(json.dumps({"cases": stats.cases, "orders": stats.orders,
                               "conflicts": stats.conflicts, "webhooks": stats.webhooks}))


@case_app.command("show")
def case_show(case_id: str, db: DbOption = None) -> None:
    """A case's state and its event log."""
    from aftersales.domain import codec
    from aftersales.service.queries import case_view

    service = bootstrap(db)
    try:
        with service.uow() as uow:
            view = case_view(uow.repo.get_case(case_id))
            view["log"] = [{"at": e.at.isoformat(), "name": e.name, "actor": str(e.actor),
                            "rule": e.rule, "changes": codec.encode(e.changes)}
                           for e in uow.repo.case_events(case_id)]
    except AftersalesError as exc:
        _fail(str(exc), 1)
    typer.echo(json.dumps(view, indent=2, ensure_ascii=False, default=str))


@app.command()
def demo(orders: Annotated[int, typer.Option(help="Orders to simulate.")] = 10_000,
         days: Annotated[int, typer.Option(help="Simulated days.")] = 60,
         seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
         db: DbOption = None, as_json: JsonOption = False,
         policy: Annotated[str, typer.Option(help="Policy pack.")] = "taobao") -> None:
    """Simulate a marketplace through the real service layer and worker; print a summary."""
    from aftersales.demo import run_demo

    run_demo(orders=orders, days=days, seed=seed, db=db, as_json=as_json, policy=policy)


tracking_app = typer.Typer(no_args_is_help=True, help="Carrier tracking feeds.")
seller_app = typer.Typer(no_args_is_help=True, help="A seller's view.")
stock_app = typer.Typer(no_args_is_help=True, help="Inventory (SH-7).")
app.add_typer(tracking_app, name="tracking")
app.add_typer(seller_app, name="seller")
app.add_typer(stock_app, name="stock")


@tracking_app.command("import")
def tracking_import(file: Path, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Apply a CSV (tracking_no,event,city,at) or JSON Lines file of carrier scans. All or
    nothing: a bad row or an unknown tracking number is reported with its line (exit 2)."""
    from aftersales.ingest import IngestError, as_command, read_scans

    try:
        rows = read_scans(file)
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}", 2)
    except IngestError as exc:
        _fail(str(exc), 2)
    service = bootstrap(db)
    with service.uow() as uow:
        unknown = [(r.line, r.scan.tracking) for r in rows
                   if not uow.repo.is_known_tracking(r.scan.tracking)]
    if unknown:
        _fail(str(IngestError(file, [(n, f"unknown tracking number {trk!r}")
                                     for n, trk in unknown])), 2)
    if not rows:
        _fail(f"{file}: no scans in the file", 2)
    result = service.handle(as_command(rows), max(r.at for r in rows))
    found = [e.data.get("violations") for e in result.events if e.name == "ViolationDetected"]
    summary = {"scans": len(rows), "events": len(result.events),
               "violations_detected": len(found)}
    typer.echo(json.dumps(summary) if as_json else
               f"{file}: {len(rows)} scans applied, {len(result.events)} order events, "
               f"{len(found)} new violation record(s)")


@seller_app.command("todo")
def seller_todo_cmd(seller: str, db: DbOption = None,
                    hours: Annotated[int, typer.Option(help="At-risk horizon in hours.")] = 24,
                    now: Annotated[str | None, typer.Option(
                        help="Evaluate at this ISO time (default: now).")] = None,
                    as_json: JsonOption = False) -> None:
    """What SELLER must ship, prepare and answer, and what is at risk of a timeout."""
    from datetime import UTC, datetime

    from aftersales.service.queries import seller_todo

    at = datetime.fromisoformat(now) if now else datetime.now(UTC)
    if at.tzinfo is None:
        _fail("--now needs a timezone offset", 2)
    service = bootstrap(db)
    with service.uow() as uow:
        todo = seller_todo(uow.repo, seller, at, hours, at.tzinfo)
    if as_json:
        typer.echo(json.dumps(todo, indent=2, ensure_ascii=False))
        return
    typer.echo(f"seller {seller} at {todo['now']}: {todo['at_risk']} item(s) due within "
               f"{hours} h")
    for o in todo["to_ship"]:
        flag = "OVERDUE" if o["overdue"] else ("at risk" if o["at_risk"] else "")
        oos = " (out of stock: waiting for the buyer)" if o["out_of_stock_pending"] else ""
        typer.echo(f"  ship   {o['order']:<24} by {o['ship_by']}  {flag}{oos}")
    for o in todo["awaiting_pickup"]:
        typer.echo(f"  pickup {o['order']:<24} {o['tracking']}  check {o['check_at']}"
                   f"  {'at risk' if o['at_risk'] else ''}")
    for p in todo["to_prepare"]:
        typer.echo(f"  prepare {p['sku']} x {p['qty']} (pre-sale)")
    for c in todo["cases"]:
        typer.echo(f"  case   {c['case']:<24} {c['status']} until {c['deadline']}"
                   f"  {'at risk' if c['at_risk'] else ''}")


@stock_app.command("set")
def stock_set(seller: str, sku: str, quantity: int, db: DbOption = None) -> None:
    """Set SELLER's in-stock QUANTITY of SKU (payment takes from it, never below zero)."""
    from datetime import UTC, datetime

    from aftersales.domain.types import Actor
    from aftersales.service.commands import SetStock

    bootstrap(db).handle(SetStock(actor=Actor.parse(f"seller:{seller}"), seller_id=seller,
                                  sku=sku, quantity=quantity), datetime.now(UTC))
    typer.echo(f"{seller} {sku}: {quantity}")


import_app = typer.Typer(no_args_is_help=True, help="Load real marketplace data sets.")
app.add_typer(import_app, name="import")


@import_app.command("olist")
def import_olist(
        directory: Annotated[Path, typer.Argument(help="Folder with the Olist CSV files.")],
        db: Annotated[str | None, typer.Option("--db", help="Database URL, which must hold no "
                      "orders yet (default: a fresh temporary SQLite file, deleted after the "
                      "summary; $AFTERSALES_DATABASE_URL is not used).")] = None,
        policy: Annotated[str, typer.Option(help="Policy pack: taobao or douyin (BRL, "
                                            "America/Sao_Paulo).")] = "taobao",
        limit: Annotated[int | None, typer.Option(help="Only the first N orders of the "
                                                  "orders file.")] = None,
        as_json: JsonOption = False) -> None:
    """Replay the Olist data set (orders, items, customers, products, reviews) through the
    service layer and the deadline worker; print what the shipping rules find (docs/real-data.md).
    """
    from aftersales.olist import OlistError, format_summary, run_import

    try:
        summary = run_import(directory, db=db, policy=policy, limit=limit, progress=not as_json)
    except (OlistError, PolicyError) as exc:
        _fail(str(exc), 2)
    except AftersalesError as exc:
        _fail(str(exc), 2 if exc.code == "invalid_input" else 1)
    typer.echo(json.dumps(summary, indent=2, ensure_ascii=False) if as_json
               else format_summary(summary))


@app.command("scan")
def scan_files(
    orders: Annotated[Path, typer.Option("--orders", help="Order lines: .csv or .parquet.")],
    events: Annotated[Path, typer.Option("--events", help="Carrier scans: .csv or .parquet.")],
    policy: Annotated[str, typer.Option(help="Policy pack id or YAML file.")] = "taobao",
    as_of: Annotated[str | None, typer.Option("--as-of", help="Evaluate as of this ISO time "
                                              "(default: now; no offset = UTC).")] = None,
    as_json: JsonOption = False,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the violations to "
                                             "this .csv or .parquet file.")] = None,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit.")] = "2GB",
) -> None:
    """Scan order and tracking files for shipping violations (docs/scan.md); exit 2 on bad
    input."""
    from aftersales.analytics.scan import scan as run_scan
    from aftersales.domain.errors import InvalidInput

    try:
        pack = loader.load(policy)
        result = run_scan(orders, events, pack, as_of, out=out, memory_limit=memory_limit,
                          limit=None if as_json else 10)
    except (InvalidInput, PolicyError) as exc:
        _fail(str(exc), 2)
    if as_json:
        typer.echo(json.dumps({"violations": result.violations, "totals": result.totals},
                              indent=2, ensure_ascii=False))
        return
    t = result.totals
    typer.echo(f"scan as of {t['as_of']} under {t['policy']}: {t['orders']:,} orders "
               f"({t['lines']:,} lines), {t['events']:,} scans")
    typer.echo(f"violations: {t['violations']:,}")
    for name, n in t["by_name"].items():
        typer.echo(f"  {name:<16} {n['orders']:>10,} orders {n['lines']:>10,} lines")
    paid = ", ".join(f"{v} {t['currency']} as {k}" for k, v in t["compensation"].items())
    typer.echo(f"compensation: {paid or 'none'}")
    for v in result.violations or []:
        typer.echo(f"  {v['order_id']} {v['name']} ({v['rule']}: {', '.join(v['detectors'])})"
                   f" lines {','.join(map(str, v['lines']))}: {v['compensation']}"
                   f"{' as ' + v['paid_as'] if v['paid_as'] else ''}")
    if t["violations"] > len(result.violations or []):
        typer.echo("  ... (--json or --out for all)")
    if out is not None:
        typer.echo(f"wrote {t['violations']:,} violations to {out}")


# -- platform intervention, the seller's record and the audit chain (IN-1..IN-9, SR-1, CP-2) ------
audit_app = typer.Typer(no_args_is_help=True, help="Tamper evidence of the case logs.")
intervention_app = typer.Typer(no_args_is_help=True,
                               help="Platform intervention (IN-1..IN-9).")
app.add_typer(audit_app, name="audit")
app.add_typer(intervention_app, name="intervention")


def _refused(exc: AftersalesError) -> None:
    """Exit 2 for invalid input, 1 when the rules refuse (an unknown case, say)."""
    from aftersales.domain.errors import InvalidInput

    _fail(str(exc), 2 if isinstance(exc, InvalidInput) else 1)


def _at(value: str | None, what: str) -> Any:
    """An aware datetime from an ISO text (default: now)."""
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(value) if value else datetime.now(UTC)
    except ValueError:
        _fail(f"{what}: {value!r} is not an ISO date-time", 2)
    if at.tzinfo is None:
        _fail(f"{what} needs a timezone offset", 2)
    return at


def _report_bounds(start: str | None, end: str | None, period: str | None,
                   zone: Any) -> tuple[Any, Any]:
    """[from, to) of a seller report. A day (YYYY-MM-DD) is a calendar day in the pack's
    timezone, --to's day included; a full ISO time is taken as is (--to's excluded)."""
    import re
    from datetime import date, datetime, time, timedelta

    def bound(text: str | None, what: str, last_day: bool) -> datetime | None:
        if text is None:
            return None
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            try:
                day = date.fromisoformat(text)
            except ValueError:
                _fail(f"{what}: {text!r} is not a date", 2)
            return datetime.combine(day + timedelta(days=1 if last_day else 0), time(0),
                                    tzinfo=zone)
        return _at(text, what)  # type: ignore[no-any-return]

    if period is not None:
        if start is not None or end is not None:
            _fail("--period is a whole month: give it alone, or --from/--to", 2)
        match = re.fullmatch(r"(\d{4})-(\d{2})", period)
        if not match or not 1 <= int(match.group(2)) <= 12:
            _fail(f"--period: {period!r} is not a month (YYYY-MM)", 2)
        assert match is not None
        year, month = int(match.group(1)), int(match.group(2))
        first = datetime(year, month, 1, tzinfo=zone)
        following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
        return first, following
    lo, hi = bound(start, "--from", False), bound(end, "--to", True)
    if lo is not None and hi is not None and lo >= hi:
        _fail(f"--from {start} is not before --to {end}", 2)
    return lo, hi


@seller_app.command("report")
def seller_report_cmd(
        seller: str, db: DbOption = None,
        start: Annotated[str | None, typer.Option(
            "--from", help="First day (YYYY-MM-DD, in the pack's timezone) or ISO time.")] = None,
        end: Annotated[str | None, typer.Option(
            "--to", help="Last day, included (YYYY-MM-DD), or ISO time (excluded).")] = None,
        period: Annotated[str | None, typer.Option(
            "--period", help="A calendar month, YYYY-MM (instead of --from/--to).")] = None,
        as_json: JsonOption = False) -> None:
    """SELLER's record (SR-1, IN-8, SR-3): dispute refunds decided against them, shipping
    violations, out-of-stock declarations, penalty points, compensation, complaints, ratings."""
    from aftersales.service.views import seller_report

    service = bootstrap(db)
    pack = service.policies.current(None)
    lo, hi = _report_bounds(start, end, period, pack.zone)
    try:
        with service.uow() as uow:
            record = seller_report(uow.repo, seller, lo, hi, pack.currency)
    except AftersalesError as exc:
        _refused(exc)
    if as_json:
        typer.echo(json.dumps(record, indent=2, ensure_ascii=False))
        return
    span = (f"{record['from'] or 'the start'} to {record['to'] or 'now'}"
            + (" (excluded)" if record["to"] else "")) if lo or hi else "all time"
    ratings = record["ratings"]
    stars = ", ".join(f"{k}*: {n}" for k, n in ratings["by_stars"].items())
    rows = [
        ("paid orders", record["paid_orders"]),
        ("dispute refunds (IN-8)", record["dispute_refunds"]),
        ("  amount", record["dispute_refund_amount"]),
        ("  rate per paid order", f"{record['dispute_rate'] * 100:.2f} %"),
        ("escalated cases", record["escalated_cases"]),
        ("ship timeouts (SH-2)", record["ship_timeouts"]),
        ("pickup timeouts (SH-3/4)", record["pickup_timeouts"]),
        ("fake shipments (SH-5)", record["fake_shipments"]),
        ("lost or stalled (SH-9)", record["lost_or_stalled"]),
        ("out of stock (OS-4)", record["out_of_stock"]),
        ("penalty points", record["penalty_points"]),
        ("compensation paid", record["compensation_paid"]),
        ("complaints (CP-1)", f"{record['complaints']} (upheld {record['complaints_upheld']})"),
        ("ratings (SR-3)", f"{ratings['count']}, average "
                           f"{ratings['average'] if ratings['average'] is not None else '-'}, "
                           f"replied {ratings['replied']}"),
        ("  by stars", stars),
    ]
    typer.echo(f"seller {seller}: {span}")
    for label, value in rows:
        typer.echo(f"  {label:<26} {value}")


@audit_app.command("verify")
def audit_verify(case: Annotated[str | None, typer.Option(
                     "--case", help="Check this case's log only (default: every case).")] = None,
                 db: DbOption = None, as_json: JsonOption = False) -> None:
    """Recompute the hash chain of the case logs; exit 0 when intact, 1 naming the first broken
    entry of each broken case."""
    from aftersales.store import audit

    service = bootstrap(db)
    try:
        with service.uow() as uow:
            checked, breaks = audit.verify(uow.repo.conn, case)
            if case is not None and checked == 0 and not breaks:
                uow.repo.get_case(case)  # NotFound for a case that does not exist
    except AftersalesError as exc:
        _refused(exc)
    if as_json:
        typer.echo(json.dumps({"checked": checked, "intact": not breaks,
                               "breaks": [{"case": b.case_id, "seq": b.seq, "reason": b.reason}
                                          for b in breaks]}, indent=2, ensure_ascii=False))
    else:
        where = f"case {case}" if case is not None else "every case"
        for b in breaks:
            typer.echo(f"BROKEN case {b.case_id} entry {b.seq}: {b.reason}")
        typer.echo(f"{where}: {checked} log entries checked, "
                   + (f"{len(breaks)} broken case log(s)" if breaks else "the chain is intact"))
    if breaks:
        raise typer.Exit(1)


@intervention_app.command("queue")
def intervention_queue_cmd(
        db: DbOption = None,
        now: Annotated[str | None, typer.Option(
            help="Evaluate at this ISO time (default: now).")] = None,
        limit: Annotated[int, typer.Option(help="At most this many cases.")] = 100,
        as_json: JsonOption = False) -> None:
    """Cases the platform holds (in intervention, awaiting proof, jury voting), next due first."""
    from aftersales.service.views import intervention_queue

    at = _at(now, "--now")
    if limit <= 0:
        _fail("--limit must be positive", 2)
    service = bootstrap(db)
    with service.uow() as uow:
        queue = intervention_queue(uow.repo, at, limit, at.tzinfo)
    if as_json:
        typer.echo(json.dumps(queue, indent=2, ensure_ascii=False))
        return
    typer.echo(f"{len(queue)} case(s) with the platform at {at.isoformat()}")
    for q in queue:
        jury = q["jury"]
        extra = (f"proof from {q['proof_from']}" if q["status"] == "awaiting_proof"
                 else f"jury {jury['buyer']}-{jury['seller']} of {jury['panel']}"
                 if q["status"] == "jury_voting" else f"escalated by {q['escalated_by']}")
        typer.echo(f"  {q['case']:<24} {q['status']:<16} due {q['due']} ({q['due_kind']})"
                   f"{'  OVERDUE' if q['overdue'] else ''}  {extra}")


@case_app.command("timeline")
def case_timeline(case_id: str,
                  viewer: Annotated[str, typer.Option(
                      "--as", help="Who is looking: buyer:ID, seller:ID or staff:ID.")],
                  db: DbOption = None, as_json: JsonOption = False) -> None:
    """CP-2: a case's full timeline as its buyer, its seller or staff see it."""
    from aftersales.domain.types import Actor
    from aftersales.service.views import timeline

    try:
        actor = Actor.parse(viewer)
        service = bootstrap(db)
        with service.uow() as uow:
            entries = timeline(uow.repo, case_id, actor)
    except AftersalesError as exc:
        _refused(exc)
    if as_json:
        typer.echo(json.dumps(entries, indent=2, ensure_ascii=False))
        return
    typer.echo(f"case {case_id} as {viewer}: {len(entries)} entries")
    for e in entries:
        status = e["changes"].get("status") if isinstance(e["changes"], dict) else None
        typer.echo(f"  {e['seq']:>3} {e['at']}  {e['actor']:<20} {e['name']:<22} "
                   f"{e['rule'] or '-':<8}{'  -> ' + status if status else ''}")


from aftersales.cli_webhooks import webhooks_app  # noqa: E402  (webhooks: docs/webhooks.md)

app.add_typer(webhooks_app, name="webhooks")

from aftersales.cli_api import serve, token_app  # noqa: E402  (the HTTP API: docs/api.md)

app.command("serve")(serve)
app.add_typer(token_app, name="token")


def main() -> None:
    try:
        app()
    except AftersalesError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
