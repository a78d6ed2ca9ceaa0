"""`aftersales webhooks ...`: register endpoints, read the delivery log, redeliver
(docs/webhooks.md). The worker (`aftersales worker`) does the sending."""

from __future__ import annotations

import json
from typing import Annotated, Any, NoReturn

import typer

from aftersales.bootstrap import bootstrap
from aftersales.domain.errors import AftersalesError, InvalidInput
from aftersales.domain.types import Actor

webhooks_app = typer.Typer(no_args_is_help=True,
                           help="Webhook endpoints, the delivery log and redelivery.")

DbOption = Annotated[str | None, typer.Option("--db", help="Database URL (default: "
                                              "$AFTERSALES_DATABASE_URL or sqlite:///aftersales.db)")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AsOption = Annotated[str, typer.Option("--as", help="Who is acting: operator:ID or staff:ID.")]


def _fail(exc: AftersalesError) -> NoReturn:
    """Exit 2 for invalid input, 1 when refused (a wrong role, an unknown id)."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2 if isinstance(exc, InvalidInput) else 1)


def _actor(text: str) -> Actor:
    try:
        return Actor.parse(text)
    except AftersalesError as exc:
        _fail(exc)


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


@webhooks_app.command("add")
def add(url: Annotated[str, typer.Argument(help="http(s) URL that receives the POSTs.")],
        events: Annotated[str, typer.Option(
            "--events", help="Comma-separated event names, or '*' for every event.")],
        secret: Annotated[str | None, typer.Option(
            help="Signing secret (default: a new random one, printed once).")] = None,
        actor: AsOption = "operator:cli", db: DbOption = None,
        as_json: JsonOption = False) -> None:
    """Register URL for the given event types; prints the endpoint id and its secret."""
    from aftersales.service.webhooks import register_endpoint

    who = _actor(actor)
    try:
        endpoint = register_endpoint(bootstrap(db), who, url, events, secret)
    except AftersalesError as exc:
        _fail(exc)
    if as_json:
        _echo_json(endpoint.as_dict(with_secret=True))
        return
    typer.echo(f"endpoint {endpoint.id}: {endpoint.url} for {', '.join(endpoint.event_types)}")
    typer.echo(f"secret {endpoint.secret}   (shown once: give it to the receiver)")


@webhooks_app.command("list")
def list_cmd(db: DbOption = None, actor: AsOption = "operator:cli",
             active: Annotated[bool, typer.Option(
                 "--active", help="Only endpoints still active.")] = False,
             as_json: JsonOption = False) -> None:
    """Registered endpoints (never their secrets)."""
    from aftersales.service.webhooks import list_endpoints

    who = _actor(actor)
    try:
        endpoints = list_endpoints(bootstrap(db), who, include_disabled=not active)
    except AftersalesError as exc:
        _fail(exc)
    if as_json:
        _echo_json([e.as_dict() for e in endpoints])
        return
    typer.echo(f"{len(endpoints)} endpoint(s)")
    for e in endpoints:
        typer.echo(f"  {e.id:<24} {'active  ' if e.active else 'disabled'} {e.url}  "
                   f"[{', '.join(e.event_types)}]  by {e.created_by}")


@webhooks_app.command("disable")
def disable(endpoint_id: str, db: DbOption = None, actor: AsOption = "operator:cli") -> None:
    """Stop sending to an endpoint; its deliveries still waiting end failed."""
    from aftersales.service.webhooks import disable_endpoint

    who = _actor(actor)
    try:
        disable_endpoint(bootstrap(db), who, endpoint_id)
    except AftersalesError as exc:
        _fail(exc)
    typer.echo(f"endpoint {endpoint_id} disabled")


@webhooks_app.command("deliveries")
def deliveries(
        status: Annotated[str | None, typer.Option(
            help="pending, sending, delivered or failed.")] = None,
        endpoint: Annotated[str | None, typer.Option(help="Only this endpoint id.")] = None,
        event: Annotated[str | None, typer.Option(help="Only this event type.")] = None,
        limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
        db: DbOption = None, actor: AsOption = "operator:cli",
        as_json: JsonOption = False) -> None:
    """The delivery log: each delivery with its attempts."""
    from aftersales.service.webhooks import list_deliveries

    who = _actor(actor)
    try:
        found = list_deliveries(bootstrap(db), who, endpoint_id=endpoint, status=status,
                                event=event, limit=limit)
    except AftersalesError as exc:
        _fail(exc)
    if as_json:
        _echo_json(found)
        return
    typer.echo(f"{len(found)} deliver{'y' if len(found) == 1 else 'ies'}")
    for d in found:
        when = {"pending": f"next {d['next_attempt_at']}", "sending": "sending now",
                "delivered": f"at {d['delivered_at']}", "failed": ""}.get(d["status"], "")
        typer.echo(f"  {d['id']:>6} {d['status']:<9} {d['event']:<22} {d['aggregate']} "
                   f"{d['aggregate_id']} -> {d['endpoint_id']}  attempts {d['attempts']} {when}")
        for a in d["log"]:
            code = a["status_code"] if a["status_code"] is not None else "---"
            typer.echo(f"         {a['at']}  {code}  {a['duration_ms']} ms"
                       + (f"  {a['error']}" if a["error"] else ""))


@webhooks_app.command("redeliver")
def redeliver_cmd(delivery_id: int, db: DbOption = None,
                  actor: AsOption = "operator:cli") -> None:
    """Queue a delivery for an attempt now (the worker sends it)."""
    from aftersales.service.webhooks import redeliver

    who = _actor(actor)
    try:
        redeliver(bootstrap(db), who, delivery_id)
    except AftersalesError as exc:
        _fail(exc)
    typer.echo(f"delivery {delivery_id} queued: the worker sends it in its next round")
