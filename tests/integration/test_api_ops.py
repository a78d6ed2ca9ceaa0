"""Operations: /healthz, /readyz (database and migrations), /api/v1/ping, Prometheus metrics,
one JSON log line per request with its request id, and `aftersales serve --workers N`."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from alembic import command

from aftersales.api.observability import JsonFormatter
from aftersales.service.handlers import Service
from aftersales.store.db import alembic_config, head_revision
from tests.conftest import T0
from tests.integration.api_support import SECRET, Clock, free_socket, live_api
from tests.integration.intervention_setup import Parties, escalated_dispute


def test_health_readiness_ping_and_metrics(db_url: str, tmp_path: Path) -> None:
    def seed(service: Service) -> None:
        escalated_dispute(service, Parties("b1", "s1", "o1", "c1", "SF1"), T0)

    clock = Clock(T0 + timedelta(days=30))  # the worker has not run: deadlines are overdue
    with live_api(db_url, tmp_path, clock=clock, configure=seed) as live:
        anon = live.client()
        assert anon.get("/healthz").json() == {"status": "ok", "checks": {}}
        ready = anon.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "migrations": head_revision()}
        assert anon.get("/api/v1/ping").json() == {"ok": True}
        live.client("staff", "x1").get("/api/v1/cases/c1")

        text = anon.get("/metrics").text
        assert 'aftersales_http_requests_total{method="GET",route="/api/v1/ping",status="200"}' \
            ' 1.0' in text
        assert 'aftersales_http_request_duration_seconds_bucket{le="0.005",method="GET",' \
            'route="/api/v1/cases/{case_id}"}' in text
        assert 'aftersales_open_cases{status="in_intervention"} 1.0' in text
        assert "aftersales_database_up 1.0" in text
        assert 'aftersales_overdue_deadlines{kind="order"}' in text
        assert 'aftersales_webhook_backlog{stage="delivery"} 0.0' in text
        outbox = next(line for line in text.splitlines()
                      if line.startswith('aftersales_webhook_backlog{stage="outbox"}'))
        assert float(outbox.split()[-1]) > 0  # the seeded events, not yet fanned out

        # Migrations behind the code: not ready (the process is still healthy).
        command.stamp(alembic_config(live.service.engine), "0004")
        behind = anon.get("/readyz")
        assert behind.status_code == 503
        assert behind.headers["content-type"] == "application/problem+json"
        assert "aftersales db upgrade" in behind.json()["detail"]
        assert anon.get("/healthz").status_code == 200
        command.stamp(alembic_config(live.service.engine), "head")


def test_one_json_log_line_per_request(sqlite_url: str, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    with live_api(sqlite_url, tmp_path) as live, caplog.at_level(logging.INFO,
                                                                  "aftersales.access"):
        staff = live.client("staff", "x1")
        r = staff.get("/api/v1/policies", headers={"X-Request-ID": "trace-7"})
        assert r.status_code == 200
        live.client().get("/api/v1/cases")
    records = [rec for rec in caplog.records if rec.name == "aftersales.access"]
    assert len(records) == 2
    fields = [rec.fields for rec in records]  # type: ignore[attr-defined]
    assert fields[0]["request_id"] == "trace-7"
    assert (fields[0]["method"], fields[0]["path"], fields[0]["status"]) == (
        "GET", "/api/v1/policies", 200)
    assert fields[0]["principal"] == "staff:x1" and fields[0]["duration_ms"] >= 0
    assert fields[1]["status"] == 401 and fields[1]["principal"] is None
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "trace-7" and line["level"] == "info"
    assert line["logger"] == "aftersales.access" and line["msg"] == "GET /api/v1/policies 200"


@pytest.mark.slow
def test_serve_with_two_workers(tmp_path: Path) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "AFTERSALES_JWT_SECRET": SECRET,
           "AFTERSALES_EVIDENCE_DIR": str(tmp_path / "evidence")}
    env.pop("AFTERSALES_ENV", None)
    exe = Path(sys.executable).with_name("aftersales")
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([str(exe), "serve", "--workers", "2", "--port", str(port),
                             "--db", f"sqlite:///{tmp_path / 'serve.db'}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        token = subprocess.run([str(exe), "token", "issue", "--role", "buyer", "--sub", "b1"],
                               env=env, capture_output=True, text=True, check=True).stdout.strip()
        with httpx.Client(base_url=base, timeout=10) as client:
            for n in range(6):
                r = client.get("/api/v1/policies", headers={"Authorization": f"Bearer {token}",
                                                            "X-Request-ID": f"served-{n}"})
                assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = [json.loads(x) for x in (tmp_path / "serve.log").read_text().splitlines()
             if x.startswith("{")]
    served = [x for x in lines if str(x.get("request_id", "")).startswith("served-")]
    assert len(served) == 6
    assert all(x["principal"] == "buyer:b1" and x["status"] == 200 for x in served)
