"""What every `ocpp-edge` command shares: finding the settings, opening the store, logging."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sqlite_utils import Database

from edge.settings import Settings, find_config_file, load_settings
from edge.store.database import open_database, open_readonly


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
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The ocpp library and websockets log every frame/connection at INFO; the
    # message log in the store already has every frame.
    for chatty in ("ocpp", "websockets.server", "websockets.client", "pyftpdlib"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
