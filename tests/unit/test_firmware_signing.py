"""The fleet's firmware key, manifests signed whole in their canonical form, chunks cut
from the image, the edge's checks of a manifest and of what to ask for next, and the
rules on targets and versions."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.firmware import (
    ChunkRequestError,
    FirmwareError,
    ImageTooLarge,
    SigningKeyError,
    answer_request,
    key_id,
    load_or_create_signing_key,
    make_offer,
    public_key_text,
    store_image_file,
)
from contract.firmware import parse_target
from contract.protocol import FirmwareManifest, FirmwareRequest, canonical_manifest
from edge.sync.firmware import FirmwarePublicKeyError, next_request, parse_public_key
from edge.sync.manifest import (
    ManifestRefused,
    is_older,
    is_target,
    parse_public_keys,
    printable,
    verified_manifest,
    version_key,
)

TARGETS = [parse_target("ACME/AC22*"), parse_target("*/Wallbox ?")]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "image.bin"
    path.write_bytes(bytes(range(256)) * 1000)  # 256,000 bytes
    return path


def test_the_key_is_created_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "firmware.pem"
    key = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public_key_text(load_or_create_signing_key(path)) == public_key_text(key)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_public_key_text_is_the_32_raw_bytes_the_edge_parses(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "firmware.pem")
    text = public_key_text(key)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64decode(text) == raw and len(raw) == 32
    parsed = parse_public_key(text)
    assert parsed is not None
    assert parsed.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw


def test_a_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "firmware.pem"
    path.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SigningKeyError, match="not an Ed25519 key"):
        load_or_create_signing_key(path)


def test_the_offer_carries_a_manifest_signed_whole_in_canonical_form(image: Path) -> None:
    key = Ed25519PrivateKey.generate()
    offer = make_offer(image, "cp-1.2.bin", "1.2", key, targets=TARGETS, chunk_size=4096)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert (offer.image, offer.version, offer.size) == ("cp-1.2.bin", "1.2", 256_000)
    assert offer.sha256 == digest and offer.chunk_size == 4096 and offer.manifest is not None
    manifest = FirmwareManifest.model_validate_json(offer.manifest)
    assert (manifest.name, manifest.version, manifest.size, manifest.sha256) == (
        "cp-1.2.bin",
        "1.2",
        256_000,
        digest,
    )
    assert manifest.targets == TARGETS and manifest.key_id == key_id(key)
    assert manifest.created_at.endswith("Z")
    assert canonical_manifest(manifest) == offer.manifest
    assert " " not in offer.manifest.replace("Wallbox ?", "")  # no spaces but in values
    assert list(json.loads(offer.manifest)) == sorted(json.loads(offer.manifest))
    # The signature covers the manifest's bytes: every field, not just the digest.
    key.public_key().verify(base64.b64decode(offer.signature), offer.manifest.encode())
    assert verified_manifest(offer, parse_public_keys(public_key_text(key))) == manifest


def test_another_key_or_a_changed_manifest_does_not_verify(image: Path) -> None:
    fleet = Ed25519PrivateKey.generate()
    offer = make_offer(image, "cp.bin", "1", fleet, targets=TARGETS)
    assert offer.manifest is not None
    other = parse_public_keys(public_key_text(Ed25519PrivateKey.generate()))
    with pytest.raises(ManifestRefused, match="not by a key this edge trusts"):
        verified_manifest(offer, other)
    trusted = parse_public_keys(public_key_text(fleet))
    newer = offer.model_copy(update={"manifest": offer.manifest.replace('"1"', '"9"')})
    with pytest.raises(ManifestRefused, match="not by a key this edge trusts"):
        verified_manifest(newer, trusted)
    with pytest.raises(ManifestRefused, match="not base64"):
        verified_manifest(offer.model_copy(update={"signature": "not base64!"}), trusted)
    with pytest.raises(ManifestRefused, match="no firmware public key"):
        verified_manifest(offer, [])


def test_a_manifest_with_a_field_wrong_cannot_be_made(image: Path) -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(FirmwareError, match="version"):
        make_offer(image, "cp.bin", "1.0 beta", key, targets=TARGETS)
    with pytest.raises(FirmwareError, match="targets"):
        make_offer(image, "cp.bin", "1.0", key, targets=[])


@pytest.mark.parametrize(
    ("text", "vendor", "model"),
    [("ACME/AC22*", "ACME", "AC22*"), ("*/*", "*", "*"), ("A B/Model/X", "A B", "Model/X")],
)
def test_targets_are_written_vendor_slash_model(text: str, vendor: str, model: str) -> None:
    target = parse_target(text)
    assert (target.vendor, target.model) == (vendor, model)


@pytest.mark.parametrize("text", ["ACME", "/AC22", "ACME/", "AC\x00ME/x", "x" * 65 + "/y"])
def test_a_target_that_is_not_vendor_slash_model_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="target"):
        parse_target(text)


def test_chargers_match_targets_by_vendor_and_model_ignoring_case() -> None:
    assert is_target(TARGETS, "acme", "AC22 Pro")
    assert is_target(TARGETS, "Other", "Wallbox 2")
    assert not is_target(TARGETS, "Other", "Wallbox 22")
    assert not is_target(TARGETS, "ACME", "DC50")
    assert not is_target(TARGETS, None, "AC22")
    assert not is_target(TARGETS, "ACME", None)


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("3.1", "3.2"),
        ("3.9", "3.10"),
        ("3.1", "3.1.1"),
        ("3.1-rc1", "3.1"),
        ("3.1-rc1", "3.1-rc2"),
        ("V2.1", "3.0"),
        ("fw-1.0", "1.0.1"),
        ("sim-1.0", "2.0"),
        ("1.2.03", "1.2.10"),
        ("9" * 40, "1" + "0" * 40),
    ],
)
def test_versions_are_ordered_part_by_part(older: str, newer: str) -> None:
    assert is_older(older, newer)
    assert not is_older(newer, older)


def test_versions_alike_or_without_digits_are_not_older() -> None:
    assert not is_older("3.1", "v3.1") and not is_older("v3.1", "3.1")
    assert not is_older("3.01", "3.1")
    assert version_key("beta") is None
    assert not is_older("beta", "1.0") and not is_older("1.0", "beta")


def test_two_keys_are_trusted_while_the_fleet_key_is_replaced() -> None:
    one, two = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = parse_public_keys(f"{public_key_text(one)},\n {public_key_text(two)}")
    assert [key.key_id for key in keys] == [key_id(one), key_id(two)]
    assert parse_public_keys("   ") == []


def test_images_are_kept_under_their_digest_within_a_size_limit(
    tmp_path: Path, image: Path
) -> None:
    stored = store_image_file(image, tmp_path / "images", 256_000)
    assert stored.path.parent == tmp_path / "images"
    assert stored.path.name.startswith(stored.sha256) and stored.path.suffix == ".bin"
    assert stored.path.read_bytes() == image.read_bytes() and stored.size == 256_000
    with pytest.raises(ImageTooLarge, match="max_image_bytes"):
        store_image_file(image, tmp_path / "images", 255_999)
    assert [path.name for path in (tmp_path / "images").iterdir()] == [stored.path.name]


def test_answer_reads_exactly_the_range_capped(image: Path) -> None:
    content = image.read_bytes()
    chunk = answer_request(image, FirmwareRequest(image="x", offset=1000, length=300), 4096)
    assert (chunk.image, chunk.offset) == ("x", 1000)
    assert base64.b64decode(chunk.data) == content[1000:1300]
    capped = answer_request(image, FirmwareRequest(image="x", offset=10, length=9000), 512)
    assert base64.b64decode(capped.data) == content[10:522]
    tail = answer_request(image, FirmwareRequest(image="x", offset=255_900, length=4096), 4096)
    assert base64.b64decode(tail.data) == content[255_900:]


@pytest.mark.parametrize("offset", [256_000, 300_000])
def test_answer_refuses_offsets_past_the_end(image: Path, offset: int) -> None:
    with pytest.raises(ChunkRequestError, match="beyond the image's end"):
        answer_request(image, FirmwareRequest(image="x", offset=offset, length=10), 4096)


def test_next_request_asks_from_the_first_missing_byte(image: Path) -> None:
    offer = make_offer(
        image, "cp.bin", "1", Ed25519PrivateKey.generate(), targets=TARGETS, chunk_size=65536
    )
    assert next_request(offer, 0) == FirmwareRequest(image="cp.bin", offset=0, length=65536)
    assert next_request(offer, 196_608) == FirmwareRequest(
        image="cp.bin", offset=196_608, length=256_000 - 196_608
    )
    assert next_request(offer, 256_000) is None


def test_public_key_setting_is_checked() -> None:
    assert parse_public_key("") is None
    with pytest.raises(FirmwarePublicKeyError, match="firmware_public_key is not base64"):
        parse_public_key("not base64!")
    with pytest.raises(FirmwarePublicKeyError, match="16 bytes"):
        parse_public_key(base64.b64encode(bytes(16)).decode())


def test_a_chargers_own_words_are_cleaned_before_they_go_into_a_reason() -> None:
    assert printable("AC\x0022\n") == "AC?22?"
    assert printable("x" * 100) == "x" * 63 + "…"
