"""What every `ocpp-edge` command shares: finding the settings, opening the store, logging
(contract/cli.py does the part the cloud's command line shares)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sqlite_utils import Database

from contract.cli import configure_logging as shared_configure_logging
from contract.cli import run_parsed as shared_run_parsed
from contract.config_files import ConfigError
from edge.log_context import LogContextFilter
from edge.settings import Settings, find_config_file, load_settings
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
    """Logging for the edge's commands: each record names the charger, transaction and
    reader it concerns (edge/log_context.py)."""
    shared_configure_logging(level, LogContextFilter())


def run_parsed(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Run the command `argv` names; a configuration or store problem is one line on
    stderr and exit status 2."""
    return shared_run_parsed(parser, argv, lambda: (ConfigError, StoreError))


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
