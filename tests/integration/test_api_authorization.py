"""The authorisation matrix: every endpoint of the app, with every role and with another party's
ids. Generated from the app's routes as its OpenAPI document lists them (each operation declares
its roles in `x-roles`), so an endpoint added later is in the matrix without anyone remembering
it.

- no token: 401 (public endpoints excepted);
- a role the endpoint is not for: 403 `forbidden`;
- a buyer, seller or juror with another party's order, case, complaint, shop or jury task: 404
  `not_found`, exactly as for an id that does not exist;
- a buyer, seller or juror listing: nothing of the other party's in the answer;
- staff and operators: never refused for whose object it is.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import T0
from tests.integration.api_support import Clock, Live, World, live_api, seed_world
from tests.integration.intervention_setup import JURY
from tests.unit.test_evidence import png_bytes

# Who calls: (role, sub, shop). Each is a party of world 1 only.
PRINCIPALS = {"buyer": ("b1", None), "seller": ("clerk-1", "s1"), "juror": ("j1", None),
              "staff": ("x1", None), "operator": ("op1", None)}
PARTIES = ("buyer", "seller", "juror")
# Path parameters naming an object that belongs to someone (object-level checks apply).
OWNED = {"order_id", "case_id", "complaint_id", "seller_id", "task_id"}
# Path parameters with no owner of their own, and ids no fixture creates (webhooks).
UNOWNED = {"evidence_id", "index", "policy_id", "version", "name"}
UNKNOWN = {"endpoint_id": "wh_0000000000000000000", "delivery_id": 1}


def _values(other: World, version: str) -> dict[str, Any]:
    return {"order_id": other.order, "case_id": other.case, "complaint_id": other.complaint,
            "seller_id": other.seller, "task_id": other.task, "evidence_id": other.evidence_id,
            "index": 1, "policy_id": "taobao", "version": version, "name": "fake_shipment",
            **UNKNOWN}


def _example_body(openapi: dict[str, Any], path: str, method: str) -> Any:
    op = openapi["paths"][path][method.lower()]
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    schema = content["application/json"]["schema"]
    ref = schema.get("$ref") or next((s.get("$ref") for s in schema.get("anyOf", [])
                                      if "$ref" in s), None)
    if ref is None:
        return {}
    component = openapi["components"]["schemas"][ref.rsplit("/", 1)[1]]
    examples = component.get("examples")
    assert examples, f"{method} {path}: the request body {ref} has no example"
    return examples[0]


def _strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*map(_strings, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_strings, value)) if value else set()
    return set()


def _send(client: httpx.Client, method: str, url: str, body: Any, upload: bool
          ) -> httpx.Response:
    if upload:
        return client.request(method, url, content=png_bytes())
    if body is None:
        return client.request(method, url)
    return client.request(method, url, json=body)


def test_every_endpoint_with_every_role_and_another_partys_ids(db_url: str,
                                                               tmp_path: Path) -> None:
    worlds: list[World] = []

    def seed(service: Any) -> None:
        worlds.append(seed_world(service, "1", ("j1", "j2", "j3"), T0))
        worlds.append(seed_world(service, "2", ("j4", "j5", "j6"), T0,
                                 retire=("j1", "j2", "j3")))

    with live_api(db_url, tmp_path, clock=Clock(T0 + timedelta(days=3)), overrides=JURY,
                  configure=seed) as live:
        own, other = worlds
        failures = _matrix(live, own, other)
    assert not failures, f"{len(failures)} authorisation failures:\n" + "\n".join(failures)


def _matrix(live: Live, own: World, other: World) -> list[str]:
    anonymous = live.client()
    clients = {role: live.client(role, sub, seller) for role, (sub, seller)
               in PRINCIPALS.items()}
    openapi = anonymous.get("/openapi.json").json()
    version = clients["staff"].get("/api/v1/policies/taobao/versions").json()[0]["version"]
    values = _values(other, version)
    foreign = {other.buyer, other.seller, other.order, other.case, other.complaint,
               other.jury_case, other.task, f"{other.order}j"}
    routes = [(method.upper(), path, op) for path, item in openapi["paths"].items()
              for method, op in item.items() if path.startswith("/api/v1")]
    assert len(routes) > 50
    failures: list[str] = []
    checked: list[tuple[str, str, str, int]] = []

    def fail(role: str, method: str, path: str, r: httpx.Response, wanted: str) -> None:
        failures.append(f"{role:>9} {method} {path}: {r.status_code} {r.text[:160]!r}; "
                        f"wanted {wanted}")

    for method, path, op in routes:
        roles = op.get("x-roles")
        assert roles, f"{method} {path} declares no x-roles (use api.routing.endpoint)"
        params = set(re.findall(r"{(\w+)}", path))
        unknown = params - OWNED - UNOWNED - set(UNKNOWN)
        assert not unknown, f"{method} {path}: add {unknown} to this matrix"
        url = path.format(**{k: values[k] for k in params})
        upload = path.endswith("/evidence/files")
        body = _example_body(openapi, path, method)
        if isinstance(body, dict) and "order" in body:
            body = {**body, "order": other.order}  # POST /cases, /complaints: another's order
        if roles == ["public"]:
            continue
        r = _send(anonymous, method, url, body, upload)
        if r.status_code != 401 or r.json().get("code") != "unauthenticated":
            fail("anonymous", method, url, r, "401 unauthenticated")
        for role in (*PARTIES, "staff", "operator"):
            r = _send(clients[role], method, url, body, upload)
            checked.append((role, method, path, r.status_code))
            code = r.json().get("code") if r.headers.get("content-type", "").endswith(
                "json") and r.status_code >= 400 else None
            if role not in roles:
                if r.status_code != 403 or code != "forbidden":
                    fail(role, method, url, r, "403 forbidden")
            elif role in PARTIES and (params & OWNED or (isinstance(body, dict)
                                                         and "order" in body)):
                if r.status_code != 404 or code != "not_found":
                    fail(role, method, url, r, "404 not_found")
            elif role in PARTIES:
                if method == "GET" and (r.status_code != 200
                                        or _strings(r.json()) & foreign):
                    fail(role, method, url, r, "200 without the other party's objects")
            elif params & set(UNKNOWN):
                if r.status_code in (401, 403):
                    fail(role, method, url, r, "not refused")
            elif method == "GET" and r.status_code != 200:
                fail(role, method, url, r, "200")
            elif r.status_code in (401, 403) or (params & OWNED and r.status_code == 404):
                fail(role, method, url, r, "not refused, not hidden")

    assert len(checked) == 5 * len([r for r in routes if r[2].get("x-roles") != ["public"]])
    by_status: dict[int, int] = {}
    for *_, status in checked:
        by_status[status] = by_status.get(status, 0) + 1
    assert {403, 404, 200} <= set(by_status), by_status
    # An item of another case under one's own case is as unknown as the other case.
    r = clients["buyer"].get(f"/api/v1/cases/{own.case}/evidence/{other.evidence_id}/file")
    if r.status_code != 404:
        fail("buyer", "GET", "own case, another's evidence", r, "404")
    r = clients["buyer"].get(f"/api/v1/cases/{own.case}/evidence/{own.evidence_id}/file")
    if r.status_code != 200:
        fail("buyer", "GET", "own evidence", r, "200")
    return failures

