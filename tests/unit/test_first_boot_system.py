"""The boot file applied to a system under a temporary root: host name, time zone and
network files, each as the system's own tools expect them."""

from __future__ import annotations

import stat
from pathlib import Path

from edge.first_boot.boot_file import NetworkSection
from edge.first_boot.system import (
    WPA_CONFIG,
    WPA_WANTS_LINK,
    apply_hostname,
    apply_network,
    apply_time_zone,
    check_time_zone,
    in_root,
    kept_wifi_psk,
    user_ids,
    wifi_psk,
)


def test_the_host_name_replaces_debians_own_line(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost\n")
    apply_hostname(tmp_path, "depot-3")
    assert (tmp_path / "etc/hostname").read_text() == "depot-3\n"
    assert (tmp_path / "etc/hosts").read_text() == (
        "127.0.0.1\tlocalhost\n127.0.1.1\tdepot-3\n::1\tlocalhost\n"
    )


def test_the_time_zone_links_localtime_and_names_it(tmp_path: Path) -> None:
    assert check_time_zone(tmp_path, "Europe/Berlin") is not None  # no tzdata in the root
    zone = tmp_path / "usr/share/zoneinfo/Europe/Berlin"
    zone.parent.mkdir(parents=True)
    zone.write_bytes(Path("/usr/share/zoneinfo/Europe/Berlin").read_bytes())
    assert check_time_zone(tmp_path, "Europe/Berlin") is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
    apply_time_zone(tmp_path, "Europe/Berlin")
    assert (tmp_path / "etc/localtime").readlink() == Path("/usr/share/zoneinfo/Europe/Berlin")
    assert (tmp_path / "etc/timezone").read_text() == "Europe/Berlin\n"


def test_utc_needs_no_tzdata(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/localtime").symlink_to("/usr/share/zoneinfo/Europe/Paris")
    assert check_time_zone(tmp_path, "Etc/UTC") is None
    assert "tzdata is not installed" in apply_time_zone(tmp_path, "Etc/UTC")
    assert not (tmp_path / "etc/localtime").is_symlink()
    assert (tmp_path / "etc/timezone").read_text() == "Etc/UTC\n"


def test_the_wifi_key_is_wpa2s_and_the_password_is_written_nowhere(tmp_path: Path) -> None:
    # IEEE 802.11i-2004, annex H.4.1: passphrase "password", SSID "IEEE".
    assert wifi_psk("IEEE", "password") == (
        "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    )
    ssid = 'My "Site"'
    network = NetworkSection(wifi_ssid=ssid, wifi_password="correct horse", wifi_country="DE")
    done = apply_network(tmp_path, network, None)
    config = tmp_path / WPA_CONFIG
    text = config.read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "correct horse" not in text and "country=DE\n" in text
    assert f"\tssid={ssid.encode().hex()}\n" in text
    assert f"\tpsk={wifi_psk(ssid, 'correct horse')}\n" in text
    link = tmp_path / WPA_WANTS_LINK
    assert link.readlink() == Path("/lib/systemd/system/wpa_supplicant@.service")
    wifi = (tmp_path / "etc/systemd/network/20-ocpp-edge-wifi.network").read_text()
    assert "Name=wlan0" in wifi and "DHCP=yes" in wifi
    assert any("Wi-Fi" in line for line in done)
    # A later start without the password keeps the key for the same network.
    assert kept_wifi_psk(tmp_path, ssid) == wifi_psk(ssid, "correct horse")
    assert kept_wifi_psk(tmp_path, "Other") is None


def test_a_fixed_address_goes_to_ethernet_and_removing_wifi_removes_its_files(
    tmp_path: Path,
) -> None:
    apply_network(tmp_path, NetworkSection(wifi_ssid="Open", wifi_country="FR"), None)
    assert "key_mgmt=NONE" in (tmp_path / WPA_CONFIG).read_text()
    network = NetworkSection(address="192.168.1.50/24", gateway="192.168.1.1", dns=["9.9.9.9"])
    apply_network(tmp_path, network, None)
    ethernet = (tmp_path / "etc/systemd/network/10-ocpp-edge-ethernet.network").read_text()
    assert "Address=192.168.1.50/24\nGateway=192.168.1.1\nDNS=9.9.9.9\n" in ethernet
    assert "DHCP" not in ethernet
    assert not (tmp_path / WPA_CONFIG).exists()
    assert not (tmp_path / WPA_WANTS_LINK).is_symlink()


def test_paths_and_users_are_those_of_the_root(tmp_path: Path) -> None:
    assert in_root(tmp_path, Path("/etc/ocpp-edge/config.toml")) == (
        tmp_path / "etc/ocpp-edge/config.toml"
    )
    assert in_root(tmp_path, tmp_path / "x") == tmp_path / "x"
    assert in_root(Path("/"), Path("/etc/x")) == Path("/etc/x")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nocpp-edge:x:998:997::/opt/ocpp-edge:/usr/sbin/nologin\n"
    )
    assert user_ids(tmp_path, "ocpp-edge") == (998, 997)
    assert user_ids(tmp_path, "nobody-here") is None
