"""OCPP 1.6 security profiles 1 to 3 with real certificates and real TLS on loopback."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from edge.cli import main
from tests.certificates import CertificateAuthority
from tests.conftest import RunningEdge, StartEdge

OCPP16 = [Subprotocol("ocpp1.6")]
PASSWORD = "0123456789abcdef0123"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def set_password(edge: RunningEdge, charger_id: str) -> None:
    config = edge.db_path.parent / "cli.toml"
    config.write_text(f'[store]\npath = "{edge.db_path}"\n')
    assert (
        main(["chargers", "password", charger_id, "--password", PASSWORD, "--config", str(config)])
        == 0
    )


async def boots(url: str, **options: object) -> bool:
    async with connect(url, subprotocols=OCPP16, open_timeout=5, **options) as connection:  # type: ignore[arg-type]
        await connection.send(
            '[2,"1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'
        )
        return '"Accepted"' in str(await connection.recv())


async def refused_status(url: str, **options: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await boots(url, **options)
    return refused.value.response.status_code


async def test_profile_1_basic_auth(start_edge: StartEdge) -> None:
    # Wrong logins one after another from one address: no back-off between them here
    # (tests/adversarial/test_auth_flood.py has it).
    edge = await start_edge(security_profile=1, password_backoff_seconds=0)
    set_password(edge, "CP1")
    assert await boots(f"{edge.url}/CP1", additional_headers=basic("CP1", PASSWORD))
    assert (
        await refused_status(
            f"{edge.url}/CP1", additional_headers=basic("CP1", "wrong-password-123")
        )
        == 401
    )
    assert await refused_status(f"{edge.url}/CP1") == 401
    # Another charger's credentials do not open this one.
    set_password(edge, "CP2")
    assert await refused_status(f"{edge.url}/CP1", additional_headers=basic("CP2", PASSWORD)) == 401
    events = edge.query("SELECT type, tech_info FROM security_events WHERE charger_id = 'CP1'")
    assert len(events) == 3 and events[0]["type"] == "EdgeRefusedConnection"
    stored = edge.query("SELECT password_hash FROM chargers WHERE id = 'CP1'")[0][0]
    assert stored.startswith("scrypt$") and PASSWORD not in stored


@pytest.fixture
def pki(tmp_path: Path) -> tuple[CertificateAuthority, CertificateAuthority]:
    (tmp_path / "server").mkdir()
    (tmp_path / "chargers").mkdir()
    return CertificateAuthority(tmp_path / "server", "Site CA"), CertificateAuthority(
        tmp_path / "chargers", "Chargers CA"
    )


def client_context(
    server_ca: CertificateAuthority, certificate: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server_ca.files.certificate))
    if certificate and key:
        context.load_cert_chain(certificate, key)
    return context


async def test_profile_2_tls_and_basic_auth(
    start_edge: StartEdge, pki: tuple[CertificateAuthority, CertificateAuthority]
) -> None:
    site_ca, _ = pki
    server = site_ca.issue("edge", server=True)
    edge = await start_edge(
        security_profile=2, tls_certificate=server.certificate, tls_private_key=server.key
    )
    set_password(edge, "CP1")
    secure = edge.url.replace("ws://", "wss://")
    assert await boots(
        f"{secure}/CP1", ssl=client_context(site_ca), additional_headers=basic("CP1", PASSWORD)
    )
    assert await refused_status(f"{secure}/CP1", ssl=client_context(site_ca)) == 401
    with pytest.raises(InvalidHandshake):  # plain ws:// to a TLS port gets no HTTP answer
        await boots(f"{edge.url}/CP1", additional_headers=basic("CP1", PASSWORD))


async def test_profile_3_client_certificate_cn_is_the_charger(
    start_edge: StartEdge, pki: tuple[CertificateAuthority, CertificateAuthority]
) -> None:
    site_ca, chargers_ca = pki
    server = site_ca.issue("edge", server=True)
    edge = await start_edge(
        security_profile=3,
        tls_certificate=server.certificate,
        tls_private_key=server.key,
        tls_client_ca=chargers_ca.files.certificate,
    )
    secure = edge.url.replace("ws://", "wss://")
    cp1 = chargers_ca.issue("CP1")
    assert await boots(f"{secure}/CP1", ssl=client_context(site_ca, cp1.certificate, cp1.key))
    # A valid certificate of another charger does not open CP1.
    cp9 = chargers_ca.issue("CP9")
    assert (
        await refused_status(f"{secure}/CP1", ssl=client_context(site_ca, cp9.certificate, cp9.key))
        == 403
    )
    # No client certificate, or one from a CA the edge does not trust: no TLS session.
    stranger_ca = CertificateAuthority(site_ca.directory, "Stranger CA")
    stranger = stranger_ca.issue("CP1")
    for context in (
        client_context(site_ca),
        client_context(site_ca, stranger.certificate, stranger.key),
    ):
        # TLS 1.3 reports the refused certificate after the client's handshake: either way
        # no WebSocket is opened.
        with pytest.raises((ssl.SSLError, OSError, InvalidHandshake)):
            await boots(f"{secure}/CP1", ssl=context)


def test_profile_settings_name_the_missing_files(tmp_path: Path) -> None:
    from contract.config_files import ConfigError
    from edge.settings import load_settings

    path = tmp_path / "config.toml"
    path.write_text("[ocpp]\nsecurity_profile = 2\n")
    with pytest.raises(ConfigError, match=r"needs ocpp\.tls_certificate"):
        load_settings(path)
    path.write_text(
        f'[ocpp]\nsecurity_profile = 3\ntls_certificate = "{path}"\ntls_private_key = "{path}"\ntls_client_ca = "{tmp_path}/none.crt"\n'
    )
    with pytest.raises(ConfigError, match="no file at"):
        load_settings(path)
