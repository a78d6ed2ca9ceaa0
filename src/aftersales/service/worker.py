"""The deadline worker: claims due cases and orders in batches and applies automatic outcomes.

Safe to run as many processes at once: on PostgreSQL each batch is claimed with
`FOR UPDATE SKIP LOCKED`, so two workers never hold the same case; on SQLite write transactions
are serialised (BEGIN IMMEDIATE). Each item runs in a savepoint, so one conflicting item (a
seller acted in the same instant) is skipped and retried next round without losing the batch.
Re-running never applies a timeout twice: applying it moves the deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aftersales.domain.errors import AftersalesError, ConcurrencyConflict
from aftersales.service.commands import Published
from aftersales.service.handlers import Service
from aftersales.store.repository import Repository
from aftersales.store.uow import UnitOfWork

if TYPE_CHECKING:
    from aftersales.service.webhooks import Sender

log = logging.getLogger("aftersales.worker")


@dataclass
class RunStats:
    cases: int = 0
    orders: int = 0
    conflicts: int = 0
    failed: set[str] = field(default_factory=set)  # refused this round; not claimed again
    events: list[Published] = field(default_factory=list)
    webhooks: int = 0  # webhook deliveries attempted (serve_forever only)


def run_due(service: Service, now: datetime, *, batch: int = 200,
            max_batches: int | None = None) -> RunStats:
    """Fire everything due at `now`. Returns what was applied."""
    stats = RunStats()
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        with service.uow() as uow:  # one transaction a round: cases, then orders
            n_cases = _batch(uow, now, batch, stats, Repository.claim_due_cases,
                             service.fire_case_deadline, "cases")
            n_orders = _batch(uow, now, batch, stats, Repository.claim_due_orders,
                              service.fire_order_deadline, "orders")
            uow.commit()
        if n_cases < batch and n_orders < batch:
            break
    return stats


def _batch(uow: UnitOfWork, now: datetime, size: int, stats: RunStats,
           claim: Callable[[Repository, datetime, int, Collection[str]], list[str]],
           fire: Callable[[Repository, str, datetime], list[Published]], what: str) -> int:
    """Claim up to `size` due items and fire each in its own savepoint (not committed here)."""
    assert uow.conn is not None
    ids = claim(uow.repo, now, size, stats.failed)
    for item in ids:
        savepoint = uow.conn.begin_nested()
        try:
            events = fire(uow.repo, item, now)
            uow.repo.add_outbox(events)  # with the change, as every command's events
            savepoint.commit()
        except ConcurrencyConflict:
            savepoint.rollback()
            stats.conflicts += 1
            stats.failed.add(item)  # the winner moved it on; look again next round
            continue
        except AftersalesError as exc:  # a rule refused the timeout: log it, keep going
            savepoint.rollback()
            log.error("deadline of %s %s not applied: %s", what, item, exc)
            stats.failed.add(item)
            continue
        if events:
            stats.events += events
            if what == "cases":
                stats.cases += 1
            else:
                stats.orders += 1
    return len(ids)


def advance(service: Service, until: datetime, start: datetime | None = None) -> RunStats:
    """Simulated time: fire every deadline up to `until`, each at its own due time, in order
    (the scenario runner and the demo use this; production runs `serve_forever`)."""
    total = RunStats()
    last: datetime | None = None
    clock = start
    while True:
        with service.uow() as uow:
            due = uow.repo.next_due()
        if due is None or due > until:
            break
        # Never run the clock backwards: a timer that resumes overdue (auto-confirm frozen by
        # a case that has just closed) fires at the current simulated time, not in the past.
        at = clock = max(due, clock) if clock is not None else due
        stats = run_due(service, at)
        total.cases += stats.cases
        total.orders += stats.orders
        total.conflicts += stats.conflicts
        total.events += stats.events
        if not stats.events and due == last:
            break  # the same item is due again and nothing fired: never spin
        last = due
    return total


def serve_forever(service: Service, *, interval: float = 5.0, batch: int = 200,
                  once: bool = False, clock: Callable[[], datetime] | None = None,
                  sender: Sender | None = None) -> RunStats:
    """The production loop: read the clock once per round, fire what is due, then fan out and
    send webhooks (service/webhooks.py; `sender` defaults to HTTP), sleep."""
    from aftersales.service import webhooks

    now_fn = clock or (lambda: datetime.now(UTC))
    total = RunStats()
    while True:
        stats = run_due(service, now_fn(), batch=batch)
        total.cases += stats.cases
        total.orders += stats.orders
        total.conflicts += stats.conflicts
        if stats.cases or stats.orders:
            log.info("fired %d case and %d order deadlines", stats.cases, stats.orders)
        try:
            hooks = webhooks.run_round(service, now_fn(), sender=sender, batch=batch)
            total.webhooks += hooks.delivery.attempted
        except Exception:  # a webhook problem never stops the deadlines
            log.exception("webhook round failed; retrying next round")
        if once:
            return total
        time.sleep(interval)
