"""The edge's firmware downloads over a real SQLite file and firmware directory, fed by
the cloud's own offer and chunk functions (no broker: test_firmware_mqtt.py has one)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.firmware import answer_request, make_offer, public_key_text
from contract.firmware import parse_target
from contract.protocol import FirmwareOffer, FirmwareProgress, FirmwareRequest
from edge.files.store import FileDirectory
from edge.settings import FilesSettings
from edge.store.firmware import KEEP_REFUSED
from edge.store.writer import StoreWriter
from edge.sync.firmware import FirmwareDownloads
from edge.sync.rollout import FirmwareCommand, InstallRefused, plan_install

CHUNK = 4096
TARGETS = [parse_target("ACME/AC22*")]


@pytest.fixture
def fleet_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "cloud" / "cp-2.0.bin"
    path.parent.mkdir()
    write_random(path, 10 * CHUNK + 123)
    return path


def write_random(path: Path, size: int) -> None:
    path.write_bytes(os.urandom(size))


def same_bytes(one: Path, other: Path) -> bool:
    return one.read_bytes() == other.read_bytes()


def flip_bit(path: Path, offset: int) -> None:
    content = bytearray(path.read_bytes())
    content[offset] ^= 0x40
    path.write_bytes(content)


@pytest.fixture
def offer(image: Path, fleet_key: Ed25519PrivateKey) -> FirmwareOffer:
    return make_offer(image, "cp-2.0.bin", "2.0", fleet_key, targets=TARGETS, chunk_size=CHUNK)


class Edge:
    """One run of the edge's firmware component over the site's files and store."""

    def __init__(self, store: StoreWriter, files: FileDirectory, public_key: str) -> None:
        self.files = files
        self.db = store.path
        self.reports: list[FirmwareProgress] = []
        self.downloads = FirmwareDownloads(
            store, files, public_key, lambda db, progress: self.reports.append(progress)
        )

    def row(self, image: str) -> dict[str, Any]:
        with sqlite3.connect(self.db) as connection:
            connection.row_factory = sqlite3.Row
            found = connection.execute(
                "SELECT * FROM firmware_downloads WHERE image = ?", (image,)
            ).fetchone()
        assert found is not None
        return dict(found)

    def served_images(self) -> list[str]:
        with sqlite3.connect(self.db) as connection:
            return [row[0] for row in connection.execute("SELECT name FROM firmware_images")]

    async def fetch(
        self, image: Path, request: FirmwareRequest | None, *, chunks: int | None = None
    ) -> FirmwareRequest | None:
        """Answer requests from `image` as the cloud would, `chunks` of them or to the end."""
        while request is not None and (chunks is None or chunks > 0):
            request = await self.downloads.chunk(answer_request(image, request, CHUNK))
            chunks = None if chunks is None else chunks - 1
        return request


@asynccontextmanager
async def running_edge(tmp_path: Path, public_key: str) -> AsyncIterator[Edge]:
    files = FileDirectory(tmp_path / "files")
    async with StoreWriter(tmp_path / "edge.db") as store:
        yield Edge(store, files, public_key)


async def test_offer_fetched_verified_and_served(
    tmp_path: Path, image: Path, offer: FirmwareOffer, fleet_key: Ed25519PrivateKey
) -> None:
    async with running_edge(tmp_path, public_key_text(fleet_key)) as edge:
        first = await edge.downloads.offered(offer)
        assert first == FirmwareRequest(image="cp-2.0.bin", offset=0, length=CHUNK)
        assert await edge.fetch(image, first) is None
        assert same_bytes(edge.files.firmware / "cp-2.0.bin", image)
        assert os.listdir(edge.files.firmware) == ["cp-2.0.bin"]  # the partial file is gone
        assert edge.served_images() == ["cp-2.0.bin"]
        row = edge.row("cp-2.0.bin")
        assert (row["status"], row["bytes_received"], row["version"]) == (
            "verified",
            offer.size,
            "2.0",
        )
        statuses = [report.status for report in edge.reports]
        assert statuses[0] == "downloading" and statuses[-1] == "verified"
        assert 3 <= statuses.count("downloading") <= 11  # every tenth or so, not every chunk
        assert edge.reports[-1].bytes == offer.size
        # The same offer again, as the cloud repeats it: nothing to fetch.
        assert await edge.downloads.offered(offer) is None
        assert await edge.downloads.pending_requests() == []


async def test_tampered_byte_is_rejected_and_nothing_is_served(
    tmp_path: Path, image: Path, offer: FirmwareOffer, fleet_key: Ed25519PrivateKey
) -> None:
    flip_bit(image, 5 * CHUNK + 7)
    async with running_edge(tmp_path, public_key_text(fleet_key)) as edge:
        assert await edge.fetch(image, await edge.downloads.offered(offer)) is None
        assert os.listdir(edge.files.firmware) == []
        assert edge.served_images() == []
        row = edge.row("cp-2.0.bin")
        assert row["status"] == "rejected" and "SHA-256" in row["detail"]
        assert edge.reports[-1].status == "rejected" and "SHA-256" in edge.reports[-1].detail


async def test_offer_signed_by_another_key_is_refused_before_fetching(
    tmp_path: Path, image: Path
) -> None:
    offer = make_offer(
        image, "cp-2.0.bin", "2.0", Ed25519PrivateKey.generate(), targets=TARGETS, chunk_size=CHUNK
    )
    edge_key = public_key_text(Ed25519PrivateKey.generate())
    async with running_edge(tmp_path, edge_key) as edge:
        assert await edge.downloads.offered(offer) is None
        assert await edge.downloads.pending_requests() == []
        assert os.listdir(edge.files.firmware) == []
        row = edge.row("cp-2.0.bin")
        assert row["status"] == "rejected" and "signature" in row["detail"]
        assert [report.status for report in edge.reports] == ["rejected"]


async def test_no_public_key_refuses_every_offer(tmp_path: Path, offer: FirmwareOffer) -> None:
    async with running_edge(tmp_path, "") as edge:
        assert await edge.downloads.offered(offer) is None
        assert "firmware_public_key" in edge.row("cp-2.0.bin")["detail"]
        assert edge.reports[-1].status == "rejected"
        assert os.listdir(edge.files.firmware) == []


async def test_restart_resumes_from_the_partial_file(
    tmp_path: Path, image: Path, offer: FirmwareOffer, fleet_key: Ed25519PrivateKey
) -> None:
    key = public_key_text(fleet_key)
    async with running_edge(tmp_path, key) as edge:
        due = await edge.fetch(image, await edge.downloads.offered(offer), chunks=3)
        assert due == FirmwareRequest(image="cp-2.0.bin", offset=3 * CHUNK, length=CHUNK)
    async with running_edge(tmp_path, key) as edge:
        assert await edge.downloads.pending_requests() == [due]
        # The cloud repeating its offer on reconnection resumes too.
        assert await edge.downloads.offered(offer) == due
        assert await edge.fetch(image, due) is None
        assert same_bytes(edge.files.firmware / "cp-2.0.bin", image)


async def test_repeated_or_out_of_order_chunks_are_ignored(
    tmp_path: Path, image: Path, offer: FirmwareOffer, fleet_key: Ed25519PrivateKey
) -> None:
    async with running_edge(tmp_path, public_key_text(fleet_key)) as edge:
        first = await edge.downloads.offered(offer)
        assert first is not None
        chunk = answer_request(image, first, CHUNK)
        second = await edge.downloads.chunk(chunk)
        assert second is not None and second.offset == CHUNK
        assert await edge.downloads.chunk(chunk) is None  # a repeat
        ahead = FirmwareRequest(image=offer.image, offset=3 * CHUNK, length=CHUNK)
        assert await edge.downloads.chunk(answer_request(image, ahead, CHUNK)) is None
        partial = edge.downloads.partial_path(offer.image)
        assert partial.stat().st_size == CHUNK
        assert await edge.downloads.pending_requests() == [second]
        assert await edge.fetch(image, second) is None
        assert same_bytes(edge.files.firmware / "cp-2.0.bin", image)


async def test_a_new_version_starts_over_and_keeps_serving_the_old_until_verified(
    tmp_path: Path, image: Path, offer: FirmwareOffer, fleet_key: Ed25519PrivateKey
) -> None:
    async with running_edge(tmp_path, public_key_text(fleet_key)) as edge:
        await edge.fetch(image, await edge.downloads.offered(offer))
        old = tmp_path / "old.bin"
        shutil.copyfile(image, old)
        write_random(image, 3 * CHUNK)
        newer = make_offer(image, "cp-2.0.bin", "2.1", fleet_key, targets=TARGETS, chunk_size=CHUNK)
        first = await edge.downloads.offered(newer)
        assert first == FirmwareRequest(image="cp-2.0.bin", offset=0, length=CHUNK)
        await edge.fetch(image, first, chunks=1)
        assert same_bytes(edge.files.firmware / "cp-2.0.bin", old)
        # Offered again part way: another version makes the bytes held useless.
        newest = make_offer(
            image, "cp-2.0.bin", "2.2", fleet_key, targets=TARGETS, chunk_size=CHUNK
        )
        assert await edge.downloads.offered(newest) == first
        assert await edge.fetch(image, first) is None
        assert same_bytes(edge.files.firmware / "cp-2.0.bin", image)
        assert edge.row("cp-2.0.bin")["version"] == "2.2"


def append_tail(partial: Path, image: Path, offset: int) -> None:
    with partial.open("ab") as file:
        file.write(image.read_bytes()[offset:])


def forget_verification(db: Path, image: str) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute(
            "UPDATE firmware_downloads SET status = 'downloading' WHERE image = ?", (image,)
        )
        connection.execute("DELETE FROM firmware_images WHERE name = ?", (image,))


async def test_stop_after_the_last_write_is_checked_at_restart(
    tmp_path: Path, image: Path, offer: FirmwareOffer, fleet_key: Ed25519PrivateKey
) -> None:
    key = public_key_text(fleet_key)
    async with running_edge(tmp_path, key) as edge:
        due = await edge.fetch(image, await edge.downloads.offered(offer), chunks=10)
        assert due is not None and due.offset == 10 * CHUNK
        append_tail(edge.downloads.partial_path(offer.image), image, due.offset)
    async with running_edge(tmp_path, key) as edge:
        assert await edge.downloads.pending_requests() == []
        assert edge.row("cp-2.0.bin")["status"] == "verified"
        assert same_bytes(edge.files.firmware / "cp-2.0.bin", image)
        assert edge.served_images() == ["cp-2.0.bin"]


async def test_stop_after_the_move_before_its_record_is_recognised_at_restart(
    tmp_path: Path, image: Path, offer: FirmwareOffer, fleet_key: Ed25519PrivateKey
) -> None:
    key = public_key_text(fleet_key)
    async with running_edge(tmp_path, key) as edge:
        assert await edge.fetch(image, await edge.downloads.offered(offer)) is None
    forget_verification(tmp_path / "edge.db", "cp-2.0.bin")
    async with running_edge(tmp_path, key) as edge:
        assert await edge.downloads.pending_requests() == []
        assert edge.row("cp-2.0.bin")["status"] == "verified"
        assert edge.served_images() == ["cp-2.0.bin"]
        assert [report.status for report in edge.reports] == ["verified"]


# -- signed manifests --------------------------------------------------------------


async def test_a_manifest_for_another_name_or_version_is_refused_before_fetching(
    tmp_path: Path, offer: FirmwareOffer, fleet_key: Ed25519PrivateKey
) -> None:
    relabelled = [
        offer.model_copy(update={"image": "cp-9.9.bin", "version": "9.9"}),
        offer.model_copy(update={"version": "2.1"}),
        offer.model_copy(update={"image": "other.bin"}),
    ]
    async with running_edge(tmp_path, public_key_text(fleet_key)) as edge:
        for relabelled_offer in relabelled:
            assert await edge.downloads.offered(relabelled_offer) is None
            row = edge.row(relabelled_offer.image)
            assert row["status"] == "rejected"
            assert "manifest is for cp-2.0.bin version 2.0" in row["detail"]
        assert await edge.downloads.pending_requests() == []
        assert os.listdir(edge.files.firmware) == []


async def test_an_offer_of_the_old_format_is_refused_with_the_way_out(
    tmp_path: Path, offer: FirmwareOffer, fleet_key: Ed25519PrivateKey
) -> None:
    digest = bytes.fromhex(offer.sha256)
    old = offer.model_copy(
        update={"manifest": None, "signature": base64.b64encode(fleet_key.sign(digest)).decode()}
    )
    async with running_edge(tmp_path, public_key_text(fleet_key)) as edge:
        assert await edge.downloads.offered(old) is None
        detail = edge.row("cp-2.0.bin")["detail"]
        assert "old format" in detail and "ocpp-cloud firmware add" in detail


def resign(offer: FirmwareOffer, key: Ed25519PrivateKey, text: str) -> FirmwareOffer:
    signature = base64.b64encode(key.sign(text.encode())).decode()
    return offer.model_copy(update={"manifest": text, "signature": signature})


async def test_a_manifest_changed_or_not_canonical_or_naming_another_key_is_refused(
    tmp_path: Path, offer: FirmwareOffer, fleet_key: Ed25519PrivateKey
) -> None:
    assert offer.manifest is not None
    manifest = json.loads(offer.manifest)
    changed = offer.model_copy(update={"manifest": offer.manifest.replace("AC22*", "*")})
    spaced = resign(offer, fleet_key, json.dumps(manifest, sort_keys=True))
    other_key = resign(offer, fleet_key, canonical(manifest | {"key_id": "0" * 16}))
    wrong_type = resign(offer, fleet_key, canonical(manifest | {"size": str(offer.size)}))
    expected = {
        "signature is not by a key this edge trusts": changed,
        "not in canonical form": spaced,
        "manifest names key 0000000000000000": other_key,
        "size: Input should be a valid integer": wrong_type,
    }
    async with running_edge(tmp_path, public_key_text(fleet_key)) as edge:
        for reason, refused in expected.items():
            assert await edge.downloads.offered(refused) is None
            assert reason in edge.row("cp-2.0.bin")["detail"]
        assert os.listdir(edge.files.firmware) == []


def canonical(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


async def test_either_of_two_trusted_keys_may_sign_while_the_key_is_replaced(
    tmp_path: Path, image: Path
) -> None:
    old_key, new_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trusted = f"{public_key_text(old_key)}, {public_key_text(new_key)}"
    async with running_edge(tmp_path, trusted) as edge:
        for version, key in (("2.0", old_key), ("2.1", new_key)):
            offer = make_offer(image, "cp-2.0.bin", version, key, targets=TARGETS, chunk_size=CHUNK)
            assert await edge.fetch(image, await edge.downloads.offered(offer)) is None
            assert edge.row("cp-2.0.bin")["status"] == "verified"
        stranger = make_offer(
            image, "cp-2.0.bin", "2.2", Ed25519PrivateKey.generate(), targets=TARGETS
        )
        assert await edge.downloads.offered(stranger) is None
        assert edge.row("cp-2.0.bin")["status"] == "rejected"


async def test_an_older_version_than_held_under_the_name_is_refused_unless_forced(
    tmp_path: Path, image: Path, fleet_key: Ed25519PrivateKey
) -> None:
    def offered(version: str, force: bool = False) -> FirmwareOffer:
        return make_offer(
            image, "cp.bin", version, fleet_key, targets=TARGETS, chunk_size=CHUNK, force=force
        )

    async with running_edge(tmp_path, public_key_text(fleet_key)) as edge:
        assert await edge.fetch(image, await edge.downloads.offered(offered("2.10"))) is None
        assert await edge.downloads.offered(offered("2.9")) is None
        row = edge.row("cp.bin")
        assert row["status"] == "rejected" and "older than the 2.10 held" in row["detail"]
        assert "force=true" in row["detail"]
        # Forced: fetched, verified, and recorded as forced.
        assert await edge.fetch(image, await edge.downloads.offered(offered("2.9", True))) is None
        row = edge.row("cp.bin")
        assert (row["status"], row["version"], row["forced"]) == ("verified", "2.9", 1)
        assert any(report.detail == "forced by the operator" for report in edge.reports)


def add_charger(
    db: Path, charger_id: str, model: str, version: str, registration: str = "accepted"
) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute(
            "INSERT INTO chargers (id, registration, vendor, model, firmware_version, "
            "created_at) VALUES (?, ?, 'ACME', ?, ?, 'x')",
            (charger_id, registration, model, version),
        )


async def test_an_offer_older_than_every_charger_it_targets_runs_is_refused(
    tmp_path: Path, image: Path, fleet_key: Ed25519PrivateKey
) -> None:
    offer = make_offer(image, "cp.bin", "2.0", fleet_key, targets=TARGETS, chunk_size=CHUNK)
    async with running_edge(tmp_path, public_key_text(fleet_key)) as edge:
        add_charger(edge.db, "CP1", "AC22", "V2.1")
        add_charger(edge.db, "CP2", "ac22 pro", "fw-3.0.4")
        add_charger(edge.db, "CP3", "DC50", "1.0")  # not a target
        add_charger(edge.db, "CP4", "AC22", "0.1", registration="pending")  # not ours
        assert await edge.downloads.offered(offer) is None
        detail = edge.row("cp.bin")["detail"]
        assert "CP1 runs V2.1, CP2 runs fw-3.0.4" in detail and "CP3" not in detail
        # One charger it is meant for runs an older version: the offer is taken.
        add_charger(edge.db, "CP5", "AC22", "1.9")
        assert await edge.downloads.offered(offer) is not None


async def test_refused_offers_under_ever_new_names_are_kept_within_a_bound(
    tmp_path: Path, offer: FirmwareOffer, fleet_key: Ed25519PrivateKey
) -> None:
    async with running_edge(tmp_path, public_key_text(fleet_key)) as edge:
        for number in range(KEEP_REFUSED + 20):
            forged = offer.model_copy(update={"image": f"forged-{number:03}.bin"})
            assert await edge.downloads.offered(forged) is None
        with sqlite3.connect(edge.db) as connection:
            (count,) = connection.execute("SELECT count(*) FROM firmware_downloads").fetchone()
        assert count == KEEP_REFUSED
        assert edge.row(f"forged-{KEEP_REFUSED + 19:03}.bin")["status"] == "rejected"


async def test_an_image_verified_before_manifests_is_never_installed_from_the_cloud(
    tmp_path: Path,
) -> None:
    files = FilesSettings(directory=tmp_path / "files", port=8081)
    async with running_edge(tmp_path, "") as edge:
        add_charger(edge.db, "CP1", "AC22", "1.0")
        (edge.files.firmware / "old.bin").write_bytes(b"x" * 10)
        with sqlite3.connect(edge.db) as connection:
            connection.execute(
                "INSERT INTO firmware_downloads (image, version, size, sha256, signature, "
                "chunk_size, status, offered_at, updated_at) "
                "VALUES ('old.bin', '2.0', 10, ?, 'c2ln', 4096, 'verified', 'x', 'x')",
                ("ab" * 32,),
            )
            connection.execute(
                "INSERT INTO firmware_images (name, size, sha256, added_at) "
                "VALUES ('old.bin', 10, ?, 'x')",
                ("ab" * 32,),
            )
        rollout = FirmwareCommand("UpdateFirmware", "old.bin", {"retrieve_date": "x"}, False)
        async with StoreWriter(edge.db) as store:
            with pytest.raises(InstallRefused, match="old format"):
                await store.run(lambda db: plan_install(db, "CP1", rollout, files))
