"""The tamper-evident hash chain of each case's event log.

Every `case_events` row stores `hash = entry_hash(prev_hash, case_id, seq, name, at, actor, rule,
changes)` and the `prev_hash` of the entry before it (`GENESIS` for entry 1); `cases.log_head` is
the hash of the last entry. Editing an entry changes its hash, removing one leaves a gap or a
broken link, removing the tail leaves the head pointing past the end: `verify` names each.

The hash is over a canonical JSON encoding, so the same entry hashes the same whether `changes`
was just encoded, read back from SQLite's JSON text or from PostgreSQL's JSONB (which reorders
keys and turns a number such as 1e20 into an integer).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from aftersales.store import tables as t

GENESIS = "0" * 64
"""The `prev_hash` of a log's first entry, and the head of a case with no entries."""


# json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False),
# built once (json.dumps builds an encoder per call when given options).
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=False)
# The same encoding straight from json's C encoder, made once (`JSONEncoder.encode` makes one
# per call), without the circular-reference bookkeeping: `_canonical` builds a fresh tree.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode = (_c_make_encoder(None, _ENCODER.default, json.encoder.encode_basestring, None, ":",
                             ",", True, False, False) if _c_make_encoder is not None else None)


def _encode(value: list[Any]) -> str:
    return "".join(_c_encode(value, 0)) if _c_encode is not None else _ENCODER.encode(value)
_FLAT = frozenset({str, bool, int, type(None)})  # canonical as they are (exact types only)


def _canonical(value: Any, where: str = "changes") -> Any:
    """A JSON value in the one form both databases give back: dicts with str keys, lists, str,
    bool, None, int, and float only when not integral (3600.0 and 1e20 become ints, as PostgreSQL
    numerics read back). Anything else is refused rather than hashed ambiguously."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is dict and all(type(k) is str for k in value):  # the usual case, no copy of keys
        return {key: _canonical(item, f"{where}.{key}") if type(item) not in _FLAT else item
                for key, item in value.items()}
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)  # an IntEnum hashes as its number
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} cannot be stored as JSON")
        if value.is_integer():
            return int(Decimal(repr(value)))  # 1e20 -> 100000000000000000000, as JSONB gives it
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is not a string")
            out[str(key)] = _canonical(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} is not a JSON value")


def entry_hash(prev: str, case_id: str, seq: int, name: str, at: datetime, actor: str,
               rule: str | None, changes: Any) -> str:
    """SHA-256 hex of one log entry chained to the previous entry's hash `prev`. `changes` is
    the JSON value stored in the `changes` column; `at` must be timezone-aware."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"entry time must be timezone-aware, got {at.isoformat()}")
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise TypeError(f"seq must be an int, got {seq!r}")
    at_utc = at.astimezone(UTC).isoformat(timespec="microseconds")
    text = _encode([prev, case_id, seq, name, at_utc, actor, rule, _canonical(changes)])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Break:
    """The first place a case's log is not what was written."""

    case_id: str
    seq: int
    reason: str


def _span(first: int, last: int) -> str:
    return f"entry {first}" if first == last else f"entries {first}-{last}"


def _short(h: str | None) -> str:
    return "none" if h is None else h[:12]


class _CaseCheck:
    """The state of checking one case's entries in order."""

    def __init__(self, case_id: str, head: str | None) -> None:
        self.case_id, self.head = case_id, head
        self.last_seq, self.last_hash = 0, GENESIS
        self.seen: dict[str, int] = {}  # hash -> seq, to say where a stale head points
        self.broken: Break | None = None

    def _break(self, seq: int, reason: str) -> None:
        self.broken = Break(self.case_id, seq, reason)

    def entry(self, row: Any) -> None:
        if self.broken is not None:
            return
        seq: int = row.seq
        expected = self.last_seq + 1
        if seq != expected:
            if seq > expected:
                where = (f"the log jumps from entry {self.last_seq} to {seq}" if self.last_seq
                         else f"the log starts at entry {seq}")
                self._break(expected, f"{_span(expected, seq - 1)} missing ({where}: deleted)")
            else:
                self._break(seq, f"entry {seq} out of order after entry {self.last_seq}")
            return
        if not row.hash:
            self._break(seq, f"entry {seq}: no hash stored (written without the audit chain)")
            return
        if row.prev_hash != self.last_hash:
            before = f"entry {seq - 1}'s hash" if seq > 1 else "the start of the log"
            self._break(seq, f"entry {seq}: does not follow {before} (prev_hash "
                             f"{_short(row.prev_hash)}, expected {_short(self.last_hash)}): an "
                             f"entry before it was rewritten, removed or inserted")
            return
        try:
            actual = entry_hash(row.prev_hash, row.case_id, seq, row.name, row.at, row.actor,
                                row.rule, row.changes)
        except (TypeError, ValueError) as exc:
            self._break(seq, f"entry {seq}: cannot be hashed ({exc})")
            return
        if actual != row.hash:
            self._break(seq, f"entry {seq}: content does not match its hash "
                             f"(edited after it was written)")
            return
        self.last_seq, self.last_hash = seq, row.hash
        self.seen[row.hash] = seq

    def finish(self) -> Break | None:
        if self.broken is not None:
            return self.broken
        head, last = self.head, self.last_seq
        if head == self.last_hash:
            return None
        if not head:
            self._break(last, f"the case has no log head (cases.log_head is empty) but its log "
                              f"ends at entry {last}")
        elif head in self.seen:
            at = self.seen[head]
            self._break(at + 1, f"{_span(at + 1, last)} not covered by the case's head, "
                                f"which ends at entry {at} (appended without updating the head)")
        else:
            self._break(last + 1, f"entry {last + 1} missing: the log ends at entry {last} but "
                                  f"the case's head is a later hash (entries deleted from the "
                                  f"end, or the head was changed)")
        return self.broken


def _entries(conn: sa.Connection, case_id: str | None) -> Iterator[Any]:
    ev, cases = t.case_events, t.cases
    stmt = (sa.select(ev.c.case_id, ev.c.seq, ev.c.name, ev.c.at, ev.c.actor, ev.c.rule,
                      ev.c.changes, ev.c.prev_hash, ev.c.hash,
                      cases.c.log_head, cases.c.id.label("case_row"))
            .select_from(ev.outerjoin(cases, cases.c.id == ev.c.case_id))
            .order_by(ev.c.case_id, ev.c.seq))
    if case_id is not None:
        stmt = stmt.where(ev.c.case_id == case_id)
    # server-side cursor on PostgreSQL: rows arrive in batches, never the whole table at once
    yield from conn.execute(stmt, execution_options={"yield_per": 1000})


def _empty_logs(conn: sa.Connection, case_id: str | None) -> Iterator[Any]:
    """Cases with no entry at all: their head must be empty ("" or NULL) or GENESIS."""
    ev, cases = t.case_events, t.cases
    stmt = (sa.select(cases.c.id, cases.c.log_head)
            .where(~sa.exists().where(ev.c.case_id == cases.c.id))
            .order_by(cases.c.id))
    if case_id is not None:
        stmt = stmt.where(cases.c.id == case_id)
    yield from conn.execute(stmt, execution_options={"yield_per": 1000})


def verify(conn: sa.Connection, case_id: str | None = None) -> tuple[int, list[Break]]:
    """Check the hash chain of one case's log, or of every case: (entries read, the first break
    of each broken case, in case id order). Reads the log as a stream, one case at a time."""
    checked = 0
    breaks: list[Break] = []
    current: _CaseCheck | None = None
    for row in _entries(conn, case_id):
        checked += 1
        if current is None or row.case_id != current.case_id:
            if current is not None and (found := current.finish()) is not None:
                breaks.append(found)
            current = _CaseCheck(row.case_id, row.log_head)
            if row.case_row is None:
                current.broken = Break(row.case_id, row.seq,
                                       "the log has entries but there is no such case")
        current.entry(row)
    if current is not None and (found := current.finish()) is not None:
        breaks.append(found)
    for row in _empty_logs(conn, case_id):
        if row.log_head not in (None, "", GENESIS):
            breaks.append(Break(row.id, 1, "entry 1 missing: the log is empty but the case's "
                                           "head says it had entries (deleted)"))
    breaks.sort(key=lambda b: b.case_id)
    return checked, breaks
