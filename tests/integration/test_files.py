"""Firmware served and diagnostics/logs received by the edge itself, over real HTTP and
FTP on loopback, driven by OCPP commands to the simulated charger."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from edge.cli import main
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import RunningEdge, StartEdge, free_port

IMAGE = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
async def site(
    start_edge: StartEdge, tmp_path: Path
) -> AsyncIterator[tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient]]:
    files = {
        "host": "127.0.0.1",
        "port": free_port(),
        "ftp_port": free_port(),
        "ftp_password": "ftp-secret",
    }
    edge = await start_edge(with_api=True, files=files)
    image = tmp_path / "fw-2.0.bin"
    image.write_bytes(IMAGE)
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[store]\npath = "{edge.db_path}"\n[files]\ndirectory = "{edge.settings.files.directory}"\n'
    )
    assert main(["firmware", "add", str(image), "--config", str(config)]) == 0
    async with connect(f"{edge.url}/SIM1", subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        charger = SimulatedCharger("SIM1", connection, SimulatedChargerConfig())
        listener = asyncio.create_task(charger.start())
        await charger.boot()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{edge.api_port}", timeout=10
        ) as client:
            yield edge, charger, client
        listener.cancel()


async def statuses(edge: RunningEdge, kind: str, last: str) -> list[tuple[str, int | None]]:
    async with asyncio.timeout(10):
        while True:
            rows = [
                (r["status"], r["command_id"])
                for r in edge.query(
                    "SELECT status, command_id FROM charger_job_status WHERE kind = ? ORDER BY id",
                    (kind,),
                )
            ]
            if rows and rows[-1][0] == last:
                return rows
            await asyncio.sleep(0.02)


async def test_firmware_is_served_with_length_and_checksum(
    site: tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient],
) -> None:
    edge, charger, client = site
    answer = await client.post(
        "/api/chargers/SIM1/commands/UpdateFirmware",
        json={"image": "fw-2.0.bin", "retrieveDate": "2026-01-01T00:00:00Z"},
    )
    assert answer.status_code == 200, answer.text
    command_id = answer.json()["commandId"]
    rows = await statuses(edge, "firmware", "Installed")
    assert rows == [
        (status, command_id) for status in ("Downloading", "Downloaded", "Installing", "Installed")
    ]
    assert charger.firmware == IMAGE
    url = f"{edge.settings.files.base_url()}/firmware/fw-2.0.bin"
    async with httpx.AsyncClient() as plain:
        response = await plain.get(url)
        assert int(response.headers["content-length"]) == len(IMAGE)
        expected = base64.b64encode(hashlib.sha256(IMAGE).digest()).decode()
        assert response.headers["digest"] == f"sha-256={expected}"
        assert (await plain.get(url.replace("fw-2.0.bin", "missing.bin"))).status_code == 404
    missing = await client.post(
        "/api/chargers/SIM1/commands/UpdateFirmware",
        json={"image": "nope.bin", "retrieveDate": "2026-01-01T00:00:00Z"},
    )
    assert missing.status_code == 422 and "no firmware image" in missing.json()["detail"]


async def test_diagnostics_upload_over_http_and_ftp(
    site: tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient],
) -> None:
    edge, _, client = site
    uploads = edge.settings.files.directory / "uploads"
    answer = await client.post(
        "/api/chargers/SIM1/commands/GetDiagnostics", json={"location": "edge"}
    )
    assert answer.json()["response"]["fileName"] == "SIM1-diagnostics.txt"
    assert await statuses(edge, "diagnostics", "Uploaded")
    assert (uploads / "SIM1-diagnostics.txt").read_bytes().startswith(b"SIM1 diagnostics")

    answer = await client.post(
        "/api/chargers/SIM1/commands/GetLog",
        json={"log": {"remoteLocation": "edge-ftp"}, "logType": "DiagnosticsLog", "requestId": 12},
    )
    assert answer.status_code == 200, answer.text
    rows = await statuses(edge, "log", "Uploaded")
    assert rows[-1][1] == answer.json()["commandId"]
    uploaded = uploads / "SIM1-diagnosticslog-12.log"
    assert uploaded.read_bytes().startswith(b"SIM1 diagnostics")
    received = {(r["name"], r["via"]) for r in edge.query("SELECT name, via FROM received_files")}
    assert received == {("SIM1-diagnostics.txt", "http"), ("SIM1-diagnosticslog-12.log", "ftp")}


async def test_upload_names_are_checked(
    site: tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient],
) -> None:
    edge, _, _ = site
    base = edge.settings.files.base_url()
    async with httpx.AsyncClient() as plain:
        assert (await plain.put(f"{base}/uploads/..%2Fescape.txt", content=b"x")).status_code in (
            400,
            404,
        )
        assert (await plain.put(f"{base}/uploads/.hidden", content=b"x")).status_code == 400
        ok = await plain.post(f"{base}/uploads/report.txt", content=b"hello")
        assert ok.status_code == 201 and ok.json() == {"name": "report.txt", "size": 5}
