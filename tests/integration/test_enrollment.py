"""Enrolling an edge, for real: an operator makes a one-time code on the cloud, the edge
runs `ocpp-edge enroll` against the aggregator's REST API, and then connects with the
certificate it got to the shipped broker config (client certificates from the edge CA,
CN = username = edge id, the ACL), and its events reach the cloud. The code is single
use, expires, is stored only as a digest, and guessing is throttled."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import insert, select
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from cloud.cli import main as cloud_cli
from cloud.enrollment import code_digest, new_code, normalize_code
from cloud.firmware import public_key_text
from cloud.store import enrollment_codes, fleet
from cloud.store.database import open_store
from cloud.store.schema import edges as edges_table
from cloud.store.schema import enrollment_codes as codes_table
from edge.cli import main as edge_cli
from edge.enrollment import certificate_request
from edge.settings import load_settings
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.certificates import CertificateAuthority
from tests.conftest import RunningCloud, StartCloud, StartEdge, stop_edge
from tests.doubles.tls_proxy import tls_proxy
from tests.integration.test_broker_security import AGGREGATOR, AGGREGATOR_PASSWORD
from tests.mosquitto import ShippedMosquitto, TlsListener, write_password_file
from tests.waiting import eventually

EDGE = "site-7"


@dataclass
class Fleet:
    edge_ca: CertificateAuthority
    broker_ca: CertificateAuthority
    broker: ShippedMosquitto


@pytest.fixture
def pki_and_broker(tmp_path: Path) -> Iterator[Fleet]:
    """The shipped mosquitto config: edges on TLS with a client certificate from the edge
    CA (CN = username = edge id, the ACL), the aggregator with a password on loopback.
    The broker's own certificate comes from another CA, which edges learn when enrolling."""
    directory = tmp_path / "pki"
    directory.mkdir()
    edge_ca = CertificateAuthority(directory, "Edge CA")
    broker_ca = CertificateAuthority(directory, "Broker CA")
    server = broker_ca.issue("localhost", server=True)
    broker = ShippedMosquitto(
        tmp_path / "broker",
        tls=TlsListener(edge_ca.files.certificate, server.certificate, server.key),
        password_file=write_password_file(directory / "passwd", {AGGREGATOR: AGGREGATOR_PASSWORD}),
    )
    broker.start()
    yield Fleet(edge_ca, broker_ca, broker)
    broker.stop()


async def start_enrolling_cloud(
    start_cloud: StartCloud, fleet: Fleet, max_failed_attempts: int = 10, **sections: Any
) -> RunningCloud:
    return await start_cloud(
        fleet.broker,
        **sections,
        mqtt={
            "broker_host": "127.0.0.1",
            "broker_port": fleet.broker.port,
            "username": AGGREGATOR,
            "password": AGGREGATOR_PASSWORD,
        },
        enrollment={
            "ca_certificate": fleet.edge_ca.files.certificate,
            "ca_private_key": fleet.edge_ca.files.key,
            "broker_ca": fleet.broker_ca.files.certificate,
            "broker_host": "localhost",
            "broker_port": fleet.broker.tls_port,
            "max_failed_attempts": max_failed_attempts,
        },
    )


@pytest.fixture
async def cloud(start_cloud: StartCloud, pki_and_broker: Fleet) -> RunningCloud:
    return await start_enrolling_cloud(start_cloud, pki_and_broker)


@pytest.fixture
def edge_config(tmp_path: Path) -> Path:
    """The edge's config file: its store in the test's directory, nothing about the cloud."""
    path = tmp_path / "config.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "edge.db"}"\n')
    return path


async def api(
    cloud: RunningCloud,
    path: str,
    body: Mapping[str, object],
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST as an edge enrolling does (no token), or with `headers`."""
    async with httpx.AsyncClient(base_url=cloud.api_url) as client:
        return await client.post(path, json=body, headers=headers)


async def make_code(
    cloud: RunningCloud, edge_id: str = EDGE, replaces_identity: bool = False
) -> str:
    """A code, as an operator makes it (with the API token)."""
    order = {"valid_for_s": 600, "replaces_identity": replaces_identity}
    response = await api(
        cloud, f"/api/edges/{edge_id}/enrollment-codes", order, headers=cloud.api_headers
    )
    assert response.status_code == 200, response.text
    return str(response.json()["code"])


async def enroll(capsys: pytest.CaptureFixture[str], config: Path, *words: str) -> tuple[int, str]:
    """`ocpp-edge enroll ...` as an installer runs it (in a thread: it blocks on HTTP)."""
    code = await asyncio.to_thread(edge_cli, ["enroll", *words, "--config", str(config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def weak_csr_for(edge_id: str) -> str:
    """A CSR of a 1024-bit RSA key."""
    key = rsa.generate_private_key(65537, 1024)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, edge_id)])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


def csr_for(edge_id: str) -> str:
    return certificate_request(ec.generate_private_key(ec.SECP256R1()), edge_id)


async def test_an_enrolled_edge_connects_with_its_certificate_and_its_events_arrive(
    cloud: RunningCloud,
    pki_and_broker: Fleet,
    start_edge: StartEdge,
    edge_config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = await make_code(cloud)
    status, out = await enroll(capsys, edge_config, code, "--cloud", cloud.api_url)
    assert status == 0, out
    assert f"Enrolled as edge {EDGE}" in out and "ocpp-edge doctor" in out

    # The settings loader merges the identity under the (silent) config file.
    settings = load_settings(edge_config)
    sync = settings.sync
    assert (sync.edge_id, sync.broker_host, sync.broker_port, sync.topic_prefix) == (
        EDGE,
        "localhost",
        pki_and_broker.broker.tls_port,
        "ocpp-edge/v1",
    )
    assert sync.firmware_public_key == public_key_text(cloud.site.signing_key)
    assert sync.tls_private_key is not None and sync.tls_certificate is not None
    assert sync.tls_ca is not None
    assert stat.S_IMODE(sync.tls_private_key.stat().st_mode) == 0o600
    assert sync.tls_private_key.is_relative_to(tmp_path / "sync-identity")
    assert sync.tls_ca.read_bytes() == pki_and_broker.broker_ca.files.certificate.read_bytes()
    leaf, issuer = x509.load_pem_x509_certificates(sync.tls_certificate.read_bytes())
    assert leaf.subject.rfc4514_string() == f"CN={EDGE}"
    assert leaf.issuer == pki_and_broker.edge_ca.certificate.subject == issuer.subject

    # The store holds the code's digest, never the code, and who used it for what.
    with cloud.engine.connect() as connection:
        (row,) = connection.execute(select(codes_table)).mappings().all()
    assert row["code_sha256"] == code_digest(code.replace("-", ""))
    stored = " ".join(str(value) for value in row.values())
    assert code not in stored and code.replace("-", "") not in stored
    assert row["used_at"] is not None and row["used_by"] == "127.0.0.1"
    assert row["certificate_serial"] == format(leaf.serial_number, "x")

    # The real proof: the daemon, with these settings, is let in by the broker as site-7
    # (the ACL only lets CN site-7 publish on site-7's topics) and its events are stored.
    # Subscribed before the edge's first batch, which would otherwise wait ack_timeout.
    await eventually(lambda: cloud.site.aggregator.connected)
    edge = await start_edge(sections={"sync": sync.model_dump()})
    async with connect(f"{edge.url}/CP1", subprotocols=[Subprotocol("ocpp1.6")]) as link:
        charger = SimulatedCharger("CP1", link, SimulatedChargerConfig(connectors=1))
        listener = asyncio.create_task(charger.start())
        await charger.boot()
        await eventually(lambda: bool(fleet.list_chargers(cloud.engine, EDGE)), within=10)
        listener.cancel()
    await eventually(lambda: edge.query("SELECT count(*) FROM outbox")[0][0] == 0)
    (view,) = fleet.list_edges(cloud.engine, datetime.now(UTC))
    assert view.edge_id == EDGE and view.online and view.last_seq >= 1
    await stop_edge(edge)


async def test_a_code_works_once(cloud: RunningCloud) -> None:
    code = await make_code(cloud)
    first = await api(cloud, "/api/enroll", {"code": code, "csr": csr_for(EDGE)})
    assert first.status_code == 200
    again = await api(cloud, "/api/enroll", {"code": code, "csr": csr_for(EDGE)})
    assert again.status_code == 403
    assert "was used at" in again.json()["detail"] and "new one" in again.json()["detail"]
    asked = await api(cloud, "/api/enroll/code", {"code": code})
    assert asked.status_code == 403


async def test_an_expired_code_is_refused(cloud: RunningCloud) -> None:
    code = new_code()
    past = datetime.now(UTC) - timedelta(hours=2)
    digest = code_digest(normalize_code(code) or "")
    enrollment_codes.add_code(cloud.engine, digest, EDGE, past, past + timedelta(hours=1))
    for path, body in (
        ("/api/enroll/code", {"code": code}),
        ("/api/enroll", {"code": code, "csr": csr_for(EDGE)}),
    ):
        response = await api(cloud, path, body)
        assert response.status_code == 403
        assert "expired at" in response.json()["detail"]
    found = enrollment_codes.find_code(cloud.engine, digest)
    assert found is not None and found.used_at is None


async def test_a_request_for_another_edge_or_not_a_request_is_422_and_keeps_the_code(
    cloud: RunningCloud,
) -> None:
    code = await make_code(cloud)
    other = await api(cloud, "/api/enroll", {"code": code, "csr": csr_for("site-8")})
    assert other.status_code == 422
    assert other.json()["detail"] == (
        "the request's CN is site-8, but this code is for edge site-7: make the request "
        "with CN=site-7"
    )
    garbage = await api(cloud, "/api/enroll", {"code": code, "csr": "not a CSR"})
    assert (
        garbage.status_code == 422 and "not a PEM certificate request" in garbage.json()["detail"]
    )
    weak = weak_csr_for(EDGE)
    refused = await api(cloud, "/api/enroll", {"code": code, "csr": weak})
    assert refused.status_code == 422 and "2048 bits or more" in refused.json()["detail"]
    # Typed in lower case with spaces, the code is still good: it was not used above.
    typed = code.lower().replace("-", " ")
    right = await api(cloud, "/api/enroll", {"code": typed, "csr": csr_for(EDGE)})
    assert right.status_code == 200 and right.json()["edge_id"] == EDGE


async def test_wrong_codes_are_logged_and_throttled_per_address(
    start_cloud: StartCloud, pki_and_broker: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    cloud = await start_enrolling_cloud(start_cloud, pki_and_broker, max_failed_attempts=3)
    good = await make_code(cloud)
    wrong = new_code()
    caplog.set_level(logging.WARNING, logger="cloud.enrollment")
    for _ in range(3):
        refused = await api(cloud, "/api/enroll/code", {"code": wrong})
        assert refused.status_code == 403 and "no such enrollment code" in refused.json()["detail"]
    turned_away = await api(cloud, "/api/enroll", {"code": good, "csr": csr_for(EDGE)})
    assert turned_away.status_code == 429
    assert "too many wrong codes from 127.0.0.1" in turned_away.json()["detail"]
    assert 0 < int(turned_away.headers["retry-after"]) <= 900
    logged = [record.getMessage() for record in caplog.records]
    assert (
        logged.count(
            "enrollment refused for 127.0.0.1: no such enrollment code: check it, "
            "or ask for a new one"
        )
        == 3
    )
    assert not any(wrong in message or good in message for message in logged)
    found = enrollment_codes.find_code(cloud.engine, code_digest(normalize_code(good) or ""))
    assert found is not None and found.used_at is None


async def test_enrolling_through_https_with_a_private_ca_and_replacing_with_force(
    cloud: RunningCloud,
    edge_config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    web_ca = CertificateAuthority(tmp_path / "pki", "Web CA")
    web = web_ca.issue("localhost", server=True)
    assert cloud.site.api is not None
    async with tls_proxy(web.certificate, web.key, cloud.site.api.port) as port:
        url = f"https://localhost:{port}"
        code = await make_code(cloud)
        status, out = await enroll(capsys, edge_config, code, "--cloud", url)
        assert status == 2 and "--ca" in out  # the system does not trust the web CA
        status, out = await enroll(
            capsys, edge_config, code, "--cloud", url, "--ca", str(web_ca.files.certificate)
        )
        assert status == 0, out
        first_key = load_settings(edge_config).sync.tls_private_key
        assert first_key is not None and first_key.is_file()

        (tmp_path / "sync-identity" / "notes").mkdir()  # not an enrollment's
        second = await make_code(cloud, replaces_identity=True)
        status, out = await enroll(
            capsys, edge_config, second, "--cloud", url, "--ca", str(web_ca.files.certificate)
        )
        assert status == 2 and "enrolled already" in out and "--force" in out
        found = enrollment_codes.find_code(cloud.engine, code_digest(normalize_code(second) or ""))
        assert found is not None and found.used_at is None  # refused before asking the cloud

        status, out = await enroll(
            capsys,
            edge_config,
            second,
            "--cloud",
            url,
            "--ca",
            str(web_ca.files.certificate),
            "--force",
        )
        assert status == 0, out
    replaced = load_settings(edge_config).sync.tls_private_key
    assert replaced is not None and replaced.is_file() and replaced != first_key
    assert not first_key.exists()  # the earlier enrollment's files are gone, not others
    directories = {p for p in (tmp_path / "sync-identity").iterdir() if p.is_dir()}
    assert directories == {replaced.parent, tmp_path / "sync-identity" / "notes"}


async def test_a_config_file_value_that_hides_the_identity_is_named(
    cloud: RunningCloud, edge_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append(edge_config, '[sync]\nbroker_host = ""\nkeepalive = 10\n')
    status, out = await enroll(
        capsys, edge_config, await make_code(cloud), "--cloud", cloud.api_url
    )
    assert status == 1
    assert f"{edge_config} [sync] broker_host = ''" in out
    assert "keepalive" not in out  # not an identity value
    assert load_settings(edge_config).sync.edge_id == EDGE  # merged where not hidden


async def test_the_code_never_crosses_the_network_in_clear(
    edge_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = await enroll(
        capsys, edge_config, "AAAA-BBBB", "--cloud", "http://cloud.example:8090"
    )
    assert status == 2 and "plain http" in out and "https" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
async def test_run_as_root_the_files_belong_to_the_store_directorys_owner(
    cloud: RunningCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 4321, 4321)
    config = tmp_path / "service.toml"
    config.write_text(f'[store]\npath = "{state / "edge.db"}"\n')
    status, out = await enroll(capsys, config, await make_code(cloud), "--cloud", cloud.api_url)
    assert status == 0, out
    sync = load_settings(config).sync
    assert sync.tls_private_key is not None and sync.tls_certificate is not None
    for path in (
        state / "sync-identity",
        state / "sync-identity" / "identity.toml",
        sync.tls_private_key,
        sync.tls_private_key.parent,
        sync.tls_certificate,
    ):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4321), path
    assert stat.S_IMODE(sync.tls_private_key.stat().st_mode) == 0o600


async def test_operators_make_codes_from_the_shell(
    tmp_path: Path, pki_and_broker: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cloud.toml"
    plain = f'[store]\nurl = "sqlite:///{tmp_path / "cloud.db"}"\n'
    config.write_text(plain)
    assert cloud_cli(["enroll-code", EDGE, "--config", str(config)]) == 2
    assert "does not enroll edges: set [enrollment] ca_certificate" in capsys.readouterr().err
    config.write_text(
        plain + "[enrollment]\n"
        f'ca_certificate = "{pki_and_broker.edge_ca.files.certificate}"\n'
        f'ca_private_key = "{pki_and_broker.edge_ca.files.key}"\n'
        f'broker_ca = "{pki_and_broker.broker_ca.files.certificate}"\n'
        'broker_host = "mqtt.example.net"\n'
    )
    assert cloud_cli(["enroll-code", EDGE, "--valid-for", "2h", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    code = next(word for word in out.split() if normalize_code(word) and word.count("-") == 5)
    assert "shown only this time" in out and f"ocpp-edge enroll {code}" in out
    engine = open_store(f"sqlite:///{tmp_path / 'cloud.db'}")
    found = enrollment_codes.find_code(engine, code_digest(normalize_code(code) or ""))
    engine.dispose()
    assert found is not None and found.edge_id == EDGE and found.used_at is None
    assert found.expires_at - found.created_at == timedelta(hours=2)
    assert cloud_cli(["enroll-code", "ocpp-cloud", "--config", str(config)]) == 2
    assert "the aggregator's broker user" in capsys.readouterr().err
    assert cloud_cli(["enroll-code", EDGE, "--valid-for", "soon", "--config", str(config)]) == 2
    assert "not a duration" in capsys.readouterr().err


async def test_with_an_api_token_only_enrolling_goes_without_it(
    start_cloud: StartCloud, pki_and_broker: Fleet
) -> None:
    cloud = await start_enrolling_cloud(start_cloud, pki_and_broker, api={"token": "fleet-secret"})
    order = f"/api/edges/{EDGE}/enrollment-codes"
    assert (await api(cloud, order, {})).status_code == 401
    async with httpx.AsyncClient(base_url=cloud.api_url) as client:
        assert (await client.get("/api/edges")).status_code == 401
        made = await client.post(order, json={}, headers={"authorization": "Bearer fleet-secret"})
    assert made.status_code == 200
    expires_at = datetime.fromisoformat(made.json()["expires_at"])
    assert timedelta(hours=23) < expires_at - datetime.now(UTC) <= timedelta(hours=24)
    code = made.json()["code"]
    asked = await api(cloud, "/api/enroll/code", {"code": code})
    assert asked.status_code == 200 and asked.json()["edge_id"] == EDGE
    enrolled = await api(cloud, "/api/enroll", {"code": code, "csr": csr_for(EDGE)})
    assert enrolled.status_code == 200


async def test_an_edge_with_an_identity_is_enrolled_again_only_by_a_code_made_to_replace_it(
    cloud: RunningCloud, caplog: pytest.LogCaptureFixture
) -> None:
    first = await make_code(cloud)
    assert (await api(cloud, "/api/enroll", {"code": first, "csr": csr_for(EDGE)})).is_success
    order = f"/api/edges/{EDGE}/enrollment-codes"
    refused = await api(cloud, order, {"valid_for_s": 600}, headers=cloud.api_headers)
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert f"edge {EDGE} already has an identity" in detail and "--replace" in detail
    replacing = await make_code(cloud, replaces_identity=True)
    again = await api(cloud, "/api/enroll", {"code": replacing, "csr": csr_for(EDGE)})
    assert again.status_code == 200 and again.json()["edge_id"] == EDGE

    # Two codes made for a new edge id enroll one device, not two.
    one, two = await make_code(cloud, "site-9"), await make_code(cloud, "site-9")
    assert (await api(cloud, "/api/enroll", {"code": one, "csr": csr_for("site-9")})).is_success
    caplog.set_level(logging.WARNING, logger="cloud.enrollment")
    second = await api(cloud, "/api/enroll", {"code": two, "csr": csr_for("site-9")})
    assert second.status_code == 409 and "already has an identity" in second.json()["detail"]
    assert "enrollment of site-9 from 127.0.0.1 refused" in caplog.text
    unused = enrollment_codes.find_code(cloud.engine, code_digest(normalize_code(two) or ""))
    assert unused is not None and unused.used_at is None


async def test_an_edge_in_touch_is_not_enrolled_again_by_mistake(cloud: RunningCloud) -> None:
    with cloud.engine.begin() as connection:
        now = datetime.now(UTC)
        connection.execute(
            insert(edges_table).values(id="site-3", created_at=now, first_seen_at=now)
        )
    order = "/api/edges/site-3/enrollment-codes"
    refused = await api(cloud, order, {"valid_for_s": 600}, headers=cloud.api_headers)
    assert refused.status_code == 409 and "in touch with this cloud" in refused.json()["detail"]
    assert await make_code(cloud, "site-3", replaces_identity=True)


async def test_the_failure_limit_counts_the_real_client_not_a_header_anyone_can_write(
    start_cloud: StartCloud, pki_and_broker: Fleet
) -> None:
    cloud = await start_enrolling_cloud(start_cloud, pki_and_broker, max_failed_attempts=3)
    wrong = new_code()
    for number in range(3):
        forged = {"X-Forwarded-For": f"198.51.100.{number}"}
        refused = await api(cloud, "/api/enroll/code", {"code": wrong}, headers=forged)
        assert refused.status_code == 403
    turned_away = await api(
        cloud, "/api/enroll/code", {"code": wrong}, headers={"X-Forwarded-For": "198.51.100.77"}
    )
    assert turned_away.status_code == 429
    assert "too many wrong codes from 127.0.0.1" in turned_away.json()["detail"]


async def test_behind_a_trusted_proxy_each_real_client_has_its_own_limit(
    start_cloud: StartCloud, pki_and_broker: Fleet
) -> None:
    cloud = await start_enrolling_cloud(
        start_cloud, pki_and_broker, max_failed_attempts=3, api={"trusted_proxies": ["127.0.0.1"]}
    )
    wrong = new_code()

    async def attempt(forwarded_for: str) -> httpx.Response:
        headers = {"X-Forwarded-For": forwarded_for}
        return await api(cloud, "/api/enroll/code", {"code": wrong}, headers=headers)

    # What the client wrote itself comes first; the proxy appends the address it saw.
    for claimed in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert (await attempt(f"{claimed}, 203.0.113.5")).status_code == 403
    turned_away = await attempt("203.0.113.5")
    assert turned_away.status_code == 429
    assert "too many wrong codes from 203.0.113.5" in turned_away.json()["detail"]
    assert (await attempt("203.0.113.6")).status_code == 403
    code = await make_code(cloud)
    row = {"code": code, "csr": csr_for(EDGE)}
    enrolled = await api(cloud, "/api/enroll", row, headers={"X-Forwarded-For": "203.0.113.6"})
    assert enrolled.status_code == 200
    found = enrollment_codes.find_code(cloud.engine, code_digest(normalize_code(code) or ""))
    assert found is not None and found.used_by == "203.0.113.6"
