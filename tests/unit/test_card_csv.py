"""Card CSV files, read as hostile: the wrong encoding, NUL bytes, huge lines, a broken
quote, duplicates, bad values; each bad line named with its number and why. Exported
cells never run as spreadsheet formulas, and an export reads back as what it wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.card_csv import (
    CsvRefused,
    LineError,
    decode_upload,
    export_lines,
    normalize_expiry,
    parse_card_csv,
)
from contract.protocol import CardEntry

HEADER = "id_tag,status,expiry_date,parent_id_tag,label,sites,chargers\n"


def test_a_good_file_gives_each_cards_fields_and_sites() -> None:
    text = (
        "\ufeffID_TAG, Status ,sites,chargers,expiry_date\n"
        '04A1,blocked,depot-1; depot-2,"CP 1;CP2",2027-01-31\n'
        "\n"
        "04B2,,,,\n"
    )
    parsed = parse_card_csv(decode_upload(text.encode(), 10_000), 10)
    assert parsed.errors == []
    first, second = parsed.rows
    assert (first.line, first.id_tag, first.sites) == (2, "04A1", frozenset({"depot-1", "depot-2"}))
    assert first.fields == {
        "status": "Blocked",
        "chargers": ["CP 1", "CP2"],
        "expiry_date": "2027-01-31T00:00:00Z",
    }
    # Empty cells: status kept, chargers any, no expiry; no sites named.
    assert (second.line, second.fields, second.sites) == (
        4,
        {"chargers": [], "expiry_date": None},
        None,
    )


def test_every_bad_line_is_named_with_its_number_and_why() -> None:
    text = HEADER + "\n".join(
        [
            "OK1,Accepted,,,,,",  # 2
            ",Accepted,,,,,",  # 3
            "X" * 21 + ",,,,,,",  # 4
            "OK2,Lost,,,,,",  # 5
            "OK3,,31/01/2027,,,,",  # 6
            "OK4,,,,,not a site!,",  # 7
            "ok1,,,,,,",  # 8: OK1 again
            "OK5,,,,,",  # 9: a cell short
            "OK6,,,,\x07bell,,",  # 10
            "OK7,,," + "P" * 21 + ",,,",  # 11
            "OK8,,,,,depot-1,",  # 12
            "OK8,,,,,depot-2,",  # 13: another site: fine
            "OK8,,,,,depot-2,",  # 14: depot-2 again
        ]
    )
    parsed = parse_card_csv(text, 100)
    assert [row.id_tag for row in parsed.rows] == ["OK1", "OK8", "OK8"]
    assert [error.line for error in parsed.errors] == [3, 4, 5, 6, 7, 8, 9, 10, 11, 14]
    reasons = dict((error.line, error.reason) for error in parsed.errors)
    assert reasons[3] == "no id_tag"
    assert "1 to 20 characters" in reasons[4]
    assert "not one of Accepted, Blocked, Expired, Invalid" in reasons[5]
    assert "not a date or time" in reasons[6]
    assert "not a site id" in reasons[7]
    assert reasons[8].startswith("card ok1 is on line 2 already")
    assert reasons[9] == "6 cells where the header names 7"
    assert reasons[10] == "label holds control characters"
    assert "parent_id_tag" in reasons[11]
    assert reasons[14].startswith("card OK8 is on line 13 already")


def test_a_file_in_another_encoding_is_refused_with_the_line() -> None:
    latin1 = (HEADER + "OK1,,,,Müller,,\n").encode("latin-1")
    with pytest.raises(CsvRefused, match=r"line 2 is not UTF-8 \(byte 0xfc\)"):
        decode_upload(latin1, 10_000)
    utf16 = (HEADER + "OK1,,,,,,\n").encode("utf-16")
    with pytest.raises(CsvRefused, match="not UTF-8"):
        decode_upload(utf16, 10_000)
    with pytest.raises(CsvRefused, match="NUL byte"):
        decode_upload(b"id_tag\nA\x00B\n", 10_000)
    with pytest.raises(CsvRefused, match="more than 100"):
        decode_upload(b"x" * 101, 100)
    with pytest.raises(CsvRefused, match="empty"):
        decode_upload(b"\xef\xbb\xbf \r\n", 100)


def test_huge_lines_and_broken_quotes_are_bad_lines_not_a_crash() -> None:
    huge_cell = "A" * 70_000
    many_cells = ",".join(["x" * 20_000] * 4)
    text = (
        "id_tag,label\n"
        f"OK1,{huge_cell}\n"  # 2: one cell over the line's bound
        f"OK2,fine\n"  # 3
        f"{many_cells}\n"  # 4: cells the header lacks, and too long
        'OK3,"never closed\n'  # 5: the quote runs to the end of the file
    )
    parsed = parse_card_csv(text, 100)
    assert [row.id_tag for row in parsed.rows] == ["OK2"]
    assert [error.line for error in parsed.errors] == [2, 4, 5]
    assert parsed.errors[0] == LineError(2, "longer than 65536 characters")
    assert "the lines after it were not read" in parsed.errors[2].reason
    field_past_csv_limit = "id_tag,label\nOK1," + '"' + "B" * 200_000 + '"\nOK2,x\n'
    parsed = parse_card_csv(field_past_csv_limit, 100)
    assert parsed.rows == [] and parsed.errors[0].line == 2


def test_headers_that_cannot_be_read_refuse_the_file() -> None:
    for header, message in [
        ("label,status\n", "no id_tag column"),
        ("id_tag,colour\n", "unknown column 'colour'"),
        ("id_tag,label,LABEL\n", "names a column twice"),
    ]:
        with pytest.raises(CsvRefused, match=message):
            parse_card_csv(header + "A,b\n", 10)


def test_too_many_rows_refuse_the_file() -> None:
    text = "id_tag\n" + "".join(f"C{n}\n" for n in range(11))
    with pytest.raises(CsvRefused, match=r"more than 10 cards \(line 12\)"):
        parse_card_csv(text, 10)


def test_formula_cells_are_neutralised_on_export_and_read_back_as_they_were() -> None:
    entries = {
        "depot-1": CardEntry(id_tag="=cmd", label='=HYPERLINK("http://x")', chargers=["-1"]),
        "depot-2": CardEntry(id_tag="=cmd", label='=HYPERLINK("http://x")', chargers=["-1"]),
        "depot-3": CardEntry(id_tag="=cmd", status="Blocked", parent_id_tag="@acc"),
    }
    text = "".join(export_lines([("=cmd", entries)]))
    lines = text.splitlines()
    assert lines[0] == HEADER.strip()
    assert lines[1] == '\'=cmd,Accepted,,,"\'=HYPERLINK(""http://x"")",depot-1;depot-2,\'-1'
    assert lines[2] == "'=cmd,Blocked,,'@acc,,depot-3,"
    assert not any(
        cell.startswith(("=", "+", "-", "@")) for line in lines for cell in line.split(",")
    )
    parsed = parse_card_csv(text, 10)
    assert parsed.errors == []
    back = [(row.id_tag, row.sites, row.fields) for row in parsed.rows]
    assert back == [
        (
            "=cmd",
            frozenset({"depot-1", "depot-2"}),
            {
                "status": "Accepted",
                "expiry_date": None,
                "parent_id_tag": None,
                "label": '=HYPERLINK("http://x")',
                "chargers": ["-1"],
            },
        ),
        (
            "=cmd",
            frozenset({"depot-3"}),
            {
                "status": "Blocked",
                "expiry_date": None,
                "parent_id_tag": "@acc",
                "label": None,
                "chargers": [],
            },
        ),
    ]


def test_expiry_dates_are_kept_in_utc() -> None:
    assert normalize_expiry("2027-01-31") == "2027-01-31T00:00:00Z"
    assert normalize_expiry("2027-01-31T18:00:00+02:00") == "2027-01-31T16:00:00Z"
    assert normalize_expiry("2027-01-31t18:00:00z") == "2027-01-31T18:00:00Z"
    assert normalize_expiry(" ") == ""


def test_the_documented_example_file_reads_without_a_bad_line() -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "cards-example.csv"
    parsed = parse_card_csv(decode_upload(example.read_bytes(), 10_000), 100)
    assert parsed.errors == [] and len(parsed.rows) == 4
    assert parsed.rows[0].sites == frozenset({"depot-1", "depot-2"})


def test_a_spreadsheets_semicolons_or_tabs_separate_cells_when_the_header_has_no_comma() -> None:
    for mark in (";", "\t"):
        text = f'id_tag{mark}label{mark}sites\nA1{mark}van{mark}"depot-1;depot-2"\n'
        (row,) = parse_card_csv(text, 10).rows
        assert (row.id_tag, row.fields, row.sites) == (
            "A1",
            {"label": "van"},
            frozenset({"depot-1", "depot-2"}),
        )
