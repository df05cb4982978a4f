"""A fleet for the firmware campaign tests: two fleets, sites with chargers of a few
models, signed images, and edges that report as a real edge would (numbered batches
through ingest), on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select

from cloud.firmware import make_manifest, sign_manifest
from cloud.store import fleets
from cloud.store.campaigns import record_image_fleet
from cloud.store.desired import add_firmware_image
from cloud.store.ingest import store_batch
from cloud.store.schema import commands, firmware_status
from contract.firmware import parse_target
from tests.cloud import payloads
from tests.cloud.web import add_user, set_presence

KEY = Ed25519PrivateKey.generate()
AT = "2026-03-01T10:00:00Z"


def add_image(
    engine: Engine, name: str, version: str = "3.1", targets: tuple[str, ...] = ("ACME/AC22*",)
) -> None:
    sha256 = (name.encode().hex() * 64)[:64]
    manifest = make_manifest(name, version, [parse_target(t) for t in targets], 4096, sha256, KEY)
    text, signature = sign_manifest(KEY, manifest)
    add_firmware_image(engine, manifest, text, signature, f"/fw/{name}")


@dataclass
class ReportingEdge:
    """An edge's events as its outbox numbers them."""

    engine: Engine
    edge_id: str
    seq: int = 0

    def sync(self, *data: dict[str, Any], at: str = AT, now: datetime | None = None) -> None:
        events = []
        for item in data:
            self.seq += 1
            events.append(payloads.event(self.seq, item, at))
        result = store_batch(
            self.engine, self.edge_id, payloads.batch(self.edge_id, events), now=now
        )
        assert result.rejected is None and not result.quarantined, result

    def boot(self, charger_id: str, vendor: str, model: str, at: str = AT) -> None:
        self.sync(
            {"kind": "charger.boot", "charger_id": charger_id, "vendor": vendor, "model": model},
            {"kind": "charger.connection", "charger_id": charger_id, "connected": True},
            at=at,
        )

    def progress(self, image: str, status: str, detail: str = "", at: str = AT) -> None:
        received = 4096 if status in ("fetched", "verified") else 1024
        self.sync(
            {
                "kind": "firmware.progress",
                "image": image,
                "status": status,
                "bytes": received,
                "detail": detail,
            },
            at=at,
        )

    def install(
        self,
        charger_id: str,
        image: str,
        status: str,
        detail: str = "",
        command_id: str | None = None,
        at: str = AT,
    ) -> None:
        self.sync(
            {
                "kind": "firmware.install",
                "charger_id": charger_id,
                "image": image,
                "version": "3.1",
                "status": status,
                "detail": detail,
                "command_id": command_id,
            },
            at=at,
        )

    def command_result(self, command_id: str, status: str, detail: str = "") -> None:
        self.sync(
            {"kind": "command.result", "command_id": command_id, "status": status, "detail": detail}
        )

    def health(self, now: datetime | None = None) -> None:
        self.sync(
            {
                "kind": "edge.health",
                "software_version": "1.0",
                "uptime_s": 60.0,
                "backlog": 0,
                "oldest_age_s": None,
                "disk_free_mb": 900.0,
            },
            now=now,
        )

    def offer_status(self, image: str) -> str | None:
        with self.engine.connect() as connection:
            return connection.execute(
                select(firmware_status.c.status).where(
                    firmware_status.c.edge_id == self.edge_id, firmware_status.c.image == image
                )
            ).scalar_one_or_none()

    def commands(self) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            return [
                dict(row)
                for row in connection.execute(
                    select(commands)
                    .where(commands.c.edge_id == self.edge_id)
                    .order_by(commands.c.charger_id, commands.c.created_at)
                ).mappings()
            ]


@dataclass
class CampaignFleet:
    """Fleet Acme: depot-1 (online: CP-A and CP-B, ACME AC22; CP-Z of another vendor) and
    depot-2 (offline: CP-C, ACME AC22 Pro); ann operates, vic views. Fleet Bolt: bolt-1
    (CP-X, ACME AC22), bob operates. Images: cp-3.1.bin added through the API (every
    fleet's), bolt-only.bin uploaded by Bolt."""

    engine: Engine
    acme: int
    bolt: int
    edges: dict[str, ReportingEdge] = field(default_factory=dict)


def make_campaign_fleet(engine: Engine) -> CampaignFleet:
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    add_user(engine, "ann@acme.test", "operator", acme)
    add_user(engine, "vic@acme.test", "viewer", acme)
    add_user(engine, "adam@acme.test", "admin", acme)
    add_user(engine, "bob@bolt.test", "operator", bolt)
    fleet = CampaignFleet(engine, acme, bolt)
    for edge_id, fleet_id, name in [
        ("depot-1", acme, "Depot North"),
        ("depot-2", acme, "Depot South"),
        ("bolt-1", bolt, "Bolt HQ"),
    ]:
        fleets.assign_edge(engine, edge_id, fleet_id, site_name=name)
        fleet.edges[edge_id] = ReportingEdge(engine, edge_id)
    fleet.edges["depot-1"].boot("CP-A", "ACME", "AC22")
    fleet.edges["depot-1"].boot("CP-B", "acme", "ac22")
    fleet.edges["depot-1"].boot("CP-Z", "Other", "AC22")
    fleet.edges["depot-2"].boot("CP-C", "ACME", "AC22 Pro")
    fleet.edges["bolt-1"].boot("CP-X", "ACME", "AC22")
    set_presence(engine, "depot-1", "online")
    set_presence(engine, "depot-2", "online")
    set_presence(engine, "depot-2", "offline")
    set_presence(engine, "bolt-1", "online")
    add_image(engine, "cp-3.1.bin")
    add_image(engine, "bolt-only.bin")
    record_image_fleet(engine, "bolt-only.bin", bolt)
    return fleet
