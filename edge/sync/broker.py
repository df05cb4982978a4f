"""How the edge reaches its MQTT broker: the one client construction (TLS, credentials,
socket options) that the cloud link uses, and a one-shot connection attempt that tells
which step failed: DNS, TCP, TLS or authentication (`ocpp-edge doctor`)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from contract.mqtt import mqtt_client
from edge.settings import SyncSettings

# CONNACK refusals that mean "who you are" was not accepted: MQTT 3.1.1 return codes 4
# (bad user name or password) and 5 (not authorized), MQTT 5 reason codes 134 and 135.
AUTHENTICATION_REFUSALS = frozenset({4, 5, 134, 135})


def broker_client(
    settings: SyncSettings,
    *,
    identifier: str,
    will: aiomqtt.Will | None = None,
    timeout: float = 5.0,
) -> aiomqtt.Client:
    """An aiomqtt client for the broker in `settings`: TLS when `tls_ca` is set (with the
    edge's client certificate when given), the user name and password when a password is
    set. `timeout` bounds connecting, publishing and the goodbye."""
    return mqtt_client(
        settings,
        identifier=identifier,
        username=broker_username(settings) if settings.password else None,
        password=settings.password or None,
        will=will,
        timeout=timeout,
    )


def broker_username(settings: SyncSettings) -> str:
    return settings.username or settings.edge_id


class BrokerStep(StrEnum):
    """The step of reaching the broker that failed."""

    DNS = "DNS"
    TCP = "TCP"
    TLS = "TLS"
    AUTHENTICATION = "authentication"
    MQTT = "MQTT"


@dataclass(frozen=True)
class BrokerAttempt:
    """How a connection attempt went: `failed_at` is None when it connected."""

    failed_at: BrokerStep | None
    detail: str

    @property
    def connected(self) -> bool:
        return self.failed_at is None


async def attempt_connection(
    settings: SyncSettings, *, identifier: str, step_seconds: float = 3.0
) -> BrokerAttempt:
    """Resolve the broker's name, open a TCP connection, then connect over MQTT (with TLS
    and credentials as the link does) and leave at once. Each step gets `step_seconds`
    seconds. No last will is set: leaving is not this edge going offline."""
    host, port = settings.broker_host, settings.broker_port
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(step_seconds):
            addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        return BrokerAttempt(
            BrokerStep.DNS, f"no answer resolving {host} within {step_seconds:g} s"
        )
    except socket.gaierror as error:
        return BrokerAttempt(BrokerStep.DNS, f"cannot resolve {host}: {error.strerror}")
    tcp_failure = await _tcp_failure(addresses, step_seconds)
    if tcp_failure is not None:
        return BrokerAttempt(BrokerStep.TCP, f"{host}:{port} {tcp_failure}")
    try:
        client = broker_client(settings, identifier=identifier, timeout=step_seconds)
    except (OSError, ValueError) as error:  # the CA, certificate or key file
        return BrokerAttempt(BrokerStep.TLS, f"cannot load the TLS files: {error}")
    try:
        async with asyncio.timeout(step_seconds * 2), client:
            pass
    except aiomqtt.MqttCodeError as error:
        code = error.rc.value if isinstance(error.rc, ReasonCode) else error.rc
        step = BrokerStep.AUTHENTICATION if code in AUTHENTICATION_REFUSALS else BrokerStep.MQTT
        return BrokerAttempt(step, f"the broker refused the connection: {error}")
    except aiomqtt.MqttError as error:
        # aiomqtt hides paho's exception behind its own; the TLS failure is its context.
        if isinstance(error.__context__, ssl.SSLError) or "SSL" in str(error):
            return BrokerAttempt(BrokerStep.TLS, str(error.__context__ or error))
        return BrokerAttempt(BrokerStep.MQTT, f"no MQTT answer from {host}:{port}: {error}")
    except TimeoutError:
        return BrokerAttempt(BrokerStep.MQTT, f"no MQTT answer from {host}:{port} in time")
    tls = " over TLS" if settings.tls_ca is not None else ""
    who = f" as {broker_username(settings)}" if settings.password else ""
    if settings.tls_certificate is not None:
        who = " with the client certificate"
    return BrokerAttempt(None, f"connected to {host}:{port}{tls}{who}")


async def _tcp_failure(
    addresses: Sequence[tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]],
    step_seconds: float,
) -> str | None:
    """None when one of `addresses` takes a TCP connection, else why none did."""
    failure = "took no connection"
    for family, kind, protocol, _, address in addresses:
        connection = socket.socket(family, kind, protocol)
        connection.setblocking(False)
        try:
            async with asyncio.timeout(step_seconds):
                await asyncio.get_running_loop().sock_connect(connection, address)
            return None
        except TimeoutError:
            failure = f"did not answer within {step_seconds:g} s (a firewall, or the wrong address)"
        except ConnectionRefusedError:
            failure = "refused the connection (nothing listens on that port)"
        except OSError as error:
            failure = f"cannot be reached: {error.strerror or error}"
        finally:
            connection.close()
    return failure
