"""A Debian bookworm root made with debootstrap, for applying the Ansible role to: a stand-in
for a fresh Raspberry Pi OS Lite (python3, systemd, udev), cached as a tarball between
test runs on one machine, with apt's and pip's downloads kept across runs too.

Building the root needs root (debootstrap, chroot) and the network (a Debian mirror).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

SUITE = "bookworm"
# What a fresh Raspberry Pi OS Lite has and debootstrap's minbase lacks.
BASE_PACKAGES = ("python3", "ca-certificates", "systemd", "udev", "kmod")
CACHE = Path(os.environ.get("OCPP_EDGE_TEST_CACHE", "/var/cache/ocpp-edge-tests"))
DEBOOTSTRAP = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class RootUnavailable(Exception):
    """No root can be made here; the message says what is missing."""


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (sources.list or deb822 .sources)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        one_line = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/debian)/?\s", text, re.MULTILINE)
        deb822 = re.search(r"^URIs:\s*(\S+/debian)/?\s*$", text, re.MULTILINE)
        for found in (one_line, deb822):
            if found:
                return found.group(1)
    return DEFAULT_MIRROR


def cache_key() -> str:
    """Changes with the package list and every ISO week, so that a cached root picks up
    security updates."""
    year, week, _ = datetime.date.today().isocalendar()
    listed = ",".join(BASE_PACKAGES)
    digest = hashlib.sha256(f"{SUITE} minbase {listed}".encode()).hexdigest()[:12]
    return f"{SUITE}-{digest}-{year}w{week:02d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_tarball() -> Path:
    """The base root as a tarball, made with debootstrap unless a verified one is cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"root-{cache_key()}.tar"
    checksum = tarball.with_suffix(".tar.sha256")
    verified = tarball.is_file() and checksum.is_file()
    if verified and checksum.read_text().strip() == _sha256(tarball):
        return tarball
    for stale in CACHE.glob("root-*.tar*"):
        stale.unlink()
    building = CACHE / "building"
    shutil.rmtree(building, ignore_errors=True)
    result = subprocess.run(
        [
            DEBOOTSTRAP,
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE,
            str(building),
            debian_mirror(),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise RootUnavailable(f"debootstrap failed: {result.stderr[-2000:]}")
    partial = tarball.with_suffix(".tar.partial")
    subprocess.run(["tar", "-cf", str(partial), "-C", str(building), "."], check=True)
    shutil.rmtree(building)
    checksum.write_text(_sha256(partial) + "\n")
    partial.rename(tarball)
    return tarball


def make_root(directory: Path) -> Path:
    """A fresh root in `directory`, from the cached tarball, that reaches the network as
    this machine does (its resolv.conf and CA bundle) and starts with the downloads of
    earlier runs (apt's .deb files and pip's HTTP cache; never pip's built wheels, so the
    role's compilers are still put to work)."""
    tarball = cached_tarball()
    directory.mkdir(parents=True)
    subprocess.run(["tar", "-xpf", str(tarball), "-C", str(directory)], check=True)
    if not (directory / "usr/bin/python3").exists():
        raise RootUnavailable(f"{tarball} holds no python3: delete it to rebuild")
    shutil.copy2("/etc/resolv.conf", directory / "etc/resolv.conf", follow_symlinks=True)
    # A proxy that re-signs HTTPS (some CI networks) is trusted here through this bundle.
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.is_file():
        shutil.copy2(bundle, directory / "etc/ssl/certs/ca-certificates.crt")
    _copy_tree(CACHE / "apt-archives", directory / "var/cache/apt/archives")
    _copy_tree(CACHE / "pip", directory / "root/.cache/pip")
    return directory


def keep_downloads(directory: Path) -> None:
    """Keep the root's downloads for the next run."""
    archives = directory / "var/cache/apt/archives"
    (CACHE / "apt-archives").mkdir(parents=True, exist_ok=True)
    for package in archives.glob("*.deb"):
        target = CACHE / "apt-archives" / package.name
        if not target.exists():
            shutil.copy2(package, target)
    _copy_tree(directory / "root/.cache/pip", CACHE / "pip")


def _copy_tree(source: Path, target: Path) -> None:
    """Copy `source` into `target`, leaving pip's built wheels out."""
    if source.is_dir():
        ignore = shutil.ignore_patterns("wheels", "selfcheck*")
        shutil.copytree(source, target, ignore=ignore, dirs_exist_ok=True)


def mounts_under(directory: Path) -> list[str]:
    """Mount points inside `directory` (none unless something mounted /proc or the like)."""
    prefix = str(directory.resolve()) + "/"
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return sorted((point for point in points if point.startswith(prefix)), reverse=True)


def remove_root(directory: Path) -> None:
    """Unmount what is mounted inside the root, then delete it; never delete through a
    mount that would not let go."""
    for point in mounts_under(directory):
        subprocess.run(["umount", "--lazy", point], check=True)
    if mounts_under(directory):
        raise RuntimeError(f"{directory} still has mounts; left in place")
    shutil.rmtree(directory)
