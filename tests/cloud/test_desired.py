"""Desired state: card list versions and deltas, commands until a result or expiry,
firmware offers (with their signed manifests) until verified, firmware commands that
name an image and never a location, and each charger's installs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, insert

from cloud.firmware import make_manifest, sign_manifest
from cloud.store.desired import (
    DesiredStateError,
    FirmwareImage,
    add_firmware_image,
    card_list_parts_to_send,
    card_list_to_send,
    commands_to_send,
    create_command,
    firmware_image,
    firmware_overview,
    mark_sent,
    offer_to,
    offers_to_send,
    set_card_list,
)
from cloud.store.ingest import record_status, store_batch
from cloud.store.schema import commands, firmware_images
from cloud.store.times import utc_now
from contract.firmware import parse_target
from contract.protocol import CardEntry, CardList
from tests.cloud.payloads import batch, event, status
from tests.cloud.rows import rows

EDGE = "site-7"
SHA = "ab" * 32
KEY = Ed25519PrivateKey.generate()


def add_image(
    engine: Engine,
    name: str,
    version: str,
    sha256: str = SHA,
    targets: tuple[str, ...] = ("ACME/*",),
    size: int = 4096,
) -> FirmwareImage:
    manifest = make_manifest(name, version, [parse_target(t) for t in targets], size, sha256, KEY)
    text, signature = sign_manifest(KEY, manifest)
    return add_firmware_image(engine, manifest, text, signature, f"/fw/{sha256}.bin")


def report(engine: Engine, seq: int, data: dict[str, object]) -> None:
    result = store_batch(engine, EDGE, batch(EDGE, [event(seq, data)]), 1_048_576)
    assert result.rejected is None, result.detail


def test_card_lists_are_sent_full_then_as_deltas_until_reported(engine: Engine) -> None:
    alice, bob = CardEntry(id_tag="ALICE"), CardEntry(id_tag="BOB", label="Bob")
    assert card_list_to_send(engine, EDGE) is None  # nothing desired yet
    assert set_card_list(engine, EDGE, [alice, bob]) == 1
    assert card_list_to_send(engine, EDGE) == CardList(version=1, full=True, cards=[alice, bob])

    report(engine, 1, {"kind": "cards.applied", "version": 1, "cards": 2})
    assert card_list_to_send(engine, EDGE) is None

    blocked_bob, carol = CardEntry(id_tag="BOB", status="Blocked"), CardEntry(id_tag="CAROL")
    assert set_card_list(engine, EDGE, [alice, blocked_bob, carol]) == 2
    assert set_card_list(engine, EDGE, [blocked_bob, carol]) == 3
    assert card_list_to_send(engine, EDGE) == CardList(
        version=3, full=False, base_version=1, cards=[blocked_bob, carol], removed=["ALICE"]
    )
    report(engine, 2, {"kind": "cards.applied", "version": 3, "cards": 2})
    assert card_list_to_send(engine, EDGE) is None


def test_a_version_the_cloud_never_had_gets_the_full_list_above_it(engine: Engine) -> None:
    # The edge holds version 7 of a list this store never held (a restored backup).
    assert record_status(engine, EDGE, status(cards_version=7))
    assert set_card_list(engine, EDGE, [CardEntry(id_tag="ALICE")]) == 8
    assert card_list_to_send(engine, EDGE) == CardList(
        version=8, full=True, cards=[CardEntry(id_tag="ALICE")]
    )


def test_a_card_twice_in_a_list_is_refused(engine: Engine) -> None:
    with pytest.raises(DesiredStateError, match="ALICE is in the list twice"):
        set_card_list(engine, EDGE, [CardEntry(id_tag="ALICE"), CardEntry(id_tag="ALICE")])


def test_commands_are_sent_until_a_result_or_their_expiry(engine: Engine) -> None:
    now = utc_now()
    reset = create_command(
        engine, EDGE, "CP-1", "reset", {"type": "Soft"}, now + timedelta(minutes=1), actor="token"
    )
    unlock = create_command(
        engine, EDGE, "CP-2", "unlock", {"connector_id": 1}, now + timedelta(hours=1), actor="token"
    )
    assert reset.arguments == {"type": "Soft"} and reset.expires_at.endswith("Z")
    assert commands_to_send(engine, EDGE, now) == [reset, unlock]
    mark_sent(engine, [reset.id], now)
    assert commands_to_send(engine, EDGE, now) == [reset, unlock]  # sent again until answered

    report(
        engine,
        1,
        {
            "kind": "command.result",
            "command_id": unlock.id,
            "status": "done",
            "response": {"status": "Unlocked"},
        },
    )
    assert commands_to_send(engine, EDGE, now) == [reset]
    assert commands_to_send(engine, EDGE, now + timedelta(minutes=2)) == []
    by_id = {row.id: row for row in rows(engine, commands)}
    assert by_id[unlock.id].status == "done" and by_id[unlock.id].response == {"status": "Unlocked"}
    assert by_id[reset.id].status == "expired" and by_id[reset.id].sent_at is not None

    # The edge had run it just before it expired: its result is the truth.
    report(engine, 2, {"kind": "command.result", "command_id": reset.id, "status": "done"})
    assert {row.id: row.status for row in rows(engine, commands)}[reset.id] == "done"


def test_a_command_result_from_another_edge_changes_nothing(engine: Engine) -> None:
    command = create_command(
        engine, "site-8", "CP-1", "reset", {}, utc_now() + timedelta(minutes=5), actor="token"
    )
    report(engine, 1, {"kind": "command.result", "command_id": command.id, "status": "failed"})
    assert [row.status for row in rows(engine, commands)] == ["pending"]


def test_commands_an_edge_cannot_run_are_refused(engine: Engine) -> None:
    later = utc_now() + timedelta(minutes=5)
    with pytest.raises(DesiredStateError, match="not a command an edge can run"):
        create_command(engine, EDGE, "CP-1", "explode", {}, later, actor="token")
    with pytest.raises(DesiredStateError, match="in the past"):
        create_command(
            engine, EDGE, "CP-1", "reset", {}, utc_now() - timedelta(seconds=1), actor="token"
        )
    assert rows(engine, commands) == []


def test_firmware_is_offered_until_the_edge_verified_it(engine: Engine) -> None:
    image = add_image(engine, "ac22-1.2.bin", "1.2")
    assert add_image(engine, "ac22-1.2.bin", "1.2") == image  # the first manifest stays
    assert firmware_image(engine, "ac22-1.2.bin") == image
    assert offers_to_send(engine, EDGE) == []
    offer_to(engine, EDGE, "ac22-1.2.bin")
    (offer,) = offers_to_send(engine, EDGE, chunk_size=65536)
    assert (offer.image, offer.size, offer.sha256, offer.chunk_size, offer.force) == (
        "ac22-1.2.bin",
        4096,
        SHA,
        65536,
        False,
    )
    assert (offer.manifest, offer.signature) == (image.manifest, image.signature)
    progress = {"kind": "firmware.progress", "image": "ac22-1.2.bin", "bytes": 4096}
    report(engine, 1, progress | {"status": "downloading"})
    assert len(offers_to_send(engine, EDGE)) == 1
    report(engine, 2, progress | {"status": "fetched"})
    assert len(offers_to_send(engine, EDGE)) == 1
    report(engine, 3, progress | {"status": "verified"})
    assert offers_to_send(engine, EDGE) == []
    offer_to(engine, EDGE, "ac22-1.2.bin", force=True)  # offered again on purpose
    (offer,) = offers_to_send(engine, EDGE)
    assert offer.force is True


def test_firmware_that_cannot_be_offered_is_refused(engine: Engine) -> None:
    add_image(engine, "a.bin", "1")
    with pytest.raises(DesiredStateError, match="give this one a new name"):
        add_image(engine, "a.bin", "2", sha256="cd" * 32)
    with pytest.raises(DesiredStateError, match="already version 1 for ACME/\\*"):
        add_image(engine, "a.bin", "2")
    with pytest.raises(DesiredStateError, match="already version 1"):
        add_image(engine, "a.bin", "1", targets=("*/*",))
    with pytest.raises(DesiredStateError, match=r"no firmware image 'b\.bin'"):
        offer_to(engine, EDGE, "b.bin")


def add_image_of_the_old_format(engine: Engine, name: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(firmware_images).values(
                name=name,
                version="0.9",
                size=4096,
                sha256=SHA,
                signature="c2ln",
                path=f"/fw/{name}",
                created_at=utc_now(),
            )
        )


def test_an_image_added_before_manifests_is_not_offered_until_added_again(
    engine: Engine,
) -> None:
    add_image_of_the_old_format(engine, "old.bin")
    with pytest.raises(DesiredStateError, match="before images had signed manifests"):
        offer_to(engine, EDGE, "old.bin")
    assert offers_to_send(engine, EDGE) == []
    # The same bytes added again with targets: signed, and offered from then on.
    image = add_image(engine, "old.bin", "0.9")
    assert image.manifest is not None and firmware_image(engine, "old.bin") == image
    offer_to(engine, EDGE, "old.bin")
    assert [offer.manifest for offer in offers_to_send(engine, EDGE)] == [image.manifest]


LATER = timedelta(minutes=5)


@pytest.mark.parametrize(
    ("action", "arguments", "reason"),
    [
        ("firmware_rollout", {"location": "http://x/y.bin"}, "not a location"),
        ("firmware_rollout", {"image": "a.bin", "location": "http://x"}, "not a location"),
        ("firmware_rollout", {}, "names the image"),
        ("firmware_rollout", {"image": "a.bin", "force": "yes"}, "force is true or false"),
        ("firmware_rollout", {"image": "nothing.bin"}, "no firmware image 'nothing.bin'"),
        (
            "ocpp",
            {"action": "UpdateFirmware", "arguments": {"location": "ftp://x"}},
            "not a location",
        ),
        (
            "ocpp",
            {"action": "SignedUpdateFirmware", "arguments": {"firmware": {"location": "x"}}},
            "not a location",
        ),
    ],
)
def test_firmware_commands_name_an_image_the_cloud_signed(
    engine: Engine, action: str, arguments: dict[str, object], reason: str
) -> None:
    add_image(engine, "a.bin", "1")
    with pytest.raises(DesiredStateError, match=reason):
        create_command(engine, EDGE, "CP-1", action, arguments, utc_now() + LATER, actor="token")
    assert rows(engine, commands) == []


def test_firmware_commands_naming_a_signed_image_are_created(engine: Engine) -> None:
    add_image(engine, "a.bin", "1")
    rollout = {"image": "a.bin", "force": True}
    create_command(
        engine, EDGE, "CP-1", "firmware_rollout", rollout, utc_now() + LATER, actor="token"
    )
    raw = {"action": "UpdateFirmware", "arguments": {"image": "a.bin", "retrieveDate": "x"}}
    create_command(engine, EDGE, "CP-1", "ocpp", raw, utc_now() + LATER, actor="token")
    assert len(rows(engine, commands)) == 2


def test_each_chargers_latest_install_and_installed_version(engine: Engine) -> None:
    install = {"kind": "firmware.install", "charger_id": "CP1", "image": "a.bin"}
    report(engine, 1, install | {"version": "2.0", "status": "installing", "detail": "sent"})
    report(engine, 2, install | {"version": "2.0", "status": "installed", "forced": True})
    report(engine, 3, install | {"version": "1.0", "status": "refused", "detail": "older"})
    (charger,) = firmware_overview(engine, EDGE)["chargers"]
    assert (charger["status"], charger["version"], charger["detail"]) == (
        "refused",
        "1.0",
        "older",
    )
    assert (charger["installed_version"], charger["installed_image"]) == ("2.0", "a.bin")
    assert charger["forced"] is False


def test_a_card_list_larger_than_one_message_is_sent_in_parts(engine: Engine) -> None:
    cards = [CardEntry(id_tag=f"C{number:06d}", label="l" * 150) for number in range(3000)]
    version = set_card_list(engine, EDGE, cards)
    parts = card_list_parts_to_send(engine, EDGE, part_bytes=100_000)
    assert len(parts) > 4 and [part.part for part in parts] == list(range(1, len(parts) + 1))
    assert all(part.parts == len(parts) and part.version == version for part in parts)
    assert all(len(part.model_dump_json(exclude_none=True)) <= 100_000 for part in parts)
    assert [card for part in parts for card in part.cards] == cards
    # One message when it fits: no part numbers, as edges before parts expect.
    set_card_list(engine, EDGE, cards[:10])
    (whole,) = card_list_parts_to_send(engine, EDGE)
    assert whole.part is None and whole.parts is None


def test_a_card_list_no_edge_could_take_is_refused_when_set(engine: Engine) -> None:
    with pytest.raises(DesiredStateError, match="in the list twice"):
        set_card_list(engine, EDGE, [CardEntry(id_tag="abc"), CardEntry(id_tag="ABC")])
    huge = [CardEntry(id_tag=f"C{number:07d}", label="l" * 200) for number in range(80_000)]
    with pytest.raises(DesiredStateError, match="more than one card list holds"):
        set_card_list(engine, EDGE, huge)
    with pytest.raises(ValueError, match="ISO 8601"):
        CardEntry(id_tag="A", expiry_date="tomorrow")
