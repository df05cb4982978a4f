"""The boot partition's `ocpp-edge.toml`: the shipped example reads as the defaults, a
wrong value names its key and line, and the file rewritten without its secrets keeps
every other value."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from contract.config_files import ConfigError
from edge.first_boot.boot_file import (
    BootFile,
    read_boot_file,
    rewritten_without_secrets,
    without_keys,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "image" / "ocpp-edge.toml"

CA = """-----BEGIN CERTIFICATE-----
MIIBszCCAVmgAwIBAgIUQ
-----END CERTIFICATE-----"""


def boot_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ocpp-edge.toml"
    path.write_text(text)
    return path


def test_the_shipped_example_reads_as_the_defaults() -> None:
    boot, _ = read_boot_file(EXAMPLE)
    assert boot.site.hostname == "ocpp-edge" and boot.site.time_zone == "Etc/UTC"
    assert boot.cloud.url is None and boot.cloud.enrollment_code is None
    assert boot.chargers.unknown == "pending"
    assert boot == BootFile(site={"name": "My site"})


def test_every_key_of_the_model_is_in_the_example_with_a_comment() -> None:
    text = EXAMPLE.read_text()
    for section, model in BootFile.model_fields.items():
        assert f"[{section}]" in text
        annotation = model.annotation
        assert annotation is not None
        for key in annotation.model_fields:
            assert f"\n{key} = " in text or f"\n# {key} = " in text, f"{section}.{key}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[site]\nname = "x"\ntime_zone = "Mars/Olympus"\n', ":3: site.time_zone = 'Mars/Olympus'"),
        ('[site]\ntime_zone = "../../etc/passwd"\n', ":2: site.time_zone"),
        ('[site]\n\nhostname = "my_box"\n', ":3: site.hostname = 'my_box'"),
        (
            '[network]\nwifi_password = "12345678"\n',
            ":2: network.wifi_password = '(hidden)': Value error, a wifi_password",
        ),
        ('[network]\nwifi_ssid = "Site"\n', "Wi-Fi needs wifi_country"),
        ('[network]\naddress = "10.0.0.300/24"\n', ":2: network.address"),
        ('[cloud]\nenrollment_code = "ABCD"\n', "an enrollment_code needs the cloud's url"),
        ('[cloud]\nurl = "ftp://x"\n', ":2: cloud.url = 'ftp://x'"),
        ('[cloud]\nurl = "https://c"\nca = "/etc/shadow"\n', ":3: cloud.ca"),
        ('[chargers]\nunknown = "maybe"\n', ":2: chargers.unknown = 'maybe'"),
        ('[cards]\ncsv = "../cards.csv"\n', ":2: cards.csv"),
        ('[site]\nnmae = "x"\n', ":2: site.nmae = 'x': Extra inputs are not permitted"),
        ('[site\nname = "x"\n', "not valid TOML"),
    ],
)
def test_a_wrong_value_names_its_key_and_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        read_boot_file(boot_file(tmp_path, text))
    assert expected in str(raised.value)


def test_a_file_that_is_not_utf8_or_too_big_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ocpp-edge.toml"
    path.write_bytes(b'[site]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_boot_file(path)
    path.write_text("# " + "x" * 300_000)
    with pytest.raises(ConfigError, match="larger than"):
        read_boot_file(path)


def test_notepads_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "ocpp-edge.toml"
    path.write_bytes('\ufeff[site]\nname = "Depot"\n'.encode())
    assert read_boot_file(path)[0].site.name == "Depot"


def test_the_secrets_are_replaced_by_a_note_and_everything_else_stays(tmp_path: Path) -> None:
    text = (
        '[site]\nname = "Depot"\n\n[cloud]\nurl = "https://cloud.example"\n'
        'enrollment_code = "ABCD-EFGH"   # from the operator\n'
        f"ca = '''\n{CA}\n'''\n\n[network]\nwifi_ssid = \"Depot\"\n"
        'wifi_password = "secret-password"\nwifi_country = "DE"\n'
    )
    before, _ = read_boot_file(boot_file(tmp_path, text))
    replaced = without_keys(
        text,
        {
            ("cloud", "enrollment_code"): "moved to A",
            ("cloud", "ca"): "moved to B",
            ("network", "wifi_password"): "moved to C",
        },
    )
    assert "ABCD-EFGH" not in replaced and "secret-password" not in replaced
    assert "BEGIN CERTIFICATE" not in replaced and "MIIB" not in replaced
    assert "# enrollment_code: moved to A\n" in replaced
    assert "# ca: moved to B\n" in replaced and "# wifi_password: moved to C\n" in replaced
    after = BootFile(**tomllib.loads(replaced))
    assert after.without_secrets() == before.without_secrets()
    assert after.cloud.enrollment_code is None and after.network.wifi_password is None


def test_an_error_never_shows_a_secret(tmp_path: Path) -> None:
    text = (
        '[cloud]\nenrollment_code = "SECRET-CODE-1"\n[network]\nwifi_password = "x\'quoted pass"\n'
    )
    with pytest.raises(ConfigError) as raised:
        read_boot_file(boot_file(tmp_path, text))
    message = str(raised.value)
    assert "cloud.enrollment_code = '(hidden)'" in message and ":2:" in message
    assert "network.wifi_password = " in message and ":4:" in message
    assert "SECRET-CODE-1" not in message and "quoted pass" not in message


def test_a_secret_written_as_a_dotted_key_is_found_still_there(tmp_path: Path) -> None:
    text = 'cloud.url = "https://c"\ncloud.enrollment_code = "ABCD-EFGH"\n'
    boot, _ = read_boot_file(boot_file(tmp_path, text))
    replaced = without_keys(text, {("cloud", "enrollment_code"): "moved"})
    assert "ABCD-EFGH" in replaced
    assert not rewritten_without_secrets(replaced, boot)
    plain = '[cloud]\nurl = "https://c"\nenrollment_code = "ABCD-EFGH"\n'
    boot, _ = read_boot_file(boot_file(tmp_path, plain))
    assert rewritten_without_secrets(
        without_keys(plain, {("cloud", "enrollment_code"): "moved"}), boot
    )
