"""A fleet's own alert settings, on SQLite and PostgreSQL: its admins see and change the
thresholds and webhook through the real ASGI app (others are refused, the CSRF token is
needed, each field is checked, each change audited), the alerts engine judges each
fleet's edges by that fleet's thresholds and tells that fleet's webhook only, and the
"send a test" button posts a signed test notice to a real receiver and shows its answer;
a fleet's webhook on a private address is refused unless the configuration allows it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine

from cloud.alerts import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, AlertsEngine
from cloud.settings import AlertSettings, CloudSettings
from cloud.store import alerts as alerts_store
from cloud.store import fleets
from cloud.store.alert_settings import FleetAlertSettings, fleet_settings, save_fleet_settings
from cloud.store.audit import recent
from cloud.store.ingest import record_status
from cloud.store.times import utc_now
from tests.cloud import payloads
from tests.cloud.test_alerts_aggregator import WebhookReceiver
from tests.cloud.web import add_user, browser

SECRET = "acme-hook-secret"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A webhook receiver on a free loopback port (tests/cloud/test_alerts_aggregator.py)."""
    hook = WebhookReceiver()
    config = uvicorn.Config(
        hook, host="127.0.0.1", port=hook.port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn gives no event
        await asyncio.sleep(0.01)
    yield hook
    server.should_exit = True
    await asyncio.wait_for(task, timeout=10)


@pytest.fixture
def two_fleets(engine: Engine) -> dict[str, int]:
    """Fleet Acme (ada admin, opal operator) with depot-1; fleet Bolt (bea admin) with
    bolt-1."""
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    add_user(engine, "ada@acme.test", "admin", acme)
    add_user(engine, "opal@acme.test", "operator", acme)
    add_user(engine, "bea@bolt.test", "admin", bolt)
    fleets.assign_edge(engine, "depot-1", acme, site_name="Depot North")
    fleets.assign_edge(engine, "bolt-1", bolt, site_name="Bolt HQ")
    return {"acme": acme, "bolt": bolt}


def settings(**alerts: Any) -> CloudSettings:
    return CloudSettings(api={"token": "machine-token"}, web={}, alerts=alerts)


def form(**fields: str) -> dict[str, str | list[str]]:
    return {
        "offline_minutes": "",
        "backlog_minutes": "",
        "faulted_minutes": "",
        "refusals_count": "",
        "webhook": "default",
        "webhook_url": "",
        "webhook_secret": "",
    } | fields


def audited(engine: Engine, fleet_id: int) -> list[tuple[str, str, Any]]:
    return [
        (entry.actor, entry.action, entry.detail)
        for entry in recent(engine, fleet_id)
        if entry.action.startswith("alerts.")
    ]


async def test_an_admin_sets_the_fleets_thresholds_and_webhook_audited(
    engine: Engine, two_fleets: dict[str, int]
) -> None:
    acme = two_fleets["acme"]
    async with browser(engine, settings(edge_offline_after=600.0)) as admin:
        await admin.sign_in("ada@acme.test")
        alerts_page = await admin.get("/web/alerts")
        assert 'href="/web/alerts/settings"' in alerts_page.text
        page = await admin.get("/web/alerts/settings")
        assert page.status_code == 200
        # The configuration's values are the defaults, shown beside each field.
        assert 'placeholder="default 10"' in page.text
        saved = await admin.post(
            "/web/alerts/settings",
            form(
                offline_minutes="5",
                faulted_minutes="0",
                refusals_count="40",
                webhook="own",
                webhook_url="https://hooks.acme.test/alerts?token=abc",
                webhook_secret=SECRET,
            ),
        )
        assert saved.status_code == 303
        assert saved.headers["location"] == "/web/alerts/settings?saved=1"
        again = await admin.get("/web/alerts/settings?saved=1")
        assert 'id="saved"' in again.text
        assert 'name="offline_minutes" value="5"' in again.text
        assert "https://hooks.acme.test/alerts?token=abc" in again.text
        assert SECRET not in again.text  # the secret is never shown back
    own = fleet_settings(engine, acme)
    assert (own.edge_offline_after, own.faulted_after, own.refusals_count) == (300.0, 0.0, 40)
    assert own.backlog_older_than is None  # empty: the configuration's
    assert (own.webhook_url, own.webhook_secret) == (
        "https://hooks.acme.test/alerts?token=abc",
        SECRET,
    )
    assert fleet_settings(engine, two_fleets["bolt"]) == FleetAlertSettings(two_fleets["bolt"])
    ((actor, action, detail),) = audited(engine, acme)
    assert (actor, action) == ("ada@acme.test", "alerts.settings")
    # The URL's token and the secret stay out of the log.
    assert detail == {
        "edge_offline_after": 300.0,
        "faulted_after": 0.0,
        "refusals_count": 40,
        "webhook": "https://hooks.acme.test",
        "webhook_secret": "set",
    }


async def test_every_field_is_checked_and_only_admins_of_the_fleet_change_it(
    engine: Engine, two_fleets: dict[str, int]
) -> None:
    refusals = [
        (form(offline_minutes="soon"), "whole minutes"),
        (form(offline_minutes="-1"), "whole minutes"),
        (form(backlog_minutes="43201"), "whole minutes, 0 (off) to 43200"),
        (form(refusals_count="1000001"), "Refusals: a count"),
        (form(webhook="own", webhook_url="ftp://hooks.acme.test/x"), "http:// or https://"),
        (form(webhook="own", webhook_url="javascript:alert(1)"), "http:// or https://"),
        (form(webhook="own", webhook_url="https://user:pw@hooks.acme.test/"), "no user"),
        (form(webhook="own", webhook_url="https://hooks.acme.test/a b"), "http:// or https://"),
        (form(webhook="own", webhook_url=""), "give the URL"),
        (form(webhook="elsewhere"), "Webhook: the default, none"),
        (form(webhook="own", webhook_url="https://h.test/", webhook_secret="é"), "ASCII"),
    ]
    async with browser(engine) as admin:
        await admin.sign_in("ada@acme.test")
        await admin.get("/web/alerts/settings")
        for fields, message in refusals:
            answer = await admin.post("/web/alerts/settings", fields)
            assert answer.status_code == 422, fields
            assert message in answer.text, (message, answer.text)
        too_long = await admin.post(
            "/web/alerts/settings",
            form(webhook="own", webhook_url="https://h.test/" + "x" * 2000),
        )
        assert too_long.status_code == 422
        no_token = await admin.client.post("/web/alerts/settings", data=form(offline_minutes="1"))
        assert no_token.status_code == 403
    async with browser(engine) as operator:
        await operator.sign_in("opal@acme.test")
        assert (await operator.get("/web/alerts/settings")).status_code == 403
        alerts_page = await operator.get("/web/alerts")
        assert 'href="/web/alerts/settings"' not in alerts_page.text
        refused = await operator.post("/web/alerts/settings", form(offline_minutes="1"))
        assert refused.status_code == 403
    async with browser(engine) as other:
        await other.sign_in("bea@bolt.test")
        await other.get("/web/alerts/settings")
        assert (
            await other.post("/web/alerts/settings", form(offline_minutes="7"))
        ).status_code == 303
    assert fleet_settings(engine, two_fleets["acme"]) == FleetAlertSettings(two_fleets["acme"])
    assert fleet_settings(engine, two_fleets["bolt"]).edge_offline_after == 420.0
    assert audited(engine, two_fleets["acme"]) == []


async def test_each_fleet_is_judged_by_its_thresholds_and_told_on_its_webhook(
    engine: Engine, two_fleets: dict[str, int], receiver: WebhookReceiver
) -> None:
    acme, bolt = two_fleets["acme"], two_fleets["bolt"]
    # The configuration: offline alerts after 10 minutes, no webhook.
    base = AlertSettings(edge_offline_after=600.0, webhook_timeout=5.0)
    save_fleet_settings(
        engine,
        FleetAlertSettings(
            acme, edge_offline_after=60.0, webhook_url=receiver.url, webhook_secret=SECRET
        ),
        "ada@acme.test",
    )
    now = utc_now()
    for edge_id in ("depot-1", "bolt-1"):
        record_status(engine, edge_id, payloads.status("offline"), now=now - timedelta(minutes=2))
    alerts = AlertsEngine(base.model_copy(update={"fleet_webhooks_private": True}), engine)
    raised, _ = await alerts.look(now)
    # Two minutes offline: over Acme's one minute, under the configuration's ten.
    assert [(new.kind, new.edge_id) for _, new in raised] == [("edge_offline", "depot-1")]
    async with httpx.AsyncClient() as client:
        assert await alerts.deliver(client) == 1
    (notice,) = await receiver.wait_for(lambda notices: len(notices) == 1)
    assert notice.document["edge_id"] == "depot-1" and notice.document["state"] == "raised"
    expected = hmac.new(
        SECRET.encode(),
        notice.headers["x-ocpp-cloud-timestamp"].encode() + b"." + notice.headers["body"].encode(),
        hashlib.sha256,
    ).hexdigest()
    assert notice.headers[SIGNATURE_HEADER.lower()] == f"sha256={expected}"
    # Bolt keeps the configuration's thresholds: ten minutes offline, then an alert; with
    # no webhook anywhere for it, nothing is sent.
    later, _ = await alerts.look(now + timedelta(minutes=9))
    assert [(new.kind, new.edge_id) for _, new in later] == [("edge_offline", "bolt-1")]
    (bolt_alert,) = alerts_store.list_alerts(engine, fleet_id=bolt)
    assert bolt_alert.notify_after is None and bolt_alert.notified == "none"
    async with httpx.AsyncClient() as client:
        assert await alerts.deliver(client) == 0
    assert len(receiver.notices) == 1


async def test_a_fleets_webhook_on_a_private_address_is_refused_unless_allowed(
    engine: Engine, two_fleets: dict[str, int], receiver: WebhookReceiver
) -> None:
    acme = two_fleets["acme"]
    save_fleet_settings(
        engine,
        FleetAlertSettings(acme, edge_offline_after=60.0, webhook_url=receiver.url),
        "ada@acme.test",
    )
    now = utc_now()
    record_status(engine, "depot-1", payloads.status("offline"), now=now - timedelta(minutes=2))
    alerts = AlertsEngine(AlertSettings(webhook_timeout=5.0), engine)
    await alerts.look(now)
    async with httpx.AsyncClient() as client:
        await alerts.deliver(client)
    (alert,) = alerts_store.list_alerts(engine, fleet_id=acme)
    assert alert.notify_error is not None and "not a public one" in alert.notify_error
    assert receiver.attempts == 0  # never reached


async def test_send_a_test_posts_a_signed_test_notice_and_shows_the_answer(
    engine: Engine, two_fleets: dict[str, int], receiver: WebhookReceiver
) -> None:
    acme = two_fleets["acme"]
    async with browser(engine, settings(fleet_webhooks_private=True)) as admin:
        await admin.sign_in("ada@acme.test")
        page = await admin.get("/web/alerts/settings")
        # No webhook of the fleet's own yet: nothing to test.
        assert 'id="webhook-test"' in page.text
        refused = await admin.post("/web/alerts/settings/test", {})
        assert refused.status_code == 422 and "Set a webhook URL" in refused.text
        await admin.post(
            "/web/alerts/settings",
            form(webhook="own", webhook_url=receiver.url, webhook_secret=SECRET),
        )
        await admin.get("/web/alerts/settings")
        tested = await admin.post("/web/alerts/settings/test", {})
        assert tested.status_code == 200
        assert "Delivered: the webhook answered HTTP 200." in tested.text
        again = await admin.post("/web/alerts/settings/test", {})
        assert again.status_code == 429
    (notice,) = receiver.notices
    assert notice.document["kind"] == "test" and "Acme" in notice.document["text"]
    assert notice.headers[EVENT_HEADER.lower()] == "alert.test"
    assert notice.headers[DELIVERY_HEADER.lower()].startswith("test-")
    assert SIGNATURE_HEADER.lower() in notice.headers
    tests = [d for _, action, d in audited(engine, acme) if action == "alerts.webhook_test"]
    assert tests == [
        {"webhook": "http://127.0.0.1", "result": "Delivered: the webhook answered HTTP 200."}
    ]
    # Without the configuration's leave, a fleet's webhook on this machine is refused.
    async with browser(engine) as admin:
        await admin.sign_in("ada@acme.test")
        await admin.get("/web/alerts/settings")
        private = await admin.post("/web/alerts/settings/test", {})
        assert private.status_code == 200
        assert (
            "Not delivered: the webhook&#39;s host 127.0.0.1 has the address 127.0.0.1"
            in private.text
        )
    assert len(receiver.notices) == 1
