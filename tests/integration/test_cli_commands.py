"""The terminal view for a person on site, against a real store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from tests.conftest import RunningEdge
from tests.ocpp_client import RawCharger


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "edge.db"}"\n')
    return path


def cli(capsys: pytest.CaptureFixture[str], config: Path, *words: str) -> tuple[int, str]:
    code = main([*words, "--config", str(config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_cards_add_list_block_unblock(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert (
        cli(capsys, config, "cards", "add", "04A2B3C4", "--label", "flat 12", "--parent", "FLAT12")[
            0
        ]
        == 0
    )
    assert cli(capsys, config, "cards", "add", "OLD1", "--expires", "2020-01-01")[0] == 0
    code, out = cli(capsys, config, "cards", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["IDTAG", "STATUS", "EXPIRES", "PARENT", "CHARGERS", "LABEL"]
    assert "04A2B3C4  Accepted  -" in out and "FLAT12" in out and "flat 12" in out
    assert "2020-01-01T00:00:00.000Z" in out
    assert cli(capsys, config, "cards", "block", "04a2b3c4") == (0, "04a2b3c4: Blocked\n")
    assert "Blocked" in cli(capsys, config, "cards", "list")[1]
    assert cli(capsys, config, "cards", "unblock", "04A2B3C4")[0] == 0
    code, out = cli(capsys, config, "cards", "block", "NOPE")
    assert code == 1 and "no card NOPE" in out
    code, out = cli(capsys, config, "cards", "add", "X" * 21)
    assert code == 2 and "at most 20" in out
    code, out = cli(capsys, config, "cards", "add", "C1", "--expires", "someday")
    assert code == 2 and "not an ISO-8601 date" in out


def test_chargers_add_reject_and_list(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert cli(capsys, config, "chargers", "add", "CP1")[0] == 0
    assert cli(capsys, config, "chargers", "reject", "CP2")[0] == 0
    code, out = cli(capsys, config, "chargers")
    assert code == 0
    assert "CP1      offline  accepted" in out and "CP2      offline  rejected" in out
    code, out = cli(capsys, config, "chargers", "accept")
    assert code == 2 and "needs a CHARGER_ID" in out


def test_reading_a_store_that_does_not_exist(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    for command in (
        ["chargers"],
        ["transactions"],
        ["log"],
        ["security-events"],
        ["cards", "list"],
    ):
        code, out = cli(capsys, config, *command)
        assert code == 2 and "no store at" in out


def test_bad_config_stops_the_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[ocpp]\nport = 0\n")
    code, out = cli(capsys, bad, "chargers")
    assert code == 2 and f"{bad}:2: ocpp.port = 0" in out


async def test_views_of_a_live_site(
    edge: RunningEdge, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "view.toml"
    config.write_text(f'[store]\npath = "{edge.db_path}"\n')
    async with RawCharger(edge.url, "CP7") as charger:
        await charger.boot()
        await charger.ok(
            "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}
        )
        started = await charger.ok(
            "StartTransaction",
            {
                "connectorId": 1,
                "idTag": "CARD",
                "meterStart": 1000,
                "timestamp": "2026-03-01T10:00:00Z",
            },
        )
        await charger.ok(
            "StopTransaction",
            {
                "transactionId": started["transactionId"],
                "meterStop": 13500,
                "timestamp": "2026-03-01T11:00:00Z",
            },
        )
        await charger.ok(
            "SecurityEventNotification",
            {
                "type": "InvalidCentralSystemCertificate",
                "timestamp": "2026-03-01T10:00:00Z",
                "techInfo": "expired",
            },
        )
        code, out = cli(capsys, config, "chargers")
        assert (
            code == 0
            and "CP7" in out
            and "online" in out
            and "TestVendor T1" in out
            and "1:Charging" in out
        )
    code, out = cli(capsys, config, "transactions")
    assert "CP7" in out and "12.500" in out and "Local" in out
    code, out = cli(capsys, config, "security-events", "--charger", "CP7")
    assert "InvalidCentralSystemCertificate" in out and "expired" in out
    code, out = cli(capsys, config, "log", "--charger", "CP7", "--limit", "4")
    assert code == 0 and "SecurityEventNotification" in out and "->" in out and "<-" in out


def test_module_entry_point_runs(config: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "edge", "chargers", "add", "CP9", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0 and "CP9: accepted" in completed.stdout
