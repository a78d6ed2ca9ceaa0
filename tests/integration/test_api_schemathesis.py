"""Schemathesis against the live OpenAPI document: no 5xx, and every response conforms to the
schema (status code, content type, body).

A seeded marketplace gives the path parameters real ids, and each operation is called with a
token of the first role its `x-roles` allows (staff by default), so the generated requests reach
the handlers instead of stopping at 403 / 404. The number of examples is bounded so that the
run takes well under two minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import T0
from tests.integration.api_support import Clock, World, live_api, seed_world
from tests.integration.intervention_setup import JURY

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,response_headers_conformance")
MAX_EXAMPLES = int(os.environ.get("AFTERSALES_SCHEMATHESIS_EXAMPLES", "10"))


def _config(world: World, version: str, tokens: dict[str, str]) -> str:
    params = {"case_id": world.case, "order_id": world.order, "complaint_id": world.complaint,
              "seller_id": world.seller, "task_id": world.task,
              "evidence_id": world.evidence_id, "index": 1, "policy_id": "taobao",
              "version": version, "name": "fake_shipment"}
    lines = ["[headers]", f"Authorization = {json.dumps('Bearer ' + tokens['staff'])}", "",
             "[parameters]"]
    lines += [f'"path.{k}" = {json.dumps(v)}' for k, v in params.items()]
    for role in ("buyer", "seller", "juror", "operator"):
        lines += ["", "[[operations]]", f"include-by = '/x-roles/0 == \"{role}\"'",
                  f"headers = {{ Authorization = {json.dumps('Bearer ' + tokens[role])} }}"]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
        db_url: str, tmp_path: Path) -> None:
    worlds: list[World] = []

    def seed(service: object) -> None:
        worlds.append(seed_world(service, "1", ("j1", "j2", "j3"), T0))  # type: ignore[arg-type]
        worlds.append(seed_world(service, "2", ("j4", "j5", "j6"), T0,  # type: ignore[arg-type]
                                 retire=("j1", "j2", "j3")))

    with live_api(db_url, tmp_path, clock=Clock(T0 + timedelta(days=3)), overrides=JURY,
                  configure=seed) as live:
        world = worlds[0]
        tokens = {"staff": live.token("staff", "x1"), "buyer": live.token("buyer", world.buyer),
                  "seller": live.token("seller", "clerk-1", seller=world.seller),
                  "juror": live.token("juror", world.juror),
                  "operator": live.token("operator", "op1")}
        version = live.client("staff", "x1").get("/api/v1/policies/taobao/versions").json()
        config = tmp_path / "schemathesis.toml"
        config.write_text(_config(world, version[0]["version"], tokens), encoding="utf-8")
        st = Path(sys.executable).with_name("st")
        run = subprocess.run(
            [str(st), "--config-file", str(config), "--no-color", "run",
             f"{live.url}/openapi.json", "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES),
             "--phases", "examples,coverage,fuzzing", "--workers", "1", "--seed", "20261122",
             "--no-shrink", "--request-timeout", "30", "--warnings", "off"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20_000:]
    assert " passed" in output, output[-5000:]
