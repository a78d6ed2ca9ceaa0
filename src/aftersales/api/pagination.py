"""Keyset pagination with an opaque cursor.

A page is read in one order (a time column and the id, both ascending or both descending) and
the cursor is the last row's key, base64url of `{"s": sort, "k": time, "i": id}`. The next page
starts strictly after it, so rows inserted meanwhile never shift a page, and reading a page
costs the same however deep it is.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_

from aftersales.api.problems import ApiProblem

MAX_LIMIT = 100
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class Sort:
    name: str  # as the query parameter spells it
    column: Any  # a time column
    descending: bool
    non_null: bool = False  # rows without a value are left out (a deadline sort)


def encode(sort: str, key: datetime | None, ident: str) -> str:
    raw = json.dumps({"s": sort, "k": key.isoformat() if key else None, "i": ident},
                     separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, sort: str) -> tuple[datetime | None, str]:
    bad = ApiProblem(422, "invalid_input", "cursor: not a cursor this list returned "
                     f"(for sort={sort})")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("s") != sort or not isinstance(data.get("i"),
                                                                                 str):
            raise bad
        key = data.get("k")
        when = datetime.fromisoformat(key) if isinstance(key, str) else None
        if key is not None and (when is None or when.tzinfo is None):
            raise bad
        return when, data["i"]
    except (ValueError, binascii.Error, UnicodeDecodeError, TypeError):
        raise bad from None


def page(query: Select[Any], sort: Sort, id_column: Any, cursor: str | None,
         limit: int) -> Select[Any]:
    """`query` ordered by the sort key and id, after the cursor, one row more than `limit` (to
    know whether there is a next page)."""
    col = sort.column
    if sort.non_null:
        query = query.where(col.is_not(None))
    if cursor:
        key, ident = decode(cursor, sort.name)
        after: ColumnElement[bool]
        if key is None:
            after = and_(col.is_(None), id_column < ident if sort.descending
                         else id_column > ident)
        elif sort.descending:
            after = or_(col < key, and_(col == key, id_column < ident))
        else:
            after = or_(col > key, and_(col == key, id_column > ident))
        query = query.where(after)
    if sort.descending:
        query = query.order_by(col.desc(), id_column.desc())
    else:
        query = query.order_by(col.asc(), id_column.asc())
    return query.limit(limit + 1)


def next_cursor(rows: Sequence[Any], sort: Sort, key_of: str, limit: int) -> str | None:
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode(sort.name, last[key_of], last["id"])
