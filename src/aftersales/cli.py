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
                               "conflicts": stats.conflicts}))


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


def main() -> None:
    try:
        app()
    except AftersalesError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
