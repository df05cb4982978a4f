"""The local operator API over real HTTP, against a simulated charger over real websockets."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from contract.config_files import ConfigError
from edge.ocpp.commands import CSMS_INITIATED
from edge.ocpp.library import set_handler
from edge.settings import load_settings
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import RunningEdge, StartEdge


@pytest.fixture
async def site(
    start_edge: StartEdge,
) -> AsyncIterator[tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient]]:
    edge = await start_edge(with_api=True)
    async with connect(f"{edge.url}/SIM1", subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        charger = SimulatedCharger("SIM1", connection, SimulatedChargerConfig())
        listener = asyncio.create_task(charger.start())
        await charger.boot()
        await charger.send_status(1, "Available")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{edge.api_port}", timeout=10
        ) as client:
            yield edge, charger, client
        listener.cancel()


async def test_read_endpoints(
    site: tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient],
) -> None:
    _, charger, client = site
    chargers = (await client.get("/api/chargers")).json()
    assert [(c["id"], c["presence"], c["model"]) for c in chargers] == [
        ("SIM1", "online", "Simulated AC 22kW")
    ]
    assert {
        "connector_id": 1,
        "status": "Available",
        "error_code": "NoError",
        "info": None,
    } in chargers[0]["connectors"]
    assert (await client.get("/api/chargers/SIM1")).json()["id"] == "SIM1"
    missing = await client.get("/api/chargers/NOPE")
    assert missing.status_code == 404 and "no charger NOPE" in missing.json()["detail"]
    await charger.start_transaction(1, "CARD")
    open_ones = (await client.get("/api/transactions", params={"open_only": True})).json()
    assert [(t["charger_id"], t["connector_id"], t["id_tag"]) for t in open_ones] == [
        ("SIM1", 1, "CARD")
    ]


async def test_command_endpoint_and_its_errors(
    site: tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient],
) -> None:
    edge, charger, client = site
    reset = await client.post("/api/chargers/SIM1/commands/Reset", json={"type": "Soft"})
    assert reset.status_code == 200 and reset.json()["response"] == {"status": "Accepted"}
    config = await client.post(
        "/api/chargers/SIM1/commands/GetConfiguration", json={"key": ["HeartbeatInterval"]}
    )
    assert config.json()["response"]["configurationKey"] == [
        {"key": "HeartbeatInterval", "readonly": False, "value": "300"}
    ]

    async def status(path: str, body: Any = None, **params: Any) -> tuple[int, dict[str, Any]]:
        response = await client.post(path, json=body, params=params)
        return response.status_code, response.json()

    code, body = await status("/api/chargers/NOPE/commands/Reset", {"type": "Soft"})
    assert code == 404 and "no charger NOPE" in body["detail"]
    code, body = await status("/api/chargers/SIM1/commands/Reset", {"type": "Sideways"})
    assert code == 422 and "type" in body["detail"]
    await edge.execute("INSERT INTO chargers (id, created_at) VALUES ('OFF1', 'x')")
    code, body = await status("/api/chargers/OFF1/commands/Reset", {"type": "Soft"})
    assert code == 409 and "not connected" in body["detail"] and body["commandId"]
    await charger.start_transaction(1, "CARD")
    code, body = await status(
        "/api/chargers/SIM1/commands/RemoteStartTransaction", {"idTag": "X", "connectorId": 1}
    )
    assert code == 409 and "busy with transaction" in body["detail"]
    set_handler(charger, "ClearCache", None)
    code, body = await status("/api/chargers/SIM1/commands/ClearCache")
    assert code == 502 and body["errorCode"] == "NotImplemented"

    async def never(**_: Any) -> None:
        await asyncio.sleep(3600)

    set_handler(charger, "UnlockConnector", never)
    code, body = await status(
        "/api/chargers/SIM1/commands/UnlockConnector", {"connectorId": 1}, wait=0.3
    )
    assert code == 504 and "did not answer" in body["detail"]
    history = (await client.get("/api/chargers/SIM1/commands")).json()
    assert [(c["action"], c["outcome"]) for c in history][:3] == [
        ("UnlockConnector", "timeout"),
        ("ClearCache", "callerror"),
        ("GetConfiguration", "answered"),
    ]


async def test_openapi_documents_every_command(
    site: tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient],
) -> None:
    _, _, client = site
    document = (await client.get("/openapi.json")).json()
    for action in CSMS_INITIATED:
        operation = document["paths"][f"/api/chargers/{{charger_id}}/commands/{action}"]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema["type"] == "object"
    reserve = document["paths"]["/api/chargers/{charger_id}/commands/ReserveNow"]["post"]
    assert "idTag" in reserve["requestBody"]["content"]["application/json"]["schema"]["properties"]


async def test_token_is_required_when_set(start_edge: StartEdge, tmp_path: Path) -> None:
    edge = await start_edge(with_api=True)
    # The fixture's edge has no token; start a second one with the same settings and one.
    secured = edge.settings.model_copy(
        update={"api": edge.settings.api.model_copy(update={"token": "s3cret"})}
    )
    from edge.app import Site, run_edge
    from tests.conftest import free_port

    secured.api.port = free_port()
    secured.ocpp.port = free_port()
    secured.store.path = tmp_path / "secured.db"
    stop = asyncio.Event()
    ready: asyncio.Future[Site] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_edge(secured, stop=stop, on_ready=ready.set_result))
    site = await asyncio.wait_for(ready, 10)
    assert site.api is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{site.api.port}") as client:
        refused = await client.get("/api/chargers")
        assert refused.status_code == 401 and "Bearer" in refused.json()["detail"]
        allowed = await client.get("/api/chargers", headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200
    stop.set()
    await task


def test_api_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[api]\nhost = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match=r"set api\.token"):
        load_settings(path)
    path.write_text('[api]\nhost = "0.0.0.0"\ntoken = "t"\n')
    assert load_settings(path).api.token == "t"


async def test_cli_cmd_goes_through_the_api(
    site: tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient], tmp_path: Path
) -> None:
    edge, _, _ = site
    config = tmp_path / "cli.toml"
    config.write_text(f'[api]\nport = {edge.api_port}\n[store]\npath = "{edge.db_path}"\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        "cmd",
        "SIM1",
        "ChangeConfiguration",
        "--arg",
        "key=HeartbeatInterval",
        "--arg",
        "value=120",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err
    assert '"status": "Accepted"' in out.decode()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        "cmd",
        "NOPE",
        "Reset",
        "--arg",
        "type=Soft",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 1 and "no charger NOPE" in err.decode()


async def test_charger_state_shows_what_the_edge_keeps(
    site: tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient],
) -> None:
    _, _, client = site
    await client.post("/api/chargers/SIM1/commands/GetConfiguration", json={})
    await client.post(
        "/api/chargers/SIM1/commands/ChangeConfiguration",
        json={"key": "MeterValueSampleInterval", "value": "30"},
    )
    await client.post(
        "/api/chargers/SIM1/commands/ChangeAvailability",
        json={"connectorId": 1, "type": "Inoperative"},
    )
    await client.post("/api/chargers/SIM1/commands/SendLocalList", json={})
    state = (await client.get("/api/chargers/SIM1/state")).json()
    config = {entry["key"]: entry for entry in state["configuration"]}
    assert config["MeterValueSampleInterval"]["value"] == "30"
    assert config["MeterValueSampleInterval"]["change_status"] == "Accepted"
    assert state["availability"] == [
        {
            "connector_id": 1,
            "requested": "Inoperative",
            "answer": "Accepted",
            "requested_at": state["availability"][0]["requested_at"],
        }
    ]
    # The card table's list (empty here), as listVersion 1.
    local_list = state["local_list"]
    assert (local_list["status"], local_list["list_version"], local_list["held"]) == (
        "listed",
        1,
        0,
    )
    assert (await client.get("/api/chargers/NOPE/state")).status_code == 404


async def test_pages_of_other_sites_cannot_use_the_token_free_api(
    site: tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient],
) -> None:
    edge, _, client = site
    reset = "/api/chargers/SIM1/commands/Reset"
    own = f"127.0.0.1:{edge.api_port}"
    # DNS rebinding: another site's name resolved to this machine.
    rebound = await client.get("/api/chargers", headers={"Host": f"evil.example:{edge.api_port}"})
    assert rebound.status_code == 400 and "api.allowed_hosts" in rebound.json()["detail"]
    posted = await client.post(reset, json={"type": "Soft"}, headers={"Host": "evil.example"})
    assert posted.status_code == 400
    # Cross-site requests a page can make without asking (forms, no-cors fetches).
    cross_site = [
        {"Origin": "http://evil.example", "Content-Type": "application/json"},
        {"Origin": "null", "Content-Type": "application/json"},
        {"Origin": f"http://localhost:{edge.api_port + 1}", "Content-Type": "application/json"},
        {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},
        {"Sec-Fetch-Site": "same-site", "Content-Type": "application/json"},
    ]
    for headers in cross_site:
        refused = await client.post(reset, content=b'{"type": "Soft"}', headers=headers)
        assert refused.status_code == 403, headers
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
        refused = await client.post(
            reset, content=b'{"type": "Soft"}', headers={"Content-Type": content_type}
        )
        assert refused.status_code == 415, content_type
        assert "application/json" in refused.json()["detail"]
    untyped = await client.post(reset, content=b'{"type": "Soft"}')
    assert untyped.status_code == 415
    # A request forwarded by a proxy on this machine is not this machine's client.
    proxied = await client.post(
        reset, json={"type": "Soft"}, headers={"X-Forwarded-For": "10.1.2.3"}
    )
    assert proxied.status_code == 401
    assert edge.query("SELECT * FROM commands") == []
    # The same origin, and clients that say nothing of an origin (the CLI), are served.
    same = await client.post(
        reset,
        json={"type": "Soft"},
        headers={"Origin": f"http://{own}", "Sec-Fetch-Site": "same-origin"},
    )
    assert same.status_code == 200
    assert (await client.post(reset, json={"type": "Soft"})).status_code == 200
    assert (await client.post("/api/chargers/SIM1/commands/ClearCache")).status_code == 200
    assert len(edge.query("SELECT * FROM commands")) == 3


async def test_names_of_this_edge_can_be_allowed(start_edge: StartEdge) -> None:
    edge = await start_edge(with_api=True, sections={"api": {"allowed_hosts": ["edge.local"]}})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.api_port}") as client:
        named = await client.get("/api/chargers", headers={"Host": f"edge.local:{edge.api_port}"})
        assert named.status_code == 200
        other = await client.get("/api/chargers", headers={"Host": "edge.example"})
        assert other.status_code == 400
