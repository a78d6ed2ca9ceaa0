"""One typed settings object, read from the environment (AFTERSALES_*)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from aftersales.store.db import DEFAULT_URL


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_URL
    policy: str = "taobao"
    worker_interval_s: float = 5.0
    worker_batch: int = 200
    evidence_dir: str = "evidence"
    evidence_max_bytes: int = 10 * 1024 * 1024

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            database_url=env.get("AFTERSALES_DATABASE_URL", DEFAULT_URL),
            policy=env.get("AFTERSALES_POLICY", "taobao"),
            worker_interval_s=float(env.get("AFTERSALES_WORKER_INTERVAL", "5")),
            worker_batch=int(env.get("AFTERSALES_WORKER_BATCH", "200")),
            evidence_dir=env.get("AFTERSALES_EVIDENCE_DIR", "evidence"),
            evidence_max_bytes=int(env.get("AFTERSALES_EVIDENCE_MAX_BYTES", "10485760")),
        )
