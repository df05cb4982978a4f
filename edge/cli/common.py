"""What every `ocpp-edge` command shares: finding the settings, opening the store, logging
(to journald under systemd, else to stderr)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from sqlite_utils import Database

from edge.log_context import LogContextFilter
from edge.service import BINDINGS_SWITCH
from edge.settings import ConfigError, Settings, find_config_file, load_settings
from edge.store.database import StoreError, open_database, open_readonly


def settings_of(arguments: argparse.Namespace) -> tuple[Settings, Path | None]:
    path = find_config_file(arguments.config)
    return load_settings(path), path


def read_store(arguments: argparse.Namespace) -> tuple[Settings, Database]:
    settings, _ = settings_of(arguments)
    return settings, open_readonly(settings.store.path)


def write_store(arguments: argparse.Namespace) -> Database:
    settings, _ = settings_of(arguments)
    return open_database(settings.store.path)


def configure_logging(level: str) -> None:
    handler = log_handler(os.environ, sys.stderr)
    handler.addFilter(LogContextFilter())
    logging.basicConfig(level=level, handlers=[handler])
    # The ocpp library and websockets log every frame/connection at INFO; the
    # message log in the store already has every frame.
    for chatty in ("ocpp", "websockets.server", "websockets.client", "pyftpdlib"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def log_handler(environ: Mapping[str, str], stderr: TextIO) -> logging.Handler:
    """journald's own protocol when stderr is systemd's journal stream (systemd.exec(5):
    $JOURNAL_STREAM names that stream's device:inode), so that records keep their
    priority and the CHARGER_ID/TRANSACTION_ID/READER_ID fields; plain lines otherwise."""
    if _is_journal_stream(environ, stderr) and environ.get(BINDINGS_SWITCH) != "0":
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            pass
        else:
            # journald stamps the time and the level; SYSLOG_IDENTIFIER would be argv[0].
            journal: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="ocpp-edge")
            journal.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            return journal
    stream = logging.StreamHandler(stderr)
    stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return stream


def _is_journal_stream(environ: Mapping[str, str], stream: TextIO) -> bool:
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError):  # a stream without a file (captured, closed)
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def run_parsed(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    problems: tuple[type[Exception], ...] = (ConfigError, StoreError),
) -> int:
    """Run the command `argv` names; a configuration or store problem (`problems`) is
    one line on stderr and exit status 2, not a traceback."""
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "command"):
        parser.print_help()
        return 2
    try:
        return int(arguments.command(arguments))
    except problems as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
