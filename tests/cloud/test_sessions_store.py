"""Sessions as the store keeps and reads them, events in through the real ingest, on
SQLite and PostgreSQL: account, listing order, meter samples (bounded), sync delay,
cost when a session stops and when tariffs change, pages, sums and month closing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count as numbers
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, text

from cloud.store.database import alembic_config, open_store
from cloud.store.ingest import record_status, store_batch
from cloud.store.schema import events, meter_samples
from cloud.store.sessions import (
    Cursor,
    InvalidCursor,
    Month,
    SessionFilter,
    all_sessions,
    get_session,
    meter_samples_of,
    month_closings,
    session_page,
    session_sums,
)
from cloud.store.tariffs import (
    TariffRefused,
    TariffSpec,
    create_tariff,
    delete_tariff,
    reprice_all,
    update_tariff,
)
from cloud.store.times import iso, parse_time
from cloud.tariffs import Band
from tests.cloud.payloads import batch, event, status
from tests.cloud.rows import count

UTC_ZONE = ZoneInfo("UTC")
T0 = parse_time("2026-03-02T10:00:00Z")  # a Monday


class Site:
    """One edge sending events in order; `now` is when the cloud receives them."""

    def __init__(self, engine: Engine, edge_id: str = "site-1") -> None:
        self.engine = engine
        self.edge_id = edge_id
        self.seqs = numbers(1)

    def send(
        self, *datas: dict[str, Any], at: datetime, now: datetime | None = None, **limits: Any
    ) -> None:
        payload = batch(self.edge_id, [event(next(self.seqs), data, iso(at)) for data in datas])
        result = store_batch(
            self.engine,
            self.edge_id,
            payload,
            1_048_576,
            now=now or at + timedelta(seconds=1),
            **limits,
        )
        assert result.rejected is None and not result.quarantined, result

    def session(
        self,
        transaction_id: int,
        start: datetime,
        minutes: int = 60,
        energy_wh: int = 10_000,
        *,
        card: str = "CARD-1",
        parent: str | None = None,
        charger: str = "CP-1",
        samples: int = 0,
        received: timedelta = timedelta(seconds=1),
    ) -> None:
        """A whole session: started, `samples` meter readings evenly, stopped."""
        started = {
            "kind": "transaction.started",
            "charger_id": charger,
            "connector_id": 1,
            "transaction_id": transaction_id,
            "id_tag": card,
            "id_tag_status": "Accepted",
            "meter_start_wh": 500,
            "started_at": iso(start),
        }
        if parent is not None:
            started["parent_id_tag"] = parent
        self.send(started, at=start, now=start + received)
        stop = start + timedelta(minutes=minutes)
        for index in range(1, samples + 1):
            moment = start + (stop - start) * index / (samples + 1)
            wh = energy_wh * index // (samples + 1)
            self.send(meter(transaction_id, wh, charger), at=moment, now=moment + received)
        self.send(stopped(transaction_id, energy_wh, stop, charger), at=stop, now=stop + received)


def meter(transaction_id: int, energy_wh: int, charger: str = "CP-1") -> dict[str, Any]:
    return {
        "kind": "transaction.meter",
        "charger_id": charger,
        "transaction_id": transaction_id,
        "meter_wh": 500 + energy_wh,
        "energy_wh": energy_wh,
        "power_w": 7400.0,
    }


def stopped(
    transaction_id: int, energy_wh: int, at: datetime, charger: str = "CP-1"
) -> dict[str, Any]:
    return {
        "kind": "transaction.stopped",
        "charger_id": charger,
        "transaction_id": transaction_id,
        "meter_stop_wh": 500 + energy_wh,
        "energy_wh": energy_wh,
        "stopped_at": iso(at),
        "reason": "Local",
    }


def flat(price: str, valid_from: datetime, edge_id: str | None = None, **fields: Any) -> TariffSpec:
    from decimal import Decimal

    from cloud.tariffs import price_from_decimal

    return TariffSpec(
        name=fields.pop("name", "standard"),
        currency="EUR",
        valid_from=valid_from,
        price=price_from_decimal(Decimal(price)),
        edge_id=edge_id,
        **fields,
    )


def test_a_session_keeps_its_account_curve_and_sync_delay(engine: Engine) -> None:
    site = Site(engine)
    site.session(7, T0, minutes=60, energy_wh=6000, parent="FLAT-3", samples=5)
    session = get_session(engine, "site-1", 7)
    assert session is not None
    assert (session.account, session.id_tag, session.session_at) == ("FLAT-3", "CARD-1", T0)
    assert session.energy_wh == 6000 and not session.running
    assert session.duration_s(datetime.now(UTC)) == 3600.0
    assert session.synced_at == T0 + timedelta(minutes=60, seconds=1)
    assert session.sync_delay_s == 1.0 and session.recorded_offline(300) is False
    curve = meter_samples_of(engine, "site-1", 7)
    assert [sample.energy_wh for sample in curve] == [1000, 2000, 3000, 4000, 5000]
    assert curve[0].at == T0 + timedelta(minutes=10) and curve[0].power_w == 7400.0
    # Not priced: no tariff covers it.
    assert (session.cost_minor, session.tariff_id, session.cost) == (None, None, None)


def test_a_session_recorded_offline_says_when_it_synced(engine: Engine) -> None:
    site = Site(engine)
    # The site was offline for two hours: its events arrive together, late.
    site.session(8, T0, minutes=30, received=timedelta(hours=2))
    session = get_session(engine, "site-1", 8)
    assert session is not None and session.recorded_offline(300) is True
    assert session.sync_delay_s == 7200.0
    assert session.synced_at == T0 + timedelta(minutes=30, hours=2)
    # A session whose start was live and whose stop came late is offline too.
    site.send(
        {
            "kind": "transaction.started",
            "charger_id": "CP-1",
            "connector_id": 1,
            "transaction_id": 9,
            "id_tag": "CARD-1",
            "id_tag_status": "Accepted",
            "meter_start_wh": 0,
            "started_at": iso(T0),
        },
        at=T0,
    )
    site.send(
        stopped(9, 100, T0 + timedelta(minutes=5)),
        at=T0 + timedelta(minutes=5),
        now=T0 + timedelta(hours=3),
    )
    late = get_session(engine, "site-1", 9)
    assert late is not None and late.recorded_offline(300) is True


def test_meter_samples_are_bounded_per_transaction_and_every_event_is_kept(
    engine: Engine,
) -> None:
    site = Site(engine)
    site.session(1, T0, samples=0)
    site.send(*[meter(2, wh) for wh in range(100, 600, 100)], at=T0, max_meter_samples=3)
    site.send(meter(2, 700), at=T0 + timedelta(minutes=1), max_meter_samples=3)
    assert [s.energy_wh for s in meter_samples_of(engine, "site-1", 2)] == [100, 200, 300]
    assert count(engine, meter_samples) == 3
    assert count(engine, events) == 2 + 6  # the session's start and stop, every meter event
    session = get_session(engine, "site-1", 2)
    assert session is not None and session.energy_wh == 700  # the figures still follow


def test_a_session_whose_start_never_came_is_listed_by_its_first_event(engine: Engine) -> None:
    site = Site(engine)
    site.send(meter(5, 100), at=T0)
    site.send(meter(5, 200), at=T0 + timedelta(hours=1))
    session = get_session(engine, "site-1", 5)
    assert session is not None and session.started_at is None
    assert session.session_at == T0  # not moved by the later meter
    assert session.duration_s(T0) is None


def test_a_stop_is_priced_by_the_tariff_in_force_at_its_start_site_first(engine: Engine) -> None:
    create_tariff(engine, flat("0.30", T0 - timedelta(days=30)))
    create_tariff(engine, flat("0.20", T0 + timedelta(days=1), name="cheaper"))
    site_own = create_tariff(engine, flat("0.50", T0 + timedelta(days=2), edge_id="site-2"))
    one, two = Site(engine, "site-1"), Site(engine, "site-2")
    one.session(1, T0, energy_wh=10_000)  # 10 kWh at 0.30
    one.session(2, T0 + timedelta(days=1, hours=1), energy_wh=10_000)  # at 0.20
    two.session(1, T0 + timedelta(days=1, hours=1), energy_wh=10_000)  # the default, 0.20
    two.session(2, T0 + timedelta(days=3), energy_wh=10_000)  # its own, 0.50
    costs = {
        (s.edge_id, s.transaction_id): (s.cost_minor, s.cost, s.currency, s.tariff_name)
        for s in all_sessions(engine, SessionFilter())
    }
    assert costs == {
        ("site-1", 1): (300, "3.00", "EUR", "standard"),
        ("site-1", 2): (200, "2.00", "EUR", "cheaper"),
        ("site-2", 1): (200, "2.00", "EUR", "cheaper"),
        ("site-2", 2): (500, "5.00", "EUR", "standard"),
    }
    assert site_own.jobs == ()  # no session yet: nothing to price again


def test_a_banded_tariff_prices_the_stop_from_its_meter_curve(engine: Engine) -> None:
    # Weekdays 07:00-22:00 at 0.40, else 0.20.
    peak = Band(frozenset(range(5)), 7 * 60, 22 * 60, 400_000)
    create_tariff(engine, flat("0.20", T0 - timedelta(days=1), bands=(peak,)))
    site = Site(engine)
    # Monday 21:00 to 23:00, 12 kWh: with 11 samples the energy is even over the two
    # hours: 6 kWh at 0.40 + 6 kWh at 0.20 = 3.60.
    evening = parse_time("2026-03-02T21:00:00Z")
    site.session(1, evening, minutes=120, energy_wh=12_000, samples=11)
    session = get_session(engine, "site-1", 1)
    assert session is not None and session.cost_minor == 360


def test_tariff_changes_price_again_the_sessions_they_cover(engine: Engine) -> None:
    site = Site(engine)
    site.session(1, T0 - timedelta(days=10), energy_wh=10_000)
    site.session(2, T0, energy_wh=10_000)
    site.send(  # still running: priced when it stops
        {
            "kind": "transaction.started",
            "charger_id": "CP-1",
            "connector_id": 2,
            "transaction_id": 3,
            "id_tag": "CARD-2",
            "id_tag_status": "Accepted",
            "meter_start_wh": 0,
            "started_at": iso(T0 + timedelta(hours=3)),
        },
        at=T0 + timedelta(hours=3),
    )

    def costs() -> list[int | None]:
        return [get_session(engine, "site-1", n).cost_minor for n in (1, 2, 3)]  # type: ignore[union-attr]

    added = create_tariff(engine, flat("0.25", T0 - timedelta(days=1)))
    assert len(added.jobs) == 1 and reprice_all(engine) == 1 and costs() == [None, 250, None]
    assert added.tariff is not None
    changed = update_tariff(engine, added.tariff.id, flat("0.40", T0 - timedelta(days=20)))
    assert len(changed.jobs) == 1 and reprice_all(engine) == 2 and costs() == [400, 400, None]
    with pytest.raises(TariffRefused, match="same scope starts at the same time"):
        create_tariff(engine, flat("0.10", T0 - timedelta(days=20)))
    with pytest.raises(TariffRefused, match="overlap"):
        night = Band(frozenset(range(7)), 22 * 60, 6 * 60, 1)
        create_tariff(engine, flat("0.1", T0, bands=(night, Band(frozenset({0}), 300, 400, 2))))
    removed = delete_tariff(engine, added.tariff.id)
    assert len(removed.jobs) == 1 and reprice_all(engine) == 2 and costs() == [None, None, None]


def test_pages_follow_a_stable_cursor_newest_first_under_every_filter(engine: Engine) -> None:
    sites = [Site(engine, f"site-{n}") for n in (1, 2, 3)]
    expected = []
    for index in range(30):
        site = sites[index % 3]
        # Pairs of sessions share a start: the cursor must break ties by site and id.
        start = T0 + timedelta(hours=index // 2)
        card = f"CARD-{index % 4}"
        site.session(
            index + 1, start, card=card, parent=f"ACCT-{index % 2}", charger=f"CP-{index % 2}"
        )
        expected.append((start, site.edge_id, index + 1, card))
    expected.sort(key=lambda row: (row[0], row[1], row[2]), reverse=True)

    def pages(query: SessionFilter, size: int) -> list[tuple[str, int]]:
        shown: list[tuple[str, int]] = []
        after = None
        while True:
            page = session_page(engine, query, size, after)
            shown += [(s.edge_id, s.transaction_id) for s in page.sessions]
            if page.next_cursor is None:
                return shown
            after = Cursor.parse(page.next_cursor.text())

    assert pages(SessionFilter(), 7) == [(edge, tx) for _, edge, tx, _ in expected]
    site_2 = [(edge, tx) for _, edge, tx, _ in expected if edge == "site-2"]
    assert pages(SessionFilter(edge_id="site-2"), 3) == site_2
    card_1 = [(edge, tx) for _, edge, tx, card in expected if card == "CARD-1"]
    assert pages(SessionFilter(id_tag="CARD-1"), 2) == card_1
    account = [(e, tx) for _, e, tx, _ in expected if (tx - 1) % 2 == 1]
    assert pages(SessionFilter(account="ACCT-1"), 4) == account
    charger = [(e, tx) for _, e, tx, _ in expected if e == "site-1" and (tx - 1) % 2 == 0]
    assert pages(SessionFilter(edge_id="site-1", charger_id="CP-0"), 2) == charger
    period = SessionFilter(since=T0 + timedelta(hours=3), until=T0 + timedelta(hours=5))
    assert pages(period, 50) == [
        (e, tx)
        for at, e, tx, _ in expected
        if T0 + timedelta(hours=3) <= at < T0 + timedelta(hours=5)
    ]

    # A session synced while someone pages (newer, or late from an offline site) does
    # not move the next page.
    first = session_page(engine, SessionFilter(), 5)
    sites[0].session(100, T0 + timedelta(days=1))
    sites[1].session(101, T0 - timedelta(days=1))
    assert first.next_cursor is not None
    second = session_page(engine, SessionFilter(), 5, first.next_cursor)
    assert [(s.edge_id, s.transaction_id) for s in second.sessions] == [
        (edge, tx) for _, edge, tx, _ in expected[5:10]
    ]
    with pytest.raises(InvalidCursor):
        Cursor.parse("bm90IGEgY3Vyc29y")


def test_sums_per_card_account_and_month(engine: Engine) -> None:
    create_tariff(engine, flat("0.25", T0 - timedelta(days=365)))
    site = Site(engine)
    site.session(1, parse_time("2026-01-31T23:30:00Z"), energy_wh=4000, card="A", parent="FLEET")
    site.session(2, parse_time("2026-02-10T08:00:00Z"), energy_wh=8000, card="A", parent="FLEET")
    site.session(3, parse_time("2026-02-11T08:00:00Z"), energy_wh=2000, card="B", parent="FLEET")
    site.session(4, parse_time("2026-03-01T08:00:00Z"), energy_wh=1000, card="C")
    by_card = session_sums(engine, SessionFilter(), "card", UTC_ZONE)
    assert [(s.key, s.sessions, s.energy_wh, s.costs) for s in by_card] == [
        ("A", 2, 12_000, {"EUR": 300}),
        ("B", 1, 2000, {"EUR": 50}),
        ("C", 1, 1000, {"EUR": 25}),
    ]
    by_account = session_sums(engine, SessionFilter(), "account", UTC_ZONE)
    assert [(s.key, s.sessions, s.energy_wh) for s in by_account] == [
        ("FLEET", 3, 14_000),
        (None, 1, 1000),
    ]
    by_month = session_sums(engine, SessionFilter(), "month", UTC_ZONE)
    assert [(s.key, s.sessions, s.energy_wh, s.costs) for s in by_month] == [
        ("2026-03", 1, 1000, {"EUR": 25}),
        ("2026-02", 2, 10_000, {"EUR": 250}),
        ("2026-01", 1, 4000, {"EUR": 100}),
    ]
    # In Berlin, 23:30 UTC on 31 January is already February.
    berlin = session_sums(engine, SessionFilter(id_tag="A"), "month", ZoneInfo("Europe/Berlin"))
    assert [(s.key, s.sessions) for s in berlin] == [("2026-02", 2)]
    # Unpriced and running sessions are counted as such.
    site.send(
        {
            "kind": "transaction.started",
            "charger_id": "CP-1",
            "connector_id": 1,
            "transaction_id": 5,
            "id_tag": "C",
            "id_tag_status": "Accepted",
            "meter_start_wh": 0,
            "started_at": "2026-03-05T08:00:00Z",
        },
        at=parse_time("2026-03-05T08:00:00Z"),
    )
    (march,) = session_sums(engine, SessionFilter(since=T0), "month", UTC_ZONE)
    assert (march.sessions, march.running, march.unpriced) == (1, 1, 0)


def test_a_month_is_final_only_once_synced_past_its_end_with_an_empty_backlog(
    engine: Engine,
) -> None:
    february = Month(2026, 2)
    end = february.end(UTC_ZONE)
    site = Site(engine)
    site.session(1, parse_time("2026-02-20T10:00:00Z"))

    def closing(now: datetime) -> Any:
        (only,) = month_closings(engine, [february], UTC_ZONE, now, edge_id="site-1")
        return only

    during = closing(parse_time("2026-02-25T00:00:00Z"))
    assert not during.final and "the month has not ended" in during.reasons
    # March: the edge went offline in February with events still queued.
    assert record_status(
        engine,
        "site-1",
        status("offline", backlog=12, oldest_age_s=600.0),
        now=end - timedelta(hours=1),
    )
    after = closing(end + timedelta(days=2))
    assert not after.final
    assert after.reasons == [
        f"edge offline since {iso(end - timedelta(hours=1))}",
        "its data reaches 2026-02-20T11:00:00.000Z, not past the month's end",
        f"backlog 12 events, the oldest 10 min old at {iso(end - timedelta(hours=1))}",
    ]
    assert (after.sums.sessions, after.sums.energy_wh, after.sums.key) == (1, 10_000, "2026-02")
    # Back online with its backlog: events past the end arrive, the backlog not yet empty.
    site.session(2, end + timedelta(hours=5))
    assert record_status(
        engine,
        "site-1",
        status("online", backlog=3, oldest_age_s=90.0),
        now=end + timedelta(hours=6),
    )
    draining = closing(end + timedelta(days=2))
    assert draining.reasons == [
        f"backlog 3 events, the oldest 90 s old at {iso(end + timedelta(hours=6))}"
    ]
    assert record_status(
        engine, "site-1", status("online", backlog=0), now=end + timedelta(hours=7)
    )
    final = closing(end + timedelta(days=2))
    assert final.final and final.reasons == []
    # A backlog later holds later events: the month stays final.
    assert record_status(
        engine, "site-1", status("online", backlog=5), now=end + timedelta(hours=7, minutes=5)
    )
    assert closing(end + timedelta(days=2)).final
    # A session of the month still running keeps it provisional.
    site.send(
        {
            "kind": "transaction.started",
            "charger_id": "CP-2",
            "connector_id": 1,
            "transaction_id": 3,
            "id_tag": "CARD-1",
            "id_tag_status": "Accepted",
            "meter_start_wh": 0,
            "started_at": "2026-02-28T22:00:00Z",
        },
        # The charger held it while cut off from the edge: recorded in March.
        at=end + timedelta(hours=8),
    )
    running = closing(end + timedelta(days=2))
    assert running.reasons == ["1 session of the month still running"]
    # Every edge when none is named: one that never sent anything is provisional.
    record_status(engine, "site-9", status("online", backlog=0), now=end + timedelta(days=1))
    both = month_closings(engine, [february], UTC_ZONE, end + timedelta(days=2))
    assert [(c.edge_id, c.final) for c in both] == [("site-1", False), ("site-9", False)]
    assert both[1].reasons == ["no data from this edge yet"]


def test_transactions_from_before_sessions_are_listed_by_their_start(
    empty_database_url: str,
) -> None:
    engine = create_engine(empty_database_url)
    config = alembic_config()
    now = datetime.now(UTC)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0008")  # the revision before sessions
        connection.execute(
            text("INSERT INTO edges (id, state, created_at) VALUES ('site-7', 'online', :now)"),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO chargers (edge_id, charger_id, updated_at) VALUES ('site-7', 'CP', :now)"
            ),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO transactions (edge_id, transaction_id, charger_id, energy_wh, "
                "started_at, updated_at) VALUES ('site-7', 1, 'CP', 5, :start, :now), "
                "('site-7', 2, 'CP', 6, NULL, :now)"
            ),
            {"start": T0, "now": now},
        )
    engine.dispose()
    migrated = open_store(empty_database_url)
    try:
        page = session_page(migrated, SessionFilter())
        assert [(s.transaction_id, s.session_at) for s in page.sessions] == [(2, now), (1, T0)]
        assert page.sessions[0].sync_delay_s is None
        assert page.sessions[0].recorded_offline(300) is None
    finally:
        migrated.dispose()


def test_months_far_apart_and_dates_no_calendar_holds(engine: Engine) -> None:
    site = Site(engine)
    site.session(1, parse_time("2026-01-10T10:00:00Z"), energy_wh=1000)
    site.session(2, parse_time("2016-06-10T10:00:00Z"), energy_wh=2000)
    # A charger's clock: the year 9999, and the year 1.
    site.session(3, parse_time("9999-12-31T20:00:00Z"), minutes=60, energy_wh=3000)
    site.session(4, parse_time("0001-01-01T00:00:00Z"), energy_wh=4000)
    berlin = ZoneInfo("Europe/Berlin")
    by_month = session_sums(engine, SessionFilter(), "month", berlin)
    assert [(s.key, s.energy_wh) for s in by_month] == [("2026-01", 1000), ("2016-06", 2000)]
    # They are still sessions: listed, summed per card, exported.
    assert len(session_page(engine, SessionFilter()).sessions) == 4
    (card,) = session_sums(engine, SessionFilter(), "card", berlin)
    assert card.energy_wh == 10_000


def test_a_stop_waits_for_a_tariff_change_under_way_and_takes_its_price(engine: Engine) -> None:
    """PostgreSQL: replicas price stops while another changes a tariff."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's writers take turns: nothing runs concurrently")
    import threading
    import time

    from sqlalchemy import insert as sql_insert

    from cloud.store.schema import tariffs
    from cloud.store.tariffs import _lock_tariffs

    site = Site(engine)
    site.send(
        {
            "kind": "transaction.started",
            "charger_id": "CP-1",
            "connector_id": 1,
            "transaction_id": 1,
            "id_tag": "CARD-1",
            "id_tag_status": "Accepted",
            "meter_start_wh": 0,
            "started_at": iso(T0),
        },
        at=T0,
    )
    stopping = threading.Thread(
        target=site.send, args=(stopped(1, 10_000, T0 + timedelta(hours=1)),), kwargs={"at": T0}
    )
    with engine.begin() as change:
        _lock_tariffs(change)
        now = datetime.now(UTC)
        change.execute(
            sql_insert(tariffs).values(
                name="new",
                currency="EUR",
                minor_unit_digits=2,
                time_zone="UTC",
                valid_from=T0 - timedelta(days=1),
                price=500_000,
                bands=[],
                created_at=now,
                updated_at=now,
            )
        )
        stopping.start()
        # The stop's batch waits for the tariff lock (seen in pg_locks), not yet priced.
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        waiting = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        with engine.connect() as observer:
            while observer.execute(waiting).scalar_one() == 0:
                assert datetime.now(UTC) < deadline, "the stop never waited for the tariff"
                time.sleep(0.01)  # another process's lock: nothing to await
    stopping.join(timeout=30)
    assert not stopping.is_alive()
    session = get_session(engine, "site-1", 1)
    assert session is not None and session.cost_minor == 500  # 10 kWh at the new 0.50
