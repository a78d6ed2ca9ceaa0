"""`aftersales serve` (the HTTP API under uvicorn) and `aftersales token issue`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens for the HTTP API.")


def serve(host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
          workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
          db: Annotated[str | None, typer.Option(
              "--db", help="Database URL (default: $AFTERSALES_DATABASE_URL or "
                           "sqlite:///aftersales.db)")] = None,
          log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
          ) -> None:
    """Serve the HTTP API (docs/api.md): JSON logs on stdout, /docs, /metrics, /readyz."""
    import uvicorn

    from aftersales.api.auth import ConfigError, check_settings
    from aftersales.api.observability import log_config
    from aftersales.settings import Settings
    from aftersales.store.db import make_engine, upgrade

    if db is not None:
        os.environ["AFTERSALES_DATABASE_URL"] = db  # the workers read their settings from it
    settings = Settings.from_env()
    try:
        check_settings(settings)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    engine = make_engine(settings.database_url)
    upgrade(engine)  # once, here, rather than racing in every worker
    engine.dispose()
    uvicorn.run("aftersales.api.app:factory", factory=True, host=host, port=port,
                workers=workers, log_config=log_config(log_level.upper()), access_log=False,
                timeout_graceful_shutdown=10)


@token_app.command("issue")
def token_issue(
        role: Annotated[str, typer.Option(help="buyer, seller, staff, juror or operator.")],
        sub: Annotated[str, typer.Option(help="The principal's id (buyer b1, staff x1, ...).")],
        seller: Annotated[str | None, typer.Option(
            help="A seller token's shop (default: --sub).")] = None,
        ttl: Annotated[str, typer.Option(help="Lifetime: 12h, 30d, 90m.")] = "12h",
        private_key: Annotated[str | None, typer.Option(
            help="RS256: the identity service's private key (PEM file).")] = None) -> None:
    """Print a signed token for development and the demo (HS256 with $AFTERSALES_JWT_SECRET,
    or its development default, which AFTERSALES_ENV=production refuses)."""
    from aftersales.api.auth import AuthError, ConfigError, issue_token
    from aftersales.domain.durations import parse_duration
    from aftersales.domain.errors import InvalidInput
    from aftersales.settings import Settings

    try:
        lifetime = parse_duration(ttl)
        token = issue_token(Settings.from_env(), role, sub, seller=seller, ttl=lifetime,
                            private_key=private_key)
    except (AuthError, ConfigError, InvalidInput) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except ValueError:
        typer.echo(f"error: role is buyer, seller, staff, juror or operator, not {role!r}",
                   err=True)
        raise typer.Exit(2) from None
    typer.echo(token)
