"""Card lists as CSV, both ways (pure: text in, rows and errors out).

Columns (a header line names them, in any order; only `id_tag` is required):
`id_tag, status, expiry_date, parent_id_tag, label, sites, chargers`. `sites` and
`chargers` hold ids separated by ";". A column that is absent leaves that field of an
existing card as it is; a cell that is empty clears it (`status`: keeps it, Accepted for a
new card; `sites`: keeps the card's sites, every site of the import's scope for a new one;
`chargers`: any charger). A card may take several lines when each names its own sites
(the export writes a card whose sites differ that way).

Cells are separated by "," (or by ";" or a tab, when the header line has no ","). The
file is UTF-8 (a byte order mark is allowed), at most `cards.max_import_bytes` and
`cards.max_import_rows`; every bad line is reported with its number and why, and a file
with any is not applied. On export every text cell that a spreadsheet would run as a
formula (=, +, -, @, tab, return first) starts with an apostrophe, which an import
removes again.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from contract.protocol import EDGE_ID_PATTERN, ID_TAG_PATTERN

COLUMNS = ("id_tag", "status", "expiry_date", "parent_id_tag", "label", "sites", "chargers")
FIELD_COLUMNS = ("status", "expiry_date", "parent_id_tag", "label", "chargers")
STATUSES = ("Accepted", "Blocked", "Expired", "Invalid")
SEPARATOR = ";"
# One line's characters at most (a card's cells are far shorter; chargers at most 1,000).
MAX_LINE_CHARS = 65_536
MAX_LABEL = 200
MAX_CHARGERS = 1000
MAX_CHARGER_ID = 255
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class CsvRefused(ValueError):
    """The whole file is refused (too large, not UTF-8, no usable header); says why."""


@dataclass(frozen=True)
class LineError:
    line: int
    reason: str


@dataclass(frozen=True)
class CardRow:
    """One line: the card, the fields its columns set, and its sites (None: not named)."""

    line: int
    id_tag: str
    fields: dict[str, Any]
    sites: frozenset[str] | None


@dataclass(frozen=True)
class ParsedCsv:
    rows: list[CardRow]
    errors: list[LineError]
    columns: tuple[str, ...]


def decode_upload(data: bytes, max_bytes: int) -> str:
    """The file's text; CsvRefused when it is too large or not UTF-8 text."""
    if len(data) > max_bytes:
        raise CsvRefused(f"the file is {len(data)} bytes, more than {max_bytes}: split it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise CsvRefused(
            f"line {line} is not UTF-8 (byte 0x{data[error.start]:02x}): save the file as UTF-8 CSV"
        ) from error
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise CsvRefused(f"line {line} holds a NUL byte: this is not a text file")
    if not text.strip():
        raise CsvRefused("the file is empty: the first line names the columns")
    return text


def parse_card_csv(text: str, max_rows: int) -> ParsedCsv:
    """Every line of the file checked; rows of the good ones, errors of the others."""
    header_line = text.split("\n", 1)[0]
    # Spreadsheets set to a decimal comma write ";" between cells, some a tab.
    delimiter = next((mark for mark in (",", ";", "\t") if mark in header_line), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as error:
        raise CsvRefused(f"line 1 is not a CSV header: {error}") from error
    columns = tuple(cell.strip().lower() for cell in header)
    _check_header(columns)
    rows: list[CardRow] = []
    errors: list[LineError] = []
    first_lines: dict[str, list[tuple[int, frozenset[str] | None]]] = {}
    count = 0
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            errors.append(LineError(line, f"{error}; the lines after it were not read"))
            break
        if not any(cell.strip() for cell in cells):
            continue
        count += 1
        if count > max_rows:
            raise CsvRefused(f"more than {max_rows} cards (line {line}): split the file")
        if sum(len(cell) for cell in cells) > MAX_LINE_CHARS:
            errors.append(LineError(line, f"longer than {MAX_LINE_CHARS} characters"))
            continue
        if len(cells) != len(columns):
            errors.append(
                LineError(line, f"{len(cells)} cells where the header names {len(columns)}")
            )
            continue
        try:
            cleaned = (_unescape(cell.strip()) for cell in cells)
            row = _row(line, dict(zip(columns, cleaned, strict=True)))
        except ValueError as error:
            errors.append(LineError(line, str(error)))
            continue
        key = row.id_tag.upper()
        earlier = first_lines.setdefault(key, [])
        clash = next(
            (
                first
                for first, sites in earlier
                if sites is None or row.sites is None or sites & row.sites
            ),
            None,
        )
        if clash is not None:
            errors.append(
                LineError(
                    line,
                    f"card {row.id_tag} is on line {clash} already (a card on several lines "
                    "names different sites on each)",
                )
            )
            continue
        earlier.append((line, row.sites))
        rows.append(row)
    return ParsedCsv(rows, errors, columns)


def _check_header(columns: Sequence[str]) -> None:
    unknown = [column for column in columns if column not in COLUMNS]
    if unknown:
        raise CsvRefused(
            f"line 1: unknown column {unknown[0][:40]!r}; the columns are {', '.join(COLUMNS)}"
        )
    if len(set(columns)) != len(columns):
        raise CsvRefused("line 1 names a column twice")
    if "id_tag" not in columns:
        raise CsvRefused("line 1 has no id_tag column: it names the columns, id_tag first")


def _row(line: int, cells: Mapping[str, str]) -> CardRow:
    id_tag = cells["id_tag"]
    if not id_tag:
        raise ValueError("no id_tag")
    if re.fullmatch(ID_TAG_PATTERN, id_tag) is None:
        raise ValueError(f"id_tag {id_tag[:40]!r} is not 1 to 20 characters without controls")
    fields: dict[str, Any] = {}
    if cells.get("status"):
        fields["status"] = parse_status(cells["status"])
    if "expiry_date" in cells:
        fields["expiry_date"] = normalize_expiry(cells["expiry_date"]) or None
    if "parent_id_tag" in cells:
        parent = cells["parent_id_tag"]
        if parent and re.fullmatch(ID_TAG_PATTERN, parent) is None:
            raise ValueError(f"parent_id_tag {parent[:40]!r} is not 1 to 20 characters")
        fields["parent_id_tag"] = parent or None
    if "label" in cells:
        fields["label"] = check_label(cells["label"]) or None
    if "chargers" in cells:
        fields["chargers"] = parse_chargers(cells["chargers"])
    sites = parse_sites(cells.get("sites", "")) or None
    return CardRow(line, id_tag, fields, sites)


def parse_status(text: str) -> str:
    for status in STATUSES:
        if text.strip().lower() == status.lower():
            return status
    raise ValueError(f"status {text[:40]!r} is not one of {', '.join(STATUSES)}")


def normalize_expiry(text: str) -> str:
    """An expiry as UTC text (2027-01-31T00:00:00Z); "" for none. A date alone is its
    midnight, a time without an offset is UTC. ValueError when it is no time."""
    text = text.strip()
    if not text:
        return ""
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as error:
        raise ValueError(
            f"expiry_date {text[:40]!r} is not a date or time: e.g. 2027-01-31 or "
            "2027-01-31T18:00:00Z"
        ) from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_label(text: str) -> str:
    if len(text) > MAX_LABEL:
        raise ValueError(f"label is longer than {MAX_LABEL} characters")
    if not text.isprintable():
        raise ValueError("label holds control characters")
    return text


def parse_chargers(text: str) -> list[str]:
    """Charger ids separated by ';' (none: any charger), each once, in the order given."""
    chargers: list[str] = []
    for part in text.split(SEPARATOR):
        charger = part.strip()
        if not charger or charger in chargers:
            continue
        if len(charger) > MAX_CHARGER_ID or not charger.isprintable():
            raise ValueError(f"charger {charger[:40]!r} is not a charger id")
        chargers.append(charger)
    if len(chargers) > MAX_CHARGERS:
        raise ValueError(f"more than {MAX_CHARGERS} chargers")
    return chargers


def parse_sites(text: str) -> frozenset[str]:
    sites = {part.strip() for part in text.split(SEPARATOR) if part.strip()}
    for site in sites:
        if re.fullmatch(EDGE_ID_PATTERN, site) is None:
            raise ValueError(f"site {site[:40]!r} is not a site id")
    return frozenset(sites)


def _unescape(cell: str) -> str:
    """An exported cell's apostrophe before a formula character, taken off again."""
    if cell.startswith("'") and cell[1:].startswith(_FORMULA_START):
        return cell[1:]
    return cell


def spreadsheet_safe(text: str | None) -> str:
    """Text never run as a formula by a spreadsheet."""
    if not text:
        return ""
    return "'" + text if text.startswith(_FORMULA_START) else text


# -- export ------------------------------------------------------------------------------


class CardValues(Protocol):
    """What a line holds of a card at a site: a CardEntry, or a row of `edge_cards`."""

    @property
    def status(self) -> str: ...
    @property
    def expiry_date(self) -> str | None: ...
    @property
    def parent_id_tag(self) -> str | None: ...
    @property
    def label(self) -> str | None: ...
    @property
    def chargers(self) -> Sequence[str] | None: ...


def export_rows(id_tag: str, entries: Mapping[str, CardValues]) -> list[list[str]]:
    """One card's lines: one per group of sites holding the same entry (`entries` by
    site id), each cell safe from spreadsheets."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for site in sorted(entries):
        entry = entries[site]
        shape = (
            entry.status,
            entry.expiry_date,
            entry.parent_id_tag,
            entry.label,
            tuple(entry.chargers or ()),
        )
        groups.setdefault(shape, []).append(site)
    return [
        [
            spreadsheet_safe(id_tag),
            status,
            spreadsheet_safe(expiry),
            spreadsheet_safe(parent),
            spreadsheet_safe(label),
            SEPARATOR.join(sites),
            spreadsheet_safe(SEPARATOR.join(chargers)),
        ]
        for (status, expiry, parent, label, chargers), sites in groups.items()
    ]


def csv_text(rows: Iterable[Sequence[str]], header: bool = False) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header:
        writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()


def export_lines(cards: Iterable[tuple[str, Mapping[str, CardValues]]]) -> Iterator[str]:
    """The CSV of `cards` (id tag, entries by site), a header first, in chunks."""
    yield csv_text([], header=True)
    chunk: list[list[str]] = []
    for id_tag, entries in cards:
        chunk.extend(export_rows(id_tag, entries))
        if len(chunk) >= 500:
            yield csv_text(chunk)
            chunk = []
    if chunk:
        yield csv_text(chunk)
