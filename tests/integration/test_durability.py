"""SQLite commits are durable by default (synchronous=FULL, store/db.py): what the service has
committed (a refund, the outbox row its webhook is sent from) survives a power cut, as on
PostgreSQL. AFTERSALES_SQLITE_SYNCHRONOUS picks another level; a bad value is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from aftersales.bootstrap import bootstrap
from aftersales.settings import Settings, SettingsError

LEVELS = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}  # what PRAGMA synchronous reads back


def _synchronous(url: str) -> int:
    service = bootstrap(url)
    try:
        with service.engine.connect() as conn:
            return int(conn.execute(text("PRAGMA synchronous")).scalar_one())
    finally:
        service.engine.dispose()


def test_sqlite_commits_are_durable_by_default(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AFTERSALES_SQLITE_SYNCHRONOUS", raising=False)
    assert _synchronous(f"sqlite:///{tmp_path / 'a.db'}") == LEVELS["FULL"]


@pytest.mark.parametrize("value", ["normal", "FULL", " extra "])
def test_the_level_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                value: str) -> None:
    monkeypatch.setenv("AFTERSALES_SQLITE_SYNCHRONOUS", value)
    assert _synchronous(f"sqlite:///{tmp_path / 'a.db'}") == LEVELS[value.strip().upper()]


def test_a_bad_level_is_refused_before_anything_is_opened(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFTERSALES_SQLITE_SYNCHRONOUS", "sometimes")
    with pytest.raises(SettingsError, match="AFTERSALES_SQLITE_SYNCHRONOUS"):
        Settings.from_env()
    db = tmp_path / "a.db"
    done = subprocess.run([sys.executable, "-m", "aftersales.cli", "case", "show", "c1",
                           "--db", f"sqlite:///{db}"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2
    assert "AFTERSALES_SQLITE_SYNCHRONOUS is one of OFF, NORMAL, FULL, EXTRA" in done.stderr
    assert not db.exists()
