"""Read carrier tracking files (CSV or JSON Lines) into scans, validating every row first.

A file is all or nothing: any bad row (missing column, bad time, unknown event kind) is
reported with its line number and reason, and nothing from the file is applied.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aftersales.domain.types import SYSTEM, ScanKind
from aftersales.service.commands import ImportScans, RecordScan

REQUIRED = ("tracking_no", "event", "at")


class IngestError(Exception):
    """The file cannot be applied; `problems` lists (line, reason)."""

    def __init__(self, path: Path, problems: list[tuple[int, str]]) -> None:
        shown = "\n".join(f"  line {line}: {why}" for line, why in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{path}: {len(problems)} bad row(s), nothing applied\n{shown}{more}")
        self.path, self.problems = path, problems


@dataclass(frozen=True)
class Row:
    line: int
    scan: RecordScan
    at: datetime


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".jsonl", ".ndjson"):
        out = []
        for n, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise IngestError(path, [(n, f"not JSON: {exc.msg}")]) from None
            if not isinstance(value, dict):
                raise IngestError(path, [(n, "each line must be a JSON object")])
            out.append((n, value))
        return out
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise IngestError(path, [(1, f"missing column(s): {', '.join(missing)}")])
    return [(n, row) for n, row in enumerate(reader, start=2)]


def read_scans(path: Path) -> list[Row]:
    problems: list[tuple[int, str]] = []
    rows: list[Row] = []
    for line, raw in _rows(path):
        missing = [c for c in REQUIRED if not str(raw.get(c) or "").strip()]
        if missing:
            problems.append((line, f"missing {', '.join(missing)}"))
            continue
        try:
            kind = ScanKind(str(raw["event"]).strip())
        except ValueError:
            problems.append((line, f"unknown event {raw['event']!r} (one of "
                                   f"{', '.join(k.value for k in ScanKind)})"))
            continue
        try:
            at = datetime.fromisoformat(str(raw["at"]).strip())
        except ValueError:
            problems.append((line, f"bad time {raw['at']!r}: use ISO 8601 with an offset"))
            continue
        if at.tzinfo is None:
            problems.append((line, f"time {raw['at']!r} has no timezone offset"))
            continue
        city = str(raw.get("city") or "").strip() or None
        rows.append(Row(line, RecordScan(actor=SYSTEM, tracking=str(raw["tracking_no"]).strip(),
                                         event=kind, city=city), at))
    if problems:
        raise IngestError(path, problems)
    return rows


def as_command(rows: list[Row]) -> ImportScans:
    return ImportScans(actor=SYSTEM, scans=tuple(r.scan for r in rows),
                       at=tuple(r.at for r in rows))
