"""`ocpp-edge cards import FILE.csv` and `cards export`: an installer's spreadsheet of
cards into the site's card table in one transaction, every bad line reported."""

from __future__ import annotations

import sqlite3
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


def card_table(config: Path) -> dict[str, tuple[str, str | None, str | None, str | None]]:
    if not (config.parent / "edge.db").exists():
        return {}
    with sqlite3.connect(config.parent / "edge.db") as db:
        rows = db.execute("SELECT id_tag, status, expiry_date, parent_id_tag, label FROM id_tags")
        return {row[0]: row[1:] for row in rows}


def list_version(config: Path) -> int:
    with sqlite3.connect(config.parent / "edge.db") as db:
        return int(db.execute("SELECT version FROM local_list_counter").fetchone()[0])


def test_a_spreadsheet_of_thousands_of_cards_is_imported_and_exported_again(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    # As a spreadsheet in a European locale saves it: a BOM, `;` between cells.
    lines = ["\ufeffid_tag;status;expiry_date;parent_id_tag;label;chargers"]
    lines += [f"CARD{n:05d};Accepted;;FLEET{n % 7};driver {n};" for n in range(5000)]
    lines.append("04:a2:b3:c4;blocked;2027-01-31;;lost, then found;CP1 CP2")
    lines.append("=HYPERLINK(1);Accepted;;;'=label;")
    source = tmp_path / "cards.csv"
    source.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")

    code, out = cli(capsys, config, "cards", "import", str(source))
    assert code == 0, out
    assert "5002 card(s) read: 5002 were added, 0 changed" in out
    table = card_table(config)
    assert len(table) == 5002
    assert table["CARD00042"] == ("Accepted", None, "FLEET0", "driver 42")
    assert table["04A2B3C4"] == ("Blocked", "2027-01-31T00:00:00.000Z", None, "lost, then found")
    code, out = cli(capsys, config, "cards", "list")
    assert "CP1, CP2" in out

    exported = tmp_path / "out.csv"
    assert cli(capsys, config, "cards", "export", str(exported))[0] == 0
    text = exported.read_text()
    assert text.splitlines()[0] == "id_tag,status,expiry_date,parent_id_tag,label,chargers"
    # A cell a spreadsheet would run as a formula is written quoted, and read back whole.
    assert "'=HYPERLINK(1)" in text and "'=label" in text
    assert '04A2B3C4,Blocked,2027-01-31T00:00:00.000Z,,"lost, then found",CP1 CP2' in text

    # The export imported again changes nothing: no card is rewritten, so the chargers'
    # local lists are not sent anything again.
    version = list_version(config)
    code, out = cli(capsys, config, "cards", "import", str(exported))
    assert code == 0 and "0 were added, 0 changed, 5002 already as in the file" in out
    assert list_version(config) == version
    assert card_table(config)["=HYPERLINK(1)"] == ("Accepted", None, None, "=label")


def test_a_file_with_bad_lines_imports_nothing_and_names_each_line(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    source = tmp_path / "cards.csv"
    source.write_text(
        "id_tag,status,expiry_date,label\n"
        "GOOD1,Accepted,,\n"
        "TOOLONG678901234567890,Accepted,,\n"
        "GOOD2,Maybe,,\n"
        "GOOD3,Accepted,someday,\n"
        "GOOD1,Blocked,,\n"
        ",Accepted,,\n"
        "GOOD4,Accepted,,bell\x07\n"
        "\n"
        "GOOD5,,,\n"
    )
    code, out = cli(capsys, config, "cards", "import", str(source))
    assert code == 1
    assert f"{source}:3: id_tag 'TOOLONG678901234567890' is longer than 20" in out
    assert f"{source}:4: status 'Maybe' is not one of Accepted, Blocked, Expired, Invalid" in out
    assert f"{source}:5: expiry_date 'someday' is not an ISO-8601 date" in out
    assert f"{source}:6: GOOD1 is already on line 2" in out
    assert f"{source}:7: id_tag is empty" in out
    assert f"{source}:8: the label holds control characters" in out
    assert "6 bad line(s): nothing imported" in out
    assert card_table(config) == {}

    code, out = cli(capsys, config, "cards", "import", str(source), "--dry-run", "--skip-bad")
    assert code == 1 and "2 card(s) read: 2 would be added" in out
    assert card_table(config) == {}
    code, out = cli(capsys, config, "cards", "import", str(source), "--skip-bad")
    assert code == 1 and "2 were added" in out and "6 bad line(s) skipped" in out
    assert sorted(card_table(config)) == ["GOOD1", "GOOD5"]


def test_a_column_the_file_lacks_leaves_what_the_card_had(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    assert (
        cli(capsys, config, "cards", "add", "C1", "--label", "flat 3", "--charger", "CP9")[0] == 0
    )
    source = tmp_path / "block.csv"
    source.write_text("id_tag,status\nC1,Blocked\nC2,\n")
    code, out = cli(capsys, config, "cards", "import", str(source))
    assert code == 0 and "1 were added, 1 changed" in out
    assert card_table(config) == {
        "C1": ("Blocked", None, None, "flat 3"),
        "C2": ("Accepted", None, None, None),
    }
    assert "CP9" in cli(capsys, config, "cards", "list")[1]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"id_tag\nA\xff\xfe\n", "is not UTF-8 (byte 8): save it as CSV UTF-8"),
        (b"", "the file is empty"),
        (b"card,status\nA,Accepted\n", "names no id_tag column"),
        (b"id_tag,colour\nA,red\n", "unknown column 'colour'"),
        (b"id_tag,label,label\nA,x,y\n", "columns named twice: label"),
        (b'id_tag,label\nA,"open\n', "line 2: unexpected end of data"),
        (b"id_tag\n" + b"A" * (11 * 1024 * 1024), "larger than 10 MiB"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_whole(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path, content: bytes, error: str
) -> None:
    source = tmp_path / "cards.csv"
    source.write_bytes(content)
    code, out = cli(capsys, config, "cards", "import", str(source))
    assert code == 2 and error in out
    assert card_table(config) == {}


def test_the_clouds_export_is_taken_without_its_sites_column(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    source = tmp_path / "fleet.csv"
    source.write_text("id_tag,status,sites,chargers\nF1,Accepted,depot north,CP1|CP3\n")
    code, out = cli(capsys, config, "cards", "import", str(source))
    assert code == 0 and "column 'sites' ignored" in out
    assert "CP1, CP3" in cli(capsys, config, "cards", "list")[1]


async def test_cards_imported_into_a_running_site_are_used_at_once(
    edge: RunningEdge, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "live.toml"
    config.write_text(f'[store]\npath = "{edge.db_path}"\n')
    source = tmp_path / "cards.csv"
    source.write_text("id_tag,status\nIMPORTED1,Accepted\nIMPORTED2,Blocked\n")
    async with RawCharger(edge.url, "CP5") as charger:
        await charger.boot()
        code, out = cli(capsys, config, "cards", "import", str(source))
        assert code == 0, out
        accepted = await charger.ok("Authorize", {"idTag": "IMPORTED1"})
        blocked = await charger.ok("Authorize", {"idTag": "IMPORTED2"})
    assert accepted["idTagInfo"]["status"] == "Accepted"
    assert blocked["idTagInfo"]["status"] == "Blocked"
