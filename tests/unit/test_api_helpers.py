"""The API's pure helpers: cursors, idempotency digests and keys, principals, problem codes."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from aftersales.api import idempotency, pagination
from aftersales.api.auth import AuthError, Principal, principal_from
from aftersales.api.observability import JsonFormatter
from aftersales.api.problems import ApiProblem, status_for
from aftersales.domain.errors import (
    ActionNotAllowed,
    AmountExceedsPaid,
    ConcurrencyConflict,
    FileTooLarge,
    InvalidInput,
    NotFound,
    UnsupportedMediaType,
    WrongActor,
)
from aftersales.domain.types import Role


def test_cursor_round_trip_and_refusals() -> None:
    at = datetime(2026, 3, 1, 2, 0, 0, 123456, tzinfo=UTC)
    cursor = pagination.encode("-opened_at", at, "case_7")
    assert "=" not in cursor and "case_7" not in cursor  # opaque, URL-safe
    assert pagination.decode(cursor, "-opened_at") == (at, "case_7")
    for bad, sort in ((cursor, "deadline"), ("!!!", "-opened_at"), (cursor[:-4], "-opened_at"),
                      (pagination.encode("x", None, "a")[:-2], "x")):
        with pytest.raises(ApiProblem) as err:
            pagination.decode(bad, sort)
        assert err.value.status == 422


def test_body_digest_ignores_json_layout_but_not_content() -> None:
    a = idempotency.body_digest(b'{"a": 1, "b": [1, 2]}')
    assert a == idempotency.body_digest(b'{"b":[1,2],"a":1}')
    assert a != idempotency.body_digest(b'{"a": 1, "b": [2, 1]}')
    assert idempotency.body_digest(b"\x89PNG") != idempotency.body_digest(b"")
    assert idempotency.check_key(None) is None
    assert idempotency.check_key("order-o1:retry#1") == "order-o1:retry#1"
    for bad in ("", "with space", "x" * 129, "caf\u00e9"):
        with pytest.raises(ApiProblem):
            idempotency.check_key(bad)


def test_principals() -> None:
    clerk = principal_from({"role": "seller", "sub": "clerk-7", "seller": "s1"})
    assert str(clerk.actor) == "seller:s1" and clerk.key == "seller:clerk-7"
    assert str(principal_from({"role": "seller", "sub": "s2"}).actor) == "seller:s2"
    assert Principal(Role.STAFF, "x1").platform and not Principal(Role.JUROR, "j1").platform
    for claims in ({"role": "system", "sub": "x"}, {"role": "buyer", "sub": ""},
                   {"role": "buyer", "sub": "b1", "seller": "s1"}, {"role": 3, "sub": "b1"},
                   {"role": "buyer", "sub": "a/b"}):
        with pytest.raises(AuthError):
            principal_from(claims)


def test_status_of_each_domain_error() -> None:
    cases = [(InvalidInput("x"), 422), (AmountExceedsPaid("x"), 422), (NotFound("x"), 404),
             (WrongActor("x"), 403), (ConcurrencyConflict("x"), 409),
             (ActionNotAllowed("x", code="too_early"), 409), (ActionNotAllowed("x"), 409),
             (FileTooLarge("x"), 413), (UnsupportedMediaType("x"), 422)]
    for error, status in cases:
        assert status_for(error) == status, error.code


def test_json_log_lines() -> None:
    record = logging.LogRecord("aftersales.access", logging.INFO, __file__, 1, "GET %s %s",
                               ("/x", 200), None)
    record.fields = {"request_id": "r1", "status": 200}
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "GET /x 200" and line["request_id"] == "r1" and line["status"] == 200
    assert line["level"] == "info" and line["ts"].endswith("+00:00")
