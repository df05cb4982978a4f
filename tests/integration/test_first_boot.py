"""A flashed device's first start, for real: `ocpp-edge first-boot` as the unit runs it
(its own process, as root) against a root directory laid out as the image holds it and a
boot directory with the installer's `ocpp-edge.toml` and `cards.csv`, enrolling with a
real aggregator behind the shipped broker config; then the daemon started from what it
wrote connects as the enrolled edge and a charger's transaction reaches the cloud."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from gpiozero.pins.mock import MockFactory

from cloud.enrollment import code_digest, new_code, normalize_code
from cloud.store import enrollment_codes
from edge.first_boot.run import RECORD_DIRECTORY
from edge.first_boot.signals import show_failure
from edge.first_boot.system import ApplyError, expand_root_partition, wifi_psk
from edge.settings import Settings, load_settings
from tests.conftest import RunningCloud, transaction_reaches_the_cloud
from tests.doubles.i2c_lcd import FakeI2cLcd
from tests.integration.test_enrollment import (  # noqa: F401 (fixtures)
    EDGE,
    Fleet,
    cloud,
    csr_for,
    make_code,
    pki_and_broker,
)
from tests.ports import free_port
from tests.processes import Daemon, wait_for_port
from tests.waiting import eventually

DAEMON_UID = 4242
CARDS = "id_tag,status,label\nCARD-A1,Accepted,Ann\nCARD-B2,Accepted,Bob\n"


@dataclass
class Device:
    root: Path
    boot: Path
    ocpp_port: int

    @property
    def boot_file(self) -> Path:
        return self.boot / "ocpp-edge.toml"

    @property
    def status(self) -> str:
        return (self.boot / "ocpp-edge-status.txt").read_text()

    @property
    def config(self) -> Path:
        return self.root / "etc/ocpp-edge/config.toml"

    @property
    def state(self) -> Path:
        return self.root / "var/lib/ocpp-edge"

    @property
    def records(self) -> Path:
        return self.root / RECORD_DIRECTORY.relative_to("/")


@pytest.fixture
def device(tmp_path: Path) -> Device:
    """A root as the image leaves it (the role's config, the daemon's user, an empty
    machine-id, openssh with a host key someone baked in) and an empty boot directory."""
    root, boot = tmp_path / "root", tmp_path / "boot"
    boot.mkdir()
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        f"root:x:0:0:root:/root:/bin/bash\nocpp-edge:x:{DAEMON_UID}:{DAEMON_UID}::/opt:/sbin/nologin\n"
    )
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tlocalhost\n")
    (root / "etc/machine-id").write_text("")
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("baked into the image\n")
    sshd = root / "usr/sbin/sshd"
    sshd.parent.mkdir(parents=True)
    sshd.write_text("")
    for name in ("Europe/Berlin", "Etc/UTC"):
        zone = root / "usr/share/zoneinfo" / name
        zone.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path("/usr/share/zoneinfo") / name, zone)
    state = root / "var/lib/ocpp-edge"
    state.mkdir(parents=True)
    os.chown(state, DAEMON_UID, DAEMON_UID)
    port = free_port()
    config = root / "etc/ocpp-edge/config.toml"
    config.parent.mkdir(parents=True)
    # As the role writes it, with the paths inside this root.
    config.write_text(
        "# Ansible managed\n"
        f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\nunknown_chargers = "pending"\n'
        f'[store]\npath = "{state / "edge.db"}"\n[api]\nport = 0\n'
        f'[files]\nport = 0\ndirectory = "{state / "files"}"\n[sync]\nkeepalive = 5\n'
        "ack_timeout = 2.0\n"
    )
    config.chmod(0o640)
    return Device(root, boot, port)


async def first_boot(device: Device, enroll_seconds: float = 30) -> tuple[int, str]:
    """`ocpp-edge first-boot` as the unit runs it, in its own process (the cloud answers
    from this test's event loop meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        "first-boot",
        "--root",
        str(device.root),
        "--boot-dir",
        str(device.boot),
        "--enroll-seconds",
        str(enroll_seconds),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode is not None
    return process.returncode, output.decode()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files_under(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes() if path.is_file() else b""
        for path in sorted(directory.rglob("*"))
    }


async def start_daemon(device: Device, tmp_path: Path) -> Daemon:
    daemon = Daemon("edge", device.config, tmp_path / "edge.log")
    daemon.start()
    await asyncio.to_thread(wait_for_port, device.ocpp_port, 30)
    return daemon


# -- the whole way, online ------------------------------------------------------------


async def test_a_flashed_device_enrolls_moves_its_secrets_and_its_charger_reaches_the_cloud(
    cloud: RunningCloud,  # noqa: F811
    pki_and_broker: Fleet,  # noqa: F811
    device: Device,
    tmp_path: Path,
) -> None:
    code = await make_code(cloud)
    ca_pem = pki_and_broker.broker_ca.files.certificate.read_text().strip()
    (device.boot / "cards.csv").write_text(CARDS)
    device.boot_file.write_text(
        '[site]\nname = "Depot 7"\nhostname = "depot-7"\ntime_zone = "Europe/Berlin"\n\n'
        f'[cloud]\nurl = "{cloud.api_url}"\nenrollment_code = "{code}"\n'
        f"ca = '''\n{ca_pem}\n'''\n\n"
        '[network]\nwifi_ssid = "Depot"\nwifi_password = "wifi-secret-7"\nwifi_country = "DE"\n\n'
        '[chargers]\nunknown = "accept"\n\n[cards]\ncsv = "cards.csv"\n'
    )

    status, output = await first_boot(device)
    assert status == 0, output

    # The secrets are off the FAT file, each replaced by where it went.
    boot_text = device.boot_file.read_text()
    for secret in (code, "wifi-secret-7", "BEGIN CERTIFICATE"):
        assert secret not in boot_text
    assert re.search(r"# enrollment_code: moved off this card on .* UTC to /var/lib", boot_text)
    assert "# wifi_password: moved off this card on" in boot_text
    assert "# ca: moved off this card on" in boot_text
    assert 'hostname = "depot-7"' in boot_text  # the rest as the installer wrote it
    wpa = device.root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
    assert mode(wpa) == 0o600 and f"psk={wifi_psk('Depot', 'wifi-secret-7')}" in wpa.read_text()
    assert (device.records / "cloud-ca.pem").read_text().strip() == ca_pem
    assert mode(device.records) == 0o700
    # The code is erased once used: neither on the card nor kept.
    assert not (device.records / "enrollment-code").exists()

    # The identity, as `ocpp-edge enroll` run as the daemon's user leaves it.
    settings = load_settings(device.config)
    key = settings.sync.tls_private_key
    assert key is not None and settings.sync.edge_id == EDGE
    assert mode(key) == 0o600 and mode(key.parent) == 0o700
    assert key.stat().st_uid == DAEMON_UID and key.parent.stat().st_uid == DAEMON_UID
    identity = device.state / "sync-identity"
    assert mode(identity) == 0o700 and identity.stat().st_uid == DAEMON_UID

    # The system, the daemon's settings, the cards.
    assert (device.root / "etc/hostname").read_text() == "depot-7\n"
    assert (device.root / "etc/localtime").readlink() == Path("/usr/share/zoneinfo/Europe/Berlin")
    assert re.fullmatch(r"[0-9a-f]{32}\n", (device.root / "etc/machine-id").read_text())
    keys = device.root / "etc/ssh"
    assert "baked" not in (keys / "ssh_host_ed25519_key").read_text()
    assert (keys / "ssh_host_rsa_key").exists()
    config = tomllib.loads(device.config.read_text())
    assert (
        config["ocpp"]["unknown_chargers"] == "accept"
        and config["ocpp"]["port"] == device.ocpp_port
    )
    assert mode(device.config) == 0o640
    database = device.state / "edge.db"
    assert database.stat().st_uid == DAEMON_UID
    with sqlite3.connect(database) as connection:
        cards = connection.execute("SELECT id_tag FROM id_tags ORDER BY id_tag").fetchall()
    assert cards == [("CARD-A1",), ("CARD-B2",)]
    assert device.status.startswith("ocpp-edge: this site's start on")
    assert "result: OK" in device.status and f"enrolled as edge {EDGE}" in device.status
    assert "site: Depot 7" in device.status

    # The daemon, from these files alone, connects as the enrolled edge; a charger's
    # transaction with a card from cards.csv reaches the cloud.
    await eventually(lambda: cloud.site.aggregator.connected)
    daemon = await start_daemon(device, tmp_path)
    try:
        url = f"ws://127.0.0.1:{device.ocpp_port}/ocpp"
        await transaction_reaches_the_cloud(url, cloud, EDGE, "CARD-A1", within=30)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()

    # The next start changes nothing and says so: the device keeps its own keys, id and
    # Wi-Fi key, now that the password is off the card.
    kept = {
        path: path.read_bytes()
        for path in (keys / "ssh_host_ed25519_key", device.root / "etc/machine-id", wpa)
    }
    status, output = await first_boot(device)
    assert status == 0, output
    assert {path: path.read_bytes() for path in kept} == kept
    assert "result: OK" in device.status and "cloud: enrolled before" in device.status
    assert "host name and time zone: unchanged" in device.status


# -- offline, then enrolled later ---------------------------------------------------------


async def test_offline_the_site_runs_on_its_own_and_enrolls_when_a_code_is_added(
    cloud: RunningCloud,  # noqa: F811
    device: Device,
    tmp_path: Path,
) -> None:
    (device.boot / "cards.csv").write_text(CARDS)
    device.boot_file.write_text('[site]\nname = "Barn"\n\n[cards]\ncsv = "cards.csv"\n')
    status, output = await first_boot(device)
    assert status == 0, output
    assert "result: OK" in device.status and "runs on its own" in device.status
    assert "2 read from cards.csv: 2 added" in device.status
    assert not (device.state / "sync-identity").exists()
    daemon = await start_daemon(device, tmp_path)
    assert daemon.stop() == 0, daemon.log_tail()

    code = await make_code(cloud)
    device.boot_file.write_text(
        device.boot_file.read_text()
        + f'\n[cloud]\nurl = "{cloud.api_url}"\nenrollment_code = "{code}"\n'
    )
    status, output = await first_boot(device)
    assert status == 0, output
    assert "result: OK" in device.status and f"enrolled as edge {EDGE}" in device.status
    assert "cards: cards.csv unchanged since it was imported" in device.status
    assert code not in device.boot_file.read_text()
    assert load_settings(device.config).sync.edge_id == EDGE


async def test_a_cloud_that_answers_only_after_a_while_is_tried_again_until_it_does(
    cloud: RunningCloud,  # noqa: F811
    device: Device,
) -> None:
    """The network comes up late: nothing answers at the cloud's address at first."""
    code = await make_code(cloud)
    port = free_port()
    device.boot_file.write_text(
        f'[cloud]\nurl = "http://127.0.0.1:{port}"\nenrollment_code = "{code}"\n'
    )
    running = asyncio.create_task(first_boot(device, enroll_seconds=60))
    # Its first attempts find nothing listening; then the way to the cloud opens.
    await asyncio.sleep(3)
    assert not running.done()
    cloud_port = int(cloud.api_url.rsplit(":", 1)[1])
    async with await asyncio.start_server(
        lambda reader, writer: forward(reader, writer, cloud_port), "127.0.0.1", port
    ):
        status, output = await running
    assert status == 0, output
    assert "result: OK" in device.status and f"enrolled as edge {EDGE}" in device.status


async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    """One connection carried to 127.0.0.1:`port` and back."""
    upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()

    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def test_an_unreachable_cloud_keeps_the_code_off_the_card_for_the_next_start(
    device: Device,
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    device.boot_file.write_text(f'[cloud]\nurl = "{closed}"\nenrollment_code = "ABCD-EFGH"\n')
    status, output = await first_boot(device, enroll_seconds=1)
    assert status == 0, output
    assert "result: PROBLEM" in device.status and "cloud: cloud unreachable" in device.status
    assert "tried again at the next start" in device.status
    assert "ABCD-EFGH" not in device.boot_file.read_text()
    kept = device.records / "enrollment-code"
    assert kept.read_text() == "ABCD-EFGH\n" and mode(kept) == 0o600


async def test_a_secret_the_device_cannot_take_out_of_the_file_is_said(device: Device) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    device.boot_file.write_text(f'cloud = {{ url = "{closed}", enrollment_code = "ABCD-EFGH" }}\n')
    status, output = await first_boot(device, enroll_seconds=0)
    assert status == 0, output
    assert "cloud.enrollment_code: applied, but still in ocpp-edge.toml" in device.status
    assert "ABCD-EFGH" not in device.status
    assert (device.records / "enrollment-code").read_text() == "ABCD-EFGH\n"


# -- a code that was used already -------------------------------------------------------


@pytest.mark.parametrize("spent", ["used", "expired"])
async def test_a_used_or_expired_code_is_refused_erased_and_said_and_the_daemon_still_starts(
    cloud: RunningCloud,  # noqa: F811
    device: Device,
    tmp_path: Path,
    spent: str,
) -> None:
    if spent == "used":
        # Used by someone else first (the cloud counts it used once it signed a request).
        code = await make_code(cloud)
        async with httpx.AsyncClient(base_url=cloud.api_url) as client:
            used = await client.post("/api/enroll", json={"code": code, "csr": csr_for(EDGE)})
            assert used.status_code == 200
    else:
        code = new_code()
        past = datetime.now(UTC) - timedelta(hours=2)
        digest = code_digest(normalize_code(code) or "")
        enrollment_codes.add_code(cloud.engine, digest, EDGE, past, past + timedelta(hours=1))
    device.boot_file.write_text(f'[cloud]\nurl = "{cloud.api_url}"\nenrollment_code = "{code}"\n')

    status, output = await first_boot(device)
    assert status == 0, output
    assert "result: PROBLEM" in device.status and "cloud: code refused" in device.status
    said = "was used at" if spent == "used" else "expired at"
    assert "the cloud refused (403)" in device.status and said in device.status
    assert "The code was erased" in device.status
    assert code not in device.boot_file.read_text()
    assert not (device.records / "enrollment-code").exists()
    assert not (device.state / "sync-identity").exists()
    assert "What `ocpp-edge doctor` finds:" in device.status
    daemon = await start_daemon(device, tmp_path)
    assert daemon.stop() == 0, daemon.log_tail()


# -- a bad file ----------------------------------------------------------------------------


async def test_a_bad_file_is_named_by_key_and_line_and_nothing_is_applied(
    device: Device,
) -> None:
    text = (
        '[site]\nhostname = "depot-7"\ntime_zone = "Europe/Berlin"\n\n'
        '[network]\nwifi_ssid = "Depot"\nwifi_password = "wifi-secret-7"\nwifi_country = "DE"\n'
        'address = "192.168.1.300/24"\n'
    )
    device.boot_file.write_text(text)
    before = files_under(device.root)
    status, output = await first_boot(device)
    # The daemon can start with what was there before: 0, the problem in the status file.
    assert status == 0, output
    assert files_under(device.root) == before
    assert device.boot_file.read_text() == text
    assert "result: PROBLEM" in device.status
    assert (
        "ocpp-edge.toml:9: network.address = '192.168.1.300/24': Value error, not an address"
        in device.status
    )
    assert "Nothing from ocpp-edge.toml was applied." in device.status
    assert "wifi-secret-7" not in device.status
    assert "What `ocpp-edge doctor` finds:" in device.status

    # A file it names that is wrong stops everything too.
    device.boot_file.write_text('[site]\nhostname = "depot-7"\n[cards]\ncsv = "cards.csv"\n')
    (device.boot / "cards.csv").write_text("id_tag,status\nCARD-1,Accepted\n,Blocked\n")
    status, output = await first_boot(device)
    assert status == 0, output
    assert files_under(device.root) == before
    assert "cards.csv:3:" in device.status and "result: PROBLEM" in device.status


async def test_a_daemon_config_that_cannot_load_is_exit_status_1(device: Device) -> None:
    device.config.write_text("[ocpp]\nport = 'nine thousand'\n")
    device.boot_file.write_text('[site]\nname = "x"\n')
    status, output = await first_boot(device)
    assert status == 1, output
    assert "the daemon cannot start" in device.status and "ocpp.port" in device.status


# -- the lights at a reader ---------------------------------------------------------------


def test_a_failure_blinks_the_red_light_and_says_so_on_the_display() -> None:
    factory = MockFactory()
    lcd = FakeI2cLcd(0x27)
    settings = Settings(
        readers=[
            {"id": "r1", "kind": "simulated", "feedback": {"green_led": 17, "red_led": 27}},
            {"id": "r2", "kind": "simulated"},
            {"id": "r3", "kind": "simulated", "feedback": {"lcd_i2c_bus": 1}},
        ]
    )
    with ThreadPoolExecutor(1) as pool:
        shown = pool.submit(
            show_failure, settings, repeats=1, pin_factory=factory, open_bus=lambda bus: lcd
        )
        lcd.wait_for_text("Error", "See SD card")
        assert shown.result(timeout=30) == 2
    red = [state for _, state in factory.pin(27).states]
    assert red.count(True) >= 5, red  # the error pattern blinks it
    assert not factory.pin(17).state and not factory.pin(27).state


# -- the root partition -------------------------------------------------------------------


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("losetup"), reason="needs root and losetup"
)
def test_the_root_partition_grows_to_the_end_of_a_bigger_card(tmp_path: Path) -> None:
    image, root = tmp_path / "card.img", tmp_path / "mnt"
    root.mkdir()
    with image.open("wb") as file:
        file.truncate(96 * 1024**2)
    # Boot (FAT) and root partitions as the image has them, the root one small.
    subprocess.run(
        ["sfdisk", "-q", str(image)],
        input="label: dos\n,8MiB,c\n,24MiB,83\n",
        text=True,
        check=True,
    )
    loop = subprocess.run(
        ["losetup", "--find", "--show", "--partscan", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        partition = f"{loop}p2"
        if not Path(partition).exists():
            # --partscan may not reach the kernel inside a container: add them by hand.
            subprocess.run(["partx", "--add", loop], check=True)
        subprocess.run(["mkfs.ext4", "-q", partition], check=True)
        subprocess.run(["mount", partition, str(root)], check=True)
        try:
            before = shutil.disk_usage(root).total
            grown = f"root partition: {partition} grown to the end of {loop}"
            if can_resize_online():
                assert expand_root_partition(root) == grown
                assert shutil.disk_usage(root).total > before + 50 * 1024**2
                assert expand_root_partition(root) == (
                    f"root partition: {partition} fills its disk already"
                )
            else:
                # Growing a mounted ext4 needs CAP_SYS_RESOURCE, which this machine's
                # container lacks: the partition grows, the file system's step says why
                # not, and the next start tries the file system again.
                with pytest.raises(ApplyError, match=f"resize2fs {partition} failed"):
                    expand_root_partition(root)
                size = int(Path(f"/sys/class/block/{Path(partition).name}/size").read_text())
                assert size * 512 > 80 * 1024**2
                with pytest.raises(ApplyError, match=f"resize2fs {partition} failed"):
                    expand_root_partition(root)
        finally:
            subprocess.run(["umount", str(root)], check=True)
    finally:
        subprocess.run(["losetup", "--detach", loop], check=True)


def can_resize_online() -> bool:
    """CAP_SYS_RESOURCE (bit 24), which ext4's online resize asks for."""
    status = Path("/proc/self/status").read_text()
    effective = int(re.search(r"CapEff:\s*([0-9a-f]+)", status).group(1), 16)  # type: ignore[union-attr]
    return bool(effective & (1 << 24))


def test_a_root_that_is_no_partition_is_left_as_it_is(tmp_path: Path) -> None:
    assert expand_root_partition(tmp_path) == (
        f"root partition: not expanded ({tmp_path} is not a mount point of its own)"
    )
