"""The Ansible role, for real: ansible-lint's production profile and a syntax check, then
the playbook applied through the chroot connection to a Debian bookworm root made with
debootstrap (tests/debian_root.py). Inside that root: the user and its groups, files and
their owners and modes, the unit's enablement link, the configuration read by the
project's own loader, the installed daemon running as its user and reaching a real broker;
a second run that changes nothing; then a site broker whose bridge carries the edge's
topics to the fleet's broker.

Needs root, debootstrap, mosquitto and the network (a Debian mirror and PyPI): a few
minutes the first time on a machine, less once the root and the downloads are cached.
`pytest -m "not provisioning"` leaves it out.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from contract.protocol import Topics
from edge.settings import NfcReaderSettings, SerialReaderSettings, load_settings
from tests.debian_root import DEBOOTSTRAP, keep_downloads, make_root, remove_root
from tests.integration.test_broker_security import (
    AGGREGATOR,
    AGGREGATOR_PASSWORD,
    Fleet,
    Peer,
    start_fleet,
)
from tests.mosquitto import free_port
from tests.pins import CONSTRAINTS, DAEMON_EXTRAS, closure, read_constraints

REPOSITORY = Path(__file__).resolve().parents[2]
ANSIBLE = REPOSITORY / "ansible"
BIN = Path(sys.executable).parent
UNIT = REPOSITORY / "systemd" / "ocpp-edge.service"
EDGE_ID = "site-test"
VERSION = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]["version"]
TOPICS = Topics(EDGE_ID)
# What the repository's unit says about itself, for a checkout that does not have it yet.
STAND_IN_UNIT = """\
[Unit]
Description=ocpp-edge (stand-in for systemd/ocpp-edge.service)

[Service]
Type=notify
ExecStart=/opt/ocpp-edge/venv/bin/ocpp-edge run --config /etc/ocpp-edge/config.toml
User=ocpp-edge
StateDirectory=ocpp-edge
ConfigurationDirectory=ocpp-edge
SupplementaryGroups=dialout plugdev gpio spi i2c input

[Install]
WantedBy=multi-user.target
"""
DEVICE_GROUPS = ("dialout", "plugdev", "gpio", "spi", "i2c", "input")
EXAMPLE = "inventory.example.yml"
# A process in the root sees none of this machine's environment, as under systemd.
CLEAN_ENVIRONMENT = ("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
UNIT_COMMAND = (
    "/opt/ocpp-edge/venv/bin/ocpp-edge",
    "run",
    "--config",
    "/etc/ocpp-edge/config.toml",
)
MOSQUITTO_COMMAND = ("/usr/sbin/mosquitto", "-c", "/etc/mosquitto/mosquitto.conf")

pytestmark = pytest.mark.provisioning
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(DEBOOTSTRAP).exists(),
    reason="applying the role to a debootstrap root needs root and debootstrap",
)


def ansible_environment() -> dict[str, str]:
    """This environment for ansible's commands, which the chroot connection passes on to
    the root: without pip's pointers to this machine's own package directories."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_EXTRA_INDEX_URL")
    }
    environment.update(PATH=f"{BIN}:{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1")
    return environment


def recap(output: str) -> dict[str, int]:
    """The PLAY RECAP counts of the only host: {"ok": 30, "changed": 0, ...}."""
    lines = output.split("PLAY RECAP", 1)[1].splitlines()
    (counts,) = [line for line in lines if " ok=" in line]
    return {name: int(count) for name, count in re.findall(r"(\w+)=(\d+)", counts)}


@dataclass
class Site:
    """A debootstrap root provisioned by the playbook, and what it was given."""

    directory: Path
    root: Path
    inventory: Path
    variables: Path
    settings: dict[str, object]
    unit_source: Path
    runs: list[str] = field(default_factory=list)
    first_recap: dict[str, int] = field(default_factory=dict)

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def apply(self, *extra: str) -> dict[str, int]:
        """Run the playbook against the root; its PLAY RECAP."""
        command = [str(BIN / "ansible-playbook"), "-i", str(self.inventory)]
        command += ["-e", f"@{self.variables}", *extra, "site.yml"]
        result = subprocess.run(
            command,
            cwd=ANSIBLE,
            env=ansible_environment(),
            capture_output=True,
            text=True,
            timeout=1200,
        )
        output = result.stdout + result.stderr
        log = self.directory / f"run-{len(self.runs) + 1}.log"
        log.write_text(output)
        self.runs.append(output)
        assert result.returncode == 0, f"ansible-playbook failed ({log}):\n{output[-6000:]}"
        assert "[WARNING]" not in output, output
        return recap(result.stdout)

    def inside(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run `command` inside the root as root, with a clean environment."""
        return subprocess.run(
            [*CLEAN_ENVIRONMENT, CHROOT, str(self.root), *command],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ids(self, user: str) -> tuple[int, int]:
        """(uid, gid) of a user of the root."""
        for line in self.path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return int(fields[2]), int(fields[3])
        raise AssertionError(f"no user {user} in the root")

    def owner(self, inside: str) -> tuple[str, str, int]:
        """(user, group, mode) of a path, with names from the root's own databases."""
        status = self.path(inside).lstat()
        return (
            _name_of(self.path("/etc/passwd"), status.st_uid),
            _name_of(self.path("/etc/group"), status.st_gid),
            status.st_mode & 0o7777,
        )


def _name_of(database: Path, number: int) -> str:
    for line in database.read_text().splitlines():
        fields = line.split(":")
        if int(fields[2]) == number:
            return fields[0]
    return str(number)


def site_settings(fleet: Fleet, directory: Path) -> dict[str, object]:
    """The inventory variables of the test site: readers of three kinds, the cloud link
    to the fleet's broker with this edge's own certificate, ports free on this machine."""
    identity = fleet.edge_ca.issue(EDGE_ID)
    return {
        "ocpp_edge_start_service": False,
        "ocpp_edge_wheel_build_dir": str(directory / "wheel"),
        "ocpp_edge_unknown_chargers": "accept",
        "ocpp_edge_ocpp_host": "127.0.0.1",
        "ocpp_edge_ocpp_port": free_port(),
        "ocpp_edge_api_port": free_port(),
        # Quotes and non-ASCII survive the trip into TOML.
        "ocpp_edge_api_token": 'to"ken-ü',
        "ocpp_edge_files_port": free_port(),
        "ocpp_edge_files_public_url": "http://127.0.0.1:1/",
        "ocpp_edge_readers": [
            {
                "id": "bay-1",
                "kind": "nfc",
                "device": "usb:072f:2200",
                "charger": "CP-1",
                "connector": 1,
                "feedback": {"green_led": 17, "red_led": 27, "buzzer": 22, "lcd_i2c_bus": 1},
            },
            {
                "id": "bay-2",
                "kind": "serial",
                "port": "/dev/rfid-bay-2",
                "charger": "CP-2",
                "debounce_seconds": 1.5,
                "feedback": {"rgb_led": [5, 6, 13]},
            },
        ],
        "ocpp_edge_reader_devices": [
            {"name": "bay-1", "subsystem": "usb", "vendor": "072F", "product": "2200"},
            {
                "name": "bay-2",
                "subsystem": "tty",
                "vendor": "10c4",
                "product": "ea60",
                "serial": "0001",
            },
            {
                "name": "desk",
                "subsystem": "input",
                "vendor": "ffff",
                "product": "0035",
                "usb_port": "1-1.3",
            },
        ],
        "ocpp_edge_sync_edge_id": EDGE_ID,
        "ocpp_edge_sync_broker_host": "127.0.0.1",
        "ocpp_edge_sync_broker_port": fleet.broker.tls_port,
        "ocpp_edge_sync_tls_ca_pem": fleet.edge_ca.files.certificate.read_text(),
        "ocpp_edge_sync_tls_certificate_pem": identity.certificate.read_text(),
        "ocpp_edge_sync_tls_private_key_pem": identity.key.read_text(),
        "ocpp_edge_local_broker_port": free_port(),
        "ocpp_edge_settings_extra": {"store": {"message_log_days": 90}},
        # As the image sets it.
        "ocpp_edge_first_boot": True,
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The fleet's broker: the shipped production config (TLS, client certificates, ACL)."""
    fleet = start_fleet(tmp_path_factory.mktemp("fleet"))
    yield fleet
    fleet.broker.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, fleet: Fleet) -> Iterator[Site]:
    """A fresh root with the playbook applied once."""
    directory = tmp_path_factory.mktemp("site")
    root = make_root(directory / "root")
    unit_source = UNIT
    if not UNIT.exists():
        unit_source = directory / "ocpp-edge.service"
        unit_source.write_text(STAND_IN_UNIT)
    settings = site_settings(fleet, directory) | {"ocpp_edge_unit_file": str(unit_source)}
    # JSON, which Ansible reads as YAML.
    variables = directory / "variables.json"
    variables.write_text(json.dumps(settings))
    inventory = directory / "inventory.json"
    host = {"ansible_connection": "community.general.chroot"}
    host["ansible_python_interpreter"] = "/usr/bin/python3"
    inventory.write_text(json.dumps({"ocpp_edges": {"hosts": {str(root): host}}}))
    site = Site(directory, root, inventory, variables, settings, unit_source)
    try:
        site.first_recap = site.apply()
        yield site
    finally:
        keep_downloads(root)
        remove_root(root)


def test_role_and_playbook_pass_ansible_lint_production_profile() -> None:
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "--profile", "production", "site.yml"],
        cwd=ANSIBLE,
        env=ansible_environment() | {"NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "0 failure(s), 0 warning(s)" in output, output
    assert "Profile 'production' was required, and it passed" in output, output
    assert "WARNING" not in output, output


def test_playbook_passes_syntax_check_with_the_example_inventory() -> None:
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", EXAMPLE, "site.yml"],
        cwd=ANSIBLE,
        env=ansible_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    listed = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", EXAMPLE, "--list"],
        cwd=ANSIBLE,
        env=ansible_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(listed.stdout)["ocpp_edges"]["hosts"] == ["garage-edge"]


@needs_root
def test_first_run_changes_the_fresh_root(site: Site) -> None:
    counts = site.first_recap
    assert counts["failed"] == 0 and counts["unreachable"] == 0
    assert counts["changed"] > 10


@needs_root
def test_service_user_is_a_locked_system_user_in_the_device_groups(site: Site) -> None:
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in site.path("/etc/passwd").read_text().splitlines()
    }
    user = passwd["ocpp-edge"]
    assert int(user[2]) < 1000, "a system user"
    assert user[5:] == ["/var/lib/ocpp-edge", "/usr/sbin/nologin"]
    shadow = dict(line.split(":")[:2] for line in site.path("/etc/shadow").read_text().splitlines())
    assert shadow["ocpp-edge"].startswith("!"), "no password can log in"
    groups = {
        line.split(":")[0]: line.split(":")[3].split(",")
        for line in site.path("/etc/group").read_text().splitlines()
    }
    for group in DEVICE_GROUPS:
        assert "ocpp-edge" in groups[group], f"ocpp-edge is not in {group}"
    assert "ocpp-edge" in groups


@needs_root
def test_files_have_their_owners_and_modes(site: Site) -> None:
    expected = {
        "/etc/ocpp-edge": ("root", "ocpp-edge", 0o750),
        "/etc/ocpp-edge/config.toml": ("root", "ocpp-edge", 0o640),
        "/etc/ocpp-edge/mqtt": ("ocpp-edge", "ocpp-edge", 0o700),
        "/etc/ocpp-edge/mqtt/ca.crt": ("ocpp-edge", "ocpp-edge", 0o600),
        "/etc/ocpp-edge/mqtt/edge.crt": ("ocpp-edge", "ocpp-edge", 0o600),
        "/etc/ocpp-edge/mqtt/edge.key": ("ocpp-edge", "ocpp-edge", 0o600),
        "/var/lib/ocpp-edge": ("ocpp-edge", "ocpp-edge", 0o750),
        f"/opt/ocpp-edge/releases/{VERSION}": ("root", "root", 0o755),
        "/usr/local/sbin/ocpp-edge-upgrade": ("root", "root", 0o755),
        "/etc/systemd/system/ocpp-edge.service": ("root", "root", 0o644),
        "/etc/udev/rules.d/70-ocpp-edge.rules": ("root", "root", 0o644),
        "/etc/modprobe.d/ocpp-edge-nfc.conf": ("root", "root", 0o644),
    }
    actual = {path: site.owner(path) for path in expected}
    assert actual == expected
    assert os.readlink(site.path("/opt/ocpp-edge/venv")) == f"releases/{VERSION}"
    key = site.path("/etc/ocpp-edge/mqtt/edge.key").read_text()
    assert key == site.settings["ocpp_edge_sync_tls_private_key_pem"]
    assert not site.path("/etc/ocpp-edge/tls").exists(), "no OCPP TLS files were given"


@needs_root
def test_unit_is_installed_and_enabled(site: Site) -> None:
    installed = site.path("/etc/systemd/system/ocpp-edge.service")
    assert installed.read_bytes() == site.unit_source.read_bytes()
    link = site.path("/etc/systemd/system/multi-user.target.wants/ocpp-edge.service")
    assert link.is_symlink()
    assert os.readlink(link) == "/etc/systemd/system/ocpp-edge.service"
    enabled = site.inside(
        "env", "SYSTEMD_OFFLINE=1", "systemctl", "is-enabled", "ocpp-edge.service"
    )
    assert enabled.stdout.strip() == "enabled", enabled.stderr


@needs_root
def test_configuration_is_what_the_inventory_says_by_the_projects_loader(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith("OCPP_EDGE_")]:
        monkeypatch.delenv(name)
    settings = load_settings(site.path("/etc/ocpp-edge/config.toml"))
    assert settings.ocpp.unknown_chargers == "accept"
    assert settings.ocpp.port == site.settings["ocpp_edge_ocpp_port"]
    assert settings.api.token == 'to"ken-ü'
    assert str(settings.store.path) == "/var/lib/ocpp-edge/edge.db"
    assert settings.store.message_log_days == 90
    nfc, serial = settings.readers
    assert isinstance(nfc, NfcReaderSettings) and isinstance(serial, SerialReaderSettings)
    assert (nfc.id, nfc.device, nfc.charger, nfc.connector) == ("bay-1", "usb:072f:2200", "CP-1", 1)
    assert (nfc.feedback.green_led, nfc.feedback.lcd_i2c_bus) == (17, 1)
    assert (serial.port, serial.debounce_seconds, serial.feedback.rgb_led) == (
        "/dev/rfid-bay-2",
        1.5,
        (5, 6, 13),
    )
    sync = settings.sync
    assert (sync.edge_id, sync.broker_host) == (EDGE_ID, "127.0.0.1")
    assert sync.broker_port == site.settings["ocpp_edge_sync_broker_port"]
    assert [str(sync.tls_ca), str(sync.tls_certificate), str(sync.tls_private_key)] == [
        "/etc/ocpp-edge/mqtt/ca.crt",
        "/etc/ocpp-edge/mqtt/edge.crt",
        "/etc/ocpp-edge/mqtt/edge.key",
    ]


@needs_root
def test_udev_rules_name_the_readers(site: Site) -> None:
    rules = site.path("/etc/udev/rules.d/70-ocpp-edge.rules").read_text().splitlines()
    rules = [rule for rule in rules if rule and not rule.startswith("#")]
    assert (
        'SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", ATTR{idVendor}=="072f", '
        'ATTR{idProduct}=="2200", SYMLINK+="rfid-bay-1", GROUP="plugdev", MODE="0660"'
    ) in rules
    assert (
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="10c4", ATTRS{idProduct}=="ea60", '
        'ATTRS{serial}=="0001", SYMLINK+="rfid-bay-2", GROUP="dialout", MODE="0660"'
    ) in rules
    assert (
        'SUBSYSTEM=="input", KERNEL=="event*", ENV{ID_INPUT_KEYBOARD}=="1", '
        'ATTRS{idVendor}=="ffff", ATTRS{idProduct}=="0035", KERNELS=="1-1.3", '
        'SYMLINK+="rfid-desk", GROUP="input", MODE="0660"'
    ) in rules
    assert 'SUBSYSTEM=="spidev", KERNEL=="spidev*", GROUP="spi", MODE="0660"' in rules


@needs_root
def test_usb_nfc_readers_are_kept_from_the_kernel_and_pcscd(site: Site) -> None:
    blacklist = site.path("/etc/modprobe.d/ocpp-edge-nfc.conf").read_text()
    assert "blacklist pn533_usb" in blacklist.splitlines()
    for unit in ("pcscd.socket", "pcscd.service"):
        assert os.readlink(site.path(f"/etc/systemd/system/{unit}")) == "/dev/null"


@needs_root
def test_installed_command_and_compiled_dependencies_run_inside_the_root(site: Site) -> None:
    help_text = site.inside("/opt/ocpp-edge/venv/bin/ocpp-edge", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "run the daemon" in help_text.stdout
    compiled = site.inside(
        "/opt/ocpp-edge/venv/bin/python", "-c", "import evdev, spidev, systemd.daemon"
    )
    assert compiled.returncode == 0, compiled.stderr


@needs_root
def test_the_daemons_virtualenv_holds_exactly_the_pinned_versions(site: Site) -> None:
    """Every distribution of the daemon's dependency closure at its version in
    constraints.txt, nothing unpinned beside them, and the release keeps the file."""
    listed = site.inside(
        "/opt/ocpp-edge/venv/bin/python",
        "-m",
        "pip",
        "list",
        "--format=freeze",
        "--disable-pip-version-check",
        "--exclude",
        "ocpp-edge",
    )
    assert listed.returncode == 0, listed.stderr
    installed = {
        canonicalize_name(name): version
        for name, version in (line.split("==") for line in listed.stdout.splitlines())
    }
    pins = read_constraints()
    names, _ = closure(DAEMON_EXTRAS)
    assert {name: installed.get(name) for name in sorted(names)} == {
        name: pins[name] for name in sorted(names)
    }
    assert sorted(set(installed) - set(pins)) == []
    kept = site.path(f"/opt/ocpp-edge/releases/{VERSION}/constraints.txt")
    assert kept.read_bytes() == CONSTRAINTS.read_bytes()


@needs_root
def test_release_tool_reports_the_installed_release_inside_the_root(site: Site) -> None:
    status = site.inside("/usr/local/sbin/ocpp-edge-upgrade", "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["current"]["name"] == VERSION
    assert report["current"]["version"] == VERSION
    assert report["previous"] is None
    assert [release["name"] for release in report["releases"]] == [VERSION]


@needs_root
def test_daemon_runs_as_its_user_and_reports_to_the_fleet(site: Site, fleet: Fleet) -> None:
    """As the unit would start it: the service user reads its config and key, writes its
    store, and its presence reaches the fleet's broker over TLS with its certificate."""
    aggregator = fleet.aggregator()
    aggregator.connect(fleet.broker.port)
    aggregator.subscribe(TOPICS.status)
    user, group = site.ids("ocpp-edge")
    as_the_service = (CHROOT, f"--userspec={user}:{group}", f"--groups={group}", str(site.root))
    daemon = subprocess.Popen(
        [*CLEAN_ENVIRONMENT, "HOME=/var/lib/ocpp-edge", *as_the_service, *UNIT_COMMAND],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        topic, payload = _next_message(aggregator, within=60)
    finally:
        daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=30)
        aggregator.close()
    assert topic == TOPICS.status, output
    assert json.loads(payload)["state"] == "online"
    assert daemon.returncode == 0, output.decode(errors="replace")
    assert site.owner("/var/lib/ocpp-edge/edge.db")[:2] == ("ocpp-edge", "ocpp-edge")


@needs_root
def test_second_run_changes_nothing(site: Site) -> None:
    counts = site.apply()
    assert counts["changed"] == 0, site.runs[-1][-6000:]
    assert counts["failed"] == 0


@needs_root
def test_site_broker_bridges_the_edge_topics_to_the_fleet(site: Site, fleet: Fleet) -> None:
    """With a local broker, the daemon talks to mosquitto on loopback and mosquitto's
    bridge, holding the edge's certificate, carries its topics both ways."""
    counts = site.apply("-e", "ocpp_edge_local_broker=true")
    assert counts["failed"] == 0 and counts["changed"] > 0
    again = site.apply("-e", "ocpp_edge_local_broker=true")
    assert again["changed"] == 0, site.runs[-1][-6000:]
    assert site.owner("/etc/mosquitto/conf.d/ocpp-edge.conf") == ("root", "mosquitto", 0o640)
    for name in ("ca.crt", "edge.crt", "edge.key"):
        assert site.owner(f"/etc/mosquitto/certs/ocpp-edge/{name}") == (
            "mosquitto",
            "mosquitto",
            0o600,
        )
        assert not site.path(f"/etc/ocpp-edge/mqtt/{name}").exists(), "the bridge holds it"
    assert site.path("/etc/systemd/system/multi-user.target.wants/mosquitto.service").exists()
    sync = load_settings(site.path("/etc/ocpp-edge/config.toml")).sync
    local_port = site.settings["ocpp_edge_local_broker_port"]
    assert (sync.broker_host, sync.broker_port, sync.tls_ca) == ("127.0.0.1", local_port, None)

    # What systemd's RuntimeDirectory= would make for Debian's mosquitto.conf (pid file).
    site.path("/run/mosquitto").mkdir(exist_ok=True)
    os.chown(site.path("/run/mosquitto"), *site.ids("mosquitto"))
    broker = subprocess.Popen(
        [*CLEAN_ENVIRONMENT, CHROOT, str(site.root), *MOSQUITTO_COMMAND],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # The aggregator's listening and sending sides, so that neither waits behind the other.
    listener, sender = fleet.aggregator(), Peer("aggregator-sender")
    sender.client.username_pw_set(AGGREGATOR, AGGREGATOR_PASSWORD)
    edge = Peer("edge-daemon")
    try:
        _wait_for_port(int(str(local_port)), broker)
        listener.connect(fleet.broker.port)
        listener.subscribe(TOPICS.events)
        sender.connect(fleet.broker.port)
        edge.connect(int(str(local_port)))
        edge.subscribe(TOPICS.cards)
        # The bridge connects and subscribes at the fleet's broker in its own time (as the
        # edge's outbox and the cloud's desired state do, send until it arrives).
        assert _publish_until_received(edge, listener, TOPICS.events) == (TOPICS.events, b"1")
        assert _publish_until_received(sender, edge, TOPICS.cards) == (TOPICS.cards, b"1")
    finally:
        edge.close()
        listener.close()
        sender.close()
        broker.terminate()
        broker.wait(timeout=10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"the site's mosquitto exited: {errors}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the site's mosquitto does not listen on {port}")


def _next_message(peer: Peer, within: float) -> tuple[str, bytes]:
    """The next message `peer` receives within `within` seconds."""
    try:
        kind, value = peer.events.get(timeout=within)
    except queue.Empty:
        raise TimeoutError(f"no message in {within} s") from None
    assert kind == "message", f"expected a message, got {kind}: {value}"
    return value  # type: ignore[no-any-return]


def _publish_until_received(sender: Peer, receiver: Peer, topic: str) -> tuple[str, bytes]:
    """Publish b"1" on `topic` every second until `receiver` has it (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sender.publish(topic, b"1")
        try:
            return _next_message(receiver, within=1)
        except TimeoutError:
            continue
    raise AssertionError(f"nothing published on {topic} came through the bridge in 30 s")


@needs_root
def test_the_first_boot_unit_is_installed_and_enabled_and_the_daemon_waits_for_it(
    site: Site,
) -> None:
    source = REPOSITORY / "systemd"
    unit = site.path("/etc/systemd/system/ocpp-edge-firstboot.service")
    assert unit.read_bytes() == (source / "ocpp-edge-firstboot.service").read_bytes()
    drop_in = site.path("/etc/systemd/system/ocpp-edge.service.d/first-boot.conf")
    assert drop_in.read_bytes() == (source / "ocpp-edge.service.d/first-boot.conf").read_bytes()
    assert site.owner("/etc/systemd/system/ocpp-edge-firstboot.service") == ("root", "root", 0o644)
    link = site.path("/etc/systemd/system/multi-user.target.wants/ocpp-edge-firstboot.service")
    assert os.readlink(link) == "/etc/systemd/system/ocpp-edge-firstboot.service"
    enabled = site.inside(
        "env", "SYSTEMD_OFFLINE=1", "systemctl", "is-enabled", "ocpp-edge-firstboot.service"
    )
    assert enabled.stdout.strip() == "enabled", enabled.stderr


@needs_root
def test_the_installed_first_boot_command_makes_the_root_a_site_offline(site: Site) -> None:
    """The unit's command, from the installed venv inside the root (last: it changes the
    root's files the role does not manage)."""
    boot = site.path("/boot/firmware")
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "ocpp-edge.toml").write_text(
        '[site]\nname = "Test site"\nhostname = "site-test"\n'
        '[chargers]\nunknown = "accept"\n[cards]\ncsv = "cards.csv"\n'
    )
    (boot / "cards.csv").write_text("id_tag,status\nCARD-1,Accepted\n")
    result = site.inside(
        "/opt/ocpp-edge/venv/bin/ocpp-edge",
        "first-boot",
        "--boot-dir",
        "/boot/firmware",
        "--root",
        "/",
        "--enroll-seconds",
        "0",
    )
    status = (boot / "ocpp-edge-status.txt").read_text()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result: OK" in status, status
    assert site.path("/etc/hostname").read_text() == "site-test\n"
    assert len(site.path("/etc/machine-id").read_text().strip()) == 32
    assert "cards: 1 read from cards.csv: 1 added" in status
    assert site.owner("/var/lib/ocpp-edge/edge.db")[0] == "ocpp-edge"
    assert "not applied to a running system" in status
