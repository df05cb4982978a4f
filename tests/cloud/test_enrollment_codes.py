"""Enrollment codes in the store, on SQLite and PostgreSQL: used once, never after their
expiry, and found only by their digest."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from cloud.store.enrollment_codes import add_code, find_code, use_code
from cloud.store.times import utc_now

DIGEST = "ab" * 32


def test_a_code_is_used_once(engine: Engine) -> None:
    now = utc_now()
    add_code(engine, DIGEST, "site-7", now, now + timedelta(hours=1))
    found = find_code(engine, DIGEST)
    assert found is not None and (found.edge_id, found.used_at) == ("site-7", None)
    assert use_code(engine, DIGEST, now, "192.0.2.1", "1f")
    assert not use_code(engine, DIGEST, now, "192.0.2.2", "2f")
    used = find_code(engine, DIGEST)
    assert used is not None and used.used_at == now and used.used_by == "192.0.2.1"


def test_an_expired_or_unknown_code_is_not_used(engine: Engine) -> None:
    now = utc_now()
    add_code(engine, DIGEST, "site-7", now - timedelta(hours=2), now - timedelta(seconds=1))
    assert not use_code(engine, DIGEST, now, "192.0.2.1", "1f")
    assert not use_code(engine, "cd" * 32, now, "192.0.2.1", "1f")
    assert find_code(engine, "cd" * 32) is None
    expired = find_code(engine, DIGEST)
    assert expired is not None and expired.used_at is None
