"""Applying the boot file to the operating system under a root directory (`/` on a device,
another directory in tests and in an image build): host name, time zone, network files,
the device's own machine-id and SSH host keys, the root partition's size.

Each function writes whole files (temporary name, fsync, rename) and returns one line
saying what it did; a problem is an ApplyError with the sentence to show.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge.first_boot.boot_file import NetworkSection

ETHERNET_NETWORK = "etc/systemd/network/10-ocpp-edge-ethernet.network"
WIFI_NETWORK = "etc/systemd/network/20-ocpp-edge-wifi.network"
WPA_CONFIG = "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
WPA_WANTS_LINK = "etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service"
WPA_UNIT = "/lib/systemd/system/wpa_supplicant@.service"
COMMAND_SECONDS = 120
SLACK_BYTES = 16 * 1024**2
UTC_ZONE = "Etc/UTC"


class ApplyError(Exception):
    """A step could not be applied; the message says what and why."""


def in_root(root: Path, path: Path) -> Path:
    """`path` (absolute, as the device sees it) inside `root`; a path already inside
    `root` (a test's config naming its own directories) is left as it is."""
    if root == Path("/") or path.is_relative_to(root) or not path.is_absolute():
        return path
    return root / path.relative_to("/")


def write_file(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    """Write whole under a temporary name beside `path`, fsynced, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def user_ids(root: Path, name: str) -> tuple[int, int] | None:
    """The uid and gid of user `name` in `root`'s /etc/passwd; None when it has none."""
    passwd = root / "etc/passwd"
    if root == Path("/"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return entry.pw_uid, entry.pw_gid
    try:
        lines = passwd.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == name:
            return int(fields[2]), int(fields[3])
    return None


# -- host name and time zone -------------------------------------------------------------


def apply_hostname(root: Path, hostname: str) -> str:
    write_file(root / "etc/hostname", f"{hostname}\n")
    hosts = root / "etc/hosts"
    try:
        lines = hosts.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = ["127.0.0.1\tlocalhost", "::1\t\tlocalhost ip6-localhost ip6-loopback"]
    # Debian names the machine itself on a 127.0.1.1 line.
    kept = [line for line in lines if not line.startswith("127.0.1.1")]
    kept.insert(1 if kept else 0, f"127.0.1.1\t{hostname}")
    write_file(hosts, "\n".join(kept) + "\n")
    return f"host name set to {hostname} (/etc/hostname, /etc/hosts)"


def check_time_zone(root: Path, time_zone: str) -> str | None:
    """Why `time_zone` cannot be set in `root`, or None."""
    if time_zone == UTC_ZONE:
        return None  # without tzdata too: the C library's own default
    if not (root / "usr/share/zoneinfo" / time_zone).is_file():
        return (
            f"site.time_zone = {time_zone!r}: /usr/share/zoneinfo/{time_zone} is missing (tzdata)"
        )
    return None


def apply_time_zone(root: Path, time_zone: str) -> str:
    link = root / "etc/localtime"
    if not (root / "usr/share/zoneinfo" / time_zone).is_file():
        # Only UTC gets here (check_time_zone): no /etc/localtime means UTC.
        if link.is_symlink() or link.exists():
            link.unlink()
        write_file(root / "etc/timezone", f"{time_zone}\n")
        return f"time zone: {time_zone} (tzdata is not installed: /etc/localtime removed)"
    temporary = link.with_name(".localtime.new")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(f"/usr/share/zoneinfo/{time_zone}")
    os.replace(temporary, link)
    write_file(root / "etc/timezone", f"{time_zone}\n")
    return f"time zone set to {time_zone} (/etc/localtime, /etc/timezone)"


# -- network ---------------------------------------------------------------------------


def wifi_psk(ssid: str, password: str) -> str:
    """WPA2's pre-shared key, as wpa_passphrase computes it: the password itself is not
    written anywhere."""
    return hashlib.pbkdf2_hmac("sha1", password.encode(), ssid.encode(), 4096, 32).hex()


def apply_network(root: Path, network: NetworkSection, wifi_psk_kept: str | None) -> list[str]:
    """systemd-networkd files for Ethernet (DHCP, or the fixed address when there is no
    Wi-Fi) and Wi-Fi (wlan0 through wpa_supplicant@wlan0). `wifi_psk_kept`: the key of the
    same network from an earlier start, when the file no longer holds the password."""
    done = []
    wifi = network.wifi_ssid is not None
    static = _static_lines(network)
    write_file(
        root / ETHERNET_NETWORK,
        "# Written by ocpp-edge first-boot from ocpp-edge.toml [network].\n"
        "[Match]\nName=en* eth*\n\n[Network]\n" + (static if static and not wifi else "DHCP=yes\n"),
    )
    done.append(
        "Ethernet: " + (f"fixed address {network.address}" if static and not wifi else "DHCP")
    )
    wpa = root / WPA_CONFIG
    link = root / WPA_WANTS_LINK
    if not wifi:
        for path in (root / WIFI_NETWORK, wpa, link):
            if path.is_symlink() or path.exists():
                path.unlink()
                done.append(f"removed {path.relative_to(root)}")
        return done
    assert network.wifi_ssid is not None and network.wifi_country is not None
    if network.wifi_password is not None:
        security = f"\tpsk={wifi_psk(network.wifi_ssid, network.wifi_password)}\n"
    elif wifi_psk_kept is not None:
        security = f"\tpsk={wifi_psk_kept}\n"
    else:
        security = "\tkey_mgmt=NONE\n"
    # The name in hex: nothing in it can break out of the quotes.
    write_file(
        wpa,
        "# Written by ocpp-edge first-boot from ocpp-edge.toml [network].\n"
        "ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev\nupdate_config=0\n"
        f"country={network.wifi_country}\n\nnetwork={{\n"
        f"\tssid={network.wifi_ssid.encode().hex()}\n{security}}}\n",
        mode=0o600,
    )
    write_file(
        root / WIFI_NETWORK,
        "# Written by ocpp-edge first-boot from ocpp-edge.toml [network].\n"
        "[Match]\nName=wlan0\n\n[Network]\n" + (static or "DHCP=yes\n"),
    )
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(WPA_UNIT)
    kind = "open network" if "key_mgmt=NONE" in security else "WPA2"
    done.append(
        f"Wi-Fi: {network.wifi_ssid!r} ({kind}, country {network.wifi_country}), "
        + (f"fixed address {network.address}" if static else "DHCP")
        + f"; {WPA_CONFIG} (mode 0600), wpa_supplicant@wlan0 enabled"
    )
    return done


def systemd_running(root: Path) -> bool:
    """Whether `root` is the running system under systemd (not a chroot, an image or a
    container without it): only then are services told about new files."""
    return root == Path("/") and Path("/run/systemd/system").is_dir()


def activate_now(root: Path, hostname: str | None, wifi: bool | None) -> list[str]:
    """Make this start use the new host name and network files: the system read the old
    ones before this ran. Skipped, and said, where systemd does not run `root`."""
    if not systemd_running(root):
        return ["not applied to a running system (no systemd runs it): takes effect at its start"]
    done = []
    if hostname is not None and shutil.which("hostname"):
        _run(["hostname", hostname])
        done.append(f"host name {hostname} in use now")
    if wifi is not None:
        action = "restart" if wifi else "stop"
        _run(["systemctl", action, "--no-block", "wpa_supplicant@wlan0.service"])
        if _active("systemd-networkd.service"):
            _run(["networkctl", "reload"])
            done.append(f"systemd-networkd reloaded, wpa_supplicant@wlan0 {action}ed")
        else:
            # Nothing to reload (a container, or networkd off): it reads the files when
            # it starts, and a reload would wait 25 s for D-Bus to start it in vain.
            done.append(f"wpa_supplicant@wlan0 {action}ed; systemd-networkd not running")
    return done


def _active(unit: str) -> bool:
    return subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0


def kept_wifi_psk(root: Path, ssid: str | None) -> str | None:
    """The key already written for network `ssid`, if any."""
    try:
        text = (root / WPA_CONFIG).read_text(encoding="utf-8")
    except OSError:
        return None
    if ssid is None or f"ssid={ssid.encode().hex()}\n" not in text:
        return None
    found = re.search(r"^\tpsk=([0-9a-f]{64})$", text, re.MULTILINE)
    return found.group(1) if found else None


def _static_lines(network: NetworkSection) -> str:
    if network.address is None:
        return ""
    lines = [f"Address={network.address}"]
    if network.gateway is not None:
        lines.append(f"Gateway={network.gateway}")
    lines.extend(f"DNS={server}" for server in network.dns)
    return "\n".join(lines) + "\n"


# -- the device's own identity -----------------------------------------------------------


def ensure_machine_id(root: Path) -> str:
    """A machine-id of this device's own when the image left it empty or uninitialized."""
    path = root / "etc/machine-id"
    try:
        current = path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        current = ""
    if re.fullmatch(r"[0-9a-f]{32}", current):
        return "machine-id: kept (already this device's)"
    if current not in ("", "uninitialized"):
        path.unlink()
    _run(["systemd-machine-id-setup", f"--root={root}"])
    return "machine-id: made for this device"


def ensure_ssh_host_keys(root: Path, first_time: bool) -> str:
    """SSH host keys of this device's own: the first time, any keys baked into the image
    are removed; then `ssh-keygen -A` makes the missing ones."""
    if not (root / "usr/sbin/sshd").exists():
        return "SSH host keys: skipped (openssh-server is not installed)"
    directory = root / "etc/ssh"
    directory.mkdir(parents=True, exist_ok=True)
    removed = 0
    if first_time:
        for key in directory.glob("ssh_host_*"):
            key.unlink()
            removed += 1
    _run(["ssh-keygen", "-A", "-f", str(root)])
    made = sorted(key.name for key in directory.glob("ssh_host_*_key"))
    note = f" ({removed} from the image removed)" if removed else ""
    return f"SSH host keys: {', '.join(made) or 'none'}{note}"


# -- the root partition ------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    device: Path  # /dev/mmcblk0p2
    disk: Path  # /dev/mmcblk0
    number: int


def root_partition(root: Path) -> Partition | str:
    """The partition mounted at `root`, or why there is none to grow."""
    found = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--mountpoint", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    fields = found.stdout.split()
    if found.returncode != 0 or len(fields) != 2:
        return f"{root} is not a mount point of its own"
    source, fstype = fields
    if fstype != "ext4":
        return f"{root} is {fstype}, not ext4"
    name = Path(os.path.realpath(source)).name
    block = Path("/sys/class/block") / name
    if not (block / "partition").is_file():
        return f"{source} is not a partition"
    number = int((block / "partition").read_text().strip())
    disk = Path(os.path.realpath(block)).parent.name
    return Partition(Path("/dev") / name, Path("/dev") / disk, number)


def free_after(partition: Partition) -> int:
    """Bytes of the disk after the end of `partition` (512-byte sectors in sysfs)."""
    block = Path("/sys/class/block") / partition.device.name
    disk = Path("/sys/class/block") / partition.disk.name
    start = int((block / "start").read_text())
    size = int((block / "size").read_text())
    total = int((disk / "size").read_text())
    return (total - start - size) * 512


def expand_root_partition(root: Path) -> str:
    """Grow the root partition to the end of its disk (the card is bigger than the image),
    then its ext4 file system, both while mounted."""
    partition = root_partition(root)
    if isinstance(partition, str):
        return f"root partition: not expanded ({partition})"
    # Less than 16 MiB is alignment slack, not a bigger card.
    if free_after(partition) < SLACK_BYTES:
        # A file system left smaller by an earlier start that stopped half-way.
        if partition_bytes(partition) - file_system_bytes(partition) < SLACK_BYTES:
            return f"root partition: {partition.device} fills its disk already"
        _run(["resize2fs", str(partition.device)])
        return f"root partition: the file system on {partition.device} grown to its partition"
    if partition.number != _last_partition_number(partition.disk):
        return f"root partition: not expanded ({partition.device} is not the disk's last)"
    if shutil.which("growpart"):
        _run(["growpart", str(partition.disk), str(partition.number)])
    else:
        # sfdisk changes the table; partx tells the kernel about the mounted partition.
        _run(
            [
                "sfdisk",
                "--no-reread",
                "--no-tell-kernel",
                "-N",
                str(partition.number),
                str(partition.disk),
            ],
            stdin=", +\n",
        )
        _run(["partx", "--update", "--nr", str(partition.number), str(partition.disk)])
    _run(["resize2fs", str(partition.device)])
    return f"root partition: {partition.device} grown to the end of {partition.disk}"


def partition_bytes(partition: Partition) -> int:
    return int((Path("/sys/class/block") / partition.device.name / "size").read_text()) * 512


def file_system_bytes(partition: Partition) -> int:
    """The ext4 file system's size, from its superblock."""
    header = _run(["dumpe2fs", "-h", str(partition.device)])
    fields = dict(
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in header.splitlines())
    )
    return int(fields["Block count"]) * int(fields["Block size"])


def _last_partition_number(disk: Path) -> int:
    block = Path("/sys/class/block") / disk.name
    numbers = [
        int((child / "partition").read_text())
        for child in block.iterdir()
        if (child / "partition").is_file()
    ]
    return max(numbers, default=0)


def _run(command: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ApplyError(f"{command[0]} failed: {error}") from error
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()
        raise ApplyError(f"{' '.join(command)} failed: {output[-1] if output else done.returncode}")
    return done.stdout
