"""The public jury (大众评审, IN-3): who may sit, how a panel is drawn, what a juror sees.

Pure: the service reads the candidates and the case; these functions decide. A draw is
reproducible from its seed (recorded in the case log), so anyone can check that the panel was
drawn as the rules say.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aftersales.domain.types import require_aware
from aftersales.policy.model import Policy

STANDINGS = ("good", "poor", "suspended")


@dataclass(frozen=True, slots=True)
class Account:
    """What eligibility looks at (§9: account age, real-name verification, good credit)."""

    id: str
    registered_at: datetime
    verified: bool
    standing: str


def eligible(account: Account, now: datetime, policy: Policy) -> bool:
    """May this account sit on a jury at `now` (before the no-link check, `draw`)?"""
    require_aware(now)
    jury = policy.jury
    return (now - account.registered_at >= timedelta(days=jury.min_account_age_days)
            and (account.verified or not jury.require_verified)
            and (account.standing == "good" or not jury.require_good_standing))


def draw(candidates: Iterable[str], linked: Iterable[str], size: int, seed: str
         ) -> tuple[str, ...]:
    """`size` jurors drawn at random (seeded) from the candidates with no link to either party;
    fewer when there are not enough (the caller refuses such a panel)."""
    pool = sorted(set(candidates) - set(linked))
    if len(pool) <= size:
        return tuple(random.Random(seed).sample(pool, len(pool)))
    return tuple(random.Random(seed).sample(pool, size))


_REDACTED = "[redacted]"


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with every identifying string (ids, tracking numbers, addresses) masked, longest
    first so that a shorter id inside a longer one does not leave a tail behind."""
    for secret in sorted({s for s in secrets if s and len(s) >= 2}, key=len, reverse=True):
        text = re.sub(re.escape(secret), _REDACTED, text, flags=re.IGNORECASE)
    return text


def anonymised(view: Mapping[str, Any], secrets: Sequence[str]) -> Any:
    """A JSON-like value with every string passed through `redact`."""
    if isinstance(view, Mapping):
        return {k: anonymised(v, secrets) for k, v in view.items()}
    if isinstance(view, list | tuple):
        return [anonymised(v, secrets) for v in view]
    if isinstance(view, str):
        return redact(view, secrets)
    return view
