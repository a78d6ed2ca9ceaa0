"""One typed settings object, read from the environment (AFTERSALES_*)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from aftersales.store.db import DEFAULT_SQLITE_SYNCHRONOUS, DEFAULT_URL, SQLITE_SYNCHRONOUS

# The HTTP API's development signing secret. `aftersales serve` refuses it when
# AFTERSALES_ENV=production: set AFTERSALES_JWT_SECRET (or RS256 and a public key) there.
DEV_JWT_SECRET = "aftersales-development-secret-do-not-use-in-production"


class SettingsError(ValueError):
    """An AFTERSALES_* variable holds a value that cannot be used (the message names it)."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_URL
    sqlite_synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS  # FULL: durable commits (store/db.py)
    policy: str = "taobao"
    worker_interval_s: float = 5.0
    worker_batch: int = 200
    evidence_dir: str = "evidence"
    evidence_max_bytes: int = 10 * 1024 * 1024
    webhook_timeout_s: float = 10.0
    webhook_max_attempts: int = 16
    # the HTTP API (docs/api.md)
    jwt_secret: str = DEV_JWT_SECRET  # HS256 shared secret
    jwt_public_key: str | None = None  # RS256: PEM text, or the path of a PEM file
    jwt_algorithm: str = "HS256"  # HS256 | RS256
    jwt_issuer: str | None = None  # checked when set
    jwt_audience: str | None = None  # checked when set
    environment: str = "development"  # "production" refuses the development secret
    max_body_bytes: int = 1024 * 1024  # JSON request bodies (evidence files: evidence_max_bytes)

    @classmethod
    def from_env(cls, *, sqlite_synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS) -> Settings:
        """The settings from the environment; `sqlite_synchronous` is the level used when
        AFTERSALES_SQLITE_SYNCHRONOUS is unset or empty (the demo's throwaway database)."""
        env = os.environ
        return cls(
            database_url=env.get("AFTERSALES_DATABASE_URL", DEFAULT_URL),
            sqlite_synchronous=_sqlite_synchronous(env.get("AFTERSALES_SQLITE_SYNCHRONOUS"),
                                                   sqlite_synchronous),
            policy=env.get("AFTERSALES_POLICY", "taobao"),
            worker_interval_s=float(env.get("AFTERSALES_WORKER_INTERVAL", "5")),
            worker_batch=int(env.get("AFTERSALES_WORKER_BATCH", "200")),
            evidence_dir=env.get("AFTERSALES_EVIDENCE_DIR", "evidence"),
            evidence_max_bytes=int(env.get("AFTERSALES_EVIDENCE_MAX_BYTES", "10485760")),
            webhook_timeout_s=float(env.get("AFTERSALES_WEBHOOK_TIMEOUT", "10")),
            webhook_max_attempts=int(env.get("AFTERSALES_WEBHOOK_MAX_ATTEMPTS", "16")),
            jwt_secret=env.get("AFTERSALES_JWT_SECRET") or DEV_JWT_SECRET,
            jwt_public_key=env.get("AFTERSALES_JWT_PUBLIC_KEY") or None,
            jwt_algorithm=env.get("AFTERSALES_JWT_ALGORITHM", "HS256"),
            jwt_issuer=env.get("AFTERSALES_JWT_ISSUER") or None,
            jwt_audience=env.get("AFTERSALES_JWT_AUDIENCE") or None,
            environment=env.get("AFTERSALES_ENV", "development"),
            max_body_bytes=int(env.get("AFTERSALES_MAX_BODY_BYTES", "1048576")),
        )


def _sqlite_synchronous(value: str | None, default: str) -> str:
    if value is None or not value.strip():
        return default
    level = value.strip().upper()
    if level not in SQLITE_SYNCHRONOUS:
        raise SettingsError(f"AFTERSALES_SQLITE_SYNCHRONOUS is one of "
                            f"{', '.join(SQLITE_SYNCHRONOUS)}, not {value!r}")
    return level
