"""The shipped broker config (cloud/mosquitto/) run by a real mosquitto, with real paho
clients: edges by client certificate (CN = edge id) over TLS, the aggregator by password
with a shared subscription, the ACL between them, refused credentials, and queues that
keep an offline session's backlog."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from contract.protocol import Topics
from tests.certificates import CertificateAuthority, Issued
from tests.mosquitto import (
    SHIPPED_CONFIG,
    Mosquitto,
    ShippedMosquitto,
    TlsListener,
    write_password_file,
)
from tests.waiting import eventually

AGGREGATOR = "ocpp-cloud"
AGGREGATOR_PASSWORD = "aggregator-secret"
SHARED_EVENTS = "$share/ocpp-cloud/ocpp-edge/v1/+/events"
WAIT = 5.0
# paho reports MQTT 3.1.1's CONNACK refusal 5 as MQTT 5's reason code 135 too.
NOT_AUTHORIZED = 135


class Refused(Exception):
    """The broker did not accept the connection; `reason` says what it answered."""

    def __init__(self, reason: object) -> None:
        super().__init__(f"connection refused: {reason}")
        self.reason = reason


class Peer:
    """A paho-mqtt client on its own network thread. Everything the broker sends it
    (CONNACK, PUBACK, SUBACK, messages, disconnections) lands, in order, in `events`,
    which the test reads with a timeout."""

    def __init__(
        self,
        client_id: str,
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        persistent: bool = False,
    ) -> None:
        self.protocol = protocol
        self.persistent = persistent
        extra: dict[str, Any] = {}
        if protocol is not MQTTProtocolVersion.MQTTv5:
            extra["clean_session"] = not persistent
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **extra
        )
        # A refused or dropped connection must stay visible, not be retried behind the test.
        self.client.reconnect_delay_set(60, 60)
        self.client.max_inflight_messages_set(0)
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client.on_connect = lambda _c, _u, flags, code, _p: self.events.put(
            ("connect", (code, flags))
        )
        self.client.on_disconnect = lambda _c, _u, _f, code, _p: self.events.put(
            ("disconnect", code)
        )
        self.client.on_publish = lambda _c, _u, mid, code, _p: self.events.put(
            ("puback", (mid, code))
        )
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.events.put(
            ("suback", codes)
        )
        self.client.on_message = lambda _c, _u, message: self.events.put(
            ("message", (message.topic, message.payload))
        )

    def next(self, kind: str) -> Any:
        """The next event, which must be of `kind`."""
        got, value = self.events.get(timeout=WAIT)
        assert got == kind, f"expected {kind}, got {got}: {value}"
        return value

    def connect(self, port: int) -> bool:
        """Connect and wait for the CONNACK; whether the broker had kept a session."""
        options: dict[str, Any] = {}
        if self.protocol is MQTTProtocolVersion.MQTTv5:
            options["clean_start"] = not self.persistent
            if self.persistent:
                # paho's Properties has no type hints.
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                properties.SessionExpiryInterval = 3600
                options["properties"] = properties
        try:
            self.client.connect("127.0.0.1", port, **options)
        except OSError as error:  # ssl.SSLError is an OSError
            raise Refused(error) from error
        # Until the CONNACK, the network loop runs here: a refused client has no thread
        # left waiting to reconnect.
        deadline = time.monotonic() + WAIT
        while self.events.empty() and time.monotonic() < deadline:
            self.client.loop(timeout=0.05)
        kind, value = self.events.get_nowait()
        if kind == "connect" and not value[0].is_failure:
            self.client.loop_start()
            return bool(value[1].session_present)
        raise Refused(value[0] if kind == "connect" else value)

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish at QoS 1 and wait for the PUBACK's reason code."""
        sent = self.client.publish(topic, payload, qos=1)
        mid, code = self.next("puback")
        assert mid == sent.mid
        return code  # type: ignore[no-any-return]

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        self.next("suback")

    def messages_until(self, last_topic: str) -> list[tuple[str, bytes]]:
        """Messages received up to and including the first one on `last_topic`."""
        received: list[tuple[str, bytes]] = []
        while not received or received[-1][0] != last_topic:
            received.append(self.next("message"))
        return received

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """Lose the connection without a DISCONNECT, as a power cut would: the broker
        publishes the last will."""
        connection = self.client.socket()
        assert isinstance(connection, socket.socket)
        connection.shutdown(socket.SHUT_RDWR)
        self.client.loop_stop()


@dataclass
class Fleet:
    broker: ShippedMosquitto
    edge_ca: CertificateAuthority
    other_ca: CertificateAuthority

    def edge(self, identity: str | Issued, client_id: str = "", **options: Any) -> Peer:
        """An edge's client with the certificate `identity` (CN = its edge id)."""
        issued = self.edge_ca.issue(identity) if isinstance(identity, str) else identity
        peer = Peer(client_id or f"client-of-{issued.certificate.stem}", **options)
        peer.client.tls_set(
            ca_certs=str(self.edge_ca.files.certificate),
            certfile=str(issued.certificate),
            keyfile=str(issued.key),
        )
        return peer

    def aggregator(self, password: str = AGGREGATOR_PASSWORD, **options: Any) -> Peer:
        peer = Peer("aggregator-1", **options)
        peer.client.username_pw_set(AGGREGATOR, password)
        return peer


def start_fleet(directory: Path, leave_out: tuple[str, ...] = ()) -> Fleet:
    directory.mkdir(parents=True, exist_ok=True)
    edge_ca = CertificateAuthority(directory, "Edge CA")
    other_ca = CertificateAuthority(directory, "Other CA")
    server = edge_ca.issue("localhost", server=True)
    passwords = write_password_file(directory / "passwd", {AGGREGATOR: AGGREGATOR_PASSWORD})
    broker = ShippedMosquitto(
        directory / "broker",
        tls=TlsListener(edge_ca.files.certificate, server.certificate, server.key),
        password_file=passwords,
        leave_out=leave_out,
    )
    broker.start()
    return Fleet(broker, edge_ca, other_ca)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = start_fleet(tmp_path)
    yield fleet
    fleet.broker.stop()


@pytest.fixture
def aggregator(fleet: Fleet) -> Iterator[Peer]:
    """The aggregator, connected and subscribed to every edge's events as a share group."""
    peer = fleet.aggregator()
    peer.connect(fleet.broker.port)
    peer.subscribe(SHARED_EVENTS)
    yield peer
    peer.close()


def test_the_shipped_config_runs_with_only_ports_and_paths_moved(fleet: Fleet) -> None:
    def options(text: str) -> list[str]:
        return [line.split(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"]

    assert options(fleet.broker.config_path.read_text()) == options(SHIPPED_CONFIG.read_text())
    assert fleet.broker.running


def test_an_edge_publishes_its_events_to_the_aggregators_share_group(
    fleet: Fleet, aggregator: Peer
) -> None:
    site_1 = fleet.edge("site-1")
    site_1.connect(fleet.broker.tls_port)
    assert site_1.publish(Topics("site-1").events, b'{"batch": 1}').value == 0
    assert aggregator.next("message") == (Topics("site-1").events, b'{"batch": 1}')
    site_1.close()


def test_an_edge_cannot_publish_on_another_edges_topics_mqtt5(
    fleet: Fleet, aggregator: Peer
) -> None:
    site_1, site_2 = Topics("site-1"), Topics("site-2")
    edge = fleet.edge("site-1")
    edge.connect(fleet.broker.tls_port)
    for topic in (site_2.events, site_2.status, site_1.cards, site_1.ack, "ocpp-edge/v1"):
        assert edge.publish(topic, b"forged").value == NOT_AUTHORIZED, topic
    assert edge.publish(site_1.events, b"own").value == 0
    # Messages from one client arrive in order: the forged one would have come first.
    assert aggregator.messages_until(site_1.events) == [(site_1.events, b"own")]
    edge.close()


def test_over_mqtt_311_a_forged_publish_is_acked_but_reaches_nobody(
    fleet: Fleet, aggregator: Peer
) -> None:
    edge = fleet.edge("site-1", protocol=MQTTProtocolVersion.MQTTv311)
    edge.connect(fleet.broker.tls_port)
    # MQTT 3.1.1 has no reason code: the broker acks and drops.
    assert edge.publish(Topics("site-2").events, b"forged").value == 0
    assert edge.publish(Topics("site-1").events, b"own").value == 0
    assert aggregator.messages_until(Topics("site-1").events) == [(Topics("site-1").events, b"own")]
    edge.close()


def test_an_edge_reads_only_its_own_down_topics(fleet: Fleet) -> None:
    site_1, site_2 = Topics("site-1"), Topics("site-2")
    edge = fleet.edge("site-1")
    edge.connect(fleet.broker.tls_port)
    # mosquitto 2.0 grants any subscription and checks each message against the ACL
    # when it would deliver it.
    for topic in (site_2.cards, site_2.commands, "ocpp-edge/v1/+/ack", "ocpp-edge/v1/#", "#"):
        edge.subscribe(topic)
    cloud = fleet.aggregator()
    cloud.connect(fleet.broker.port)
    for topic in (site_2.ack, site_2.cards, site_2.firmware_offer, site_2.commands):
        assert cloud.publish(topic, b"for site-2").value == 0
    assert cloud.publish(site_1.commands, b"for site-1").value == 0
    assert edge.messages_until(site_1.commands) == [(site_1.commands, b"for site-1")]
    cloud.close()
    edge.close()


async def test_an_edge_last_will_goes_only_to_its_own_status(fleet: Fleet) -> None:
    cloud = fleet.aggregator()
    cloud.connect(fleet.broker.port)
    cloud.subscribe("ocpp-edge/v1/+/status")
    forger = fleet.edge("site-3")
    forger.client.will_set(Topics("site-2").status, b'{"state": "offline"}', qos=1, retain=True)
    forger.connect(fleet.broker.tls_port)
    forger.drop()
    # Across the process boundary: the broker notes the loss in its log.
    await eventually(lambda: "Client site-3 closed its connection" in fleet.broker.log.read_text())
    edge = fleet.edge("site-1")
    edge.client.will_set(Topics("site-1").status, b'{"state": "offline"}', qos=1, retain=True)
    edge.connect(fleet.broker.tls_port)
    edge.drop()
    assert cloud.messages_until(Topics("site-1").status) == [
        (Topics("site-1").status, b'{"state": "offline"}')
    ]
    cloud.close()


def test_an_edge_cannot_take_over_another_edges_session(fleet: Fleet) -> None:
    """The client id is the certificate's CN whatever the client sends."""
    site_2 = fleet.edge("site-2", client_id="site-2")
    site_2.connect(fleet.broker.tls_port)
    site_2.subscribe(Topics("site-2").cards)
    impostor = fleet.edge("site-1", client_id="site-2")
    impostor.connect(fleet.broker.tls_port)
    cloud = fleet.aggregator()
    cloud.connect(fleet.broker.port)
    cloud.publish(Topics("site-2").cards, b"cards")
    # Had the impostor taken the id, site-2 would have seen a disconnection first.
    assert site_2.next("message") == (Topics("site-2").cards, b"cards")
    for peer in (cloud, impostor, site_2):
        peer.close()


@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311])
def test_a_wrong_password_is_refused(fleet: Fleet, protocol: MQTTProtocolVersion) -> None:
    with pytest.raises(Refused) as refused:
        fleet.aggregator("not-the-password", protocol=protocol).connect(fleet.broker.port)
    assert isinstance(refused.value.reason, ReasonCode)
    assert refused.value.reason.value == NOT_AUTHORIZED
    anonymous = Peer("anonymous", protocol=protocol)
    with pytest.raises(Refused):
        anonymous.connect(fleet.broker.port)


def test_a_certificate_from_another_ca_or_none_is_refused(fleet: Fleet) -> None:
    with pytest.raises(Refused):
        fleet.edge(fleet.other_ca.issue("site-1")).connect(fleet.broker.tls_port)
    without_certificate = Peer("site-1")
    without_certificate.client.tls_set(ca_certs=str(fleet.edge_ca.files.certificate))
    with pytest.raises(Refused):
        without_certificate.connect(fleet.broker.tls_port)
    # The aggregator's password is no way in on the edges' listener either.
    password_only = fleet.aggregator()
    password_only.client.tls_set(ca_certs=str(fleet.edge_ca.files.certificate))
    with pytest.raises(Refused):
        password_only.connect(fleet.broker.tls_port)


BACKLOG = 5000


def queued_while_offline(fleet: Fleet) -> list[tuple[str, bytes]]:
    """site-1 subscribes with a persistent session and leaves; the aggregator sends it
    BACKLOG commands (each acknowledged by the broker); site-1 comes back and reads."""
    commands, ack = Topics("site-1").commands, Topics("site-1").ack
    identity = fleet.edge_ca.issue("site-1")
    edge = fleet.edge(identity, persistent=True)
    edge.connect(fleet.broker.tls_port)
    edge.subscribe(commands)
    edge.subscribe(ack)
    edge.close()
    cloud = fleet.aggregator()
    cloud.connect(fleet.broker.port)
    for number in range(BACKLOG):
        cloud.client.publish(commands, str(number).encode(), qos=1)
    for _ in range(BACKLOG):
        assert cloud.next("puback")[1].value == 0
    edge = fleet.edge(identity, persistent=True)
    assert edge.connect(fleet.broker.tls_port), "the broker kept site-1's session"
    # Sent once site-1 is back: it comes after whatever the broker kept for it.
    cloud.publish(ack, b"end")
    received = edge.messages_until(ack)
    edge.close()
    cloud.close()
    return received[:-1]


def test_the_shipped_queue_keeps_an_offline_edges_whole_backlog(fleet: Fleet) -> None:
    received = queued_while_offline(fleet)
    assert [payload for _, payload in received] == [
        str(number).encode() for number in range(BACKLOG)
    ]


def test_mosquittos_default_queue_would_drop_all_but_the_oldest_1000(tmp_path: Path) -> None:
    fleet = start_fleet(tmp_path, leave_out=("max_queued_messages", "max_queued_bytes"))
    try:
        received = queued_while_offline(fleet)
    finally:
        fleet.broker.stop()
    # Full, mosquitto drops the newest: the latest commands are the ones lost.
    assert [payload for _, payload in received] == [str(number).encode() for number in range(1000)]
    assert "Outgoing messages are being dropped for client site-1" in fleet.broker.log.read_text()


def test_the_test_broker_takes_a_password_file_an_acl_and_client_certificates(
    tmp_path: Path,
) -> None:
    """The generic test broker's options, for tests with an ACL of their own."""
    authority = CertificateAuthority(tmp_path, "Device CA")
    server = authority.issue("localhost", server=True)
    (tmp_path / "acl").write_text("user reader\ntopic read devices/#\npattern write devices/%u/#\n")
    broker = Mosquitto(
        tmp_path / "broker",
        anonymous=False,
        password_file=write_password_file(tmp_path / "passwd", {"reader": "secret"}),
        acl_file=tmp_path / "acl",
        tls=TlsListener(authority.files.certificate, server.certificate, server.key),
    )
    broker.start()
    try:
        reader = Peer("reader")
        reader.client.username_pw_set("reader", "secret")
        reader.connect(broker.port)
        reader.subscribe("devices/#")
        writers = []
        for name in ("device-1", "device-2"):
            device = authority.issue(name)
            writer = Peer(name)
            writer.client.tls_set(
                ca_certs=str(authority.files.certificate),
                certfile=str(device.certificate),
                keyfile=str(device.key),
            )
            writer.connect(broker.tls_port)
            writers.append(writer)
        # Last from device-1: with this config's max_queued_messages 0, mosquitto 2.0.11
        # disconnects an MQTT 5 client whose next delivered publish follows a refused one.
        assert writers[0].publish("devices/device-2/data", b"forged").value == NOT_AUTHORIZED
        assert writers[1].publish("devices/device-2/data", b"own").value == 0
        assert reader.messages_until("devices/device-2/data") == [("devices/device-2/data", b"own")]
        for peer in (*writers, reader):
            peer.close()
    finally:
        broker.stop()
