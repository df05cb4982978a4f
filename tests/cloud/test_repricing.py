"""Tariffs per fleet and re-pricing in the background, on SQLite and PostgreSQL: a tariff
change returns at once and leaves a job; the job prices its sessions again a bounded
batch per transaction, goes on after a restart from where it was, never writes over a
session that ingest changed meanwhile; a site's tariff wins over its fleet's, which wins
over every fleet's; an edge moved to another fleet takes its sessions along; the fleet's
sessions are read through their own index."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, insert, select, text, update

from cloud.repricing import Repricer
from cloud.settings import SessionSettings
from cloud.store import fleets
from cloud.store.database import open_store, reading
from cloud.store.repricing import RepricingJob, list_jobs
from cloud.store.schema import chargers, repricing, transactions
from cloud.store.sessions import (
    Month,
    SessionFilter,
    _page_query,
    get_session,
    repricing_of,
    session_page,
)
from cloud.store.tariffs import (
    TariffRefused,
    UnknownTariff,
    _next_sessions,
    create_tariff,
    delete_tariff,
    end_tariff,
    list_tariffs,
    reprice_all,
    reprice_batch,
    update_tariff,
)
from tests.cloud.test_sessions_store import T0, Site, flat
from tests.waiting import eventually


def costs(engine: Engine, edge_id: str, numbers: range) -> list[int | None]:
    found = [get_session(engine, edge_id, number) for number in numbers]
    return [session.cost_minor if session is not None else None for session in found]


def waiting(engine: Engine, query: SessionFilter) -> list[int]:
    """The sessions the page marks as waiting to be priced again."""
    page = session_page(engine, query, 100)
    return sorted(s.transaction_id for s in page.sessions if page.repricing.waiting(s))


def test_a_tariff_change_leaves_a_job_that_prices_a_batch_per_transaction(
    engine: Engine,
) -> None:
    site = Site(engine)
    for number in range(1, 6):  # 10 kWh each, a day apart
        site.session(number, T0 + timedelta(days=number))
    change = create_tariff(engine, flat("0.30", T0))
    # The change is stored and answered: no session is priced yet, each says so.
    assert len(change.jobs) == 1
    assert costs(engine, "site-1", range(1, 6)) == [None] * 5
    assert waiting(engine, SessionFilter()) == [1, 2, 3, 4, 5]

    first = reprice_batch(engine, size=2)
    assert first is not None and (first.sessions, first.finished) == (2, False)
    # The oldest first, and the job remembers where it is.
    assert costs(engine, "site-1", range(1, 6)) == [300, 300, None, None, None]
    (job,) = list_jobs(engine)
    assert job.after == (T0 + timedelta(days=2), "site-1", 2) and job.repriced == 2
    assert waiting(engine, SessionFilter()) == [3, 4, 5]

    assert reprice_all(engine, size=2) == 3
    assert costs(engine, "site-1", range(1, 6)) == [300] * 5
    assert list_jobs(engine) == [] and waiting(engine, SessionFilter()) == []
    assert reprice_batch(engine) is None


def test_repricing_goes_on_after_a_restart_from_where_it_was(engine: Engine) -> None:
    site = Site(engine)
    for number in range(1, 6):
        site.session(number, T0 + timedelta(days=number))
    create_tariff(engine, flat("0.30", T0))
    assert reprice_batch(engine, size=2) is not None
    url = engine.url.render_as_string(hide_password=False)
    engine.dispose()  # the replica stops
    again = open_store(url)
    try:
        # The three it had not reached, not five again.
        assert reprice_all(again, size=2) == 3
        assert costs(again, "site-1", range(1, 6)) == [300] * 5
    finally:
        if again is not engine:
            again.dispose()


def test_a_stop_stored_while_a_job_runs_takes_the_new_price_and_keeps_it(
    engine: Engine,
) -> None:
    site = Site(engine)
    for number in range(1, 4):
        site.session(number, T0 + timedelta(days=number))
    create_tariff(engine, flat("0.30", T0))
    assert reprice_batch(engine, size=1) is not None
    # Ingest goes on between batches: a new session stops and is priced at once.
    site.session(9, T0 + timedelta(days=9), energy_wh=1000)
    assert costs(engine, "site-1", range(9, 10)) == [30]
    assert reprice_all(engine, size=1) == 3
    assert costs(engine, "site-1", range(1, 4)) == [300] * 3
    assert costs(engine, "site-1", range(9, 10)) == [30]


def test_a_batch_leaves_a_session_ingest_changed_while_it_priced(engine: Engine) -> None:
    """PostgreSQL: a batch reads a session, ingest stores a later stop of it before the
    batch writes: the batch's cost (of the energy it read) must not replace ingest's."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's writers take turns: nothing runs concurrently")
    site = Site(engine)
    site.session(1, T0 + timedelta(days=1))
    create_tariff(engine, flat("0.30", T0))
    done: list[Any] = []
    batch = threading.Thread(target=lambda: done.append(reprice_batch(engine)))
    with engine.begin() as ingest:
        # As a later stop would: more energy, its own cost, the row locked until commit.
        ingest.execute(
            update(transactions)
            .where(transactions.c.edge_id == "site-1", transactions.c.transaction_id == 1)
            .values(energy_wh=20_000, cost_minor=600)
        )
        batch.start()
        # The batch has read the old row and waits for ours (seen in pg_locks).
        deadline = time.monotonic() + 30
        waits = text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"
        )
        with engine.connect() as observer:
            while observer.execute(waits).scalar_one() == 0:
                assert time.monotonic() < deadline, "the batch never waited for the row"
                time.sleep(0.01)  # another connection's lock: nothing to await
    batch.join(timeout=30)
    assert not batch.is_alive() and done and done[0].finished
    assert costs(engine, "site-1", range(1, 2)) == [600]


def test_a_sites_tariff_wins_over_its_fleets_which_wins_over_every_fleets(
    engine: Engine,
) -> None:
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    for edge_id, fleet_id in [("acme-1", acme), ("acme-2", acme), ("bolt-1", bolt)]:
        fleets.assign_edge(engine, edge_id, fleet_id)
    every = create_tariff(engine, flat("0.30", T0 - timedelta(days=30), name="every fleet"))
    acme_default = create_tariff(
        engine, flat("0.20", T0 - timedelta(days=30), fleet_id=acme, name="acme")
    )
    create_tariff(engine, flat("0.50", T0 - timedelta(days=30), edge_id="acme-2", name="own"))
    for edge_id in ("acme-1", "acme-2", "bolt-1"):
        Site(engine, edge_id).session(1, T0)
    priced = {
        edge_id: (session.cost_minor, session.tariff_name)
        for edge_id in ("acme-1", "acme-2", "bolt-1")
        if (session := get_session(engine, edge_id, 1)) is not None
    }
    assert priced == {
        "acme-1": (200, "acme"),
        "acme-2": (500, "own"),
        "bolt-1": (300, "every fleet"),
    }
    # A fleet sees its own tariffs and every fleet's, never another fleet's.
    assert {t.spec.name for t in list_tariffs(engine, fleet_id=acme)} == {
        "every fleet",
        "acme",
        "own",
    }
    assert {t.spec.name for t in list_tariffs(engine, fleet_id=bolt)} == {"every fleet"}
    assert {t.spec.name for t in list_tariffs(engine, edge_id="bolt-1")} == {"every fleet"}
    # Held to a fleet, the store changes only that fleet's tariffs.
    assert acme_default.tariff is not None and every.tariff is not None
    with pytest.raises(UnknownTariff):
        update_tariff(engine, acme_default.tariff.id, flat("0.1", T0), fleet_id=bolt)
    with pytest.raises(UnknownTariff):
        delete_tariff(engine, every.tariff.id, fleet_id=acme)
    with pytest.raises(UnknownTariff):  # a fleet cannot give itself another's site
        create_tariff(engine, flat("0.1", T0, edge_id="bolt-1"), fleet_id=acme)
    # Its default's change re-prices its sessions only.
    changed = update_tariff(
        engine,
        acme_default.tariff.id,
        flat("0.10", T0 - timedelta(days=30), fleet_id=acme, name="acme"),
        fleet_id=acme,
    )
    (job,) = list_jobs(engine)
    assert changed.jobs == (job.id,) and (job.fleet_id, job.edge_id) == (acme, None)
    assert reprice_all(engine) == 2  # acme-1 and acme-2 (the latter keeps its own)
    assert [get_session(engine, e, 1).cost_minor for e in ("acme-1", "acme-2", "bolt-1")] == [  # type: ignore[union-attr]
        100,
        500,
        300,
    ]


def test_an_edge_moved_to_another_fleet_takes_its_sessions_and_that_fleets_tariff(
    engine: Engine,
) -> None:
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    fleets.assign_edge(engine, "depot-1", acme)
    create_tariff(engine, flat("0.20", T0 - timedelta(days=30), fleet_id=acme))
    create_tariff(engine, flat("0.40", T0 - timedelta(days=30), fleet_id=bolt))
    Site(engine, "depot-1").session(1, T0)
    assert costs(engine, "depot-1", range(1, 2)) == [200]
    fleets.assign_edge(engine, "depot-1", bolt)
    assert session_page(engine, SessionFilter(fleet_id=acme)).sessions == []
    (moved,) = session_page(engine, SessionFilter(fleet_id=bolt)).sessions
    assert moved.fleet_id == bolt
    assert waiting(engine, SessionFilter(fleet_id=bolt)) == [1]
    assert reprice_all(engine) == 1
    assert costs(engine, "depot-1", range(1, 2)) == [400]


def test_a_new_job_takes_in_those_it_covers(engine: Engine) -> None:
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    fleets.assign_edge(engine, "depot-1", acme)
    Site(engine, "depot-1").session(1, T0)
    create_tariff(engine, flat("0.20", T0, edge_id="depot-1"))
    create_tariff(engine, flat("0.30", T0 - timedelta(days=1), fleet_id=acme))
    # The fleet's job from earlier covers the site's: one job left.
    (job,) = list_jobs(engine)
    assert (job.fleet_id, job.edge_id) == (acme, None)
    with reading(engine) as connection:
        assert connection.execute(select(repricing.c.id)).scalars().all() == [job.id]


def bulk_sessions(engine: Engine, where: Callable[[int], tuple[str, int]]) -> None:
    """20,000 stopped sessions a minute apart from T0, each at `where(number)`'s (edge,
    fleet), inserted at once (not through ingest: this is about reading them), then the
    planners' statistics."""
    now = datetime.now(UTC)
    rows = []
    for number in range(20_000):
        edge_id, fleet_id = where(number)
        start = T0 + timedelta(minutes=number)
        rows.append(
            {
                "edge_id": edge_id,
                "transaction_id": number,
                "charger_id": "CP-1",
                "energy_wh": 1000,
                "started_at": start,
                "stopped_at": start + timedelta(minutes=30),
                "updated_at": now,
                "session_at": start,
                "fleet_id": fleet_id,
            }
        )
    with engine.begin() as connection:
        for edge_id in sorted({row["edge_id"] for row in rows}):
            connection.execute(
                insert(chargers).values(edge_id=edge_id, charger_id="CP-1", updated_at=now)
            )
        connection.execute(insert(transactions), rows)
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("ANALYZE transactions")
            )
        else:
            connection.execute(text("ANALYZE"))


def test_the_fleet_filter_reads_the_fleets_own_index(engine: Engine) -> None:
    """The fleet's first page reads its own sessions through its index, in keyset order:
    not the whole store's date index with a check on each row, and no sort."""
    big = fleets.add_fleet(engine, "Big").fleet_id
    small = fleets.add_fleet(engine, "Small").fleet_id
    fleets.assign_edge(engine, "big-1", big)
    fleets.assign_edge(engine, "small-1", small)
    bulk_sessions(
        engine, lambda number: ("small-1", small) if number % 200 == 0 else ("big-1", big)
    )
    statement = _page_query(SessionFilter(fleet_id=small), None, 51)
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            plan = "\n".join(connection.execute(text(f"EXPLAIN {compiled}")).scalars())
        else:
            plan = "\n".join(
                str(row[-1]) for row in connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
            )
    assert "ix_transactions_fleet_id_session_at_edge_id_transaction_id" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
    page = session_page(engine, SessionFilter(fleet_id=small), 50)
    assert len(page.sessions) == 50 and {s.edge_id for s in page.sessions} == {"small-1"}


async def test_the_repricer_works_through_the_jobs_in_the_background(engine: Engine) -> None:
    site = Site(engine)
    for number in range(1, 8):
        site.session(number, T0 + timedelta(days=number))
    repricer = Repricer(
        SessionSettings(
            reprice_batch=3, reprice_batch_seconds=60, reprice_pause=0, reprice_poll=60
        ),
        engine,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(repricer.run(stop))
    try:
        await eventually(lambda: repricer.stats.batches == 0 and not list_jobs(engine))
        create_tariff(engine, flat("0.30", T0))
        repricer.wake()  # as the API and the page do: not after reprice_poll (60 s)
        await eventually(lambda: costs(engine, "site-1", range(1, 8)) == [300] * 7, within=30)
        await eventually(lambda: repricer.stats.jobs_finished == 1)
        # Three batches of three at most: 3, 3, 1.
        assert (repricer.stats.batches, repricer.stats.sessions) == (3, 7)
        assert list_jobs(engine) == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def test_an_ended_tariff_hands_its_sites_to_the_next_scope_from_its_end(engine: Engine) -> None:
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    fleets.assign_edge(engine, "depot-1", acme)
    create_tariff(engine, flat("0.20", T0 - timedelta(days=30), fleet_id=acme, name="fleet"))
    own = create_tariff(engine, flat("0.50", T0 - timedelta(days=30), edge_id="depot-1"))
    site = Site(engine, "depot-1")
    for number in range(1, 5):
        site.session(number, T0 + timedelta(days=number))
    assert costs(engine, "depot-1", range(1, 5)) == [500] * 4
    assert own.tariff is not None
    ended = end_tariff(engine, own.tariff.id, T0 + timedelta(days=3), fleet_id=acme)
    assert ended.tariff is not None and ended.tariff.spec.valid_until == T0 + timedelta(days=3)
    # Only the sessions from its end on are priced again.
    (job,) = list_jobs(engine)
    assert job.since == T0 + timedelta(days=3) and job.reason == f"tariff {own.tariff.id} ended"
    assert waiting(engine, SessionFilter(fleet_id=acme)) == [3, 4]
    assert reprice_all(engine) == 2
    assert costs(engine, "depot-1", range(1, 5)) == [500, 500, 200, 200]
    with pytest.raises(TariffRefused, match="ends after it starts"):
        end_tariff(engine, own.tariff.id, T0 - timedelta(days=31))


def test_a_batch_that_takes_too_long_makes_the_next_ones_smaller(engine: Engine) -> None:
    repricer = Repricer(SessionSettings(reprice_batch=500, reprice_batch_seconds=0.25), engine)
    repricer._resize(1.0)  # four times too long: a quarter as many
    assert repricer.size == 125
    repricer._resize(0.1)
    assert repricer.size == 156  # grown back a quarter at a time
    for _ in range(20):
        repricer._resize(0.01)
    assert repricer.size == 500  # never beyond reprice_batch


def test_each_batch_reads_on_from_the_jobs_cursor_through_the_index(engine: Engine) -> None:
    """Not from the job's start filtering up to the cursor: batch 2,000 of a million costs
    what the first does."""
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    for number in range(4):
        fleets.assign_edge(engine, f"site-{number}", acme if number else 1)
    bulk_sessions(engine, lambda number: (f"site-{number % 4}", acme if number % 4 else 1))
    since = T0 - timedelta(days=400)
    after = (T0 + timedelta(days=10), "site-1", 14_401)
    scopes = {
        "every": RepricingJob(1, None, None, since, after, 0, "", T0, T0),
        "fleet": RepricingJob(2, acme, None, since, after, 0, "", T0, T0),
        "site": RepricingJob(3, None, "site-1", since, after, 0, "", T0, T0),
    }
    for scope, job in scopes.items():
        compiled = _next_sessions(job, 500).compile(engine, compile_kwargs={"literal_binds": True})
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                plan = "\n".join(connection.execute(text(f"EXPLAIN {compiled}")).scalars())
                bound = "ROW(session_at" if scope != "site" else "ROW(session_at, transaction_id)"
                assert "Index Cond" in plan and bound in plan.split("Filter")[0], plan
            else:
                plan = "\n".join(
                    str(row[-1])
                    for row in connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
                )
                bound = (
                    "(session_at,transaction_id)>" if scope == "site" else "(session_at,edge_id,"
                )
                assert bound in plan, plan
            assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan


def test_months_are_marked_until_the_job_has_passed_them(engine: Engine) -> None:
    site = Site(engine)
    site.session(1, T0 - timedelta(days=20))  # February
    site.session(2, T0 + timedelta(days=1))  # March
    site.session(3, T0 + timedelta(days=40))  # April
    create_tariff(engine, flat("0.30", T0 - timedelta(days=1)))  # from 1 March
    zone = ZoneInfo("UTC")
    months = [Month(2026, 2), Month(2026, 3), Month(2026, 4)]

    def marked() -> list[bool]:
        repricing = repricing_of(engine, SessionFilter(edge_id="site-1"))
        return [repricing.month(month, zone) for month in months]

    assert marked() == [False, True, True]
    # March's session done: later ones of March might still wait, as far as the job knows.
    assert reprice_batch(engine, size=1) is not None
    assert marked() == [False, True, True]
    # Into April: March is behind the job.
    assert reprice_batch(engine, size=1) is not None
    assert marked() == [False, False, True]
    reprice_all(engine)
    assert marked() == [False, False, False]
