"""The views events feed: transactions with their energy, chargers and connectors, card
uses, charger jobs, and what edges report about desired state."""

from __future__ import annotations

from itertools import count as numbers

from sqlalchemy import Engine

from cloud.store.fleet import list_chargers, list_edges, list_transactions
from cloud.store.ingest import store_batch
from cloud.store.schema import card_uses, charger_jobs, firmware_status
from cloud.store.times import parse_time
from tests.cloud.payloads import (
    batch,
    card_used,
    event,
    transaction_meter,
    transaction_started,
    transaction_stopped,
)
from tests.cloud.rows import rows

EDGE = "site-7"


class Edge:
    """Sends events as one edge does: numbered in order, each batch acknowledged."""

    def __init__(self, engine: Engine, edge_id: str = EDGE) -> None:
        self.engine = engine
        self.edge_id = edge_id
        self.seqs = numbers(1)

    def send(self, *datas: dict[str, object], at: str = "2026-03-01T10:00:00Z") -> None:
        payload = batch(self.edge_id, [event(next(self.seqs), data, at) for data in datas])
        result = store_batch(self.engine, self.edge_id, payload, 1_048_576)
        assert result.rejected is None, result.detail


def test_a_started_metered_stopped_transaction_is_one_row_with_its_energy(engine: Engine) -> None:
    edge = Edge(engine)
    edge.send(transaction_started(41), transaction_meter(41, energy_wh=3000))
    (running,) = list_transactions(engine)
    assert running.running and running.energy_wh == 3000 and running.power_w == 7200.0
    edge.send(transaction_meter(41, energy_wh=5500), transaction_stopped(41, energy_wh=6240))
    (done,) = list_transactions(engine)
    assert not done.running
    assert (done.edge_id, done.transaction_id, done.charger_id, done.connector_id) == (
        EDGE,
        41,
        "CP-1",
        1,
    )
    assert (done.meter_start_wh, done.meter_stop_wh, done.energy_wh) == (1000, 7240, 6240)
    assert done.started_at == parse_time("2026-03-01T10:00:00Z")
    assert done.stopped_at == parse_time("2026-03-01T11:00:00Z")
    assert (done.id_tag, done.stop_reason, done.power_w) == ("CARD-1", "Local", None)


def test_a_meter_for_a_transaction_started_before_sync_makes_its_row(engine: Engine) -> None:
    Edge(engine).send(transaction_meter(7, energy_wh=800), transaction_stopped(7, energy_wh=900))
    (transaction,) = list_transactions(engine)
    assert transaction.energy_wh == 900 and transaction.started_at is None
    assert transaction.meter_start_wh is None


def test_chargers_and_connectors_follow_their_events(engine: Engine) -> None:
    edge = Edge(engine)
    edge.send(
        {"kind": "charger.boot", "charger_id": "CP-1", "vendor": "Acme", "model": "AC22"},
        {"kind": "charger.connection", "charger_id": "CP-1", "connected": True},
        {
            "kind": "charger.status",
            "charger_id": "CP-1",
            "connector_id": 2,
            "status": "Available",
            "error_code": "NoError",
        },
        {
            "kind": "charger.status",
            "charger_id": "CP-1",
            "connector_id": 1,
            "status": "Available",
            "error_code": "NoError",
        },
    )
    edge.send(
        {
            "kind": "charger.status",
            "charger_id": "CP-1",
            "connector_id": 1,
            "status": "Faulted",
            "error_code": "GroundFailure",
            "info": "RCD",
        },
        {"kind": "charger.connection", "charger_id": "CP-2", "connected": False},
        at="2026-03-01T10:05:00Z",
    )
    first, second = list_chargers(engine)
    assert (first.charger_id, first.vendor, first.model, first.connected) == (
        "CP-1",
        "Acme",
        "AC22",
        True,
    )
    assert first.booted_at == parse_time("2026-03-01T10:00:00Z")
    assert [(c.connector_id, c.status, c.error_code, c.info) for c in first.connectors] == [
        (1, "Faulted", "GroundFailure", "RCD"),
        (2, "Available", "NoError", None),
    ]
    assert first.connectors[0].status_at == parse_time("2026-03-01T10:05:00Z")
    assert (second.charger_id, second.connected, second.vendor, second.connectors) == (
        "CP-2",
        False,
        None,
        [],
    )
    assert list_chargers(engine, edge_id="elsewhere") == []


def test_card_uses_and_charger_jobs_are_kept(engine: Engine) -> None:
    edge = Edge(engine)
    edge.send(
        card_used("CARD-9", status="Blocked", reason="blocked", charger_id="CP-1"),
        {"kind": "charger.job", "charger_id": "CP-1", "job": "firmware", "status": "Downloading"},
        {"kind": "charger.job", "charger_id": "CP-1", "job": "firmware", "status": "Installed"},
        {
            "kind": "charger.job",
            "charger_id": "CP-1",
            "job": "diagnostics",
            "status": "Uploaded",
            "request_id": 5,
        },
    )
    (use,) = rows(engine, card_uses)
    assert (use.seq, use.id_tag, use.status, use.reason, use.charger_id, use.reader_id) == (
        1,
        "CARD-9",
        "Blocked",
        "blocked",
        "CP-1",
        "bay-1",
    )
    jobs = {(job.job, job.status, job.request_id) for job in rows(engine, charger_jobs)}
    assert jobs == {("firmware", "Installed", None), ("diagnostics", "Uploaded", 5)}


def test_health_and_firmware_progress_reach_the_edge_and_its_images(engine: Engine) -> None:
    edge = Edge(engine)
    edge.send(
        {
            "kind": "edge.health",
            "software_version": "0.4.0",
            "uptime_s": 3600.0,
            "backlog": 3,
            "oldest_age_s": 12.0,
            "disk_free_mb": 900.0,
        },
        {
            "kind": "firmware.progress",
            "image": "ac22-1.2.bin",
            "status": "downloading",
            "bytes": 4096,
        },
    )
    (view,) = list_edges(engine, parse_time("2026-03-01T10:01:00Z"))
    assert (view.software_version, view.backlog, view.oldest_age_s) == ("0.4.0", 3, 12.0)
    (progress,) = rows(engine, firmware_status)
    assert (progress.image, progress.status, progress.bytes) == (
        "ac22-1.2.bin",
        "downloading",
        4096,
    )
