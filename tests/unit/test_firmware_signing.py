"""The fleet's firmware key, offers signed over the image's digest, chunks cut from the
image, and the edge's checks of a signature and of what to ask for next."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.firmware import (
    ChunkRequestError,
    SigningKeyError,
    answer_request,
    load_or_create_signing_key,
    make_offer,
    public_key_text,
)
from edge.sync.firmware import (
    FirmwarePublicKeyError,
    next_request,
    parse_public_key,
    signature_is_valid,
)
from edge.sync.protocol import FirmwareRequest


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


def test_offer_signs_the_raw_sha256_digest(image: Path) -> None:
    key = Ed25519PrivateKey.generate()
    offer = make_offer(image, "cp-1.2.bin", "1.2", key, chunk_size=4096)
    digest = hashlib.sha256(image.read_bytes()).digest()
    assert (offer.image, offer.version, offer.size) == ("cp-1.2.bin", "1.2", 256_000)
    assert offer.sha256 == digest.hex() and offer.chunk_size == 4096
    public_key = parse_public_key(public_key_text(key))
    assert public_key is not None
    assert signature_is_valid(public_key, digest, offer.signature)
    # The signature is over the 32 raw bytes, not over the hex text.
    assert not signature_is_valid(public_key, offer.sha256.encode(), offer.signature)


def test_another_key_or_another_digest_does_not_verify(image: Path) -> None:
    offer = make_offer(image, "cp.bin", "1", Ed25519PrivateKey.generate())
    digest = bytes.fromhex(offer.sha256)
    other = parse_public_key(public_key_text(Ed25519PrivateKey.generate()))
    assert other is not None
    assert not signature_is_valid(other, digest, offer.signature)
    fleet = Ed25519PrivateKey.generate()
    offer = make_offer(image, "cp.bin", "1", fleet)
    public_key = parse_public_key(public_key_text(fleet))
    assert public_key is not None
    tampered = bytes([digest[0] ^ 1]) + digest[1:]
    assert not signature_is_valid(public_key, tampered, offer.signature)
    assert not signature_is_valid(public_key, bytes.fromhex(offer.sha256), "not base64!")


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
    offer = make_offer(image, "cp.bin", "1", Ed25519PrivateKey.generate(), chunk_size=65536)
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
