"""Webhook signatures and backoff, without a database (service/webhooks.py, docs/webhooks.md)."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import timedelta

from aftersales.service import webhooks as wh


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    secret, body, stamp = "whsec_test-secret-1234", b'{"id":1,"type":"OrderPlaced"}', 1772330400
    digest = hmac.new(secret.encode(), b"1772330400." + body, hashlib.sha256).hexdigest()
    assert wh.signature_header(secret, stamp, body) == f"t=1772330400,v1={digest}"
    header = wh.signature_header(secret, stamp, body)
    assert wh.verify_signature(secret, header, body, now=stamp + 300.0)
    assert not wh.verify_signature(secret, header, body, now=stamp + 300.5)
    assert wh.verify_signature(secret, header, body, now=stamp + 1000, tolerance=1000)
    assert not wh.verify_signature(secret, header.replace("v1=", "v0="), body, now=stamp)
    assert not wh.verify_signature(secret, header.upper(), body, now=stamp)


def test_backoff_doubles_from_30_seconds_with_jitter_and_stops_at_6_hours() -> None:
    policy, rng = wh.RetryPolicy(), random.Random(3)
    for attempt in range(1, 40):
        raw = min(30 * 2 ** (attempt - 1), 6 * 3600)
        for _ in range(20):
            wait = policy.delay(attempt, rng).total_seconds()
            assert 0.8 * raw <= wait <= min(1.2 * raw, 6 * 3600), (attempt, wait)
    assert wh.RetryPolicy(jitter=0).delay(1) == timedelta(seconds=30)
    assert wh.RetryPolicy(jitter=0).delay(11) == timedelta(hours=6)
    assert wh.RetryPolicy(jitter=0).delay(500) == timedelta(hours=6)
