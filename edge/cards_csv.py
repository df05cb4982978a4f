"""Cards as a spreadsheet: read a CSV file of cards, every line checked as `ocpp-edge
cards add` checks one card, and write the card table back as CSV.

The file is hostile until read: bounded in size and lines, decoded as UTF-8 (with or
without the BOM spreadsheets write), its delimiter (`,` `;` or tab) taken from the
header line. Each bad line is reported with its number and why; nothing is applied
from here (the store does that, all lines in one transaction).

Columns, by name in the header, in any order; only `id_tag` is required:
id_tag, status, expiry_date, parent_id_tag, label, chargers (charger ids separated by
spaces, `;` or `|`; empty: any charger). A `sites` column (the cloud's export) is
ignored: an edge is one site.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from edge.clock import normalize_timestamp
from edge.readers.uid import UidError, normalize_uid
from edge.store.id_tags import STATUSES
from edge.store.id_tags import CardValues as CardRow

COLUMNS = ("id_tag", "status", "expiry_date", "parent_id_tag", "label", "chargers")
IGNORED_COLUMNS = frozenset({"sites"})
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_LINES = 100_000
MAX_ID_TAG = 20  # OCPP 1.6 idToken: CiString20
MAX_LABEL = 200
MAX_CHARGERS_PER_CARD = 100
MAX_CHARGER_ID = 255
CHARGER_SEPARATORS = re.compile(r"[\s;|]+")
UID_WITH_SEPARATORS = re.compile(r"[0-9A-Fa-f]{2}([:\- ][0-9A-Fa-f]{2})+")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# A cell a spreadsheet would run as a formula is written with a leading quote and read
# back without it.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class CardFileError(Exception):
    """The file as a whole cannot be read (size, encoding, header); the message says why."""


@dataclass
class CardFile:
    """What a file holds: good rows by their line, bad lines with why, and notes."""

    rows: list[tuple[int, CardRow]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The columns the file has: a column it lacks leaves that field of a known card as is.
    columns: frozenset[str] = frozenset()


def read_card_file(data: bytes) -> CardFile:
    """Every line of a CSV file of cards, checked. Raises CardFileError when the file
    itself is unusable; a bad line is only `rejected`."""
    if len(data) > MAX_FILE_BYTES:
        raise CardFileError(f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CardFileError(
            f"the file is not UTF-8 (byte {error.start}): save it as CSV UTF-8"
        ) from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise CardFileError("the file is empty: its first line names the columns (id_tag, ...)")
    delimiter = _delimiter_of(lines[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [name.strip().lower() for name in next(reader)]
    except csv.Error as error:
        raise CardFileError(f"line 1: {error}") from None
    result = CardFile()
    positions = _column_positions(header, result)
    result.columns = frozenset(positions)
    seen: dict[str, int] = {}
    try:
        for values in reader:
            number = reader.line_num
            if number > MAX_LINES + 1:
                raise CardFileError(f"more than {MAX_LINES} cards: split the file")
            if not any(value.strip() for value in values):
                continue
            try:
                row = _card_row(values, positions)
            except ValueError as error:
                result.rejected.append((number, str(error)))
                continue
            if row.id_tag in seen:
                result.rejected.append(
                    (number, f"{row.id_tag} is already on line {seen[row.id_tag]}")
                )
                continue
            seen[row.id_tag] = number
            result.rows.append((number, row))
    except csv.Error as error:
        raise CardFileError(f"line {reader.line_num}: {error}") from None
    return result


def write_card_file(cards: Iterable[CardRow]) -> str:
    """The cards as CSV text, with a header; formula-like cells neutralised."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for card in cards:
        writer.writerow(
            _safe_cell(value)
            for value in (
                card.id_tag,
                card.status,
                card.expiry_date or "",
                card.parent_id_tag or "",
                card.label or "",
                " ".join(card.chargers),
            )
        )
    return out.getvalue()


def _delimiter_of(header: str) -> str:
    counts = {delimiter: header.count(delimiter) for delimiter in (",", ";", "\t")}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


def _column_positions(header: list[str], result: CardFile) -> dict[str, int]:
    if "id_tag" not in header:
        raise CardFileError("the first line names no id_tag column; columns: " + ", ".join(COLUMNS))
    duplicated = sorted({name for name in header if name and header.count(name) > 1})
    if duplicated:
        raise CardFileError("columns named twice: " + ", ".join(duplicated))
    unknown = [name for name in header if name and name not in COLUMNS]
    for name in unknown:
        if name in IGNORED_COLUMNS:
            result.notes.append(f"column {name!r} ignored: the edge is one site")
        else:
            raise CardFileError(f"unknown column {name!r}; the columns are: " + ", ".join(COLUMNS))
    return {name: index for index, name in enumerate(header) if name in COLUMNS}


def _card_row(values: list[str], positions: dict[str, int]) -> CardRow:
    def cell(name: str) -> str:
        index = positions.get(name)
        if index is None or index >= len(values):
            return ""
        return _unquote_formula(values[index].strip())

    id_tag = _id_tag(cell("id_tag"))
    status = cell("status") or "Accepted"
    matched = next((known for known in STATUSES if known.lower() == status.lower()), None)
    if matched is None:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    expiry = cell("expiry_date")
    try:
        expiry_date = normalize_timestamp(expiry) if expiry else None
    except ValueError:
        raise ValueError(f"expiry_date {expiry!r} is not an ISO-8601 date") from None
    parent = cell("parent_id_tag")
    label = cell("label")
    if len(label) > MAX_LABEL:
        raise ValueError(f"the label is longer than {MAX_LABEL} characters")
    if CONTROL_CHARACTERS.search(label):
        raise ValueError("the label holds control characters")
    return CardRow(
        id_tag=id_tag,
        status=matched,
        expiry_date=expiry_date,
        parent_id_tag=_id_tag(parent, "parent_id_tag") if parent else None,
        label=label or None,
        chargers=_chargers(cell("chargers")),
    )


def _id_tag(text: str, column: str = "id_tag") -> str:
    """An idTag as `cards add` takes it: a UID written with separators is stored as
    readers report it."""
    if not text:
        raise ValueError(f"{column} is empty")
    if UID_WITH_SEPARATORS.fullmatch(text):
        try:
            text = normalize_uid(text, uid_format="hex", byte_order="as-read")
        except UidError as error:
            raise ValueError(f"{column} {text!r}: {error}") from None
    if len(text) > MAX_ID_TAG:
        raise ValueError(f"{column} {text!r} is longer than {MAX_ID_TAG} characters (OCPP 1.6)")
    if CONTROL_CHARACTERS.search(text):
        raise ValueError(f"{column} holds control characters")
    return text


def _chargers(text: str) -> tuple[str, ...]:
    chargers = tuple(sorted({part for part in CHARGER_SEPARATORS.split(text) if part}))
    if len(chargers) > MAX_CHARGERS_PER_CARD:
        raise ValueError(f"more than {MAX_CHARGERS_PER_CARD} chargers for one card")
    for charger in chargers:
        if len(charger) > MAX_CHARGER_ID or CONTROL_CHARACTERS.search(charger):
            raise ValueError(f"charger id {charger[:40]!r} is not a charger id")
    return chargers


def _safe_cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_START) else value


def _unquote_formula(value: str) -> str:
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_START) else value
