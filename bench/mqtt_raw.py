"""The broker's own limit: how many QoS 1 messages per second one paho-mqtt client gets
acknowledged by mosquitto, with many messages in flight and nothing done with them. A
benchmark of the sync path (edge outbox → broker → aggregator) compares against it.

    python -m bench.mqtt_raw [--messages 20000] [--size 300]      # a mosquitto of its own
    python -m bench.mqtt_raw --host broker.example --port 8883 --ca ca.crt \\
        --certificate edge.crt --key edge.key                      # a broker already running
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.processes import free_port, stop, wait_listening

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
TOPIC = "bench/mqtt_raw"


class RawRateError(Exception):
    """The broker refused, dropped or stalled the measuring client."""


class _Publisher:
    """A window of QoS 1 publishes kept full: each PUBACK, on paho's network thread,
    sends the next message. It resolves asyncio futures on the caller's loop when the
    connection is up and when the last PUBACK is in.

    The window is ours, not paho's: paho's own in-flight limit rescans every message it
    holds on each PUBACK, which costs more than the broker as the window grows."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: mqtt.Client,
        messages: int,
        topic: str,
        payload: bytes,
    ) -> None:
        self.loop = loop
        self.client = client
        self.topic = topic
        self.payload = payload
        self.connected: asyncio.Future[None] = loop.create_future()
        self.all_acknowledged: asyncio.Future[float] = loop.create_future()
        self.messages = messages
        self.sent = 0
        self.remaining = messages
        self.lock = threading.Lock()
        self.was_connected = False
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        client.on_connect_fail = self.on_connect_fail
        client.on_publish = self.on_publish

    def _settle(self, future: asyncio.Future[Any], result: Any = None, error: str = "") -> None:
        def settle() -> None:
            if future.done():
                return
            if error:
                future.set_exception(RawRateError(error))
            else:
                future.set_result(result)

        self.loop.call_soon_threadsafe(settle)

    def publish_next(self) -> None:
        with self.lock:
            if self.sent == self.messages:
                return
            self.sent += 1
        self.client.publish(self.topic, self.payload, qos=1)

    def on_connect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, code: Any, _properties: Any
    ) -> None:
        if code.is_failure:
            self._settle(self.connected, error=f"the broker refused the connection: {code}")
        else:
            self.was_connected = True
            self._settle(self.connected)

    def on_connect_fail(self, client: mqtt.Client, _userdata: Any) -> None:
        self._settle(self.connected, error=f"cannot reach {client.host}:{client.port}")

    def on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, code: Any, _properties: Any
    ) -> None:
        reason = f"the broker closed the connection ({code}) with {self.remaining} unacknowledged"
        if self.was_connected:
            self._settle(self.all_acknowledged, error=reason)
        else:
            self._settle(self.connected, error=f"no connection: {code}")

    def on_publish(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, code: Any, _properties: Any
    ) -> None:
        if code.is_failure:
            self._settle(self.all_acknowledged, error=f"the broker refused a message: {code}")
            return
        with self.lock:
            self.remaining -= 1
            done = self.remaining == 0
        if done:
            self._settle(self.all_acknowledged, time.perf_counter())
        else:
            self.publish_next()


async def raw_qos1_rate(
    host: str,
    port: int,
    messages: int = 20000,
    size: int = 300,
    *,
    in_flight: int = 1000,
    username: str | None = None,
    password: str | None = None,
    ca: Path | None = None,
    certificate: Path | None = None,
    key: Path | None = None,
    topic: str = TOPIC,
) -> float:
    """Messages per second: `messages` QoS 1 publishes of `size` bytes on `topic`, with
    up to `in_flight` unacknowledged at any time, timed from the first publish to the
    last PUBACK. TLS when `ca` is given (with a client certificate when `certificate`
    and `key` are); `username`/`password` for a password listener. Bound it with
    `asyncio.timeout`: a broker that stops acknowledging stalls it."""
    if messages < 1 or size < 0 or not 1 <= in_flight <= 65535:
        raise ValueError("messages >= 1, size >= 0 and 1 <= in_flight <= 65535 (MQTT ids)")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-mqtt-raw-{time.monotonic_ns()}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    # No limits in paho: the window below is the only one.
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    if username is not None:
        client.username_pw_set(username, password)
    if ca is not None:
        client.tls_set(
            ca_certs=str(ca),
            certfile=str(certificate) if certificate else None,
            keyfile=str(key) if key else None,
        )
    publisher = _Publisher(asyncio.get_running_loop(), client, messages, topic, b"x" * size)
    client.connect_async(host, port)
    client.loop_start()
    try:
        await publisher.connected
        started = time.perf_counter()
        for _ in range(in_flight):
            publisher.publish_next()
        finished = await publisher.all_acknowledged
    finally:
        client.disconnect()
        client.loop_stop()
    return messages / (finished - started)


def start_mosquitto(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A mosquitto of its own: loopback, anonymous, in memory, nothing logged per message."""
    port = free_port()
    config, log = directory / "mosquitto.conf", directory / "mosquitto.log"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        # As root, stay root: the mosquitto user cannot write this directory.
        "user root\n"
        # As the fleet broker is set up: no Nagle delay on small packets.
        "set_tcp_nodelay true\n"
        "log_type error\n"
        f"log_dest file {log}\n"
    )
    broker = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    wait_listening(port, broker, log)
    return broker, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", help="a running broker (default: start a mosquitto)")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=300, help="payload bytes")
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--ca", type=Path, help="TLS: the broker's CA")
    parser.add_argument("--certificate", type=Path, help="TLS: this client's certificate")
    parser.add_argument("--key", type=Path, help="TLS: this client's key")
    parser.add_argument("--topic", default=TOPIC)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole run")
    options = parser.parse_args()

    async def measured(host: str, port: int) -> float:
        try:
            async with asyncio.timeout(options.timeout):
                return await raw_qos1_rate(
                    host,
                    port,
                    options.messages,
                    options.size,
                    in_flight=options.in_flight,
                    username=options.username,
                    password=options.password,
                    ca=options.ca,
                    certificate=options.certificate,
                    key=options.key,
                    topic=options.topic,
                )
        except TimeoutError:
            raise RawRateError(
                f"not every message acknowledged after {options.timeout} s"
            ) from None

    def measure(host: str, port: int) -> float:
        return asyncio.run(measured(host, port))

    try:
        if options.host:
            where, rate = f"{options.host}:{options.port}", measure(options.host, options.port)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-mqtt-raw-") as scratch:
                broker, port = start_mosquitto(Path(scratch))
                try:
                    where, rate = f"mosquitto on 127.0.0.1:{port}", measure("127.0.0.1", port)
                finally:
                    stop(broker)
    except RawRateError as error:
        print(f"FAILED: {error}")
        return 1
    print(
        f"{where}: {rate:,.0f} QoS 1 messages/s acknowledged "
        f"({options.messages} of {options.size} bytes, {options.in_flight} in flight, paho-mqtt)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
