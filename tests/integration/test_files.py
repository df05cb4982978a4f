"""Firmware served and diagnostics/logs received by the edge itself, over real HTTP and
FTP on loopback, driven by OCPP commands to the simulated charger: uploads only from
chargers the edge asked, each into its own folder, within limits, durable and recorded
before they are acknowledged."""

from __future__ import annotations

import asyncio
import base64
import ftplib
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from edge.cli import main
from edge.files.tokens import UploadTokens
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import RunningEdge, StartEdge, free_port

IMAGE = bytes(range(256)) * 4096  # 1 MiB


Site = tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient]


@pytest.fixture
def file_limits() -> dict[str, Any]:
    """[files] settings a test overrides (limits)."""
    return {}


@pytest.fixture
async def site(
    start_edge: StartEdge, tmp_path: Path, file_limits: dict[str, Any]
) -> AsyncIterator[Site]:
    files = {"host": "127.0.0.1", "port": free_port(), "ftp_port": free_port(), **file_limits}
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
    uploads = edge.settings.files.directory / "uploads" / "SIM1"
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
    received = {
        (r["charger_id"], r["name"], r["via"], r["sha256"])
        for r in edge.query("SELECT charger_id, name, via, sha256 FROM received_files")
    }
    assert received == {
        (
            "SIM1",
            "SIM1-diagnostics.txt",
            "http",
            hashlib.sha256((uploads / "SIM1-diagnostics.txt").read_bytes()).hexdigest(),
        ),
        (
            "SIM1",
            "SIM1-diagnosticslog-12.log",
            "ftp",
            hashlib.sha256(uploaded.read_bytes()).hexdigest(),
        ),
    }
    # The locations handed out carry the charger's own credential.
    sent = [
        json.loads(r["request"]) for r in edge.query("SELECT request FROM commands ORDER BY id")
    ]
    http_location = sent[-2]["location"]
    ftp_location = urlsplit(sent[-1]["log"]["remoteLocation"])
    assert "/uploads/" in http_location and http_location.rsplit("/", 1)[1] != "uploads"
    assert ftp_location.username == "SIM1" and ftp_location.password


def token_for(edge: RunningEdge, charger_id: str, valid_for_s: float = 3600) -> str:
    """A token as the edge issues it (its key is in the files directory)."""
    return UploadTokens.load_or_create(edge.settings.files.directory).issue(charger_id, valid_for_s)


def upload_url(edge: RunningEdge, charger_id: str, name: str) -> str:
    return f"{edge.settings.files.base_url()}/uploads/{token_for(edge, charger_id)}/{name}"


async def test_upload_names_are_checked(
    site: tuple[RunningEdge, SimulatedCharger, httpx.AsyncClient],
) -> None:
    edge, _, _ = site
    base = edge.settings.files.base_url() + "/uploads/" + token_for(edge, "SIM1")
    async with httpx.AsyncClient() as plain:
        assert (await plain.put(f"{base}/..%2Fescape.txt", content=b"x")).status_code in (400, 404)
        assert (await plain.put(f"{base}/.hidden", content=b"x")).status_code == 400
        ok = await plain.post(f"{base}/report.txt", content=b"hello")
        assert ok.status_code == 201
        assert ok.json() == {
            "name": "report.txt",
            "size": 5,
            "sha256": hashlib.sha256(b"hello").hexdigest(),
        }
    assert not (edge.settings.files.directory / "escape.txt").exists()


async def test_uploads_come_only_from_chargers_the_edge_asked(site: Site) -> None:
    edge, _, _ = site
    base = edge.settings.files.base_url()
    forged = token_for(edge, "SIM1").rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAA"
    expired = token_for(edge, "SIM1", valid_for_s=-1)
    async with httpx.AsyncClient() as plain:
        bare = await plain.put(f"{base}/uploads/report.txt", content=b"x")
        assert bare.status_code == 401 and "GetDiagnostics" in bare.json()["detail"]
        for token in (forged, expired, "nonsense"):
            refused = await plain.put(f"{base}/uploads/{token}/report.txt", content=b"x")
            assert refused.status_code == 403, token
    assert list((edge.settings.files.directory / "uploads").rglob("*")) == []
    assert edge.query("SELECT * FROM received_files") == []


async def test_a_charger_cannot_touch_another_chargers_files(site: Site) -> None:
    edge, _, _ = site
    uploads = edge.settings.files.directory / "uploads"
    async with httpx.AsyncClient() as plain:
        first = await plain.put(upload_url(edge, "SIM1", "report.txt"), content=b"from SIM1")
        assert first.status_code == 201
        second = await plain.put(upload_url(edge, "SIM2", "report.txt"), content=b"from SIM2")
        assert second.status_code == 201
        odd = await plain.put(upload_url(edge, "CP:7", "report.txt"), content=b"from CP:7")
        assert odd.status_code == 201
    assert (uploads / "SIM1" / "report.txt").read_bytes() == b"from SIM1"
    assert (uploads / "SIM2" / "report.txt").read_bytes() == b"from SIM2"
    assert (uploads / "CP%3A7" / "report.txt").read_bytes() == b"from CP:7"
    rows = edge.query("SELECT charger_id, name FROM received_files ORDER BY id")
    assert [tuple(row) for row in rows] == [
        ("SIM1", "report.txt"),
        ("SIM2", "report.txt"),
        ("CP:7", "report.txt"),
    ]


async def chunks(size: int, piece: int = 16384) -> AsyncIterator[bytes]:
    """A body without Content-Length: httpx sends it chunked."""
    for start in range(0, size, piece):
        yield b"x" * min(piece, size - start)


@pytest.mark.parametrize(
    "file_limits",
    [{"max_upload_bytes": 65536, "max_charger_bytes": 163840, "max_charger_files": 3}],
)
async def test_uploads_are_limited_per_upload_and_per_charger(site: Site) -> None:
    edge, _, _ = site
    folder = edge.settings.files.directory / "uploads" / "SIM1"
    async with httpx.AsyncClient() as plain:
        declared = await plain.put(upload_url(edge, "SIM1", "big.bin"), content=b"x" * 65537)
        assert declared.status_code == 413
        streamed = await plain.put(upload_url(edge, "SIM1", "big.bin"), content=chunks(200_000))
        assert streamed.status_code == 413
        for number in (1, 2):
            stored = await plain.put(
                upload_url(edge, "SIM1", f"part-{number}.bin"), content=b"x" * 65536
            )
            assert stored.status_code == 201
        # 128 KiB kept: another 64 KiB passes the charger's 160 KiB.
        share = await plain.put(upload_url(edge, "SIM1", "part-3.bin"), content=chunks(65536))
        assert share.status_code == 507 and "max_charger_bytes" in share.json()["detail"]
        # Replacing a file of its own counts the new size only.
        again = await plain.put(upload_url(edge, "SIM1", "part-2.bin"), content=b"y" * 1000)
        assert again.status_code == 201
        small = await plain.put(upload_url(edge, "SIM1", "part-3.bin"), content=b"z" * 10)
        assert small.status_code == 201
        count = await plain.put(upload_url(edge, "SIM1", "part-4.bin"), content=b"z")
        assert count.status_code == 507 and "max_charger_files" in count.json()["detail"]
        # Another charger's share is its own.
        other = await plain.put(upload_url(edge, "SIM2", "part-1.bin"), content=b"x" * 65536)
        assert other.status_code == 201
    assert sorted(path.name for path in folder.iterdir()) == [
        "part-1.bin",
        "part-2.bin",
        "part-3.bin",
    ]
    assert len(edge.query("SELECT * FROM received_files WHERE charger_id = 'SIM1'")) == 4


@pytest.mark.parametrize("file_limits", [{"min_free_bytes": 1 << 60}])
async def test_uploads_never_fill_the_disk(site: Site) -> None:
    edge, _, client = site
    async with httpx.AsyncClient() as plain:
        refused = await plain.put(upload_url(edge, "SIM1", "a.bin"), content=b"x" * 10)
    assert refused.status_code == 507 and "min_free_bytes" in refused.json()["detail"]
    assert list((edge.settings.files.directory / "uploads").rglob("*.bin")) == []
    # The charger asked through GetDiagnostics is told its upload failed.
    await client.post("/api/chargers/SIM1/commands/GetDiagnostics", json={"location": "edge"})
    assert await statuses(edge, "diagnostics", "UploadFailed")


async def test_an_upload_is_durable_and_recorded_before_its_answer(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge, _, _ = site
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    async with httpx.AsyncClient() as plain:
        answer = await plain.put(upload_url(edge, "SIM1", "durable.txt"), content=b"kept")
        assert answer.status_code == 201
        # At the moment of the answer: the file and its folder were fsynced, the record
        # committed (read by another connection).
        folder = edge.settings.files.directory.resolve() / "uploads" / "SIM1"
        assert any(path.startswith(str(folder / ".durable.txt.")) for path in synced)
        assert str(folder) in synced
        assert [r["name"] for r in edge.query("SELECT name FROM received_files")] == ["durable.txt"]


def ftp_login(edge: RunningEdge, user: str, password: str) -> ftplib.FTP:
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", edge.settings.files.ftp_port, timeout=10)
    ftp.login(user, password)
    return ftp


def store_too_big(ftp: ftplib.FTP) -> None:
    try:
        ftp.storbinary("STOR big.bin", io.BytesIO(b"x" * 200_000))
    except (ConnectionResetError, BrokenPipeError):
        # The server closed the data connection while we were still sending; its 426
        # answer is then still waiting on the control connection.
        ftp.voidresp()


@pytest.mark.parametrize("file_limits", [{"max_upload_bytes": 65536}])
async def test_ftp_uploads_need_the_chargers_own_login_and_are_limited(site: Site) -> None:
    edge, _, _ = site
    folder = edge.settings.files.directory / "uploads" / "SIM1"

    def session() -> None:
        with pytest.raises(ftplib.error_perm, match="530"):
            ftp_login(edge, "SIM1", token_for(edge, "SIM2"))
        with pytest.raises(ftplib.error_perm, match="530"):
            ftp_login(edge, "ocpp", "ftp-secret")
        with ftp_login(edge, "SIM1", token_for(edge, "SIM1")) as ftp:
            answer = ftp.storbinary("STOR report.txt", io.BytesIO(b"hello"))
            assert answer.startswith("226")
            # The 226 came after the record was committed.
            assert [r["name"] for r in edge.query("SELECT name FROM received_files")] == [
                "report.txt"
            ]
            with pytest.raises(ftplib.error_temp, match="426"):
                store_too_big(ftp)
            for escape in ("../SIM2/x.txt", "sub/x.txt", ".hidden"):
                with pytest.raises(ftplib.error_perm):
                    ftp.storbinary(f"STOR {escape}", io.BytesIO(b"x"))
            with pytest.raises(ftplib.error_perm):
                ftp.retrbinary("RETR report.txt", lambda _: None)

    await asyncio.to_thread(session)
    assert sorted(path.name for path in folder.iterdir()) == ["report.txt"]
    assert not (edge.settings.files.directory / "uploads" / "x.txt").exists()
