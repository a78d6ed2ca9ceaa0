"""The one place that wires the app: settings -> engine -> migrations -> service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aftersales.service.handlers import IdFactory, PolicySource, Service, random_ids
from aftersales.settings import Settings
from aftersales.store.blobs import BlobStore
from aftersales.store.db import DEFAULT_SQLITE_SYNCHRONOUS, make_engine, upgrade


def bootstrap(database_url: str | None = None, *, policy: str | None = None,
              overrides: dict[str, dict[str, Any]] | None = None,
              ids: IdFactory = random_ids, migrate: bool = True,
              evidence_dir: str | Path | None = None,
              sqlite_synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS) -> Service:
    """`sqlite_synchronous`: SQLite's flush level when AFTERSALES_SQLITE_SYNCHRONOUS names
    none (`Settings.from_env`)."""
    settings = Settings.from_env(sqlite_synchronous=sqlite_synchronous)
    engine = make_engine(database_url or settings.database_url,
                         sqlite_synchronous=settings.sqlite_synchronous)
    if migrate:
        upgrade(engine)
    blobs = BlobStore(Path(evidence_dir or settings.evidence_dir), settings.evidence_max_bytes)
    return Service(engine, policies=PolicySource(policy or settings.policy, overrides), ids=ids,
                   blobs=blobs)
