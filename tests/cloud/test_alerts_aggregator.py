"""Alerts for real: the aggregator on SQLite and on PostgreSQL, a real mosquitto, the
edge daemon (or an edge's messages as the wire contract has them, where a test needs
times in the past), and a webhook receiver listening on a free port. Each alert is
raised and cleared, signed notices arrive once, replicas raise once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import httpx
import pytest
import uvicorn
from sqlalchemy import Engine
from starlette.types import Receive, Scope, Send

from cloud.alerts import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, AlertsEngine
from cloud.settings import AlertSettings
from cloud.store.ingest import record_status
from cloud.store.times import iso
from contract import protocol as wire
from tests.conftest import (
    PostgresServer,
    RunningCloud,
    StartCloud,
    StartEdge,
    free_port,
    stop_edge,
)
from tests.mosquitto import Mosquitto
from tests.waiting import eventually, eventually_answers

EDGE = "site-7"
SECRET = "webhook-secret"
# Generous: the machine is shared; each wait ends as soon as what it waits for happens.
WITHIN = 30.0


@dataclass
class Notice:
    document: dict[str, Any]
    headers: dict[str, str]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.document["kind"], self.document["subject"], self.document["state"])


@dataclass
class WebhookReceiver:
    """An HTTP server that takes the aggregator's POSTs: it answers 503 to the first
    `refuse` of them, never answers the first `hang` (the aggregator's timeout ends
    them), then 200. Notices taken are in `notices`, in order."""

    refuse: int = 0
    hang: int = 0
    notices: list[Notice] = field(default_factory=list)
    attempts: int = 0
    port: int = field(default_factory=free_port)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/alerts"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.attempts += 1
        if self.hang:
            self.hang -= 1
            await asyncio.sleep(3)  # past the aggregator's timeout in that test
        status = 200
        if self.refuse:
            self.refuse -= 1
            status = 503
        else:
            headers = {key.decode(): value.decode() for key, value in scope["headers"]}
            async with self.changed:
                self.notices.append(Notice(json.loads(body), headers | {"body": body.decode()}))
                self.changed.notify_all()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def wait_for(
        self, predicate: Callable[[list[Notice]], bool], within: float = WITHIN
    ) -> list[Notice]:
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(lambda: predicate(self.notices))
        return list(self.notices)

    def keys(self) -> list[tuple[str, str, str]]:
        return [notice.key for notice in self.notices]


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    config = uvicorn.Config(
        receiver, host="127.0.0.1", port=receiver.port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn gives no event
        await asyncio.sleep(0.01)
    yield receiver
    server.should_exit = True
    server.force_exit = True
    await asyncio.wait_for(task, timeout=10)


def alert_rules(webhook: WebhookReceiver, **rules: Any) -> dict[str, Any]:
    """Fast looks, thresholds in seconds a test can wait for, the test's webhook."""
    return {
        "interval": 0.2,
        "edge_offline_after": 1.0,
        "backlog_older_than": 1.0,
        "faulted_after": 30.0,
        "boot_grace": 120.0,
        "refusals_count": 3,
        "refusals_window": 10.0,
        "webhook_url": webhook.url,
        "webhook_secret": SECRET,
        "webhook_timeout": 5.0,
        "webhook_retry_first": 0.2,
        **rules,
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """None: the aggregator's own SQLite file; else a new PostgreSQL database."""
    if request.param == "sqlite":
        return None
    postgres: PostgresServer = request.getfixturevalue("postgres")
    return postgres.create_database().render_as_string(hide_password=False)


class EdgeMessages:
    """What an edge publishes, as the wire contract has it, from a test: a retained
    status, and batches of events numbered in order."""

    def __init__(self, client: aiomqtt.Client, edge_id: str) -> None:
        self.client = client
        self.edge_id = edge_id
        self.topics = wire.Topics(edge_id)
        self.seq = 0

    async def status(self, state: str, **figures: Any) -> None:
        document = {"state": state} | figures
        if state == "online":
            document = {"at": iso(datetime.now(UTC)), "backlog": 0} | document
        await self.client.publish(self.topics.status, json.dumps(document), qos=1, retain=True)

    async def events(self, *events: tuple[datetime, dict[str, Any]]) -> None:
        numbered = []
        for at, data in events:
            self.seq += 1
            numbered.append({"seq": self.seq, "at": iso(at), "data": data})
        payload = {"edge_id": self.edge_id, "events": numbered}
        await self.client.publish(self.topics.events, json.dumps(payload), qos=1)

    async def garbage(self) -> None:
        await self.client.publish(self.topics.events, b"{not json", qos=1)


@contextlib.asynccontextmanager
async def edges_at(broker: Mosquitto, *edge_ids: str) -> AsyncIterator[list[EdgeMessages]]:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="edges-in-a-test") as client:
        yield [EdgeMessages(client, edge_id) for edge_id in edge_ids]


def boot(charger_id: str = "CP-1") -> dict[str, Any]:
    return {"kind": "charger.boot", "charger_id": charger_id, "vendor": "ACME", "model": "AC22"}


def connector(connector_id: int, status: str, charger_id: str = "CP-1") -> dict[str, Any]:
    error = "GroundFailure" if status == "Faulted" else "NoError"
    return {
        "kind": "charger.status",
        "charger_id": charger_id,
        "connector_id": connector_id,
        "status": status,
        "error_code": error,
    }


async def api(cloud: RunningCloud, path: str) -> Any:
    async with httpx.AsyncClient(base_url=cloud.api_url, headers=cloud.api_headers) as client:
        answer = await client.get(path)
        answer.raise_for_status()
        return answer.json()


async def edge_state_is(cloud: RunningCloud, state: str) -> bool:
    async with httpx.AsyncClient(base_url=cloud.api_url, headers=cloud.api_headers) as client:
        answer = await client.get(f"/api/edges/{EDGE}/presence")
    return answer.status_code == 200 and answer.json()["state"] == state


async def looks_after(cloud: RunningCloud, more: int) -> None:
    """Wait until the replica has looked at the fleet `more` times again."""
    stats = cloud.site.aggregator.alerts.stats
    target = stats.looks + more
    await eventually(lambda: stats.looks >= target, within=WITHIN)


def check_signed(notice: Notice) -> None:
    timestamp = notice.headers[TIMESTAMP_HEADER.lower()]
    signed = f"{timestamp}.{notice.headers['body']}".encode()
    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert notice.headers[SIGNATURE_HEADER.lower()] == f"sha256={expected}"
    assert notice.headers["content-type"] == "application/json"


async def test_an_edge_offline_is_raised_and_cleared_with_signed_notices(
    broker: Mosquitto,
    start_cloud: StartCloud,
    start_edge: StartEdge,
    webhook: WebhookReceiver,
    store_url: str | None,
) -> None:
    rules = alert_rules(webhook, backlog_older_than=0)  # the edge's own startup backlog
    cloud = await start_cloud(broker, store_url=store_url, alerts=rules)
    sync = {"edge_id": EDGE, "broker_host": "127.0.0.1", "broker_port": broker.port}
    edge = await start_edge(sections={"sync": sync | {"keepalive": 5}})

    async def presence() -> Any:
        return await api(cloud, f"/api/edges/{EDGE}/presence")

    await eventually_answers(lambda: edge_state_is(cloud, "online"), within=WITHIN)
    await stop_edge(edge)  # its goodbye: offline
    (raised,) = await webhook.wait_for(lambda notices: len(notices) == 1)
    assert raised.key == ("edge_offline", "", "raised")
    assert raised.document["edge_id"] == EDGE and raised.document["cleared_at"] is None
    assert raised.headers[DELIVERY_HEADER.lower()] == f"{raised.document['id']}-raised"
    check_signed(raised)
    went = (await presence())["since"]
    assert raised.document["since"] == iso(datetime.fromisoformat(went))

    await start_edge(sections={"sync": sync | {"keepalive": 5}})  # the same site, again
    notices = await webhook.wait_for(lambda notices: len(notices) == 2)
    cleared = notices[1]
    assert cleared.key == ("edge_offline", "", "cleared")
    assert cleared.document["id"] == raised.document["id"]
    assert cleared.document["clear_reason"] == "the edge is online again"
    check_signed(cleared)

    async def recorded_as_told() -> bool:
        # The receiver has the notice a moment before the aggregator records its answer.
        shown = await api(cloud, f"/api/alerts?edge={EDGE}")
        return [(alert["kind"], alert["open"], alert["notified"]) for alert in shown] == [
            ("edge_offline", False, "cleared")
        ]

    await eventually_answers(recorded_as_told, within=WITHIN)
    assert await api(cloud, "/api/alerts?open=true") == []
    changes = (await presence())["changes"]
    assert [change["online"] for change in changes] == [True, False, True]


async def test_a_connector_faulted_long_enough_is_raised_but_not_at_boot_nor_while_offline(
    broker: Mosquitto, start_cloud: StartCloud, webhook: WebhookReceiver, store_url: str | None
) -> None:
    rules = alert_rules(webhook, edge_offline_after=0)  # site-8 is offline a while
    cloud = await start_cloud(broker, store_url=store_url, alerts=rules)
    now = datetime.now(UTC)
    async with edges_at(broker, EDGE, "site-8") as (site, away):
        await site.status("online")
        await site.events(
            (now - timedelta(hours=1), boot("CP-1")),
            (now - timedelta(minutes=50), connector(1, "Faulted", "CP-1")),
            # Reported while CP-2 was starting: counts from the end of the boot grace.
            (now - timedelta(seconds=60), boot("CP-2")),
            (now - timedelta(seconds=55), connector(1, "Faulted", "CP-2")),
        )
        await away.status("offline")
        # What it synced before it went shows CP-9 Faulted for 49 minutes and more.
        await away.events(
            (now - timedelta(minutes=50), connector(1, "Faulted", "CP-9")),
            (now - timedelta(minutes=1), boot("CP-10")),
        )
        (raised,) = await webhook.wait_for(lambda notices: len(notices) == 1)
        assert raised.key == ("connector_faulted", "CP-1/1", "raised")
        assert raised.document["charger_id"] == "CP-1" and raised.document["connector_id"] == 1
        assert "GroundFailure" in raised.document["detail"]
        await looks_after(cloud, 3)
        assert webhook.keys() == [("connector_faulted", "CP-1/1", "raised")]

        # site-8 comes back: its connector's fault is judged now.
        await away.status("online")
        notices = await webhook.wait_for(lambda notices: len(notices) == 2)
        assert notices[1].key == ("connector_faulted", "CP-9/1", "raised")
        assert notices[1].document["edge_id"] == "site-8"

        await site.events((datetime.now(UTC), connector(1, "Available", "CP-1")))
        notices = await webhook.wait_for(lambda notices: len(notices) == 3)
        assert notices[2].key == ("connector_faulted", "CP-1/1", "cleared")
        assert notices[2].document["id"] == raised.document["id"]
    open_alerts = await api(cloud, "/api/alerts?open=true")
    assert [(alert["edge_id"], alert["subject"]) for alert in open_alerts] == [("site-8", "CP-9/1")]


async def test_a_backlog_that_does_not_drain_is_raised_and_cleared_once_synced(
    broker: Mosquitto, start_cloud: StartCloud, webhook: WebhookReceiver, store_url: str | None
) -> None:
    await start_cloud(broker, store_url=store_url, alerts=alert_rules(webhook))
    async with edges_at(broker, EDGE) as (site,):
        await site.status("online", backlog=120, oldest_age_s=4000.0)
        (raised,) = await webhook.wait_for(lambda notices: len(notices) == 1)
        assert raised.key == ("backlog_old", "", "raised")
        assert "120 events not yet synced" in raised.document["detail"]
        await site.status("online", backlog=0)
        notices = await webhook.wait_for(lambda notices: len(notices) == 2)
        assert notices[1].key == ("backlog_old", "", "cleared")


async def test_refusals_spiking_are_raised_and_cleared_when_they_calm(
    broker: Mosquitto, start_cloud: StartCloud, webhook: WebhookReceiver, store_url: str | None
) -> None:
    cloud = await start_cloud(broker, store_url=store_url, alerts=alert_rules(webhook))
    async with edges_at(broker, EDGE) as (site,):
        for _ in range(3):
            await site.garbage()
        await looks_after(cloud, 3)
        assert webhook.notices == []  # three is not more than three
        await site.garbage()
        (raised,) = await webhook.wait_for(lambda notices: len(notices) == 1)
        assert raised.key == ("refusals_spike", "", "raised")
        assert raised.document["edge_id"] == EDGE
        # Nothing more is refused: the window (10 s) empties.
        notices = await webhook.wait_for(lambda notices: len(notices) == 2)
        assert notices[1].key == ("refusals_spike", "", "cleared")


async def test_a_webhook_that_fails_is_tried_again_and_never_holds_up_ingest(
    broker: Mosquitto, start_cloud: StartCloud, store_url: str | None
) -> None:
    receiver = WebhookReceiver(hang=1, refuse=2)
    server = uvicorn.Server(
        uvicorn.Config(
            receiver, host="127.0.0.1", port=receiver.port, log_level="warning", lifespan="off"
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        rules = alert_rules(receiver, webhook_timeout=1.0)
        cloud = await start_cloud(broker, store_url=store_url, alerts=rules)
        async with edges_at(broker, EDGE) as (site,):
            await site.status("online", backlog=5, oldest_age_s=4000.0)
            await eventually(lambda: receiver.attempts == 1, within=WITHIN)  # under way
            # While the webhook holds its first POST, events are stored and acknowledged.
            async with aiomqtt.Client("127.0.0.1", broker.port) as listener:
                await listener.subscribe(site.topics.ack, qos=1)
                await site.events((datetime.now(UTC), boot()))
                async with asyncio.timeout(5):
                    async for message in listener.messages:
                        assert wire.Ack.model_validate_json(bytes(message.payload)).seq == 1
                        break
            (taken,) = await receiver.wait_for(lambda notices: len(notices) == 1)
        assert receiver.attempts == 4  # hung, 503, 503, taken
        assert taken.key == ("backlog_old", "", "raised")

        async def recorded_as_taken() -> bool:
            (alert,) = await api(cloud, "/api/alerts")
            return bool(alert["notified"] == "raised" and alert["notify_error"] is None)

        await eventually_answers(recorded_as_taken, within=WITHIN)
        stats = await api(cloud, "/api/stats/alerts")
        assert stats["notices_failed"] == 3 and stats["notices_sent"] == 1
        assert "HTTP 503" in stats["last_notice_error"]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)


async def test_replicas_on_one_store_raise_clear_and_notify_each_alert_once(
    broker: Mosquitto, start_cloud: StartCloud, webhook: WebhookReceiver, store_url: str | None
) -> None:
    rules = alert_rules(webhook, interval=0.05)
    first = await start_cloud(
        broker, store_url=store_url, alerts=rules, mqtt={"client_id": "replica-1"}
    )
    url = store_url or first.settings.store.url
    second = await start_cloud(broker, store_url=url, alerts=rules, mqtt={"client_id": "replica-2"})
    async with edges_at(broker, EDGE) as (site,):
        # One after the other: replicas take an edge's messages in turn, each in its own
        # time, so two statuses sent at once could be stored in either order.
        await site.status("online")
        await eventually_answers(lambda: edge_state_is(first, "online"), within=WITHIN)
        await site.status("offline")
        await webhook.wait_for(lambda notices: len(notices) == 1)
        await looks_after(first, 10)
        await looks_after(second, 10)
        await site.status("online")
        await webhook.wait_for(lambda notices: len(notices) == 2)
        await looks_after(first, 10)
        await looks_after(second, 10)
    assert webhook.keys() == [("edge_offline", "", "raised"), ("edge_offline", "", "cleared")]
    assert len(await api(first, "/api/alerts")) == 1
    raised = [cloud.site.aggregator.alerts.stats.raised for cloud in (first, second)]
    assert sorted(raised) == [0, 1]


async def test_commands_say_who_asked_for_them(broker: Mosquitto, start_cloud: StartCloud) -> None:
    cloud = await start_cloud(broker, api={"trust_loopback": True})
    reset = {"charger_id": "CP-1", "action": "reset", "arguments": {"type": "Soft"}}
    async with edges_at(broker, EDGE) as (site,):
        await site.status("online")
        await eventually_answers(lambda: edge_state_is(cloud, "online"), within=WITHIN)
        async with httpx.AsyncClient(base_url=cloud.api_url, headers=cloud.api_headers) as client:
            answer = await client.post(f"/api/edges/{EDGE}/commands", json=reset)
            assert answer.status_code == 200, answer.text
        async with httpx.AsyncClient(base_url=cloud.api_url) as local:  # no token
            answer = await local.post(f"/api/edges/{EDGE}/commands", json=reset)
            assert answer.status_code == 200, answer.text
    shown = await api(cloud, f"/api/edges/{EDGE}/commands")
    assert [command["actor"] for command in shown] == ["loopback", "token"]


async def test_a_webhook_that_cannot_be_reached_is_given_up_after_its_attempts(
    broker: Mosquitto, start_cloud: StartCloud
) -> None:
    port = free_port()  # nothing listens there
    rules = {
        "interval": 0.1,
        "backlog_older_than": 1.0,
        "webhook_url": f"http://127.0.0.1:{port}/hooks",
        "webhook_attempts": 3,
        "webhook_retry_first": 0.1,
    }
    cloud = await start_cloud(broker, alerts=rules)
    async with edges_at(broker, EDGE) as (site,):
        await site.status("online", backlog=5, oldest_age_s=4000.0)

        async def given_up() -> bool:
            shown = await api(cloud, "/api/alerts")
            return bool(shown) and (shown[0]["notify_error"] or "").startswith("given up")

        await eventually_answers(given_up, within=WITHIN)
    (alert,) = await api(cloud, "/api/alerts")
    assert alert["notified"] == "none" and alert["notify_attempts"] == 3
    assert alert["notify_after"] is None and "(attempt 3 of 3)" in alert["notify_error"]
    stats = await api(cloud, "/api/stats/alerts")
    assert stats["notices_failed"] == 3 and stats["notices_given_up"] == 1


async def test_a_failed_notice_is_tried_again_at_its_time_not_at_the_next_look(
    engine: Engine,
) -> None:
    # The edge has been offline an hour when the engine first looks.
    record_status(engine, EDGE, b'{"state": "offline"}', now=datetime.now(UTC) - timedelta(hours=1))
    receiver = WebhookReceiver(refuse=1)
    server = uvicorn.Server(
        uvicorn.Config(
            receiver, host="127.0.0.1", port=receiver.port, log_level="warning", lifespan="off"
        )
    )
    serving = asyncio.create_task(server.serve())
    rules = AlertSettings(interval=60, webhook_url=receiver.url, webhook_retry_first=0.2)
    alerts = AlertsEngine(rules, engine)
    stop = asyncio.Event()
    running = asyncio.create_task(alerts.run(stop))
    try:
        (notice,) = await receiver.wait_for(lambda notices: len(notices) == 1, within=10)
        assert notice.key == ("edge_offline", "", "raised") and receiver.attempts == 2
        assert alerts.stats.looks == 1  # the retry came before a second look
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)
