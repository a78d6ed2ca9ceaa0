"""Engines and migrations. Nothing connects at import time; `bootstrap` calls these."""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, exc

DEFAULT_URL = "sqlite:///aftersales.db"
# A pooled PostgreSQL connection is pinged before use only after sitting this long in the pool
# (see _ping_when_idle).
PING_AFTER_IDLE_S = 10.0


def normalise_url(url: str) -> str:
    """Accept postgresql:// URLs and use psycopg 3 for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


# SQLite's `synchronous` levels. FULL (the default) makes every commit durable: in WAL mode the
# log is flushed to disk at each commit, so a refund the service reported, and the webhook the
# outbox sends about it, survive a power cut or an OS crash, as on PostgreSQL (whose
# `synchronous_commit` is on by default). NORMAL flushes only at checkpoints: the file is never
# corrupted, but the last transactions can roll back after a power cut; fine for a throwaway
# simulation, not for a ledger (AFTERSALES_SQLITE_SYNCHRONOUS, docs/operations.md).
SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
DEFAULT_SQLITE_SYNCHRONOUS = "FULL"


def make_engine(url: str = DEFAULT_URL, *, sqlite_synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS,
                **kwargs: Any) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        synchronous = sqlite_synchronous.upper()
        if synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"SQLite synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)},"
                             f" not {sqlite_synchronous!r}")
        engine = create_engine(url, connect_args={"timeout": 60}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, issue BEGIN (see _begin_immediate below).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        def _begin_immediate(dbapi_conn: Any) -> None:
            # Take the write lock up front: two writers never deadlock on a lock upgrade,
            # they queue (busy_timeout). SQLite has no row locks; this is its SKIP LOCKED.
            dbapi_conn.execute("BEGIN IMMEDIATE")

        # This engine's dialect begins with BEGIN IMMEDIATE (pysqlite's do_begin does nothing).
        # It used to be a `begin` event listener running `exec_driver_sql`; any engine event
        # makes SQLAlchemy dispatch events on every execute, begin and commit, and the listener's
        # statement went through the whole execution path: more than the BEGIN itself costs.
        # Errors (a lock wait that timed out) still come back as sqlalchemy.exc errors.
        engine.dialect.do_begin = _begin_immediate  # type: ignore[method-assign,assignment]
        return engine
    if "pool_pre_ping" in kwargs:  # the caller's choice
        return create_engine(url, **kwargs)
    engine = create_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


def durability(engine: Engine) -> str:
    """How the engine's connections flush commits, read off a connection: on SQLite
    `synchronous=FULL` (or NORMAL, ...), on PostgreSQL `fsync` and `synchronous_commit`."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            level = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
            return f"synchronous={SQLITE_SYNCHRONOUS[level]}"
        if engine.dialect.name == "postgresql":
            return (f"fsync={conn.exec_driver_sql('SHOW fsync').scalar_one()}, synchronous_commit="
                    f"{conn.exec_driver_sql('SHOW synchronous_commit').scalar_one()}")
        return "unknown"


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before handing it out when it has been idle in the pool for
    PING_AFTER_IDLE_S or more; a dead one is replaced (the pool retries with a new connection).

    Connections die while idle (server restart, idle timeouts, a failover), and that is what
    `pool_pre_ping` guards against; but it pings on every checkout: one more round trip for
    every command (40-60 µs here, about 5 % of a command on PostgreSQL). A connection that was
    in use a moment ago is not checked; if it has died since, the command fails with a
    disconnect error and the pool is invalidated, as with any connection lost mid-transaction.
    (`uow.KeptConnections` pings the connections it keeps by the same rule.)"""

    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_conn: Any, record: Any) -> None:
        record.info["aftersales_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("aftersales_idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as err:
            raise exc.DisconnectionError(f"pooled connection failed its ping: {err}") from err


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "aftersales.store:migrations")
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str | None:
    script = ScriptDirectory(str(resources.files("aftersales.store").joinpath("migrations")))
    return script.get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is current)."""
    if current_revision(engine) != head_revision():
        command.upgrade(alembic_config(engine), "head")
