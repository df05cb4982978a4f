"""Firmware from the fleet manager to a charger, for real: the aggregator's REST API, a
real mosquitto, the edge daemon with its file server, and a simulated charger. Signed
manifests bind an image's name, version and targets; the edge refuses an image
relabelled, of the old format, older than what a charger runs (unless forced), or not
meant for the charger's model; and no command from the cloud points a charger anywhere
but at an image the edge verified. Every refusal reaches the cloud with its reason."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from sqlalchemy import Engine, select
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from cloud.firmware import public_key_text
from cloud.store.schema import events, firmware_status
from contract.protocol import Topics
from edge.cli import main as edge_cli
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import RunningCloud, RunningEdge, StartCloud, StartEdge, free_port
from tests.doubles.firmware_mqtt import CloudFirmwareResponder
from tests.mosquitto import Mosquitto
from tests.waiting import eventually, eventually_answers

EDGE = "site-7"
VENDOR, MODEL = "ACME", "AC22 Pro"
INSTALLED = "3.0"


@dataclass
class Fleet:
    cloud: RunningCloud
    edge: RunningEdge
    charger: SimulatedCharger
    api: httpx.AsyncClient
    broker: Mosquitto

    def served(self, name: str) -> Path:
        return self.edge.settings.files.directory / "firmware" / name

    def edge_download(self, name: str) -> dict[str, Any] | None:
        rows = self.edge.query("SELECT * FROM firmware_downloads WHERE image = ?", (name,))
        return dict(rows[0]) if rows else None

    def cloud_status(self, name: str) -> tuple[str, str] | None:
        with self.cloud.engine.connect() as connection:
            row = connection.execute(
                select(firmware_status.c.status, firmware_status.c.detail).where(
                    firmware_status.c.edge_id == EDGE, firmware_status.c.image == name
                )
            ).one_or_none()
        return None if row is None else (row.status, row.detail)

    async def upload(self, name: str, content: bytes, version: str, *targets: str) -> None:
        answer = await self.api.put(
            f"/api/firmware/{name}",
            params=[("version", version), *(("target", target) for target in targets)],
            content=content,
        )
        assert answer.status_code == 200, answer.text

    async def offer(self, name: str, **params: str) -> None:
        answer = await self.api.post(f"/api/edges/{EDGE}/firmware/{name}", params=params)
        assert answer.status_code == 200, answer.text

    async def verified(self, name: str, content: bytes) -> None:
        """Uploaded, offered and verified on the edge."""
        await eventually(lambda: self.cloud_status(name) == ("verified", ""), within=15)
        assert self.served(name).read_bytes() == content

    async def command(self, action: str, arguments: dict[str, Any]) -> httpx.Response:
        command = {"charger_id": "CP1", "action": action, "arguments": arguments}
        return await self.api.post(f"/api/edges/{EDGE}/commands", json=command)

    async def result(self, command_id: str) -> dict[str, Any]:
        """The command's row in the cloud once the edge reported a result."""

        found: dict[str, Any] = {}

        async def finished() -> bool:
            rows = (await self.api.get(f"/api/edges/{EDGE}/commands")).json()
            found.update(next(row for row in rows if row["id"] == command_id))
            return found["status"] not in ("pending", "sent")

        await eventually_answers(finished, within=15)
        return found

    def firmware_commands(self) -> list[str]:
        """The firmware commands the edge sent to its charger."""
        return [
            row[0]
            for row in self.edge.query(
                "SELECT request FROM commands WHERE action IN "
                "('UpdateFirmware', 'SignedUpdateFirmware') ORDER BY id"
            )
        ]

    def cloud_events(self, kind: str) -> list[dict[str, Any]]:
        with self.cloud.engine.connect() as connection:
            rows = connection.execute(
                select(events.c.data)
                .where(events.c.edge_id == EDGE, events.c.kind == kind)
                .order_by(events.c.seq)
            ).scalars()
            return [dict(row) for row in rows]


@pytest.fixture
async def fleet(
    broker: Mosquitto, start_cloud: StartCloud, start_edge: StartEdge
) -> AsyncIterator[Fleet]:
    cloud = await start_cloud(broker)
    sync = {
        "edge_id": EDGE,
        "broker_host": "127.0.0.1",
        "broker_port": broker.port,
        "keepalive": 5,
        "firmware_public_key": public_key_text(cloud.site.signing_key),
    }
    edge = await start_edge(
        sections={"sync": sync}, files={"host": "127.0.0.1", "port": free_port()}
    )
    config = SimulatedChargerConfig(
        connectors=1, vendor=VENDOR, model=MODEL, firmware_version=INSTALLED
    )
    async with (
        connect(f"{edge.url}/CP1", subprotocols=[Subprotocol("ocpp1.6")]) as connection,
        httpx.AsyncClient(base_url=cloud.api_url, headers=cloud.api_headers, timeout=10) as api,
    ):
        charger = SimulatedCharger("CP1", connection, config)
        listener = asyncio.create_task(charger.start())
        await charger.boot()
        await eventually(lambda: cloud_knows_charger(cloud.engine), within=10)
        yield Fleet(cloud, edge, charger, api, broker)
        listener.cancel()


def in_order(seen: list[str], expected: list[str]) -> bool:
    """Whether `expected` happened in this order within `seen` (repeats allowed)."""
    remaining = iter(seen)
    return all(status in remaining for status in expected)


def cloud_knows_charger(engine: Engine) -> bool:
    with engine.connect() as connection:
        kinds = connection.execute(select(events.c.kind).where(events.c.edge_id == EDGE))
        return "charger.boot" in set(kinds.scalars())


async def published_offer(broker: Mosquitto, name: str) -> dict[str, Any]:
    """The offer of `name` the aggregator publishes to the edge (it repeats it while the
    edge fetches), as a listener on the broker sees it."""
    topic = Topics(EDGE).firmware_offer
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="listener") as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(15):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                offer: dict[str, Any] = json.loads(message.payload)
                if offer["image"] == name:
                    return offer
    raise AssertionError("unreachable")


async def publish(broker: Mosquitto, topic: str, payload: dict[str, Any]) -> None:
    """As whoever can write to the edge's topics without being the cloud."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="intruder") as client:
        await client.publish(topic, json.dumps(payload), qos=1)


async def test_a_signed_image_relabelled_with_another_name_and_version_is_refused(
    fleet: Fleet,
) -> None:
    old = bytes(range(256)) * 700
    await fleet.upload("cp-1.0.bin", old, "1.0", f"{VENDOR}/*")
    listening = asyncio.create_task(published_offer(fleet.broker, "cp-1.0.bin"))
    await asyncio.sleep(0.2)  # the listener subscribes
    await fleet.offer("cp-1.0.bin", force="true")
    original = await listening
    await fleet.verified("cp-1.0.bin", old)

    # The same signed bytes, offered as a newer image under another name; someone who
    # can write the edge's topics serves its chunks.
    relabelled = original | {"image": "cp-9.9.bin", "version": "9.9"}
    responder = CloudFirmwareResponder(
        fleet.broker.port, {"cp-9.9.bin": fleet.served("cp-1.0.bin")}, max_chunk=262_144
    )
    serving = asyncio.create_task(responder.run())
    try:
        await asyncio.wait_for(responder.subscribed.wait(), 5)
        await publish(fleet.broker, Topics(EDGE).firmware_offer, relabelled)
        await eventually(lambda: fleet.cloud_status("cp-9.9.bin") is not None, within=15)
        await eventually(
            lambda: (fleet.cloud_status("cp-9.9.bin") or ("",))[0] in ("verified", "rejected"),
            within=15,
        )
    finally:
        serving.cancel()
    status, detail = fleet.cloud_status("cp-9.9.bin") or ("", "")
    assert status == "rejected"
    assert "manifest" in detail and "cp-1.0.bin" in detail
    assert not fleet.served("cp-9.9.bin").exists()
    assert responder.requests == []  # refused before a byte moved


async def test_an_offer_signed_over_the_digest_only_is_refused_as_the_old_format(
    fleet: Fleet,
) -> None:
    content = b"old format " * 5000
    digest = hashlib.sha256(content).digest()
    old_format = {
        "image": "cp-0.9.bin",
        "version": "0.9",
        "size": len(content),
        "sha256": digest.hex(),
        "signature": base64.b64encode(fleet.cloud.site.signing_key.sign(digest)).decode(),
        "chunk_size": 65536,
    }
    image = fleet.cloud.settings.firmware.directory / "cp-0.9.bin"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(content)
    responder = CloudFirmwareResponder(fleet.broker.port, {"cp-0.9.bin": image})
    serving = asyncio.create_task(responder.run())
    try:
        await asyncio.wait_for(responder.subscribed.wait(), 5)
        await publish(fleet.broker, Topics(EDGE).firmware_offer, old_format)
        await eventually(
            lambda: (fleet.cloud_status("cp-0.9.bin") or ("",))[0] in ("verified", "rejected"),
            within=15,
        )
    finally:
        serving.cancel()
    status, detail = fleet.cloud_status("cp-0.9.bin") or ("", "")
    assert status == "rejected" and "old format" in detail
    assert not fleet.served("cp-0.9.bin").exists()


async def test_an_older_version_than_installed_is_refused_unless_forced(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    older = b"\x02" * 300_000
    await fleet.upload("cp-2.0.bin", older, "2.0", f"{VENDOR}/AC22*")
    # Offered as is: the only charger it is for runs 3.0.
    await fleet.offer("cp-2.0.bin")
    await eventually(lambda: (fleet.cloud_status("cp-2.0.bin") or ("",))[0] == "rejected", 15)
    _, detail = fleet.cloud_status("cp-2.0.bin") or ("", "")
    assert "older" in detail and "CP1" in detail and INSTALLED in detail
    assert not fleet.served("cp-2.0.bin").exists()
    # Forced by the operator: fetched and verified, but not yet installed anywhere.
    await fleet.offer("cp-2.0.bin", force="true")
    await fleet.verified("cp-2.0.bin", older)

    answer = await fleet.command("firmware_rollout", {"image": "cp-2.0.bin"})
    assert answer.status_code == 200, answer.text
    refused = await fleet.result(answer.json()["id"])
    assert refused["status"] == "rejected"
    assert "older" in refused["detail"] and INSTALLED in refused["detail"]
    assert fleet.firmware_commands() == []
    assert fleet.charger.firmware is None

    answer = await fleet.command("firmware_rollout", {"image": "cp-2.0.bin", "force": True})
    assert answer.status_code == 200, answer.text
    done = await fleet.result(answer.json()["id"])
    assert done["status"] == "done", done
    await eventually(lambda: fleet.charger.firmware == older, within=15)

    # Each stage of the install reached the cloud, the forced one marked as such.
    def install_statuses() -> list[str]:
        return [event["status"] for event in fleet.cloud_events("firmware.install")]

    await eventually(lambda: "installed" in install_statuses(), within=15)
    installs = fleet.cloud_events("firmware.install")
    assert installs[0]["status"] == "refused"
    assert "installing" in install_statuses()
    assert installs[-1]["charger_id"] == "CP1" and installs[-1]["version"] == "2.0"
    assert installs[-1]["forced"] is True
    statuses = [event["status"] for event in fleet.cloud_events("firmware.progress")]
    assert in_order(statuses, ["rejected", "downloading", "fetched", "verified"]), statuses
    # The edge now holds 2.0 as installed there, and shows it all on the site.
    installed = fleet.edge.query("SELECT version FROM installed_firmware WHERE charger_id = 'CP1'")
    assert [row[0] for row in installed] == ["2.0"]
    config = tmp_path / "cli.toml"
    config.write_text(f'[store]\npath = "{fleet.edge.db_path}"\n')
    assert edge_cli(["firmware", "installs", "--config", str(config)]) == 0
    shown = capsys.readouterr().out
    assert "installed (forced)" in shown and "refused" in shown and "CP1" in shown
    assert edge_cli(["firmware", "list", "--config", str(config)]) == 0
    shown = capsys.readouterr().out
    assert "From the cloud" in shown and "verified (forced)" in shown


async def test_a_charger_whose_model_is_not_a_target_is_refused(fleet: Fleet) -> None:
    content = b"\x04" * 100_000
    await fleet.upload("other-4.0.bin", content, "4.0", "OtherVendor/*", f"{VENDOR}/DC*")
    await fleet.offer("other-4.0.bin")
    await fleet.verified("other-4.0.bin", content)
    answer = await fleet.command("firmware_rollout", {"image": "other-4.0.bin"})
    assert answer.status_code == 200, answer.text
    refused = await fleet.result(answer.json()["id"])
    assert refused["status"] == "rejected"
    assert MODEL in refused["detail"] and "target" in refused["detail"]
    assert fleet.firmware_commands() == []
    await eventually(lambda: bool(fleet.cloud_events("firmware.install")), within=10)
    (install,) = fleet.cloud_events("firmware.install")
    assert install["status"] == "refused" and MODEL in install["detail"]


def command_payload(command_id: str, action: str, arguments: dict[str, Any]) -> dict[str, Any]:
    expires = (datetime.now(UTC) + timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    return {
        "id": command_id,
        "action": action,
        "charger_id": "CP1",
        "arguments": arguments,
        "expires_at": expires,
    }


ELSEWHERE = "http://192.0.2.1/firmware.bin"
FOREIGN = {
    "rollout-url": ("firmware_rollout", {"location": ELSEWHERE}),
    "rollout-both": ("firmware_rollout", {"image": "cp-5.0.bin", "location": ELSEWHERE}),
    "ocpp-update": (
        "ocpp",
        {
            "action": "UpdateFirmware",
            "arguments": {"location": ELSEWHERE, "retrieveDate": "2026-01-01T00:00:00Z"},
        },
    ),
    "ocpp-spelled": (
        "ocpp",
        {
            "Action": "UpdateFirmware",
            "Arguments": {"Location": ELSEWHERE, "retrieveDate": "2026-01-01T00:00:00Z"},
        },
    ),
    "ocpp-signed": (
        "ocpp",
        {
            "action": "SignedUpdateFirmware",
            "arguments": {
                "requestId": 1,
                "firmware": {
                    "location": ELSEWHERE,
                    "retrieveDateTime": "2026-01-01T00:00:00Z",
                    "signingCertificate": "-----BEGIN CERTIFICATE-----",
                    "signature": "c2ln",
                },
            },
        },
    ),
}


async def test_the_edge_refuses_cloud_commands_that_name_another_location(
    fleet: Fleet,
) -> None:
    content = b"\x05" * 50_000
    await fleet.upload("cp-5.0.bin", content, "5.0", f"{VENDOR}/*")
    await fleet.offer("cp-5.0.bin")
    await fleet.verified("cp-5.0.bin", content)
    # Published on the edge's command topic (by an older cloud, or anyone who can write
    # there): the edge refuses each and says why.
    for command_id, (action, arguments) in FOREIGN.items():
        payload = command_payload(command_id, action, arguments)
        await publish(fleet.broker, Topics(EDGE).commands, payload)

    def results() -> dict[str, dict[str, Any]]:
        return {event["command_id"]: event for event in fleet.cloud_events("command.result")}

    await eventually(lambda: set(FOREIGN) <= set(results()), within=15)
    for command_id in FOREIGN:
        result = results()[command_id]
        assert result["status"] == "rejected", result
        assert "location" in result["detail"], result
    assert fleet.firmware_commands() == []
    # The edge's own URL for a verified image is what a rollout sends.
    answer = await fleet.command("firmware_rollout", {"image": "cp-5.0.bin"})
    assert answer.status_code == 200, answer.text
    assert (await fleet.result(answer.json()["id"]))["status"] == "done"
    (request,) = fleet.firmware_commands()
    base = fleet.edge.settings.files.base_url()
    assert json.loads(request)["location"] == f"{base}/firmware/cp-5.0.bin"
    await eventually(lambda: fleet.charger.firmware == content, within=15)


async def test_the_cloud_api_refuses_firmware_commands_that_name_a_location(
    fleet: Fleet,
) -> None:
    for action, arguments in FOREIGN.values():
        answer = await fleet.command(action, arguments)
        assert answer.status_code == 422, (action, arguments, answer.text)
        assert "location" in answer.json()["detail"]
    answer = await fleet.command("firmware_rollout", {"image": "no-such.bin"})
    assert answer.status_code == 422 and "no-such.bin" in answer.json()["detail"]
    assert (await fleet.api.get(f"/api/edges/{EDGE}/commands")).json() == []


async def test_uploads_are_streamed_bounded_and_never_replace_another_images_bytes(
    broker: Mosquitto, start_cloud: StartCloud
) -> None:
    cloud = await start_cloud(broker, firmware={"max_image_bytes": 100_000})
    first, second = b"\x01" * 50_000, b"\x02" * 50_000
    async with httpx.AsyncClient(
        base_url=cloud.api_url, headers=cloud.api_headers, timeout=10
    ) as api:

        async def upload(name: str, content: bytes, *targets: str) -> httpx.Response:
            params = [("version", "1.0"), *(("target", target) for target in targets)]
            return await api.put(f"/api/firmware/{name}", params=params, content=content)

        assert (await upload("cp.bin", first, "ACME/*")).status_code == 200
        # Other bytes under a name in use: refused, and the first image's file intact.
        refused = await upload("cp.bin", second, "ACME/*")
        assert refused.status_code == 422 and "new name" in refused.json()["detail"]
        images = (await api.get("/api/firmware")).json()
        assert [(image["name"], image["targets"]) for image in images] == [("cp.bin", ["ACME/*"])]
        path = desired_path(cloud, "cp.bin")
        assert path.read_bytes() == first
        # Too large, said before or found while streaming: 413, nothing left behind.
        assert (await upload("big.bin", b"\x03" * 100_001, "ACME/*")).status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(30):
                yield b"\x04" * 4096

        streamed = await api.put(
            "/api/firmware/big.bin",
            params={"version": "1", "target": "ACME/*"},
            content=chunks(),
        )
        assert streamed.status_code == 413, streamed.text
        assert (await upload("none.bin", b"x")).status_code == 422  # no target
        assert (await upload("bad.bin", b"x", "no-slash")).status_code == 422
        assert (await upload("empty.bin", b"", "ACME/*")).status_code == 422
    held = sorted(p.name for p in cloud.settings.firmware.directory.iterdir())
    assert held == [path.name]


def desired_path(cloud: RunningCloud, name: str) -> Path:
    from cloud.store.desired import firmware_image

    image = firmware_image(cloud.engine, name)
    assert image is not None
    return Path(image.path)


async def test_a_signed_update_from_the_cloud_gets_the_edges_location_and_is_followed(
    fleet: Fleet,
) -> None:
    content = b"\x06" * 70_000
    await fleet.upload("cp-6.0.bin", content, "6.0", f"{VENDOR}/{MODEL}")
    await fleet.offer("cp-6.0.bin")
    await fleet.verified("cp-6.0.bin", content)
    signed = {
        "action": "SignedUpdateFirmware",
        "arguments": {
            "requestId": 7,
            "image": "cp-6.0.bin",
            "firmware": {
                "retrieveDateTime": "2026-01-01T00:00:00Z",
                "signingCertificate": "-----BEGIN CERTIFICATE-----",
                "signature": "c2ln",
            },
        },
    }
    answer = await fleet.command("ocpp", signed)
    assert answer.status_code == 200, answer.text
    assert (await fleet.result(answer.json()["id"]))["status"] == "done"
    (request,) = fleet.firmware_commands()
    location = json.loads(request)["firmware"]["location"]
    assert location == f"{fleet.edge.settings.files.base_url()}/firmware/cp-6.0.bin"
    await eventually(lambda: fleet.charger.firmware == content, within=15)

    def statuses() -> list[tuple[str, str]]:
        return [(e["status"], e["detail"]) for e in fleet.cloud_events("firmware.install")]

    await eventually(lambda: ("installed", "Installed") in statuses(), within=15)
    assert ("installing", "SignatureVerified") in statuses()
    overview = (await fleet.api.get(f"/api/edges/{EDGE}/firmware")).json()
    (charger,) = overview["chargers"]
    assert (charger["charger_id"], charger["installed_version"]) == ("CP1", "6.0")
    assert [(image["image"], image["status"]) for image in overview["images"]] == [
        ("cp-6.0.bin", "verified")
    ]
