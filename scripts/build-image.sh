#!/usr/bin/env bash
# Build the flashable ocpp-edge image for Raspberry Pi 3, 4 and CM4 (Debian bookworm, arm64):
#
#   sudo scripts/build-image.sh [--output DIR] [--mirror URL] [--work DIR] [--no-compress]
#                               [--wheel FILE [--constraints FILE]]
#                               [--expect-manifest FILE] [--reuse-root DIR]
#
# 1. mmdebstrap makes an arm64 root of Debian's own packages (image/packages.txt), the way
#    Debian's Raspberry Pi images are made: Debian's kernel and raspi-firmware.
# 2. The image's own files (image/rootfs/) and the Pi's boot settings go in.
# 3. The same Ansible role that provisions a running Pi (ansible/roles/ocpp_edge) is applied
#    to the root through the chroot connection: one source of truth for what a device holds.
#    Python distributions at the versions of constraints.txt (or --constraints, the file
#    published with a --wheel of another release).
# 4. Whatever must differ per device (machine-id, ssh host keys) is removed; first boot
#    makes it (docs/installing.md, "First boot").
# 5. The root is packed into a partitioned image without loop devices: a FAT boot
#    partition (mkfs.vfat + mtools) and an ext4 root (mkfs.ext4 -d), laid out with sfdisk.
#
# Writes to DIR (default dist/image): ocpp-edge-VERSION-arm64.img, .img.xz, SHA256SUMS and
# ocpp-edge-VERSION-arm64.manifest (every Debian package and Python distribution with its
# version; --expect-manifest fails the build when a build's differs). Needs root,
# mmdebstrap, sfdisk, mkfs.vfat, mtools, xz, and on a non-arm64 machine qemu-user-static
# with binfmt_misc (scripts/setup.sh --dev installs and registers them).
set -euo pipefail
cd "$(dirname "$0")/.."
repository=$(pwd)

output=dist/image
mirror=""
wheel=""
constraints=$repository/constraints.txt
work=""
compress=1
expect_manifest=""
reuse_root=""
while [ $# -gt 0 ]; do
    case "$1" in
        --output) output=$2; shift 2 ;;
        --mirror) mirror=$2; shift 2 ;;
        --wheel) wheel=$2; shift 2 ;;
        --constraints) constraints=$(realpath "$2"); shift 2 ;;
        --work) work=$2; shift 2 ;;
        --no-compress) compress=0; shift ;;
        --expect-manifest) expect_manifest=$2; shift 2 ;;
        --reuse-root) reuse_root=$2; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "build-image: unknown option $1 (--help lists them)" >&2; exit 2 ;;
    esac
done

SUITE=bookworm
BOOT_MIB=256
# The boot partition starts at 4 MiB, where Debian's Raspberry Pi images start theirs.
BOOT_START_MIB=4
# Free room on the root before first boot grows it to the card.
ROOT_SPARE_MIB=384
# The big compiled dependencies come as aarch64 wheels: if one went missing from PyPI, pip
# would compile it under emulation for an hour; this makes it fail at once instead.
ONLY_BINARY=cryptography,pydantic-core,pydantic_core,rpds-py,rpds_py,websockets,orjson,jsonschema-rs,jsonschema_rs,fastjsonschema,cffi,charset-normalizer
# Fixed identifiers and times: the same inputs give the same file systems' metadata.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 315532800)}
BOOT_VOLUME_ID=0x0ced9e01
ROOT_UUID=6f637070-6564-4765-8000-000000000001
ROOT_HASH_SEED=6f637070-6564-4765-8000-000000000002

say() { printf '== %s (%ss)\n' "$*" "$SECONDS"; }
fail() { echo "build-image: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (mmdebstrap and chroot need it)"
for tool in mmdebstrap sfdisk mkfs.vfat mcopy mkfs.ext4 xz sha256sum; do
    command -v "$tool" >/dev/null || fail "$tool is missing: scripts/setup.sh --dev installs it"
done
if [ "$(dpkg --print-architecture)" != arm64 ]; then
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
        || fail "arm64 programs cannot run here: install qemu-user-static and binfmt-support, and mount binfmt_misc (scripts/setup.sh --dev does)"
fi
[ -x .venv/bin/ansible-playbook ] || fail ".venv/bin/ansible-playbook is missing: scripts/setup.sh --dev"

if [ -z "$mirror" ]; then
    # The mirror this machine's apt uses, as the tests' Debian roots do.
    mirror=$(.venv/bin/python -c 'from tests.debian_root import debian_mirror; print(debian_mirror())' 2>/dev/null \
        || echo http://deb.debian.org/debian)
fi
security_mirror=${mirror%/debian}/debian-security
[ "$security_mirror" = "$mirror-security" ] && security_mirror=http://deb.debian.org/debian-security

mkdir -p "$output"
output=$(cd "$output" && pwd)
# --work DIR keeps the root, the partitions and the logs there for a look afterwards.
keep_work=0
if [ -n "$work" ]; then
    keep_work=1
    [ ! -e "$work/root" ] || fail "$work/root exists: give an empty --work directory"
    mkdir -p "$work"
    work=$(cd "$work" && pwd)
else
    work=$(mktemp -d "${TMPDIR:-/var/tmp}/ocpp-edge-image.XXXXXX")
fi
root=$work/root
cleanup() {
    # Nothing may stay mounted inside the root before it is deleted.
    for point in $(awk -v root="$root/" 'index($2, root) == 1 {print $2}' /proc/self/mounts | sort -r); do
        umount --lazy "$point" || true
    done
    if [ "$keep_work" -eq 1 ]; then
        echo "build-image: the root, partitions and logs are kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

[ -f "$constraints" ] || fail "no constraints file at $constraints"
if [ -z "$wheel" ]; then
    say "building the project's wheel"
    wheel=$(.venv/bin/python ansible/roles/ocpp_edge/files/build_wheel.py "$repository" "$work/wheel")
fi
version=$(basename "$wheel" | sed -E 's/^ocpp_edge-([^-]+)-.*/\1/')
name=ocpp-edge-$version-arm64

# -- 1. the root --------------------------------------------------------------------------
packages=$(sed -e 's/#.*//' image/packages.txt | tr -s ' \n' ',' | sed -e 's/^,//' -e 's/,$//')
# Under emulation one initramfs takes minutes, and every package with an initramfs hook
# (firmware, udev, kmod) would make it again: update-initramfs does nothing until the root
# is complete, then runs once (step 4).
initramfs_later='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
printf "#!/bin/sh\n# made once at the end of the image build\nexit 0\n" > "$1/usr/sbin/update-initramfs"
chmod 0755 "$1/usr/sbin/update-initramfs"'
if [ -n "$reuse_root" ]; then
    # For work on the role or the packing: an earlier build's root (--work DIR/root),
    # copied, instead of a new one. Never for a release: its packages are not refreshed.
    say "copying the root of an earlier build: $reuse_root"
    [ -x "$reuse_root/usr/bin/python3" ] || fail "$reuse_root is not a root an earlier build kept"
    mkdir -p "$root"
    cp -a "$reuse_root/." "$root/"
else
    say "mmdebstrap: Debian $SUITE arm64 from $mirror"
    mmdebstrap --arch=arm64 --variant=minbase --components=main,non-free-firmware \
        --include="$packages" \
        --setup-hook='mkdir -p "$1/boot/firmware"' \
        --setup-hook="cp -r '$repository/image/rootfs/.' \"\$1/\"" \
        --essential-hook='echo "ocpp-edge" > "$1/etc/hostname"' \
        --essential-hook="$initramfs_later" \
        "$SUITE" "$root" \
        "deb $mirror $SUITE main non-free-firmware" \
        "deb $mirror $SUITE-updates main non-free-firmware" \
        "deb $security_mirror $SUITE-security main non-free-firmware"
fi

# -- 2. boot settings -------------------------------------------------------------------
say "boot settings: root by label, the kernel and device trees on the FAT partition"
# raspi-firmware writes cmdline.txt with this root= and copies the kernel, initrd and device
# trees to /boot/firmware from its kernel hook, run again here with the setting in place.
sed -i -e 's|^#\?ROOTPART=.*|ROOTPART=LABEL=RASPIROOT|' "$root/etc/default/raspi-firmware"
chroot "$root" systemctl enable systemd-networkd systemd-resolved systemd-timesyncd ssh
# The file the installer edits on any laptop (docs/installing.md, "First boot").
cp image/ocpp-edge.toml "$root/boot/firmware/ocpp-edge.toml"

# -- 3. the Ansible role ------------------------------------------------------------------
say "the Ansible role, through the chroot connection"
# apt and pip inside the root reach the network as this machine does, for the build only.
cp --remove-destination /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$root/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cat > "$work/inventory.json" <<EOF
{"ocpp_edges": {"hosts": {"$root": {"ansible_connection": "community.general.chroot",
  "ansible_python_interpreter": "/usr/bin/python3"}}}}
EOF
cat > "$work/variables.json" <<EOF
{"ocpp_edge_start_service": false, "ocpp_edge_first_boot": true, "ocpp_edge_wheel": "$wheel",
 "ocpp_edge_wheel_build_dir": "$work/wheel", "ocpp_edge_constraints_file": "$constraints"}
EOF
# pip's pointers to this machine's own package folders mean nothing inside the root.
(cd ansible && env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL \
    PIP_ONLY_BINARY="$ONLY_BINARY" ANSIBLE_NOCOLOR=1 PATH="$repository/.venv/bin:$PATH" \
    "$repository/.venv/bin/ansible-playbook" -i "$work/inventory.json" \
    -e "@$work/variables.json" site.yml) > "$work/ansible.log" 2>&1 \
    || { tail -n 60 "$work/ansible.log" >&2; fail "the Ansible role failed (log above)"; }
grep -A3 'PLAY RECAP' "$work/ansible.log"

# -- 4. nothing per device baked in ---------------------------------------------------------
say "the initramfs, once, and the kernel, initrd and device trees on the boot partition"
kernel=$(basename "$(ls -d "$root"/lib/modules/* | sort -V | tail -n 1)")
# raspi-firmware's hooks copy to /boot/firmware only where they see a chroot (ischroot,
# which reads /proc) or a mounted boot partition.
mount -t proc proc "$root/proc"
if [ -n "$(chroot "$root" dpkg-divert --list /usr/sbin/update-initramfs)" ]; then
    rm "$root/usr/sbin/update-initramfs"
    chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
    chroot "$root" update-initramfs -c -k "$kernel"
fi
# The hook acts only as a package's configure step would call it.
chroot "$root" env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware "$kernel"
umount "$root/proc"
grep -q 'root=LABEL=RASPIROOT' "$root/boot/firmware/cmdline.txt" \
    || fail "cmdline.txt does not name the root by label: $(cat "$root/boot/firmware/cmdline.txt")"
[ -s "$root/boot/firmware/initrd.img-$kernel" ] || [ -s "$root/boot/firmware/initrd.img" ] \
    || fail "no initrd on the boot partition: $(ls "$root/boot/firmware")"

say "clearing what each device makes for itself"
# An empty machine-id: systemd makes one at first boot (and ConditionFirstBoot= holds).
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
# The CA bundle stays Debian's own, rebuilt from its packages.
chroot "$root" update-ca-certificates --fresh >/dev/null
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/root/.cache "$root"/tmp/* "$root"/var/tmp/*
find "$root/var/log" -type f -exec truncate -s 0 {} +

say "the manifest: every package and version"
{
    echo "# $name: Debian packages (dpkg) and the daemon's Python distributions (pip)"
    chroot "$root" dpkg-query -W -f '${Package}=${Version}\n' | sort
    chroot "$root" /opt/ocpp-edge/venv/bin/python -m pip list --format=freeze 2>/dev/null | sort | sed 's/^/pip:/'
} > "$output/$name.manifest"
if [ -n "$expect_manifest" ]; then
    diff -u "$expect_manifest" "$output/$name.manifest" \
        || fail "the package set differs from $expect_manifest (diff above)"
fi

# -- 5. the image file --------------------------------------------------------------------
say "packing the partitions"
boot_image=$work/boot.vfat
root_image=$work/root.ext4
rm -f "$boot_image"
mkfs.vfat -F 32 -n RASPIFIRM -i "${BOOT_VOLUME_ID#0x}" -C "$boot_image" $((BOOT_MIB * 1024)) >/dev/null
mcopy -s -p -m -i "$boot_image" "$root"/boot/firmware/* ::
# The boot partition is mounted over /boot/firmware; the root keeps it empty.
mkdir -p "$work/firmware-moved"
mv "$root"/boot/firmware/* "$work/firmware-moved/"
used_mib=$(du -s --block-size=1M -x "$root" | cut -f1)
root_mib=$(( used_mib + used_mib / 5 + ROOT_SPARE_MIB ))
rm -f "$root_image"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -L RASPIROOT -U "$ROOT_UUID" \
    -E "hash_seed=$ROOT_HASH_SEED" -d "$root" "$root_image" "${root_mib}M"
mv "$work"/firmware-moved/* "$root/boot/firmware/"

image=$output/$name.img
total_mib=$(( BOOT_START_MIB + BOOT_MIB + root_mib ))
rm -f "$image"
truncate -s "${total_mib}M" "$image"
sfdisk --quiet "$image" <<EOF
label: dos
label-id: 0x6f637070
start=${BOOT_START_MIB}MiB, size=${BOOT_MIB}MiB, type=c, bootable
start=$(( BOOT_START_MIB + BOOT_MIB ))MiB, type=83
EOF
dd if="$boot_image" of="$image" bs=1M seek="$BOOT_START_MIB" conv=notrunc,fsync status=none
dd if="$root_image" of="$image" bs=1M seek=$(( BOOT_START_MIB + BOOT_MIB )) conv=notrunc,fsync status=none

cd "$output"
if [ "$compress" -eq 1 ]; then
    say "compressing"
    xz --threads=0 -6 --keep --force "$name.img"
    sha256sum "$name.img" "$name.img.xz" > SHA256SUMS
else
    sha256sum "$name.img" > SHA256SUMS
fi
say "done"
ls -l --block-size=M "$name".*
cat SHA256SUMS
