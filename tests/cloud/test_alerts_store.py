"""The store under the alerts: presence history, refusals over time, alerts raised and
cleared once, notices claimed once, commands with who asked, the upgrade of an existing
store. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

from alembic import command
from sqlalchemy import Engine, insert, text

from cloud.store import alerts as store
from cloud.store.alerts import Clearing, NewAlert
from cloud.store.database import alembic_config, create_store_engine, open_store
from cloud.store.desired import create_command, list_commands
from cloud.store.ingest import record_rejection, record_status
from cloud.store.presence import presence_history
from cloud.store.schema import alerts, edge_presence, edges
from cloud.store.times import utc_now
from tests.cloud.payloads import status
from tests.cloud.rows import count, rows

EDGE = "site-7"


def test_presence_history_holds_each_change_once(engine: Engine) -> None:
    start = utc_now()
    moments = [start + timedelta(seconds=n) for n in range(5)]
    for state, at in zip(
        ["online", "online", "offline", "offline", "online"], moments, strict=True
    ):
        assert record_status(engine, EDGE, status(state), now=at)
    history = presence_history(engine, EDGE)
    assert [(change.online, change.at) for _, change in history] == [
        (True, moments[4]),
        (False, moments[2]),
        (True, moments[0]),
    ]
    (edge,) = rows(engine, edges)
    assert edge.state == "online" and edge.state_since == moments[4]
    # Pages: the ids go down.
    (first,) = presence_history(engine, EDGE, limit=1)
    assert [change.at for _, change in presence_history(engine, EDGE, before=first[0])] == [
        moments[2],
        moments[0],
    ]


def test_a_flapping_edge_keeps_only_its_newest_changes(engine: Engine) -> None:
    start = utc_now()
    for n in range(9):
        state = "online" if n % 2 == 0 else "offline"
        record_status(
            engine, EDGE, status(state), now=start + timedelta(seconds=n), presence_history=3
        )
    record_status(engine, "site-8", status("online"), now=start, presence_history=3)
    kept = presence_history(engine, EDGE)
    assert [change.at for _, change in kept] == [start + timedelta(seconds=n) for n in (8, 7, 6)]
    assert count(engine, edge_presence) == 4  # another edge's history is its own


def test_refusals_are_counted_over_time_per_source(engine: Engine) -> None:
    now = utc_now()
    for seconds in (0, 1, 2, 200, 900):
        record_rejection(engine, EDGE, "invalid", "x", now=now - timedelta(seconds=seconds))
    record_rejection(engine, "site-8", "not_json", "x", now=now)
    seen = store.observe(engine, now, refusals_window=600)
    assert {source: spike.count for source, spike in seen.refusals.items()} == {
        EDGE: 4,
        "site-8": 1,
    }
    assert seen.refusals[EDGE].first_at <= now - timedelta(seconds=200)
    # Buckets past the window are pruned; the rest stay.
    store.prune(engine, now - timedelta(days=90), now - timedelta(seconds=600))
    later = store.observe(engine, now, refusals_window=3600)
    assert later.refusals[EDGE].count == 4


def new_alert(subject: str = "") -> NewAlert:
    return NewAlert("edge_offline", EDGE, subject, utc_now(), f"edge {EDGE} offline")


def test_an_alert_is_raised_once_while_open_and_cleared_once(engine: Engine) -> None:
    now = utc_now()
    raised, _ = store.raise_and_clear(engine, [new_alert()], [], now, notify=True)
    ((alert_id, _),) = raised
    again, _ = store.raise_and_clear(engine, [new_alert()], [], now, notify=True)
    assert again == []
    _, cleared = store.raise_and_clear(engine, [], [Clearing(alert_id, "back")], now, notify=True)
    assert [clear.alert_id for clear in cleared] == [alert_id]
    _, twice = store.raise_and_clear(engine, [], [Clearing(alert_id, "back")], now, notify=True)
    assert twice == []
    # The same condition later is a new alert.
    raised, _ = store.raise_and_clear(engine, [new_alert()], [], now, notify=True)
    assert raised[0][0] != alert_id
    shown = store.list_alerts(engine)
    assert [(alert.open, alert.clear_reason) for alert in shown] == [(True, None), (False, "back")]
    assert [alert.id for alert in store.list_alerts(engine, open_only=True)] == [raised[0][0]]


def test_replicas_raising_one_alert_at_once_raise_it_once(engine: Engine) -> None:
    replicas = 6
    start = threading.Barrier(replicas)
    results: list[int] = []

    def replica() -> None:
        start.wait()
        raised, _ = store.raise_and_clear(engine, [new_alert()], [], utc_now(), notify=True)
        results.append(len(raised))

    threads = [threading.Thread(target=replica) for _ in range(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0] * (replicas - 1) + [1]
    assert count(engine, alerts) == 1


def test_a_notice_is_claimed_by_one_replica_and_a_clear_waits_for_it(engine: Engine) -> None:
    now = utc_now()
    ((alert_id, _),), _ = store.raise_and_clear(engine, [new_alert()], [], now, notify=True)
    (due,) = store.due_notices(engine, now, 10)
    lease = now + timedelta(seconds=40)
    claimed = store.claim_notice(engine, due, now, lease)
    assert claimed is not None and claimed.state == "raised" and claimed.notify_attempts == 1
    assert store.claim_notice(engine, due, now, lease) is None  # the other replica
    assert store.due_notices(engine, now, 10) == []  # leased
    # Cleared while the raised notice is under way: the cleared one follows it.
    store.raise_and_clear(engine, [], [Clearing(alert_id, "back")], now, notify=True)
    assert store.due_notices(engine, now, 10) == []
    store.notice_sent(engine, claimed, "raised", now)
    (follow,) = store.due_notices(engine, now, 10)
    assert follow.notified == "raised" and follow.state == "cleared"
    assert follow.notify_attempts == 0


def test_a_failed_notice_waits_and_a_spent_one_is_given_up(engine: Engine) -> None:
    now = utc_now()
    store.raise_and_clear(engine, [new_alert()], [], now, notify=True)
    (due,) = store.due_notices(engine, now, 10)
    claimed = store.claim_notice(engine, due, now, now + timedelta(seconds=40))
    assert claimed is not None
    store.notice_failed(engine, claimed, "HTTP 503", now + timedelta(seconds=5))
    assert store.due_notices(engine, now, 10) == []
    (retry,) = store.due_notices(engine, now + timedelta(seconds=5), 10)
    assert retry.notify_error == "HTTP 503" and retry.notify_attempts == 1
    claimed = store.claim_notice(
        engine, retry, now + timedelta(seconds=5), now + timedelta(seconds=60)
    )
    assert claimed is not None
    store.notice_failed(engine, claimed, "given up: HTTP 503", None)
    assert store.due_notices(engine, now + timedelta(days=365), 10) == []
    (alert,) = store.list_alerts(engine)
    assert alert.notified == "none" and alert.notify_error == "given up: HTTP 503"


def test_without_a_webhook_nothing_is_due(engine: Engine) -> None:
    now = utc_now()
    ((alert_id, _),), _ = store.raise_and_clear(engine, [new_alert()], [], now, notify=False)
    store.raise_and_clear(engine, [], [Clearing(alert_id, "back")], now, notify=False)
    assert store.due_notices(engine, now + timedelta(days=1), 10) == []


def test_cleared_alerts_are_kept_for_their_days(engine: Engine) -> None:
    now = utc_now()
    ((old_id, _),), _ = store.raise_and_clear(engine, [new_alert()], [], now, notify=False)
    store.raise_and_clear(
        engine, [], [Clearing(old_id, "back")], now - timedelta(days=91), notify=False
    )
    store.raise_and_clear(engine, [new_alert()], [], now, notify=False)
    assert store.prune(engine, now - timedelta(days=90), now) == (1, 0)
    assert [alert.open for alert in store.list_alerts(engine)] == [True]


def test_a_command_keeps_who_asked_for_it(engine: Engine) -> None:
    later = utc_now() + timedelta(minutes=5)
    create_command(engine, EDGE, "CP-1", "reset", {}, later, actor="ops@example.com")
    (shown,) = list_commands(engine, EDGE)
    assert shown["actor"] == "ops@example.com"


def test_an_upgraded_store_starts_each_edges_history_with_its_last_state(
    empty_database_url: str,
) -> None:
    engine = create_store_engine(empty_database_url)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")  # the revision before presence history
    heard = utc_now() - timedelta(hours=2)
    with engine.begin() as connection:
        for edge_id, state in (("site-1", "offline"), ("site-2", "online"), ("site-3", "unknown")):
            connection.execute(
                insert(edges).values(
                    id=edge_id,
                    state=state,
                    status_at=None if state == "unknown" else heard,
                    created_at=heard,
                )
            )
        connection.execute(
            text(
                "INSERT INTO commands (id, edge_id, charger_id, action, arguments, "
                "expires_at, created_at, status, detail) VALUES ('c1', 'site-1', 'CP-1', "
                "'reset', '{}', :at, :at, 'pending', '')"
            ),
            {"at": heard},
        )
    engine.dispose()
    upgraded = open_store(empty_database_url)
    try:
        assert {row.id: row.state_since for row in rows(upgraded, edges, edges.c.id)} == {
            "site-1": heard,
            "site-2": heard,
            "site-3": None,
        }
        assert [
            (row.edge_id, row.online, row.at)
            for row in rows(upgraded, edge_presence, edge_presence.c.edge_id)
        ] == [
            ("site-1", False, heard),
            ("site-2", True, heard),
        ]
        assert list_commands(upgraded, "site-1")[0]["actor"] is None
    finally:
        upgraded.dispose()
