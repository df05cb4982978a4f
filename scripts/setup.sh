#!/usr/bin/env bash
# Set up ocpp-edge on a Debian machine: system packages, then .venv with the project.
#   scripts/setup.sh          the edge daemon (the `edge` extra: OCPP, store, readers)
#   scripts/setup.sh --cloud  the cloud aggregator (the `cloud` extra: no reader drivers)
#   scripts/setup.sh --dev    both, and what the tests, linters and benchmarks need
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
cloud=0
[ "${1:-}" = "--dev" ] && dev=1
[ "${1:-}" = "--cloud" ] && cloud=1

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages=()
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv python3-pip)
command -v python3 >/dev/null || packages+=(python3)
if [ "$cloud" -eq 0 ]; then
    # evdev and spidev compile against the kernel's headers; nfcpy opens USB readers with libusb.
    command -v gcc >/dev/null || packages+=(gcc)
    [ -e /usr/include/linux/input.h ] || packages+=(linux-libc-dev)
    python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' 2>/dev/null \
        || packages+=(python3-dev)
    ldconfig -p 2>/dev/null | grep -q libusb-1.0 || packages+=(libusb-1.0-0)
fi
# systemd-python (journald, sd_notify) builds against libsystemd.
if command -v systemctl >/dev/null || [ "$dev" -eq 1 ]; then
    [ -e /usr/include/systemd/sd-daemon.h ] || packages+=(libsystemd-dev)
    command -v pkg-config >/dev/null || packages+=(pkg-config)
fi
if [ "$dev" -eq 1 ]; then
    # The tests: their own mosquitto and PostgreSQL servers, systemd-analyze for the unit,
    # debootstrap for the root the Ansible role is applied to.
    command -v systemd-analyze >/dev/null || packages+=(systemd)
    command -v debootstrap >/dev/null || packages+=(debootstrap)
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || packages+=(mosquitto)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
    # The web view's browser tests drive Debian's Chromium through Playwright.
    [ -x /usr/bin/chromium ] || packages+=(chromium)
    # bench/instructions.py counts a server's instructions under callgrind.
    command -v valgrind >/dev/null || packages+=(valgrind)
    # The flashable image (scripts/build-image.sh): an arm64 root run under qemu-user,
    # packed into partitions without loop devices.
    command -v mmdebstrap >/dev/null || packages+=(mmdebstrap)
    [ -x /usr/bin/qemu-aarch64-static ] || packages+=(qemu-user-static binfmt-support)
    command -v sfdisk >/dev/null || [ -x /usr/sbin/sfdisk ] || packages+=(fdisk)
    command -v mkfs.vfat >/dev/null || [ -x /usr/sbin/mkfs.vfat ] || packages+=(dosfstools)
    command -v mcopy >/dev/null || packages+=(mtools)
    command -v xz >/dev/null || packages+=(xz-utils)
    command -v arch-test >/dev/null || packages+=(arch-test)
    # The image's own systemd boots in a container for its first-boot test.
    command -v systemd-nspawn >/dev/null || packages+=(systemd-container)
fi
if [ "${#packages[@]}" -gt 0 ]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
fi

if [ "$dev" -eq 1 ] && [ "$(dpkg --print-architecture 2>/dev/null)" != arm64 ]; then
    # arm64 programs run through qemu once binfmt_misc knows it (a fresh machine may not have
    # the file system mounted; a container may not allow it, and the image tests say so).
    [ -e /proc/sys/fs/binfmt_misc/register ] \
        || as_root mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
        || as_root update-binfmts --enable qemu-aarch64 2>/dev/null || true
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# The exact versions of constraints.txt (scripts/pin-dependencies.sh), pip's own too: CI, a
# developer and a device get the same set.
pip=(.venv/bin/python -m pip install -q --constraint constraints.txt)
"${pip[@]}" pip
deployable=edge
[ "$cloud" -eq 1 ] && deployable=cloud
if [ "$dev" -eq 1 ]; then
    "${pip[@]}" -e '.[dev]'
elif [ -e /usr/include/systemd/sd-daemon.h ]; then
    "${pip[@]}" -e ".[$deployable,systemd]"
else
    "${pip[@]}" -e ".[$deployable]"
fi
