"""A real mosquitto broker for tests: its own process on a free loopback port, its own
config and persistence directory, that a test can kill with SIGKILL and restart (with
what it had persisted, or empty). Optionally with a password file, an ACL and a TLS
listener that takes client certificates; or running the shipped production config
(cloud/mosquitto/) with only its ports and paths moved into the test's directory."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
SHIPPED = Path(__file__).resolve().parent.parent / "cloud" / "mosquitto"
SHIPPED_CONFIG = SHIPPED / "mosquitto.conf"
SHIPPED_ACL = SHIPPED / "acl"


def write_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """A mosquitto password file for `users` (name: password), hashed by mosquitto_passwd."""
    path.write_text("".join(f"{name}:{password}\n" for name, password in users.items()))
    subprocess.run([MOSQUITTO_PASSWD, "-U", str(path)], check=True, capture_output=True)
    return path


@dataclass(frozen=True)
class TlsListener:
    """The broker's side of a TLS listener: the CA whose client certificates it takes,
    its own certificate and key, and how it treats the client's certificate."""

    ca: Path
    certificate: Path
    key: Path
    require_certificate: bool = True
    use_identity_as_username: bool = True

    def config(self, port: int) -> list[str]:
        return [
            f"listener {port} 127.0.0.1",
            f"cafile {self.ca}",
            f"certfile {self.certificate}",
            f"keyfile {self.key}",
            f"require_certificate {str(self.require_certificate).lower()}",
            f"use_identity_as_username {str(self.use_identity_as_username).lower()}",
        ]


class Mosquitto:
    """`broker = Mosquitto(tmp_path / "broker"); broker.start()`; `broker.kill()`,
    `broker.start(empty=True)` for a broker that lost everything; `broker.stop()`.

    The plain listener is on `port`; with `tls`, a TLS listener on `tls_port`.
    `password_file` (see `write_password_file`) and `acl_file` apply to every listener.
    `extra_config` lines are added to the generated mosquitto.conf.
    """

    def __init__(
        self,
        directory: Path,
        extra_config: str = "",
        *,
        anonymous: bool = True,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        tls: TlsListener | None = None,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.extra_config = extra_config
        self.anonymous = anonymous
        self.password_file = password_file
        self.acl_file = acl_file
        self.tls = tls
        self.tls_port = free_port() if tls is not None else 0
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
            f"password_file {self.password_file}" if self.password_file else "",
            f"acl_file {self.acl_file}" if self.acl_file else "",
            self.extra_config,
            *(self.tls.config(self.tls_port) if self.tls is not None else []),
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


class ShippedMosquitto(Mosquitto):
    """mosquitto running the shipped cloud/mosquitto/mosquitto.conf line for line, except:
    its two listeners move to free loopback ports (the aggregator's password listener to
    `port`, the edges' TLS listener to `tls_port`), its files (certificates, password file,
    ACL, persistence, log, pid) into the test's, and as root it stays root. Options named
    in `leave_out` are dropped, to show what mosquitto does without them. Of `tls` only
    the files count: how the listener treats certificates is the shipped file's business.
    """

    AGGREGATOR_LISTENER = "listener 1883 127.0.0.1"
    EDGE_LISTENER = "listener 8883"

    def __init__(
        self,
        directory: Path,
        *,
        tls: TlsListener,
        password_file: Path,
        acl_file: Path = SHIPPED_ACL,
        config: Path = SHIPPED_CONFIG,
        leave_out: Collection[str] = (),
    ) -> None:
        super().__init__(
            directory, anonymous=False, password_file=password_file, acl_file=acl_file, tls=tls
        )
        self.shipped_config = config
        self.leave_out = frozenset(leave_out)

    def write_config(self) -> None:
        assert self.tls is not None and self.password_file is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)
        paths = {
            "pid_file": self.directory / "mosquitto.pid",
            "persistence_location": f"{self.data}/",
            "cafile": self.tls.ca,
            "certfile": self.tls.certificate,
            "keyfile": self.tls.key,
            "password_file": self.password_file,
            "acl_file": self.acl_file,
        }
        listeners = {
            self.AGGREGATOR_LISTENER: f"listener {self.port} 127.0.0.1",
            self.EDGE_LISTENER: f"listener {self.tls_port} 127.0.0.1",
        }
        lines: list[str] = []
        for line in self.shipped_config.read_text().splitlines():
            option = line.split(" ", 1)[0]
            if not line or line.startswith("#") or option in self.leave_out:
                continue
            if option == "listener":
                if line not in listeners:
                    raise ValueError(f"the shipped config has an unknown listener: {line!r}")
                lines.append(listeners.pop(line))
            elif option in paths:
                lines.append(f"{option} {paths[option]}")
            elif line.startswith("log_dest file "):
                lines.append(f"log_dest file {self.log}")
            elif option == "user" and os.getuid() == 0:
                # As root mosquitto would switch to its user, who cannot read the test's files.
                lines.append("user root")
            elif option in ("include_dir", "crlfile"):
                raise ValueError(f"{option} in the shipped config needs a test path: {line!r}")
            else:
                lines.append(line)
        if listeners:
            raise ValueError(f"the shipped config lacks {', '.join(listeners)}")
        self.config_path.write_text("\n".join(lines) + "\n")
