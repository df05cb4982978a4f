"""Who may use the cloud's REST API, over real HTTP against the running aggregator: every
client carries the token (behind the reverse proxy the docs prescribe, everyone comes
from loopback), unless the operator explicitly trusts this machine's direct clients; and
those pass the same browser checks as the edge's local API."""

from __future__ import annotations

import httpx
import pytest

from contract.config_files import ConfigError
from tests.conftest import StartCloud
from tests.mosquitto import Mosquitto
from tests.waiting import eventually

CARDS = [{"id_tag": "CARD-1"}]
COMMAND = {"charger_id": "CP-1", "action": "reset", "arguments": {"type": "Soft"}}


async def test_the_aggregator_refuses_to_start_without_a_token(
    start_cloud: StartCloud, broker: Mosquitto
) -> None:
    with pytest.raises(ConfigError, match=r"api\.token is empty.*api\.trust_loopback"):
        await start_cloud(broker, api={"token": ""})
    # An ingest-only replica (no API) needs none.
    replica = await start_cloud(broker, api={"token": "", "port": 0})
    assert replica.site.api is None


async def test_every_route_but_enrolling_needs_the_token_even_from_loopback(
    start_cloud: StartCloud, broker: Mosquitto
) -> None:
    cloud = await start_cloud(broker)
    requests = [
        ("GET", "/api/edges", None),
        ("GET", "/api/stats", None),
        ("PUT", "/api/edges/site-1/cards", CARDS),
        ("POST", "/api/edges/site-1/commands", COMMAND),
        ("POST", "/api/edges/site-1/enrollment-codes", {}),
    ]
    async with httpx.AsyncClient(base_url=cloud.api_url) as client:
        for method, path, body in requests:
            bare = await client.request(method, path, json=body)
            assert bare.status_code == 401, (method, path)
            assert "Bearer <api.token>" in bare.json()["detail"]
            assert bare.headers["www-authenticate"] == "Bearer"
            wrong = await client.request(
                method, path, json=body, headers={"Authorization": "Bearer nope"}
            )
            assert wrong.status_code == 401 and "wrong token" in wrong.json()["detail"]
        assert (await client.get("/openapi.json")).status_code == 200
        # Enrolling needs no token: the code is the credential (not set up here: 503).
        assert (await client.post("/api/enroll/code", json={"code": "x"})).status_code == 503
        allowed = await client.put("/api/edges/site-1/cards", json=CARDS, headers=cloud.api_headers)
        assert allowed.status_code == 200


async def test_trusting_loopback_serves_direct_clients_only_past_the_browser_checks(
    start_cloud: StartCloud, broker: Mosquitto
) -> None:
    cloud = await start_cloud(broker, api={"token": "", "trust_loopback": True})
    async with httpx.AsyncClient(base_url=cloud.api_url) as client:
        assert (await client.get("/api/edges")).status_code == 200
        assert (await client.put("/api/edges/site-1/cards", json=CARDS)).status_code == 200
        # A request a proxy on this machine forwarded is not this machine's client.
        proxied = await client.get("/api/edges", headers={"X-Forwarded-For": "203.0.113.7"})
        assert proxied.status_code == 401
        # A page of another site, renamed to this address (DNS rebinding), or posting here.
        rebound = await client.get("/api/edges", headers={"Host": "evil.example:8090"})
        assert rebound.status_code == 400 and "allowed_hosts" in rebound.json()["detail"]
        cross = await client.put(
            "/api/edges/site-1/cards", json=CARDS, headers={"Origin": "http://evil.example"}
        )
        assert cross.status_code == 403
        form = await client.post(
            "/api/edges/site-1/commands",
            content=b"charger_id=CP-1&action=reset",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 415 and "application/json" in form.json()["detail"]
        # Only the first card list was taken.
        assert (await client.get("/api/edges/site-1/cards")).json()["version"] == 1


async def test_an_edge_id_that_cannot_be_one_is_refused_before_it_reaches_mqtt(
    start_cloud: StartCloud, broker: Mosquitto
) -> None:
    cloud = await start_cloud(broker)
    await eventually(lambda: cloud.site.aggregator.connected)
    async with httpx.AsyncClient(base_url=cloud.api_url, headers=cloud.api_headers) as client:
        for edge_id in ("a%2Bb", "a%23", "%2Bx"):
            answer = await client.put(f"/api/edges/{edge_id}/cards", json=CARDS)
            assert answer.status_code == 422, edge_id
            assert "is not an edge id" in answer.json()["detail"]
            command = await client.post(f"/api/edges/{edge_id}/commands", json=COMMAND)
            assert command.status_code == 422
    assert cloud.site.aggregator.connected
