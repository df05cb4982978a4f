"""Enrollment codes in the store, on SQLite and PostgreSQL: used once, never after their
expiry, found only by their digest, and never for an edge id with a live identity unless
made to replace it (even when two enrollments race)."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import Engine, insert

from cloud.store.enrollment_codes import add_code, find_code, live_identity, use_code
from cloud.store.schema import edges
from cloud.store.times import utc_now

DIGEST = "ab" * 32
OTHER = "cd" * 32


def test_a_code_is_used_once(engine: Engine) -> None:
    now = utc_now()
    later = now + timedelta(days=730)
    add_code(engine, DIGEST, "site-7", now, now + timedelta(hours=1))
    found = find_code(engine, DIGEST)
    assert found is not None and (found.edge_id, found.used_at) == ("site-7", None)
    assert use_code(engine, DIGEST, now, "192.0.2.1", "1f", later) == ("used", None)
    assert use_code(engine, DIGEST, now, "192.0.2.2", "2f", later) == ("gone", None)
    used = find_code(engine, DIGEST)
    assert used is not None and used.used_at == now and used.used_by == "192.0.2.1"


def test_an_expired_or_unknown_code_is_not_used(engine: Engine) -> None:
    now = utc_now()
    later = now + timedelta(days=730)
    add_code(engine, DIGEST, "site-7", now - timedelta(hours=2), now - timedelta(seconds=1))
    assert use_code(engine, DIGEST, now, "192.0.2.1", "1f", later)[0] == "gone"
    assert use_code(engine, "ef" * 32, now, "192.0.2.1", "1f", later)[0] == "gone"
    assert find_code(engine, "ef" * 32) is None
    expired = find_code(engine, DIGEST)
    assert expired is not None and expired.used_at is None


def test_a_second_code_cannot_enroll_an_enrolled_edge_unless_made_to_replace_it(
    engine: Engine,
) -> None:
    now = utc_now()
    hour = now + timedelta(hours=1)
    add_code(engine, DIGEST, "site-7", now, hour)
    add_code(engine, OTHER, "site-7", now, hour)
    add_code(engine, "ef" * 32, "site-7", now, hour, replaces_identity=True)
    assert live_identity(engine, "site-7", now) is None
    assert use_code(engine, DIGEST, now, "192.0.2.1", "1f", now + timedelta(days=1))[0] == "used"
    outcome, live = use_code(engine, OTHER, now, "192.0.2.9", "2f", now + timedelta(days=1))
    assert outcome == "identity" and live is not None and "serial 1f" in live
    unused = find_code(engine, OTHER)
    assert unused is not None and unused.used_at is None
    assert use_code(engine, "ef" * 32, now, "192.0.2.1", "3f", now + timedelta(days=1)) == (
        "used",
        None,
    )
    # Once its certificates have expired, the identity is no longer live.
    assert live_identity(engine, "site-7", now + timedelta(days=2)) is None


def test_an_edge_in_touch_has_a_live_identity(engine: Engine) -> None:
    now = utc_now()
    with engine.begin() as connection:
        connection.execute(insert(edges).values(id="site-8", created_at=now, first_seen_at=now))
    live = live_identity(engine, "site-8", now)
    assert live is not None and "in touch" in live


def _race(engine: Engine, edge_id: str, digests: list[str]) -> list[str]:
    """Use every code at once, from one thread each; the outcomes."""
    now = utc_now()
    for digest in digests:
        add_code(engine, digest, edge_id, now, now + timedelta(hours=1))
    outcomes: list[str] = []
    start = threading.Barrier(len(digests))

    def enroll(digest: str) -> None:
        start.wait()
        outcome, _ = use_code(engine, digest, now, "192.0.2.1", digest[:4], now + timedelta(1))
        outcomes.append(outcome)

    threads = [threading.Thread(target=enroll, args=(digest,)) for digest in digests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(outcomes)


def test_two_first_enrollments_racing_enroll_one(engine: Engine) -> None:
    for round_ in range(5):
        digests = [f"{round_:02x}{n:02x}" * 16 for n in range(1, 9)]
        assert _race(engine, f"race-{round_}", digests) == ["identity"] * 7 + ["used"]
