"""Idempotency-Key: a retried POST returns the first response without acting again.

The first successful response is stored with the principal, the key, the method, the path and
the SHA-256 of the body, in the same transaction as the command it answers (`Service.handle`'s
`before_commit`), so a stored response always means the action happened, and an action that
happened always has its response stored. A retry with the same key and body gets that response
back (`Idempotent-Replayed: true`); the same key with another body or path is refused
(`idempotency_key_reused`, 422). Failed requests store nothing: they changed nothing, so a
retry runs again. Keys are scoped to the principal.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy import Connection, bindparam, insert, select

from aftersales.api.problems import ApiProblem
from aftersales.store import tables as t
from aftersales.store.fastsql import execute, fetch

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_KEY = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces

# Built once: every POST runs both (store/fastsql.py: compiled once, run on the DBAPI cursor).
_k = t.idempotency_keys
_LOOKUP = select(_k).where(_k.c.principal == bindparam("b_principal"),
                           _k.c.key == bindparam("b_key"))
_STORE = insert(_k)


@dataclass(frozen=True)
class Request:
    """What identifies a request for its key: who, the key, the method, path and body."""

    principal: str
    key: str
    method: str
    path: str
    body_sha256: str


def check_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY.fullmatch(value):
        raise ApiProblem(422, "invalid_input", f"{HEADER}: 1 to 128 printable ASCII characters "
                         "without spaces")
    return value


def body_digest(body: bytes) -> str:
    """SHA-256 of the body; JSON is canonicalised first, so key order and spacing do not make
    a retry "different"."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


def lookup(conn: Connection, req: Request) -> JSONResponse | None:
    """The stored response for this key, or None when the key is new. The same key for another
    request is refused."""
    rows = fetch(conn, _LOOKUP, {"b_principal": req.principal, "b_key": req.key})
    if not rows:
        return None
    row = rows[0]
    if (row["method"], row["path"], row["body_sha256"]) != (req.method, req.path,
                                                             req.body_sha256):
        raise ApiProblem(422, "idempotency_key_reused",
                         f"{HEADER} {req.key!r} was first used for {row['method']} {row['path']} "
                         "with a different body; use a new key for a new request")
    return JSONResponse(row["response"], status_code=row["status_code"],
                        headers={REPLAYED: "true"})


def store(conn: Connection, req: Request, status: int, response: Any, now: datetime) -> None:
    """In the caller's transaction: a concurrent first use of the key fails the unique key, and
    the whole transaction (the action included) rolls back."""
    execute(conn, _STORE, {
        "principal": req.principal, "key": req.key, "method": req.method, "path": req.path,
        "body_sha256": req.body_sha256, "status_code": status, "response": response,
        "created_at": now})
