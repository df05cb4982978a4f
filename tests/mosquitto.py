"""A real mosquitto broker for tests: its own process on a free loopback port, its own
config and persistence directory, that a test can kill with SIGKILL and restart (with
what it had persisted, or empty)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Mosquitto:
    """`broker = Mosquitto(tmp_path / "broker"); broker.start()`; `broker.kill()`,
    `broker.start(empty=True)` for a broker that lost everything; `broker.stop()`.

    `extra_config` lines are added to the generated mosquitto.conf (listeners with TLS,
    password files, ACLs); the plain listener is on `port`.
    """

    def __init__(self, directory: Path, extra_config: str = "", *, anonymous: bool = True) -> None:
        self.directory = directory
        self.port = free_port()
        self.extra_config = extra_config
        self.anonymous = anonymous
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "mosquitto.log"
        self.data = directory / "data"

    @property
    def config_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    def write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)
        lines = [
            # Run as whoever runs the tests (as root, mosquitto would switch to its user).
            "user root" if os.getuid() == 0 else "",
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.data}/",
            "autosave_interval 1",
            # An offline edge's backlog must not be cut at the default of 1000 (and 0, no
            # limit, makes mosquitto 2.0.11 drop MQTT 5 clients after an ACL refusal).
            "max_queued_messages 1000000",
            # Acks and firmware chunks are small: no Nagle delay (~40 ms each otherwise).
            "set_tcp_nodelay true",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"log_dest file {self.log}",
            self.extra_config,
        ]
        self.config_path.write_text("\n".join(line for line in lines if line) + "\n")

    def start(self, *, empty: bool = False) -> None:
        """Start (again); `empty`: as a broker that lost its persisted state."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("mosquitto is already running")
        if empty and self.data.exists():
            shutil.rmtree(self.data)
        self.write_config()
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                errors = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited at start: {errors}{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"mosquitto does not listen on {self.port} after 10 s")

    def kill(self) -> None:
        """SIGKILL: whatever arrived since the last autosave is lost."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
