"""Shared fixtures. Integration tests run on SQLite and on PostgreSQL.

PostgreSQL: AFTERSALES_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/test). Each test
gets its own schema, so tests are isolated and can run in parallel. When the server cannot be
reached the test is skipped locally but FAILS under CI=true: CI must prove both databases.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aftersales.bootstrap import bootstrap
from aftersales.scenario.runner import counter_ids
from aftersales.service.handlers import Service

PG_URL = os.environ.get("AFTERSALES_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=CST)
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pg_available() -> str | None:
    """None when PostgreSQL answers, else the reason."""
    try:
        eng = create_engine(PG_URL)
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


def require_pg() -> None:
    reason = pg_available()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true and cannot be reached: {reason}")
        pytest.skip(f"PostgreSQL not reachable: {reason}")


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    require_pg()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'aftersales.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every integration test using this runs twice: SQLite file and PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'aftersales.db'}"
    else:
        yield request.getfixturevalue("pg_schema_url")


@pytest.fixture
def service(db_url: str) -> Iterator[Service]:
    svc = bootstrap(db_url, ids=counter_ids())
    yield svc
    svc.engine.dispose()
