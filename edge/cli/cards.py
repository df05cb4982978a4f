"""Cards and taps: the card table, taps at simulated readers, decisions with reasons."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from contract.tables import render_table
from edge import cards_csv
from edge.cli.common import read_store, settings_of, shorten, write_store
from edge.clock import normalize_timestamp, utc_now_text
from edge.readers.uid import UidError, normalize_uid
from edge.store import (
    card_decisions,
    id_tags,
)
from edge.store.database import savepoint


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    cards = commands.add_parser("cards", parents=[common], help="the site's RFID cards (idTags)")
    cards.add_argument(
        "action", choices=["list", "add", "block", "unblock", "seen", "import", "export"]
    )
    cards.add_argument(
        "id_tag",
        nargs="?",
        help="the card's UID as a reader reports it; import: the CSV file; export: the file "
        "to write (default: standard output)",
    )
    cards.add_argument(
        "--dry-run", action="store_true", help="with import: check the file, change nothing"
    )
    cards.add_argument(
        "--skip-bad",
        action="store_true",
        help="with import: import the good lines even if some are bad (default: none then)",
    )
    cards.add_argument("--expires", help="expiry date, ISO-8601 (UTC if no offset)")
    cards.add_argument("--parent", help="parent idTag (account/group)")
    cards.add_argument("--label", help="who or what the card is for")
    cards.add_argument(
        "--charger",
        action="append",
        default=[],
        help="with add: the card charges only here (repeat for several chargers)",
    )
    cards.add_argument(
        "--decimal", action="store_true", help="with add: ID_TAG is the number printed on the card"
    )
    cards.add_argument(
        "--reversed", action="store_true", help="with add: ID_TAG's bytes are in reverse order"
    )
    cards.set_defaults(command=cmd_cards)

    tap = commands.add_parser(
        "tap", parents=[common], help="tap a card at a simulated reader of the running daemon"
    )
    tap.add_argument("reader_id")
    tap.add_argument("uid")
    tap.set_defaults(command=cmd_tap)

    taps = commands.add_parser(
        "taps", parents=[common], help="decisions on cards (taps and chargers' own readers)"
    )
    taps.add_argument("--limit", type=int, default=30)
    taps.set_defaults(command=cmd_taps)


def cmd_cards(arguments: argparse.Namespace) -> int:
    if arguments.action == "import":
        return _import_cards(arguments)
    if arguments.action == "export":
        return _export_cards(arguments)
    if arguments.action == "list":
        _, db = read_store(arguments)
        rows = [
            (
                row["id_tag"],
                row["status"],
                row["expiry_date"],
                row["parent_id_tag"],
                ", ".join(sorted(id_tags.allowed_chargers(db, row["id_tag"]))) or "any",
                row["label"],
            )
            for row in id_tags.list_id_tags(db)
        ]
        print(render_table(["idtag", "status", "expires", "parent", "chargers", "label"], rows))
        return 0
    if arguments.action == "seen":
        _, db = read_store(arguments)
        rows = [
            (
                row["id_tag"],
                row["status"],
                row["source"],
                row["last_seen_at"],
                row["last_seen_where"],
                row["times_seen"],
            )
            for row in card_decisions.list_seen_cards(db)
        ]
        print(render_table(["idtag", "decided", "by", "last seen", "where", "times"], rows))
        return 0
    if not arguments.id_tag:
        print(f"ocpp-edge cards {arguments.action} needs an ID_TAG", file=sys.stderr)
        return 2
    id_tag = arguments.id_tag
    # A UID written with separators ("04:A2:B3:C4") or in decimal is stored as readers
    # report it.
    if (
        arguments.decimal
        or arguments.reversed
        or re.fullmatch(r"[0-9A-Fa-f]{2}([:\- ][0-9A-Fa-f]{2})+", id_tag)
    ):
        try:
            id_tag = normalize_uid(
                id_tag,
                uid_format="decimal" if arguments.decimal else "hex",
                byte_order="reversed" if arguments.reversed else "as-read",
            )
        except UidError as error:
            print(f"{arguments.id_tag}: {error}", file=sys.stderr)
            return 2
    if len(id_tag) > 20:
        print("an OCPP 1.6 idTag is at most 20 characters", file=sys.stderr)
        return 2
    db = write_store(arguments)
    now = utc_now_text()
    # The card and the chargers it is limited to, together or not at all.
    with savepoint(db, "change_card"):
        if arguments.action == "add":
            try:
                expires = normalize_timestamp(arguments.expires) if arguments.expires else None
            except ValueError:
                print(f"--expires {arguments.expires!r} is not an ISO-8601 date", file=sys.stderr)
                return 2
            id_tags.save_id_tag(
                db,
                id_tag,
                now,
                expiry_date=expires,
                parent_id_tag=arguments.parent,
                label=arguments.label,
            )
            id_tags.set_allowed_chargers(db, id_tag, arguments.charger)
            where = f" at {', '.join(arguments.charger)}" if arguments.charger else ""
            print(f"{id_tag}: Accepted{where}")
            return 0
        status = "Blocked" if arguments.action == "block" else "Accepted"
        if not id_tags.set_id_tag_status(db, id_tag, status, now):
            print(f"no card {id_tag}: add it first", file=sys.stderr)
            return 1
    print(f"{id_tag}: {status}")
    return 0


def _import_cards(arguments: argparse.Namespace) -> int:
    """Cards from a CSV file in one transaction: all of them, or none when a line is bad
    (unless --skip-bad); every bad line reported with its number."""
    if not arguments.id_tag:
        print("ocpp-edge cards import needs the CSV FILE", file=sys.stderr)
        return 2
    path = Path(arguments.id_tag)
    try:
        if path.stat().st_size > cards_csv.MAX_FILE_BYTES:
            raise cards_csv.CardFileError(
                f"the file is larger than {cards_csv.MAX_FILE_BYTES // (1024 * 1024)} MiB"
            )
        card_file = cards_csv.read_card_file(path.read_bytes())
    except OSError as error:
        print(f"{path}: {error.strerror or error}", file=sys.stderr)
        return 2
    except cards_csv.CardFileError as error:
        print(f"{path}: {error}", file=sys.stderr)
        return 2
    for note in card_file.notes:
        print(f"{path}: {note}", file=sys.stderr)
    for line, reason in card_file.rejected:
        print(f"{path}:{line}: {reason}", file=sys.stderr)
    if card_file.rejected and not arguments.skip_bad:
        print(
            f"{len(card_file.rejected)} bad line(s): nothing imported "
            "(fix them, or --skip-bad to import the other lines)",
            file=sys.stderr,
        )
        return 1
    cards = [card for _, card in card_file.rows]
    db = write_store(arguments)
    # One transaction: every card or none; a dry run undoes what it did.
    with savepoint(db, "import_cards", keep=not arguments.dry_run):
        counts = id_tags.import_cards(db, cards, card_file.columns, utc_now_text())
    verb = "would be" if arguments.dry_run else "were"
    print(
        f"{len(cards)} card(s) read: {counts.added} {verb} added, {counts.changed} changed, "
        f"{counts.unchanged} already as in the file"
        + (f"; {len(card_file.rejected)} bad line(s) skipped" if card_file.rejected else "")
    )
    return 1 if card_file.rejected else 0


def _export_cards(arguments: argparse.Namespace) -> int:
    _, db = read_store(arguments)
    text = cards_csv.write_card_file(id_tags.all_cards(db))
    if arguments.id_tag:
        Path(arguments.id_tag).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_tap(arguments: argparse.Namespace) -> int:
    from edge.readers.simulated import send_tap

    settings, _ = settings_of(arguments)
    path = settings.taps.socket_path(settings.store.path)
    try:
        answer = asyncio.run(send_tap(path, arguments.reader_id, arguments.uid))
    except (OSError, TimeoutError) as error:
        print(
            f"cannot reach the daemon's tap socket {path} ({error}): is `ocpp-edge run` "
            "running with this configuration and a simulated reader?",
            file=sys.stderr,
        )
        return 1
    if answer != "ok":
        print(answer, file=sys.stderr)
        return 1
    print(f"tapped {arguments.uid} at {arguments.reader_id}: see `ocpp-edge taps`")
    return 0


def cmd_taps(arguments: argparse.Namespace) -> int:
    _, db = read_store(arguments)
    rows = [
        (
            row["decided_at"][11:19],
            row["reader_id"] or f"({row['charger_id']})",
            row["id_tag"],
            row["action"],
            row["status"],
            row["charger_id"] and f"{row['charger_id']}/{row['connector_id'] or '-'}",
            shorten(row["reason"], 40),
            row["outcome"],
            row["transaction_id"],
        )
        for row in card_decisions.list_card_decisions(db, arguments.limit)
    ]
    print(
        render_table(
            ["time", "reader", "card", "action", "status", "where", "reason", "outcome", "tx"],
            rows,
        )
    )
    return 0
