"""The flashable image, built from scratch by scripts/build-image.sh (mmdebstrap arm64 under
qemu-user, the Ansible role through the chroot connection, partitions packed without loop
devices), then read back the way a Pi would see it: the partition table, the ext4 root
mounted read-only from the image file itself and the FAT boot partition read with mtools;
then a copy booted with its own systemd.

Needs root, the network (a Debian mirror and PyPI), qemu-user-static registered with
binfmt_misc, loop devices and systemd-nspawn: scripts/setup.sh --dev provides them. Takes
about 40 minutes on two cores (emulated dpkg and pip), so it runs only when asked:
`sudo OCPP_EDGE_IMAGE_TESTS=1 .venv/bin/python -m pytest tests/image`, or with
OCPP_EDGE_IMAGE_BUILD naming the directory of a build made for it (its `output/`, `work/`,
`build.log` and `exit-status`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.conftest import RunningCloud, transaction_reaches_the_cloud
from tests.image.image_files import (
    NSPAWN,
    BuiltImage,
    Mounted,
    boot_container,
    build_image,
    image_unavailable,
    mount_partitions,
    name_of,
)
from tests.integration.test_enrollment import (  # noqa: F401 (fixtures)
    EDGE,
    Fleet,
    cloud,
    make_code,
    pki_and_broker,
)
from tests.pins import read_constraints
from tests.ports import free_port
from tests.processes import wait_for_port

pytestmark = [
    pytest.mark.image,
    pytest.mark.skipif(image_unavailable() is not None, reason=image_unavailable() or ""),
]

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return build_image(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="module")
def mounted(image: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    with mount_partitions(image.raw, tmp_path_factory.mktemp("mounted"), read_only=True) as parts:
        yield parts


def test_partitions_are_a_fat_boot_and_an_ext4_root(image: BuiltImage) -> None:
    table = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(image.raw)], check=True, capture_output=True, text=True
        ).stdout
    )["partitiontable"]
    assert table["label"] == "dos"
    boot, root = table["partitions"]
    sector = table.get("sectorsize", 512)
    assert (boot["type"], boot.get("bootable")) == ("c", True)
    assert boot["start"] * sector == 4 * MIB
    assert boot["size"] * sector == 256 * MIB
    assert root["type"] == "83"
    assert root["start"] == boot["start"] + boot["size"]
    assert (root["start"] + root["size"]) * sector == image.raw.stat().st_size
    labels = {}
    for partition in (boot, root):
        probed = subprocess.run(
            ["blkid", "-p", "-o", "export", "-O", str(partition["start"] * sector), str(image.raw)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        fields = dict(line.split("=", 1) for line in probed.splitlines() if "=" in line)
        labels[fields["TYPE"]] = fields["LABEL"]
    assert labels == {"vfat": "RASPIFIRM", "ext4": "RASPIROOT"}


def test_compressed_image_and_checksums_match(image: BuiltImage) -> None:
    checked = subprocess.run(
        ["sha256sum", "--check", "SHA256SUMS"], cwd=image.output, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{image.raw.name}: OK" in checked.stdout
    assert f"{image.compressed.name}: OK" in checked.stdout
    subprocess.run(["xz", "--test", str(image.compressed)], check=True)
    assert image.compressed.stat().st_size < image.raw.stat().st_size / 2


def test_boot_partition_starts_a_pi_3_or_4_with_debians_kernel(mounted: Mounted) -> None:
    boot = mounted.boot
    cmdline = (boot / "cmdline.txt").read_text()
    assert "root=LABEL=RASPIROOT" in cmdline, cmdline
    assert (boot / "config.txt").is_file()
    names = {path.name for path in boot.iterdir()}
    # Debian's kernel and initrd, the device trees of the Pi 3, 4 and CM4, and the GPU
    # firmware that loads them.
    assert any(name.startswith("vmlinuz-") for name in names) or "vmlinuz" in names, names
    assert any(name.startswith("initrd.img") for name in names), names
    for tree in ("bcm2837-rpi-3-b.dtb", "bcm2711-rpi-4-b.dtb", "bcm2711-rpi-cm4-io.dtb"):
        assert tree in names, tree
    assert {"start4.elf", "fixup4.dat", "bootcode.bin"} <= names
    assert (boot / "ocpp-edge.toml").is_file()


def test_root_holds_what_the_ansible_role_installs(image: BuiltImage, mounted: Mounted) -> None:
    root = mounted.root
    passwd = (root / "etc/passwd").read_text().splitlines()
    (service_user,) = [line for line in passwd if line.startswith("ocpp-edge:")]
    assert service_user.endswith(":/usr/sbin/nologin"), service_user
    groups = (root / "etc/group").read_text().splitlines()
    for group in ("dialout", "plugdev", "gpio", "spi", "i2c", "input"):
        (line,) = [entry for entry in groups if entry.startswith(f"{group}:")]
        assert "ocpp-edge" in line.rsplit(":", 1)[1].split(","), line
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "ocpp-edge.service").is_symlink()
    assert (root / "etc/systemd/system/ocpp-edge.service").is_file()
    # The daemon as a versioned release, the venv a link to it (ocpp-edge-upgrade).
    assert (root / "opt/ocpp-edge/venv/bin/ocpp-edge").exists()
    release = os.readlink(root / "opt/ocpp-edge/venv")
    assert release.endswith(f"releases/{image.version}"), release
    assert (root / "usr/local/sbin/ocpp-edge-upgrade").is_file()
    # First boot runs before the daemon, which wants it.
    assert (wants / "ocpp-edge-firstboot.service").is_symlink()
    drop_in = root / "etc/systemd/system/ocpp-edge.service.d/first-boot.conf"
    assert "ocpp-edge-firstboot.service" in drop_in.read_text()
    config = root / "etc/ocpp-edge/config.toml"
    status = config.stat()
    assert status.st_mode & 0o777 == 0o640
    assert name_of(root / "etc/passwd", status.st_uid) == "root"
    assert name_of(root / "etc/group", status.st_gid) == "ocpp-edge"


def test_nothing_per_device_is_baked_in(mounted: Mounted) -> None:
    root = mounted.root
    # An empty machine-id: systemd makes the device's own at first boot.
    assert (root / "etc/machine-id").read_text() == ""
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    assert not list((root / "var/lib/ocpp-edge").glob("edge.db*"))
    assert os.readlink(root / "etc/resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
    fstab = (root / "etc/fstab").read_text()
    assert "LABEL=RASPIFIRM  /boot/firmware  vfat" in fstab
    # The boot partition is mounted over an empty folder.
    assert not list((root / "boot/firmware").iterdir())


def test_manifest_lists_every_installed_package_and_python_distribution(
    image: BuiltImage, mounted: Mounted
) -> None:
    lines = [line for line in image.manifest.read_text().splitlines() if line[:1] != "#"]
    debian = dict(line.split("=", 1) for line in lines if not line.startswith("pip:"))
    python = dict(line[4:].split("==", 1) for line in lines if line.startswith("pip:"))
    installed = {}
    for stanza in (mounted.root / "var/lib/dpkg/status").read_text().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status") == "install ok installed":
            installed[fields["Package"]] = fields["Version"]
    assert debian == installed
    for package in ("linux-image-arm64", "raspi-firmware", "systemd", "python3"):
        assert package in debian, package
    assert python["ocpp-edge"] == image.version
    assert "websockets" in python and "cryptography" in python
    # Every other distribution at its version in constraints.txt.
    pins = read_constraints()
    dependencies: dict[str, str] = {
        canonicalize_name(name): version for name, version in python.items()
    }
    del dependencies["ocpp-edge"]
    assert dependencies == {name: pins.get(name) for name in dependencies}


def test_build_time_and_sizes_are_reported(image: BuiltImage) -> None:
    """The figures docs/installing.md records, printed with the test run."""
    print(
        f"\nimage build: {image.seconds:.0f} s; raw {image.raw.stat().st_size / MIB:.0f} MiB, "
        f"xz {image.compressed.stat().st_size / MIB:.0f} MiB"
    )
    assert "== done" in image.log


# -- first boot, for real: the image's own systemd -------------------------------------------

CARDS = "id_tag,status,label\nCARD-A1,Accepted,Ann\n"


@pytest.mark.skipif(not Path(NSPAWN).exists(), reason="systemd-nspawn (systemd-container)")
async def test_first_boot_enrolls_and_a_chargers_transaction_reaches_the_cloud(
    image: BuiltImage,
    cloud: RunningCloud,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A copy of the image as an installer leaves it (ocpp-edge.toml edited, cards.csv
    beside it), its root mounted and the boot partition's files where its fstab mounts
    them (read with mtools: no vfat in this kernel), booted with its own systemd: the
    first-boot unit enrolls with a real cloud behind the shipped broker config, moves the
    code off the card, then the hardened ocpp-edge.service (Type=notify, watchdog,
    sandboxing) runs under a real systemd, a charger's transaction reaches the cloud, and
    `systemctl stop` ends it well inside TimeoutStopSec."""
    card = tmp_path / "card.img"
    await asyncio.to_thread(
        subprocess.run, ["cp", "--sparse=always", str(image.raw), str(card)], check=True
    )
    code = await make_code(cloud)
    ocpp_port, api_port, files_port = free_port(), free_port(), free_port()
    with mount_partitions(card, tmp_path / "mounted", read_only=False) as device:
        # What the installer writes on the FAT partition from a laptop.
        boot_file = device.boot / "ocpp-edge.toml"
        boot_file.write_text(
            '[site]\nname = "Depot 7"\nhostname = "depot-7"\ntime_zone = "Europe/Berlin"\n\n'
            f'[cloud]\nurl = "{cloud.api_url}"\nenrollment_code = "{code}"\n\n'
            '[chargers]\nunknown = "accept"\n\n[cards]\ncsv = "cards.csv"\n'
        )
        (device.boot / "cards.csv").write_text(CARDS)
        # Only because this machine's other tests may hold the default ports.
        config = device.root / "etc/ocpp-edge/config.toml"
        config.write_text(
            config.read_text()
            .replace("port = 9000", f"port = {ocpp_port}")
            .replace("port = 8080", f"port = {api_port}")
            .replace("port = 8081", f"port = {files_port}")
        )
        container = await boot_container(device.root, tmp_path / "boot.log", "ocpp-edge-image")
        try:
            started = time.monotonic()
            state = await container.wait_until_started()
            booted_s = time.monotonic() - started
            failed = await container.run("systemctl", "--failed", "--no-legend", "--plain")
            first_boot = await container.run("journalctl", "-u", "ocpp-edge-firstboot", "-o", "cat")
            diagnosis = f"{state}\n{failed.stdout}\n{first_boot.stdout[-4000:]}"
            assert await container.property_of("ocpp-edge-firstboot", "Result") == "success", (
                diagnosis
            )
            assert await container.property_of("ocpp-edge", "ActiveState") == "active", diagnosis

            # The code is off the card; the status file says what happened.
            status_file = device.boot / "ocpp-edge-status.txt"
            status = status_file.read_text() if status_file.exists() else "(no status file)"
            assert code not in boot_file.read_text(), f"{status}\n{diagnosis}"
            assert "result: OK" in status and f"enrolled as edge {EDGE}" in status, status
            assert (device.root / "etc/hostname").read_text() == "depot-7\n"
            assert len((device.root / "etc/machine-id").read_text().strip()) == 32
            assert list((device.root / "etc/ssh").glob("ssh_host_*_key"))

            # Under systemd: READY=1 was sent (or the unit would be "activating"), status
            # lines arrive, nothing restarted.
            assert await container.property_of("ocpp-edge", "SubState") == "running"
            assert await container.property_of("ocpp-edge", "NRestarts") == "0"
            assert await container.property_of("ocpp-edge", "StatusText")

            await asyncio.to_thread(wait_for_port, ocpp_port, 120)
            url = f"ws://127.0.0.1:{ocpp_port}/ocpp"
            await transaction_reaches_the_cloud(url, cloud, EDGE, "CARD-A1", within=120)

            stopping = time.monotonic()
            stop = await container.run("systemctl", "stop", "ocpp-edge")
            stop_s = time.monotonic() - stopping
            assert stop.returncode == 0, stop.stderr
            assert await container.property_of("ocpp-edge", "Result") == "success"
            journal = await container.run("journalctl", "-u", "ocpp-edge", "-o", "cat", "-n", "5")
            assert "stopped in" in journal.stdout, journal.stdout
            # TimeoutStopSec=30; under emulation everything is several times slower.
            assert stop_s < 15, stop_s
            print(
                f"\nimage under emulation: booted in {booted_s:.0f} s ({state}), "
                f"ocpp-edge stopped in {stop_s:.1f} s"
            )
        finally:
            await container.power_off()
